//! The `cypherwire` command.
//!
//! Thin by design: parse arguments, run a command, turn errors into one clear line and a
//! non-zero exit code.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Secure messaging over TCP: tools and demos for cypherwire.
#[derive(Debug, Parser)]
#[command(
    name = "cypherwire",
    version,
    about,
    long_about = None,
    after_help = "Exit codes: 0 success, 1 failure, 2 usage, 3 authentication failed, 4 banned, 5 kicked."
)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace). Without it, `RUST_LOG`
    /// takes tracing directives (e.g. `warn,cypherwire_client=debug`).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Write log lines to this file (appended) instead of stderr: keeps them out of the chat
    /// screen and the console.
    #[arg(long, global = true)]
    log_file: Option<std::path::PathBuf>,
    /// Log line format: `text` for people, `json` for machines [default: text].
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

/// Logs to stderr: `-v` sets the level for everything; otherwise `RUST_LOG` takes full
/// tracing directives (`warn,cypherwire_client=debug`); warnings by default.
fn init_logging(
    verbose: u8,
    file: Option<&std::path::Path>,
    level: Option<&str>,
    format: LogFormat,
) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let from_env = std::env::var_os(EnvFilter::DEFAULT_ENV).is_some();
    let filter = match (verbose, level) {
        (0, Some(directives)) if !from_env => EnvFilter::try_new(directives)
            .map_err(|e| anyhow::anyhow!("log.level {directives:?}: {e}"))?,
        (0, _) => EnvFilter::builder()
            .with_default_directive(tracing::Level::WARN.into())
            .from_env_lossy(),
        (1, _) => EnvFilter::new("info"),
        (2, _) => EnvFilter::new("debug"),
        _ => EnvFilter::new("trace"),
    };
    let writer = match file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("cannot open the log file {}: {e}", path.display()))?;
            BoxMakeWriter::new(std::sync::Mutex::new(file))
        }
        // No colours either way: the `ansi` feature is not built in.
        None => BoxMakeWriter::new(std::io::stderr),
    };
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // The filter can be swapped while running (`serve` reloads `log.level` on SIGHUP).
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(false)
        .with_writer(writer);
    let fmt: Box<dyn tracing_subscriber::Layer<_> + Send + Sync> = match format {
        LogFormat::Text => Box::new(fmt),
        LogFormat::Json => Box::new(fmt.json()),
    };
    if tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .is_ok()
    {
        let _ = LOG_FILTER.set(LogFilter {
            handle,
            pinned: verbose > 0 || from_env,
        });
    }
    Ok(())
}

/// The running log filter, for `serve`'s reload on SIGHUP.
pub(crate) struct LogFilter {
    handle: tracing_subscriber::reload::Handle<
        tracing_subscriber::EnvFilter,
        tracing_subscriber::Registry,
    >,
    /// `-v` or `RUST_LOG` chose the filter: a configuration file does not override them.
    pinned: bool,
}

pub(crate) static LOG_FILTER: std::sync::OnceLock<LogFilter> = std::sync::OnceLock::new();

/// Sets the log filter to `directives` (a configuration's `log.level`) unless the command line
/// or `RUST_LOG` chose it. Returns whether it changed anything.
pub(crate) fn reload_log_level(directives: &str) -> anyhow::Result<bool> {
    let Some(filter) = LOG_FILTER.get() else {
        return Ok(false);
    };
    if filter.pinned {
        return Ok(false);
    }
    let new = tracing_subscriber::EnvFilter::try_new(directives)
        .map_err(|e| anyhow::anyhow!("log.level {directives:?}: {e}"))?;
    filter
        .handle
        .reload(new)
        .map_err(|e| anyhow::anyhow!("cannot change the log level: {e}"))?;
    Ok(true)
}

/// How log lines are written.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// One readable line per event (for people).
    #[default]
    Text,
    /// One JSON object per line (for machines).
    Json,
}

/// The error as one line, each cause once: a cause whose text its parent already quotes
/// (`cannot listen on X: Address in use`, caused by `Address in use`) is not repeated.
fn error_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Exit codes: 0 success, 1 any other failure, 2 usage (clap), 3 authentication failed,
/// 4 banned, 5 kicked.
fn exit_code(err: &anyhow::Error) -> u8 {
    use cypherwire::client::Error as E;
    match err.chain().find_map(|c| c.downcast_ref::<E>()) {
        Some(E::AuthenticationFailed) => 3,
        Some(E::Banned { .. }) => 4,
        Some(E::Kicked { .. }) => 5,
        _ => 1,
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the embedded demo: a server and clients in this process, nothing to install.
    Demo(commands::demo::Args),
    /// Print a fresh pre-shared key (and, with --identity, an identity key pair).
    Keygen(commands::keys::KeygenArgs),
    /// Read a password from standard input and print its verifier for password mode.
    HashPassword(commands::keys::HashPasswordArgs),
    /// Run the demo service (CYPHER_PROTOCOL's /SEQUENCE and /NUMBER, /ECHO, a chat action).
    Serve(commands::serve::ServeArgs),
    /// Send one request and print the answer's data as JSON.
    Request(commands::serve::RequestArgs),
    /// Stay connected and print pushes and actions as JSON lines (statuses on stderr) until
    /// interrupted, kicked or banned.
    Watch(commands::serve::WatchArgs),
    /// Loopback round-trip and throughput figures (an in-process server unless --connect).
    Bench(commands::bench::Args),
    /// A pyile-style console chat on the mesh: `chat host` or `chat join`.
    Chat(commands::chat::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve --config` may say how to log; the command line and RUST_LOG take precedence.
    let from_file = match &cli.command {
        Command::Serve(args) => args.log_settings(),
        _ => None,
    };
    let log_file = cli
        .log_file
        .clone()
        .or_else(|| from_file.as_ref().and_then(|l| l.file.clone()));
    let format = cli
        .log_format
        .or_else(|| from_file.as_ref().map(|l| l.format))
        .unwrap_or_default();
    let level = from_file.map(|l| l.level);
    if let Err(e) = init_logging(cli.verbose, log_file.as_deref(), level.as_deref(), format) {
        eprintln!("error: {}", error_line(&e));
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => commands::demo::run(&args).await,
            Command::Keygen(args) => commands::keys::keygen(&args),
            Command::HashPassword(args) => commands::keys::hash_password(&args),
            Command::Serve(args) => commands::serve::serve(&args).await,
            Command::Request(args) => commands::serve::request(&args).await,
            Command::Watch(args) => commands::serve::watch(&args).await,
            Command::Bench(args) => commands::bench::run(&args).await,
            Command::Chat(args) => commands::chat::run(&args).await,
        }
    });
    // A read of stdin may still block a thread of the runtime (a console that ended for
    // another reason, such as a kick): do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", error_line(&err));
            ExitCode::from(exit_code(&err))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The clauses of a line (`a: b: c`), each of which must appear once.
    fn repeated_clause(line: &str) -> Option<String> {
        let clauses: Vec<&str> = line.split(": ").map(str::trim).collect();
        clauses
            .iter()
            .enumerate()
            .find(|(i, c)| clauses[..*i].iter().any(|earlier| earlier.contains(**c)))
            .map(|(_, c)| (*c).to_owned())
    }

    fn io() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use")
    }

    /// Every variant of the errors a user of the CLI can meet, with sources where they have one.
    fn every_error() -> Vec<anyhow::Error> {
        use cypherwire::client::Error as C;
        use cypherwire::mesh::Error as M;
        use cypherwire::server::Error as S;
        use cypherwire::session::{Error as E, HandshakeFailure as H, Refusal};
        use cypherwire::wire::{CloseCode, StatusCode};
        let refusal = Refusal::new(CloseCode::OVERLOADED, Some(Duration::from_secs(1)));
        let mut all: Vec<anyhow::Error> = vec![
            C::Status {
                code: StatusCode::NOT_FOUND,
                message: "no route /X GET".into(),
            }
            .into(),
            C::DeadlineExceeded.into(),
            C::BufferFull {
                pending: 3,
                bytes: 9,
            }
            .into(),
            C::Closed.into(),
            C::GaveUp { attempts: 3 }.into(),
            C::AuthenticationFailed.into(),
            C::Banned { retry_after: None }.into(),
            C::Banned {
                retry_after: Some(Duration::from_secs(90)),
            }
            .into(),
            C::Kicked {
                reason: "kicked by the operator".into(),
            }
            .into(),
            C::MessageTooLarge { len: 9, max: 8 }.into(),
            C::Data(cypherwire::client::DataError::new(std::io::Error::other(
                "expected u64",
            )))
            .into(),
            C::Config("bad").into(),
            S::Bind {
                addr: "127.0.0.1:1".into(),
                source: io(),
            }
            .into(),
            S::Config("bad").into(),
            S::ShuttingDown.into(),
            S::LocalAddr(io()).into(),
            S::GroupNameTooLong {
                len: 2000,
                max: 1024,
            }
            .into(),
            M::Banned { remaining: None }.into(),
            M::Kicked {
                reason: "kicked by the operator".into(),
            }
            .into(),
            M::Authentication {
                reason: cypherwire::client::OfflineReason::AuthenticationFailed,
            }
            .into(),
            M::Receive("malformed".into()).into(),
            M::Left.into(),
            M::Config("bad").into(),
            E::Refused(refusal).into(),
            E::Io(io()).into(),
            E::MessageTooLarge { len: 9, max: 8 }.into(),
        ];
        for f in [
            H::BadMagic,
            H::UnsupportedVersion(2),
            H::NoCommonSuite,
            H::WeakKey,
        ] {
            all.push(E::Handshake(f).into());
        }
        for e in [
            E::AuthenticationFailed,
            E::Decrypt,
            E::Truncated,
            E::Banned,
            E::HandshakeTimeout,
            E::Closed,
            E::InvalidToken,
            E::Random,
        ] {
            all.push(e.into());
        }
        // The reasons a client reports offline, as the CLI prints them.
        use cypherwire::client::OfflineReason as O;
        for r in [
            O::ConnectionLost("reset".into()),
            O::Unreachable("Connection refused (os error 111)".into()),
            O::TimedOut,
            O::AuthenticationFailed,
            O::Banned { retry_after: None },
            O::Refused(refusal),
            O::HandshakeFailed("no common cipher suite".into()),
            O::ServerClosed {
                code: CloseCode::GOING_AWAY,
                reason: "server shutting down".into(),
            },
        ] {
            all.push(anyhow::anyhow!("cannot reach the server ({r})"));
        }
        // Context over a source that already says it.
        all.push(
            anyhow::Error::new(io())
                .context("cannot listen on 127.0.0.1:1: Address already in use"),
        );
        all
    }

    #[test]
    fn the_check_sees_what_a_plain_chain_repeats() {
        let err = anyhow::Error::new(cypherwire::server::Error::Bind {
            addr: "127.0.0.1:1".into(),
            source: io(),
        });
        assert_eq!(
            repeated_clause(&format!("{err:#}")).as_deref(),
            Some("Address already in use")
        );
        assert_eq!(
            error_line(&err),
            "cannot listen on 127.0.0.1:1: Address already in use"
        );
    }

    #[test]
    fn no_error_line_says_a_clause_twice() {
        for err in every_error() {
            let line = error_line(&err);
            assert!(!line.is_empty());
            assert_eq!(repeated_clause(&line), None, "{line}");
        }
    }

    #[test]
    fn rejections_have_their_own_exit_codes() {
        use cypherwire::client::Error as C;
        let code = |e: C| exit_code(&anyhow::Error::new(e).context("while asking"));
        assert_eq!(code(C::AuthenticationFailed), 3);
        assert_eq!(code(C::Banned { retry_after: None }), 4);
        assert_eq!(
            code(C::Kicked {
                reason: String::new()
            }),
            5
        );
        assert_eq!(code(C::Closed), 1);
    }
}
