//! `chat host` and `chat join`: pyile-protocol's console chat on the mesh.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use cypherwire::client::Error as ClientError;
use cypherwire::mesh::{AuthPeer, BanTarget, Event, JoinPeer, Member, MeshConfig, PeerId};
use cypherwire::session::{Argon2Cost, Password, PasswordVerifier};
use cypherwire::wire::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::bans::{BanArgs, human, until_text};

/// Arguments of `cypherwire chat`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    role: Role,
}

#[derive(Debug, clap::Subcommand)]
enum Role {
    /// Start the authenticating peer (and chat as a member).
    Host {
        /// Where members connect to be admitted (pyile's port is 4702).
        #[arg(long, default_value = "127.0.0.1:4702")]
        listen: String,
        /// File holding the network password, or its verifier from `hash-password`.
        #[arg(long)]
        password_file: PathBuf,
        /// Keep bans in this file across restarts.
        #[arg(long)]
        ban_file: Option<PathBuf>,
        #[command(flatten)]
        bans: BanArgs,
        /// Heartbeat interval in milliseconds (3 missed remove a member).
        #[arg(long, default_value_t = 2000)]
        heartbeat_ms: u64,
    },
    /// Join a mesh through its authenticating peer.
    Join {
        /// The authenticating peer's address.
        #[arg(long, default_value = "127.0.0.1:4702")]
        auth: String,
        /// File holding the network password.
        #[arg(long)]
        password_file: PathBuf,
        /// Heartbeat interval in milliseconds (use the host's).
        #[arg(long, default_value_t = 2000)]
        heartbeat_ms: u64,
    },
}

const HELP: &str = "type to broadcast; /peers, /msg ID TEXT, /exit (host also: /kick ID, \
                    /ban ID MINUTES, /unban ID-OR-ADDRESS, /bans); an ID may be any unique prefix";

fn read_secret(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = text.trim_end_matches(['\r', '\n']).to_owned();
    anyhow::ensure!(!text.is_empty(), "{} is empty", path.display());
    Ok(text)
}

pub(crate) async fn run(args: &Args) -> anyhow::Result<()> {
    match &args.role {
        Role::Host {
            listen,
            password_file,
            ban_file,
            bans,
            heartbeat_ms,
        } => {
            let secret = read_secret(password_file)?;
            let verifier = if secret.starts_with("$argon2id$") {
                PasswordVerifier::parse(&secret)?
            } else {
                PasswordVerifier::create(&secret, Argon2Cost::default())?
            };
            let mut builder = AuthPeer::builder(verifier)
                .listen(listen.clone())
                .config(mesh_config(*heartbeat_ms)?)
                .ban_policy(super::bans::policy(&bans.settings())?);
            if let Some(exempt) = super::bans::exempt(&bans.settings())? {
                builder = builder.ban_exempt(exempt);
            }
            if let Some(f) = ban_file {
                builder = builder.ban_file(f);
            }
            let auth = builder.start().await?;
            println!("listening on {} as {}", auth.local_addr(), auth.id());
            println!("{HELP}");
            let ended = console(&auth, Some(&auth)).await;
            auth.leave().await;
            ended?;
        }
        Role::Join {
            auth,
            password_file,
            heartbeat_ms,
        } => {
            let password = Password::new(read_secret(password_file)?);
            let peer = JoinPeer::join(auth.clone(), password, mesh_config(*heartbeat_ms)?).await?;
            println!("joined as {} ({} members)", peer.id(), peer.peers().len());
            println!("{HELP}");
            let ended = console(&peer, None).await;
            peer.leave().await;
            ended?;
        }
    }
    println!("left");
    Ok(())
}

fn mesh_config(heartbeat_ms: u64) -> anyhow::Result<MeshConfig> {
    anyhow::ensure!(heartbeat_ms > 0, "--heartbeat-ms must be positive");
    Ok(MeshConfig::default().with_heartbeat(Duration::from_millis(heartbeat_ms), 3))
}

fn describe(e: &Event) -> Option<String> {
    Some(match e {
        Event::Message {
            from,
            data,
            broadcast,
        } => {
            let text = data
                .as_str()
                .map_or_else(|| format!("{data:?}"), str::to_owned);
            if *broadcast {
                format!("[{from}] {text}")
            } else {
                format!("[{from} → you] {text}")
            }
        }
        Event::PeerJoined { entry } => format!("* {} joined from {}", entry.id, entry.addr),
        Event::PeerLeft { id, reason } => format!("* {id} left ({reason:?})"),
        Event::Kicked { reason } => format!("* the host removed you: {reason}"),
        Event::BannedByAuthPeer { remaining } => match remaining {
            Some(d) => format!("* the host banned you for another {}", human(*d)),
            None => "* the host banned you".to_owned(),
        },
        Event::Banned { addr, peer } => match (addr, peer) {
            (Some(a), _) => format!("* banned address {a}"),
            (_, Some(p)) => format!("* banned {p}"),
            _ => "* ban".to_owned(),
        },
        Event::AuthPeerLost => "* lost the authenticating peer; reconnecting".to_owned(),
        Event::AuthPeerRegained => "* authenticating peer back".to_owned(),
        Event::AuthPeerLeft => "* the authenticating peer left the mesh".to_owned(),
        Event::Lagged { missed } => format!("* missed {missed} events"),
        _ => return None,
    })
}

/// Reads commands from stdin until `/exit` or end of input; prints events as they come. A
/// member the host kicked or banned stops with that error (and its exit code).
async fn console(me: &Member, host: Option<&AuthPeer>) -> anyhow::Result<()> {
    let mut events = me.take_events().context("events already taken")?;
    let (ended_tx, mut ended) = tokio::sync::oneshot::channel();
    let printer = tokio::spawn(async move {
        let mut ended_tx = Some(ended_tx);
        while let Some(e) = events.next().await {
            if let Some(line) = describe(&e) {
                println!("{line}");
            }
            let end = match e {
                Event::Kicked { reason } => Some(ClientError::Kicked { reason }),
                Event::BannedByAuthPeer { remaining } => Some(ClientError::Banned {
                    retry_after: remaining,
                }),
                _ => None,
            };
            if let Some(end) = end
                && let Some(tx) = ended_tx.take()
            {
                let _ = tx.send(end);
            }
        }
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut ended_open = true;
    let result = loop {
        let line = tokio::select! {
            line = lines.next_line() => line?,
            end = &mut ended, if ended_open => match end {
                Ok(e) => break Err(anyhow::Error::new(e)),
                Err(_) => {
                    // The event stream ended: stdin alone decides from now on.
                    ended_open = false;
                    continue;
                }
            },
        };
        let Some(line) = line else { break Ok(()) };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Err(e) = command(me, host, line).await {
            println!("! {e:#}");
        }
        if line == "/exit" {
            break Ok(());
        }
    };
    printer.abort();
    result
}

/// The member whose id starts with `prefix` (a whole id, or any unique prefix of one).
fn member(me: &Member, prefix: &str) -> anyhow::Result<PeerId> {
    let prefix = prefix.trim().to_ascii_lowercase();
    anyhow::ensure!(!prefix.is_empty(), "give a member id (see /peers)");
    let matches: Vec<PeerId> = me
        .peers()
        .into_iter()
        .map(|p| p.id)
        .filter(|id| id.to_string().starts_with(&prefix))
        .collect();
    match matches[..] {
        [id] => Ok(id),
        [] => match PeerId::parse(&prefix) {
            // A whole id of someone not listed (now): let the command say what it makes of it.
            Ok(id) => Ok(id),
            Err(_) => anyhow::bail!("no member id starts with {prefix:?} (see /peers)"),
        },
        _ => anyhow::bail!(
            "{} members' ids start with {prefix:?}: give more digits",
            matches.len()
        ),
    }
}

async fn command(me: &Member, host: Option<&AuthPeer>, line: &str) -> anyhow::Result<()> {
    let mut words = line.splitn(3, ' ');
    match (words.next().unwrap_or_default(), host) {
        ("/exit", _) => {}
        ("/peers", _) => {
            let peers = me.peers();
            for p in &peers {
                let mark = if p.id == me.id() { " (you)" } else { "" };
                println!("{} {}{mark}", p.id, p.addr);
            }
            println!("({} members)", peers.len());
        }
        ("/msg", _) => {
            let id = member(me, words.next().unwrap_or_default())?;
            let text = words.next().context("usage: /msg ID TEXT")?;
            me.send(id, Value::from(text)).await?;
            println!("(sent to {id})");
        }
        ("/kick", Some(h)) => {
            let id = member(me, words.next().unwrap_or_default())?;
            h.kick(id)?;
            println!("kicked {id}");
        }
        ("/ban", Some(h)) => {
            let id = member(me, words.next().unwrap_or_default())?;
            let minutes: u64 = words.next().unwrap_or("60").trim().parse()?;
            h.ban_peer(id, Duration::from_secs(minutes * 60))?;
            println!("banned {id} for {minutes} min");
        }
        ("/unban", Some(h)) => {
            let what = words.next().unwrap_or_default().trim();
            let lifted = match what.parse::<std::net::IpAddr>() {
                Ok(ip) => h.unban_addr(ip),
                Err(_) => {
                    // A banned member is no longer listed: match the prefix among the bans.
                    let banned: Vec<PeerId> = h
                        .bans()
                        .iter()
                        .filter_map(|b| match b.target {
                            BanTarget::Peer(id) if id.to_string().starts_with(what) => Some(id),
                            _ => None,
                        })
                        .collect();
                    match banned[..] {
                        [id] if !what.is_empty() => h.unban_peer(id),
                        _ => anyhow::bail!(
                            "usage: /unban ID-OR-ADDRESS (a unique prefix of a banned id, see /bans)"
                        ),
                    }
                }
            };
            println!("{}", if lifted { "unbanned" } else { "not banned" });
        }
        ("/bans", Some(h)) => {
            let bans = h.bans();
            if bans.is_empty() {
                println!("no bans");
            }
            for b in bans {
                let who = match b.target {
                    BanTarget::Peer(id) => id.to_string(),
                    BanTarget::Addr(ip) => ip.to_string(),
                };
                println!("{who} {}", until_text(b.until));
            }
        }
        (w, _) if w.starts_with('/') => anyhow::bail!("unknown command; {HELP}"),
        _ => {
            let report = me.broadcast(Value::from(line)).await?;
            for (id, e) in report.failed {
                println!("! not delivered to {id}: {e}");
            }
        }
    }
    Ok(())
}
