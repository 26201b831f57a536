//! `serve --config FILE`: the configuration file, its defaults, its checks, and how flags
//! override it. Every key is documented with its default in `docs/configuration.md`; the test
//! `the_documented_example_is_the_defaults` keeps the two in step.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

pub(crate) use super::bans::Bans;

/// The whole file. Every table and key is optional; unknown keys are an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    /// Address to listen on.
    pub(crate) listen: String,
    /// The admin prompt on stdin.
    pub(crate) console: bool,
    pub(crate) auth: Auth,
    pub(crate) limits: Limits,
    pub(crate) bans: Bans,
    pub(crate) compat: Compat,
    pub(crate) cluster: Cluster,
    pub(crate) log: Log,
    pub(crate) metrics: Metrics,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:12345".into(),
            console: false,
            auth: Auth::default(),
            limits: Limits::default(),
            bans: Bans::default(),
            compat: Compat::default(),
            cluster: Cluster::default(),
            log: Log::default(),
            metrics: Metrics::default(),
        }
    }
}

/// `[auth]`: exactly one mode, chosen by which file is given.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Auth {
    /// PSK mode: the key (or a passphrase of 16+ characters).
    pub(crate) psk_file: Option<PathBuf>,
    /// Password mode: the verifier `cypherwire hash-password` printed.
    pub(crate) password_verifier_file: Option<PathBuf>,
    /// Identity mode: this server's private key (`idsk:`) ...
    pub(crate) identity_key_file: Option<PathBuf>,
    /// ... and the client keys it admits (`idpk:`, one per line).
    pub(crate) allow_keys_file: Option<PathBuf>,
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Limits {
    pub(crate) max_frame_len: usize,
    pub(crate) max_message_len: usize,
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_ip: usize,
    pub(crate) max_handshakes: usize,
    pub(crate) handshakes_per_second_per_ip: f64,
    pub(crate) handshake_burst_per_ip: f64,
    pub(crate) idle_timeout_secs: u64,
    pub(crate) shutdown_grace_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        let server = cypherwire::server::ServerLimits::default();
        let session = cypherwire::session::SessionConfig::default();
        Self {
            max_frame_len: session.limits().max_frame_len(),
            max_message_len: session.max_message_len(),
            max_connections: server.max_connections,
            max_connections_per_ip: server.max_connections_per_ip,
            max_handshakes: server.max_handshakes,
            handshakes_per_second_per_ip: server.handshake_rate_per_ip.per_second,
            handshake_burst_per_ip: server.handshake_rate_per_ip.burst,
            idle_timeout_secs: server.idle_timeout.as_secs(),
            shutdown_grace_secs: server.shutdown_grace.as_secs(),
        }
    }
}

/// `[compat]`: the legacy CYPHER_PROTOCOL listener, off unless `listen` is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Compat {
    pub(crate) listen: Option<String>,
    /// Secret: shown redacted.
    pub(crate) key: Option<String>,
    /// Secret: shown redacted.
    pub(crate) client_key: Option<String>,
}

/// `[cluster]`: off unless `redis` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Cluster {
    /// May carry a password (`redis://:PASSWORD@host`): shown redacted.
    pub(crate) redis: Option<String>,
    pub(crate) key_file: Option<PathBuf>,
    pub(crate) prefix: String,
}

impl Default for Cluster {
    fn default() -> Self {
        Self {
            redis: None,
            key_file: None,
            prefix: "cw:".into(),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Log {
    /// Tracing directives, as `RUST_LOG` takes them.
    pub(crate) level: String,
    /// Log lines go to this file (appended) instead of stderr.
    pub(crate) file: Option<PathBuf>,
    /// `text` for people, `json` for machines.
    pub(crate) format: crate::LogFormat,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            level: "warn".into(),
            file: None,
            format: crate::LogFormat::Text,
        }
    }
}

/// `[metrics]`: the HTTP endpoint for Prometheus and health checks, off unless `listen` is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Metrics {
    pub(crate) listen: Option<String>,
    /// Seconds `/readyz` answers 503 before a graceful shutdown begins.
    pub(crate) ready_drain_secs: u64,
}

impl Auth {
    /// The mode these credentials select, as a metrics label.
    pub(crate) fn mode(&self) -> &'static str {
        if self.password_verifier_file.is_some() {
            "password"
        } else if self.identity_key_file.is_some() {
            "identity"
        } else {
            "psk"
        }
    }
}

const REDACTED: &str = "<redacted>";

impl Config {
    /// Reads and checks `path`.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses the text of a configuration file (without checking it).
    pub(crate) fn parse(text: &str) -> anyhow::Result<Self> {
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))
    }

    /// Checks what the types do not: ranges and the combinations of keys. Each error names the
    /// key.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        let a = &self.auth;
        let modes = [
            a.psk_file.is_some(),
            a.password_verifier_file.is_some(),
            a.identity_key_file.is_some(),
        ];
        anyhow::ensure!(
            modes.iter().filter(|m| **m).count() == 1,
            "auth: give exactly one of auth.psk_file, auth.password_verifier_file, \
             auth.identity_key_file (or --psk-file, --password-verifier-file, --identity-key-file)"
        );
        anyhow::ensure!(
            a.identity_key_file.is_some() == a.allow_keys_file.is_some(),
            "auth.allow_keys_file goes with auth.identity_key_file (identity mode needs both)"
        );
        let l = &self.limits;
        for (key, value) in [
            ("limits.max_connections", l.max_connections),
            ("limits.max_connections_per_ip", l.max_connections_per_ip),
            ("limits.max_handshakes", l.max_handshakes),
        ] {
            anyhow::ensure!(value > 0, "{key} must be at least 1");
        }
        anyhow::ensure!(
            l.handshakes_per_second_per_ip > 0.0 && l.handshake_burst_per_ip >= 1.0,
            "limits.handshakes_per_second_per_ip must be positive and \
             limits.handshake_burst_per_ip at least 1"
        );
        anyhow::ensure!(
            l.idle_timeout_secs > 0,
            "limits.idle_timeout_secs must be at least 1"
        );
        cypherwire::wire::Limits::default()
            .with_max_frame_len(l.max_frame_len)
            .context("limits.max_frame_len")?;
        anyhow::ensure!(
            l.max_message_len >= l.max_frame_len,
            "limits.max_message_len must be at least limits.max_frame_len"
        );
        // The ban settings are checked where they become a policy (the flags share them).
        super::bans::policy(&self.bans)?;
        super::bans::Lists::from_config(&self.bans)?;
        anyhow::ensure!(
            self.compat.listen.is_none() || self.compat.key.is_some(),
            "compat.listen needs compat.key"
        );
        anyhow::ensure!(
            self.cluster.redis.is_none() || self.cluster.key_file.is_some(),
            "cluster.redis needs cluster.key_file"
        );
        Ok(())
    }

    /// The configuration as TOML with its secrets replaced by `<redacted>` (`--print-config`).
    pub(crate) fn redacted_toml(&self) -> anyhow::Result<String> {
        let mut shown = self.clone();
        for secret in [&mut shown.compat.key, &mut shown.compat.client_key] {
            if secret.is_some() {
                *secret = Some(REDACTED.into());
            }
        }
        if let Some(url) = &mut shown.cluster.redis {
            *url = redact_url(url);
        }
        toml::to_string(&shown).context("cannot show the configuration")
    }

    /// The server limits this file describes.
    pub(crate) fn server_limits(&self) -> cypherwire::server::ServerLimits {
        let l = &self.limits;
        let mut s = cypherwire::server::ServerLimits::default();
        s.max_connections = l.max_connections;
        s.max_connections_per_ip = l.max_connections_per_ip;
        s.max_handshakes = l.max_handshakes;
        s.handshake_rate_per_ip = cypherwire::server::RateLimit::new(
            l.handshakes_per_second_per_ip,
            l.handshake_burst_per_ip,
        );
        s.idle_timeout = Duration::from_secs(l.idle_timeout_secs);
        s.shutdown_grace = Duration::from_secs(l.shutdown_grace_secs);
        s
    }

    /// The session settings this file describes.
    pub(crate) fn session_config(&self) -> anyhow::Result<cypherwire::session::SessionConfig> {
        let limits = cypherwire::wire::Limits::default()
            .with_max_frame_len(self.limits.max_frame_len)
            .context("limits.max_frame_len")?;
        cypherwire::session::SessionConfig::builder()
            .limits(limits)
            .max_message_len(self.limits.max_message_len)
            .build()
            .context("limits.max_message_len")
    }
}

/// A Redis URL with its password (and user) replaced: `redis://<redacted>@host:6379`.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}{REDACTED}{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example in docs/configuration.md, between its markers.
    fn documented_example() -> String {
        let doc = include_str!("../../../../docs/configuration.md");
        let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let end = start + doc[start..].find("```").expect("its end");
        doc[start..end].to_owned()
    }

    #[test]
    fn the_documented_example_is_the_defaults() {
        let parsed = Config::parse(&documented_example()).unwrap();
        assert_eq!(parsed, Config::default());
        // And every key of the defaults appears in the example (nothing undocumented).
        let shown = toml::to_string(&Config::default()).unwrap();
        let example = documented_example();
        for line in shown.lines().filter(|l| l.contains(" = ")) {
            let key = line.split(" = ").next().unwrap();
            assert!(
                example
                    .lines()
                    .any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} = "))),
                "{key} is not in docs/configuration.md"
            );
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = Config::parse("[limits]\nmax_conections = 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_conections"), "{err}");
        let err = Config::parse("[limits]\nmax_connections = \"many\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_connections"), "{err}");
        let err = Config::parse("listen = 5\n").unwrap_err().to_string();
        assert!(err.contains("listen"), "{err}");
        let err = Config::parse("[bans]\nattempts = -1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("attempts"), "{err}");
    }

    /// Every key of the file, as `(table, key)`: those of the defaults and the optional ones.
    fn every_key() -> Vec<(String, String)> {
        let mut keys = Vec::new();
        let mut table = String::new();
        // The example documents every key, the optional ones as comments.
        for line in documented_example().lines() {
            let line = line.trim_start_matches("# ");
            if let Some(t) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                t.clone_into(&mut table);
            } else if let Some((key, _)) = line.split_once(" = ")
                && !key.contains(' ')
            {
                keys.push((table.clone(), key.to_owned()));
            }
        }
        keys
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_key_for_every_key() {
        let keys = every_key();
        assert!(keys.len() >= 30, "{keys:?}");
        for (table, key) in keys {
            // A table where a string, a number, a boolean or a list belongs.
            let text = if table.is_empty() {
                format!("{key} = {{ wrong = 1 }}\n")
            } else {
                format!("[{table}]\n{key} = {{ wrong = 1 }}\n")
            };
            let err = Config::parse(&text).expect_err(&text).to_string();
            assert!(err.contains(&key), "{table}.{key}: {err}");
        }
    }

    #[test]
    fn checks_name_the_key_at_fault() {
        let with_psk =
            |extra: &str| Config::parse(&format!("[auth]\npsk_file = \"k\"\n{extra}")).unwrap();
        assert!(with_psk("").check().is_ok());
        let cases = [
            ("[limits]\nmax_connections = 0\n", "limits.max_connections"),
            ("[limits]\nmax_frame_len = 1\n", "limits.max_frame_len"),
            ("[limits]\nmax_message_len = 10\n", "limits.max_message_len"),
            (
                "[limits]\nidle_timeout_secs = 0\n",
                "limits.idle_timeout_secs",
            ),
            (
                "[limits]\nhandshake_burst_per_ip = 0.5\n",
                "limits.handshake_burst_per_ip",
            ),
            ("[bans]\nattempts = 0\n", "bans.attempts"),
            ("[bans]\nmax_ban_secs = 1\n", "bans.max_ban_secs"),
            ("[bans]\nexempt = [\"10.0.0.0/40\"]\n", "bans.exempt"),
            ("[bans]\ndeny = [\"nonsense\"]\n", "bans.deny"),
            ("[compat]\nlisten = \"127.0.0.1:0\"\n", "compat.key"),
            (
                "[cluster]\nredis = \"redis://127.0.0.1\"\n",
                "cluster.key_file",
            ),
        ];
        for (text, key) in cases {
            let err = format!("{:#}", with_psk(text).check().unwrap_err());
            assert!(err.contains(key), "{text}: {err}");
        }
        let none = Config::default().check().unwrap_err().to_string();
        assert!(none.contains("auth.psk_file"), "{none}");
        let two = Config::parse("[auth]\npsk_file = \"a\"\npassword_verifier_file = \"b\"\n")
            .unwrap()
            .check()
            .unwrap_err()
            .to_string();
        assert!(two.contains("exactly one"), "{two}");
        let half = Config::parse("[auth]\nidentity_key_file = \"a\"\n")
            .unwrap()
            .check()
            .unwrap_err();
        assert!(half.to_string().contains("auth.allow_keys_file"), "{half}");
    }

    #[test]
    fn secrets_are_redacted_when_shown() {
        let config = Config::parse(
            "[auth]\npsk_file = \"k\"\n[compat]\nlisten = \"127.0.0.1:0\"\n\
             key = \"0123456789abcdef0123456789abcdef\"\n\
             [cluster]\nredis = \"redis://user:hunter2@10.0.0.5:6379\"\nkey_file = \"c\"\n",
        )
        .unwrap();
        let shown = config.redacted_toml().unwrap();
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("redis://<redacted>@10.0.0.5:6379"),
            "{shown}"
        );
        // What is shown reads back as the same configuration, secrets aside.
        let back = Config::parse(&shown).unwrap();
        assert_eq!(back.limits, config.limits);
        assert_eq!(back.auth, config.auth);
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
