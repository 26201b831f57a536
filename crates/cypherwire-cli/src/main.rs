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
    #[command(subcommand)]
    command: Command,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
