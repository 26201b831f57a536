//! `serve` and `request`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use bytes::BytesMut;
use cypherwire::client::{Client, Incoming, OfflineReason, Status};
use cypherwire::server::EventKind;
use cypherwire::wire::{Codec, Limits, PayloadCodec, Value};

use super::auth::{ClientAuthArgs, ServerAuthArgs, server_auth};
use super::bans::BanArgs;
use super::config::{self, Config, redact_url};
use super::service;

/// Arguments of `cypherwire serve`. Each flag overrides the configuration file's key
/// (docs/configuration.md).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ServeArgs {
    /// Configuration file (TOML; docs/configuration.md). Flags override its keys.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
    /// Address to listen on [default: 127.0.0.1:12345].
    #[arg(long)]
    listen: Option<String>,
    #[command(flatten)]
    auth: ServerAuthArgs,
    /// An admin prompt on stdin (pnetwork's coretools): help, list, kick, broadcast, bans,
    /// ban, unban, quit. End of input quits too.
    #[arg(long)]
    console: bool,
    /// Also serve CYPHER_PROTOCOL 1.5.0 Python clients on this address (legacy compat mode;
    /// see docs/compat.md). Needs --cypher-key.
    #[arg(long)]
    cypher_compat: Option<String>,
    /// The 32-character key the compat listener answers with (the Python server's
    /// encryption_key).
    #[arg(long)]
    cypher_key: Option<String>,
    /// The key Python clients encrypt requests with, if it differs from --cypher-key.
    #[arg(long)]
    cypher_client_key: Option<String>,
    /// Join a cluster through this Redis (`redis://HOST:PORT`, `redis+unix:///PATH`): every
    /// `serve` on the same Redis and cluster key shares broadcasts, groups, bans and the
    /// registry (docs/cluster.md). Needs --cluster-key-file.
    #[arg(long)]
    cluster: Option<String>,
    /// File with the cluster key(s) (`cypherwire keygen --cluster`): one per line, the first
    /// sealing, all accepted.
    #[arg(long)]
    cluster_key_file: Option<PathBuf>,
    /// Prefix of every Redis key and channel of this cluster (clusters sharing one Redis use
    /// different ones) [default: cw:].
    #[arg(long)]
    cluster_prefix: Option<String>,
    /// Serve Prometheus metrics, `/healthz` and `/readyz` over HTTP on this address (e.g.
    /// 127.0.0.1:9100).
    #[arg(long)]
    metrics: Option<String>,
    #[command(flatten)]
    bans: BanArgs,
}

fn read(
    lists: &std::sync::RwLock<super::bans::Lists>,
) -> std::sync::RwLockReadGuard<'_, super::bans::Lists> {
    lists
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// On each SIGHUP: reads the configuration file again (with the same flags over it) and
/// applies what can change while running — `bans.exempt`, `bans.deny` and `log.level`. A file
/// that does not check is reported and the running configuration kept; other keys take effect
/// at the next start.
async fn reload_on_hangup(args: ServeArgs, lists: Arc<std::sync::RwLock<super::bans::Lists>>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: no configuration reloads");
        return;
    };
    while hangups.recv().await.is_some() {
        let reloaded = args.effective_config().and_then(|config| {
            config.check()?;
            let new = super::bans::Lists::from_config(&config.bans)?;
            let log = crate::reload_log_level(&config.log.level)?;
            *lists
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = new;
            Ok(log)
        });
        match reloaded {
            Ok(log) => println!(
                "configuration reloaded: bans.exempt, bans.deny{}",
                if log { ", log.level" } else { "" }
            ),
            Err(e) => eprintln!("reload failed, the running configuration stays: {e:#}"),
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ServeArgs {
    /// The configuration file named by `--config` (or the defaults), with the flags applied.
    pub(crate) fn effective_config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(listen) = &self.listen {
            listen.clone_into(&mut config.listen);
        }
        self.auth.apply(&mut config.auth);
        config.console |= self.console;
        let compat = &mut config.compat;
        for (flag, key) in [
            (&self.cypher_compat, &mut compat.listen),
            (&self.cypher_key, &mut compat.key),
            (&self.cypher_client_key, &mut compat.client_key),
            (&self.cluster, &mut config.cluster.redis),
        ] {
            if flag.is_some() {
                key.clone_from(flag);
            }
        }
        if self.cluster_key_file.is_some() {
            config.cluster.key_file.clone_from(&self.cluster_key_file);
        }
        if let Some(prefix) = &self.cluster_prefix {
            prefix.clone_into(&mut config.cluster.prefix);
        }
        self.bans.apply(&mut config.bans);
        if self.metrics.is_some() {
            config.metrics.listen.clone_from(&self.metrics);
        }
        Ok(config)
    }

    /// The log settings of the configuration file, if there is one (read before logging
    /// starts; errors in the file are reported when `serve` runs).
    pub(crate) fn log_settings(&self) -> Option<config::Log> {
        let path = self.config.as_ref()?;
        Config::load(path).ok().map(|c| c.log)
    }
}

pub(crate) async fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let config = args.effective_config()?;
    config.check()?;
    if args.print_config {
        print!("{}", config.redacted_toml()?);
        return Ok(());
    }
    let auth = server_auth(&config.auth)?;
    let mut builder = service::builder(auth, Arc::new(Mutex::new(service::State::default())))
        .ban_policy(super::bans::policy(&config.bans)?)
        .limits(config.server_limits())
        .session_config(config.session_config()?);
    // The address lists are read through a lock: SIGHUP replaces them (reload_on_hangup).
    let lists = Arc::new(std::sync::RwLock::new(super::bans::Lists::from_config(
        &config.bans,
    )?));
    let (exempt, deny) = (lists.clone(), lists.clone());
    builder = builder
        .ban_exempt(move |ip| read(&exempt).is_exempt(ip))
        .accept_hook(move |incoming| !read(&deny).is_denied(incoming.peer.ip()));
    if let (Some(addr), Some(key)) = (&config.compat.listen, &config.compat.key) {
        let client_key = config.compat.client_key.as_deref().unwrap_or(key);
        let keys = cypherwire::session::compat::CypherKeys::new(key, client_key)
            .context("CYPHER_PROTOCOL keys (compat.key, compat.client_key) are 32 characters")?;
        builder = builder.cypher_compat(cypherwire::server::CypherCompat::new(addr.clone(), keys));
    }
    if let (Some(url), Some(key_file)) = (&config.cluster.redis, &config.cluster.key_file) {
        let keys = cypherwire::cluster::ClusterKey::read_file(key_file)?;
        let mut options = cypherwire::cluster::RedisOptions::default();
        options.prefix.clone_from(&config.cluster.prefix);
        let backplane = cypherwire::cluster::RedisBackplane::connect_with(url, &keys, options)
            .await
            .with_context(|| format!("cannot join the cluster at {}", redact_url(url)))?;
        println!(
            "cluster node {} (key {:08x})",
            cypherwire::server::Backplane::node(&backplane).get(),
            backplane.key_id()
        );
        builder = builder.cluster(backplane);
    }
    let server = builder.bind(config.listen.as_str()).await?;
    let handle = server.handle();
    println!("listening on {}", handle.local_addr());
    if let Some(addr) = server.compat_addr() {
        println!("compat listening on {addr}");
    }
    let mut events = handle.events();
    let log = tokio::spawn(async move {
        while let Some(e) = events.next().await {
            match e.kind {
                EventKind::Authenticated { id, peer, .. } => eprintln!("connected {id} {peer}"),
                EventKind::Disconnected { id, peer, reason } => {
                    eprintln!("disconnected {id} {peer}: {}", disconnect_text(&reason));
                }
                EventKind::AuthenticationFailed { peer, reason } => {
                    eprintln!("handshake failed from {peer}: {reason}");
                }
                EventKind::Banned { peer } => eprintln!("banned {peer}"),
                _ => {}
            }
        }
    });
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _metrics = match &config.metrics.listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {addr}"))?;
            println!("metrics on http://{}/metrics", listener.local_addr()?);
            let exporter = super::metrics::Exporter {
                server: handle.clone(),
                mode: config.auth.mode(),
                ready: ready.clone(),
            };
            Some(AbortOnDrop(tokio::spawn(super::metrics::serve(
                listener, exporter,
            ))))
        }
        None => None,
    };
    let _reload = AbortOnDrop(tokio::spawn(reload_on_hangup(args.clone(), lists)));
    ready.store(true, std::sync::atomic::Ordering::Release);
    if config.console {
        // The library's console (cypherwire::server::console) on stdin and stdout.
        let console = cypherwire::server::console::Console::new(handle.clone());
        println!("{}", console.help());
        let stdin = tokio::io::BufReader::new(tokio::io::stdin());
        tokio::select! {
            r = console.run(stdin, tokio::io::stdout()) => r?,
            () = shutdown_signal() => {}
        }
    } else {
        shutdown_signal().await;
    }
    // Not ready from now on; a load balancer gets `metrics.ready_drain_secs` to notice.
    ready.store(false, std::sync::atomic::Ordering::Release);
    if config.metrics.ready_drain_secs > 0 {
        eprintln!(
            "not ready; stopping in {} s",
            config.metrics.ready_drain_secs
        );
        tokio::time::sleep(Duration::from_secs(config.metrics.ready_drain_secs)).await;
    }
    eprintln!("shutting down");
    handle.shutdown().await;
    log.abort();
    Ok(())
}

/// Why a connection ended, for the log.
fn disconnect_text(reason: &cypherwire::server::DisconnectReason) -> String {
    use cypherwire::server::DisconnectReason as R;
    match reason {
        R::Closed => "closed by the peer".into(),
        R::Truncated => "connection dropped".into(),
        R::Kicked => "kicked".into(),
        R::Banned => "banned".into(),
        R::SlowConsumer => "slow consumer".into(),
        R::IdleTimeout => "idle timeout".into(),
        R::Shutdown => "server shutting down".into(),
        R::Replaced => "session resumed on a newer connection".into(),
        R::InstanceLost => "its session's instance left the cluster".into(),
        R::PushesLost => "pushes were lost between instances".into(),
        R::ProtocolError(e) => format!("protocol error: {e}"),
        R::Unsupported(e) => format!("unsupported: {e}"),
        R::TooLarge(e) => format!("too large: {e}"),
        R::Io(e) => e.clone(),
        other => format!("{other:?}"),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            () = term => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Arguments of `cypherwire request`.
#[derive(Debug, clap::Args)]
pub(crate) struct RequestArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:12345")]
    connect: String,
    #[command(flatten)]
    auth: ClientAuthArgs,
    /// Metadata, as JSON.
    #[arg(long)]
    metadata: Option<String>,
    /// Seconds to wait for the answer (connecting included).
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// The request's path, e.g. /NUMBER.
    path: String,
    /// The request's operation, e.g. READ.
    operation: String,
    /// The request's data, as JSON.
    data: Option<String>,
}

/// Parses JSON text into a [`Value`] (with the wire's lossless JSON forms).
pub(crate) fn json_to_value(text: &str) -> anyhow::Result<Value> {
    Codec::Json
        .decode::<Value>(text.as_bytes(), &Limits::default())
        .map_err(|_| {
            let hint = if text.trim_start().starts_with(['{', '[', '"']) {
                String::new()
            } else {
                format!(" (to send the string, quote it as JSON: '\"{text}\"')")
            };
            anyhow::anyhow!("not valid JSON: {text}{hint}")
        })
}

/// Follows `client`'s statuses and keeps the last offline reason: a client that gave up says
/// why it could not connect.
pub(crate) fn last_offline(client: &Client) -> Arc<Mutex<Option<OfflineReason>>> {
    let last = Arc::new(Mutex::new(None));
    let keep = last.clone();
    client.on_status(move |s| {
        if let Status::Offline { reason } = s {
            *keep
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason.clone());
        }
    });
    last
}

/// `err` with the reason of the last failed connection attempt, for an error that does not
/// say it (giving up).
pub(crate) fn explain(
    err: cypherwire::client::Error,
    last: &Mutex<Option<OfflineReason>>,
) -> anyhow::Error {
    let reason = last
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    match (&err, reason) {
        (cypherwire::client::Error::GaveUp { .. }, Some(reason)) => {
            anyhow::Error::new(err).context(format!("cannot reach the server ({reason})"))
        }
        _ => anyhow::Error::new(err),
    }
}

/// Renders a [`Value`] as JSON text.
pub(crate) fn value_to_json(v: &Value) -> anyhow::Result<String> {
    let mut buf = BytesMut::new();
    Codec::Json.encode(v, &mut buf)?;
    Ok(String::from_utf8(buf.to_vec())?)
}

pub(crate) async fn request(args: &RequestArgs) -> anyhow::Result<()> {
    let psk = args.auth.client_auth()?;
    let data = args
        .data
        .as_deref()
        .map(json_to_value)
        .transpose()?
        .unwrap_or(Value::Nil);
    let metadata = args
        .metadata
        .as_deref()
        .map(json_to_value)
        .transpose()?
        .unwrap_or(Value::Nil);
    let mut backoff = cypherwire::client::Backoff::default();
    backoff.give_up_after_attempts = Some(3);
    let client = Client::builder(psk)
        .backoff(backoff)
        .connect(args.connect.clone())?;
    let last = last_offline(&client);
    let send = client
        .request(&args.path, &args.operation)
        .data(data)
        .metadata(metadata)
        .send();
    let reply = tokio::time::timeout(Duration::from_secs(args.timeout), send)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "no answer within {} s (is the server up, and the key right?)",
                args.timeout
            )
        })?
        .map_err(|e| explain(e, &last))?;
    println!("{}", value_to_json(&reply.data)?);
    client.close_within(Duration::from_millis(200)).await;
    Ok(())
}

/// Arguments of `cypherwire watch`.
#[derive(Debug, clap::Args)]
pub(crate) struct WatchArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:12345")]
    connect: String,
    #[command(flatten)]
    auth: ClientAuthArgs,
}

/// Stays connected, printing each push and action as a JSON line on stdout and each status
/// change on stderr, until interrupted, kicked, banned or rejected (non-zero exit codes).
pub(crate) async fn watch(args: &WatchArgs) -> anyhow::Result<()> {
    let psk = args.auth.client_auth()?;
    let client = Client::builder(psk).connect(args.connect.clone())?;
    let mut incoming = client
        .take_incoming()
        .context("the incoming stream is taken")?;
    let mut status = client.status_events();
    loop {
        tokio::select! {
            () = shutdown_signal() => break,
            item = incoming.next() => match item {
                Some(Incoming::Push(p)) => println!("{}", value_to_json(&p.data)?),
                Some(Incoming::Action(a)) => println!("{} {}", a.name, value_to_json(&a.data)?),
                Some(_) => {}
                None => break,
            },
            s = status.next() => match s {
                Some(Status::Online { resumed }) => {
                    eprintln!("online{}", if resumed { " (session resumed)" } else { "" });
                }
                Some(Status::Offline { reason }) => eprintln!("offline: {reason}"),
                Some(Status::Reconnecting { attempt }) => eprintln!("reconnecting (attempt {attempt})"),
                Some(s) if s.is_final() => {
                    return Err(client.wait_online().await.err().map_or_else(
                        || anyhow::anyhow!("stopped"),
                        anyhow::Error::new,
                    ));
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    client.close_within(Duration::from_millis(200)).await;
    Ok(())
}
