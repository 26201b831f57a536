//! `keygen` and `hash-password`, and reading key files.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::Context as _;
use cypherwire::session::{Argon2Cost, IdentityKey, PasswordVerifier, Psk};

/// Arguments of `cypherwire keygen`.
#[derive(Debug, clap::Args)]
pub(crate) struct KeygenArgs {
    /// Also print a static identity key pair (for identity mode).
    #[arg(long)]
    identity: bool,
    /// Print a fresh cluster key instead (for `serve --cluster-key-file`).
    #[arg(long, conflicts_with = "identity")]
    cluster: bool,
}

pub(crate) fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    if args.cluster {
        println!("{}", cypherwire::cluster::ClusterKey::generate()?.to_hex());
        return Ok(());
    }
    println!("{}", Psk::generate()?.to_text());
    if args.identity {
        let id = IdentityKey::generate()?;
        println!("{}", id.to_text().as_str());
        println!("{}", id.public().to_text());
    }
    Ok(())
}

/// Arguments of `cypherwire hash-password`.
#[derive(Debug, clap::Args)]
pub(crate) struct HashPasswordArgs {
    /// argon2id memory in KiB.
    #[arg(long, default_value_t = 19_456)]
    memory_kib: u32,
    /// argon2id passes.
    #[arg(long, default_value_t = 2)]
    passes: u32,
}

/// Reads the password from standard input (one line), prompting when it is a terminal: never
/// from the command line, where other users could see it.
pub(crate) fn hash_password(args: &HashPasswordArgs) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password: ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(!password.is_empty(), "empty password");
    let cost = Argon2Cost::new(args.memory_kib, args.passes, 1);
    let verifier = PasswordVerifier::create(password, cost)?;
    println!("{}", verifier.to_phc().as_str());
    Ok(())
}

/// Reads a PSK file: a key in one of its text forms, or a passphrase of at least 16 characters
/// (such as CYPHER_PROTOCOL's 32-character key strings).
pub(crate) fn read_psk(path: &Path) -> anyhow::Result<Psk> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = text.trim();
    Psk::parse(text)
        .or_else(|_| Psk::from_passphrase(text))
        .with_context(|| {
            format!(
                "{} holds neither a key nor a passphrase of 16+ characters",
                path.display()
            )
        })
}
