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
    /// Run the embedded demo: needs nothing installed, prints a short summary.
    Demo(commands::demo::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => commands::demo::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
