//! The `cypherwire` command.
//!
//! Thin by design: parse arguments, run a command, turn errors into one clear line and a
//! non-zero exit code.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Secure messaging over TCP: tools and demos for cypherwire.
#[derive(Debug, Parser)]
#[command(name = "cypherwire", version, about, long_about = None)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace). `RUST_LOG` set to a level
    /// name (error, warn, info, debug, trace) does the same.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

/// Logs to stderr at the level from `-v` or `RUST_LOG` (warnings by default).
fn init_logging(verbose: u8) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.trim().parse::<tracing::Level>().ok());
    let level = match verbose {
        0 => from_env.unwrap_or(tracing::Level::WARN),
        1 => tracing::Level::INFO,
        2 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .try_init();
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
    /// Loopback round-trip and throughput figures (an in-process server unless --connect).
    Bench(commands::bench::Args),
    /// A pyile-style console chat on the mesh: `chat host` or `chat join`.
    Chat(commands::chat::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
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
            Command::Bench(args) => commands::bench::run(&args).await,
            Command::Chat(args) => commands::chat::run(&args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
