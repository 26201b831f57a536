//! The credentials of every mode, read from files: the server's (`serve`) and the clients'
//! (`request`, `watch`, `bench --connect`). Secrets come from files only, never the command
//! line, where other users of the machine could read them.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use cypherwire::session::{
    ClientAuth, IdentityKey, Password, PasswordVerifier, PeerTrust, PublicKey, ServerAuth,
};

use super::config;
use super::keys::read_psk;

/// The server's credentials on the command line (they replace the configuration file's
/// `[auth]` when any is given).
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct ServerAuthArgs {
    /// PSK mode: file holding the pre-shared key (or a passphrase of 16+ characters).
    #[arg(long)]
    psk_file: Option<PathBuf>,
    /// Password mode: file holding the verifier `cypherwire hash-password` printed.
    #[arg(long)]
    password_verifier_file: Option<PathBuf>,
    /// Identity mode: file holding this server's private key (`keygen --identity`).
    #[arg(long, requires = "allow_keys_file")]
    identity_key_file: Option<PathBuf>,
    /// Identity mode: file with the client public keys admitted, one per line.
    #[arg(long, requires = "identity_key_file")]
    allow_keys_file: Option<PathBuf>,
}

impl ServerAuthArgs {
    /// The configuration's `[auth]` with these flags applied.
    pub(crate) fn apply(&self, auth: &mut config::Auth) {
        if self.psk_file.is_some()
            || self.password_verifier_file.is_some()
            || self.identity_key_file.is_some()
        {
            *auth = config::Auth {
                psk_file: self.psk_file.clone(),
                password_verifier_file: self.password_verifier_file.clone(),
                identity_key_file: self.identity_key_file.clone(),
                allow_keys_file: self.allow_keys_file.clone(),
            };
        }
    }
}

/// Reads the server's credentials (`auth` has been checked: exactly one mode).
pub(crate) fn server_auth(auth: &config::Auth) -> anyhow::Result<ServerAuth> {
    if let Some(path) = &auth.psk_file {
        return Ok(ServerAuth::Psk(read_psk(path)?));
    }
    if let Some(path) = &auth.password_verifier_file {
        let text = read_secret(path)?;
        let verifier = PasswordVerifier::parse(text.trim()).with_context(|| {
            format!(
                "{} does not hold a verifier from `cypherwire hash-password`",
                path.display()
            )
        })?;
        return Ok(ServerAuth::Password(verifier));
    }
    match (&auth.identity_key_file, &auth.allow_keys_file) {
        (Some(key), Some(allowed)) => Ok(ServerAuth::Identity(
            read_identity(key)?,
            PeerTrust::AllowList(read_public_keys(allowed)?),
        )),
        _ => anyhow::bail!(
            "no server credentials (auth.psk_file, auth.password_verifier_file or auth.identity_key_file)"
        ),
    }
}

/// A client's credentials on the command line: one mode (checked when they are read, so that
/// `bench` can do without them).
#[derive(Debug, Clone, clap::Args)]
#[group(skip)]
pub(crate) struct ClientAuthArgs {
    /// PSK mode: file holding the pre-shared key (or a passphrase of 16+ characters).
    #[arg(long, conflicts_with_all = ["password_file", "identity_key_file"])]
    psk_file: Option<PathBuf>,
    /// Password mode: file holding the password (one line).
    #[arg(long, conflicts_with = "identity_key_file")]
    password_file: Option<PathBuf>,
    /// Identity mode: file holding this client's private key; needs --server-key-file.
    #[arg(long, requires = "server_key_file")]
    identity_key_file: Option<PathBuf>,
    /// Identity mode: file holding the server's public key (`idpk:...`).
    #[arg(long, requires = "identity_key_file")]
    server_key_file: Option<PathBuf>,
}

impl ClientAuthArgs {
    /// Reads the credentials.
    pub(crate) fn client_auth(&self) -> anyhow::Result<ClientAuth> {
        if let Some(path) = &self.psk_file {
            return Ok(ClientAuth::Psk(read_psk(path)?));
        }
        if let Some(path) = &self.password_file {
            let text = read_secret(path)?;
            let password = text.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!password.is_empty(), "{} is empty", path.display());
            return Ok(ClientAuth::Password(Password::new(password)));
        }
        match (&self.identity_key_file, &self.server_key_file) {
            (Some(key), Some(server)) => Ok(ClientAuth::Identity(
                read_identity(key)?,
                PeerTrust::AllowList(read_public_keys(server)?),
            )),
            _ => anyhow::bail!("give --psk-file, --password-file or --identity-key-file"),
        }
    }
}

fn read_secret(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn read_identity(path: &Path) -> anyhow::Result<IdentityKey> {
    let text = read_secret(path)?;
    // A file written by `keygen --identity` has the PSK, the private and the public key;
    // the private key is the line starting with idsk:.
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("idsk:"))
        .with_context(|| format!("{} holds no private key (idsk:...)", path.display()))?;
    IdentityKey::parse(line).with_context(|| format!("{}: not a valid private key", path.display()))
}

fn read_public_keys(path: &Path) -> anyhow::Result<Vec<PublicKey>> {
    let text = read_secret(path)?;
    let keys = text
        .lines()
        .enumerate()
        .map(|(n, l)| (n, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(n, l)| {
            PublicKey::parse(l).with_context(|| {
                format!(
                    "{} line {}: not a public key (idpk:...)",
                    path.display(),
                    n + 1
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!keys.is_empty(), "{} lists no keys", path.display());
    Ok(keys)
}
