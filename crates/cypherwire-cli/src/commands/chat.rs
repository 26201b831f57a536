//! `chat host` and `chat join`: pyile-protocol's console chat on the mesh.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use cypherwire::mesh::{AuthPeer, Event, JoinPeer, Member, MeshConfig, PeerId};
use cypherwire::session::{Argon2Cost, Password, PasswordVerifier};
use cypherwire::wire::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

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
        /// Failed password attempts per address before a ban.
        #[arg(long, default_value_t = 5)]
        max_attempts: u32,
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

const HELP: &str =
    "type to broadcast; /peers, /msg ID TEXT, /exit (host also: /kick ID, /ban ID MINUTES, /bans)";

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
            max_attempts,
            heartbeat_ms,
        } => {
            let secret = read_secret(password_file)?;
            let verifier = if secret.starts_with("$argon2id$") {
                PasswordVerifier::parse(&secret)?
            } else {
                PasswordVerifier::create(&secret, Argon2Cost::default())?
            };
            let mut bans = cypherwire::session::BanPolicy::default();
            bans.max_attempts = *max_attempts;
            let mut builder = AuthPeer::builder(verifier)
                .listen(listen.clone())
                .config(mesh_config(*heartbeat_ms)?)
                .ban_policy(bans);
            if let Some(f) = ban_file {
                builder = builder.ban_file(f);
            }
            let auth = builder.start().await?;
            println!("listening on {} as {}", auth.local_addr(), auth.id());
            println!("{HELP}");
            console(&auth, Some(&auth)).await?;
            auth.leave().await;
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
            console(&peer, None).await?;
            peer.leave().await;
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

/// Reads commands from stdin until `/exit` or end of input; prints events as they come.
async fn console(me: &Member, host: Option<&AuthPeer>) -> anyhow::Result<()> {
    let mut events = me.take_events().context("events already taken")?;
    let printer = tokio::spawn(async move {
        while let Some(e) = events.next().await {
            if let Some(line) = describe(&e) {
                println!("{line}");
            }
        }
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Err(e) = command(me, host, line).await {
            println!("! {e:#}");
        }
        if line == "/exit" {
            break;
        }
    }
    printer.abort();
    Ok(())
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
            let id = PeerId::parse(words.next().unwrap_or_default())?;
            let text = words.next().context("usage: /msg ID TEXT")?;
            me.send(id, Value::from(text)).await?;
        }
        ("/kick", Some(h)) => h.kick(PeerId::parse(words.next().unwrap_or_default())?)?,
        ("/ban", Some(h)) => {
            let id = PeerId::parse(words.next().unwrap_or_default())?;
            let minutes: u64 = words.next().unwrap_or("60").trim().parse()?;
            h.ban_peer(id, Duration::from_secs(minutes * 60))?;
        }
        ("/bans", Some(h)) => {
            for b in h.bans() {
                println!("{:?} until {:?}", b.target, b.until);
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
