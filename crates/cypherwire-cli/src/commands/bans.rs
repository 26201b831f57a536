//! The ban policy flags of `serve` and `chat host`, and how bans are shown.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use cypherwire::session::BanPolicy;

pub(crate) use cypherwire::session::human_duration as human;
use serde::{Deserialize, Serialize};

/// `[bans]`: the attempt limit and ban lengths (the same as the `--ban-*` flags).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Bans {
    pub(crate) attempts: u32,
    pub(crate) window_secs: u64,
    pub(crate) first_ban_secs: u64,
    pub(crate) max_ban_secs: u64,
    /// Addresses or ADDRESS/PREFIX ranges never counted nor banned.
    pub(crate) exempt: Vec<String>,
    /// Addresses or ranges always refused, told they are banned (reloaded on SIGHUP).
    pub(crate) deny: Vec<String>,
}

impl Default for Bans {
    fn default() -> Self {
        Self {
            attempts: 5,
            window_secs: 900,
            first_ban_secs: 60,
            max_ban_secs: 86_400,
            exempt: Vec::new(),
            deny: Vec::new(),
        }
    }
}

/// How failed handshakes are counted and banned.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BanArgs {
    /// Failed handshakes (wrong key or password) per address within --ban-window before a ban
    /// [default: 5].
    #[arg(long)]
    pub(crate) ban_attempts: Option<u32>,
    /// Seconds failures are remembered [default: 900].
    #[arg(long)]
    pub(crate) ban_window: Option<u64>,
    /// Seconds the first ban of an address lasts; each further one lasts twice as long
    /// [default: 60].
    #[arg(long)]
    pub(crate) ban_length: Option<u64>,
    /// Longest ban in seconds, however often an address is banned [default: 86400].
    #[arg(long)]
    pub(crate) ban_max: Option<u64>,
    /// Addresses never counted nor banned, as ADDRESS or ADDRESS/PREFIX (repeatable), e.g.
    /// `--ban-exempt 127.0.0.0/8` while developing on one machine.
    #[arg(long, value_parser = parse_network)]
    pub(crate) ban_exempt: Vec<Network>,
}

impl BanArgs {
    /// The ban settings `base` (a configuration file's, or the defaults) with these flags
    /// applied.
    pub(crate) fn apply(&self, base: &mut Bans) {
        if let Some(n) = self.ban_attempts {
            base.attempts = n;
        }
        if let Some(s) = self.ban_window {
            base.window_secs = s;
        }
        if let Some(s) = self.ban_length {
            base.first_ban_secs = s;
        }
        if let Some(s) = self.ban_max {
            base.max_ban_secs = s;
        }
        if !self.ban_exempt.is_empty() {
            base.exempt = self.ban_exempt.iter().map(Network::to_string).collect();
        }
    }

    /// The settings of these flags alone (over the defaults), for commands without a file.
    pub(crate) fn settings(&self) -> Bans {
        let mut bans = Bans::default();
        self.apply(&mut bans);
        bans
    }
}

/// The policy `bans` describes.
pub(crate) fn policy(bans: &Bans) -> anyhow::Result<BanPolicy> {
    anyhow::ensure!(
        bans.attempts > 0,
        "--ban-attempts (bans.attempts) must be positive"
    );
    anyhow::ensure!(
        bans.window_secs > 0 && bans.first_ban_secs > 0,
        "--ban-window and --ban-length (bans.window_secs, bans.first_ban_secs) must be positive"
    );
    anyhow::ensure!(
        bans.max_ban_secs >= bans.first_ban_secs,
        "--ban-max (bans.max_ban_secs) must be at least --ban-length (bans.first_ban_secs)"
    );
    let mut p = BanPolicy::default();
    p.max_attempts = bans.attempts;
    p.window = Duration::from_secs(bans.window_secs);
    p.ban = Duration::from_secs(bans.first_ban_secs);
    p.max_ban = Duration::from_secs(bans.max_ban_secs);
    Ok(p)
}

/// Whether an address is exempt from `bans.exempt`, or `None` if nothing is exempt.
pub(crate) fn exempt(
    bans: &Bans,
) -> anyhow::Result<Option<impl Fn(IpAddr) -> bool + Send + Sync + 'static>> {
    let nets = bans
        .exempt
        .iter()
        .map(|n| parse_network(n).map_err(|e| anyhow::anyhow!("bans.exempt: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if nets.is_empty() {
        return Ok(None);
    }
    Ok(Some(move |ip: IpAddr| nets.iter().any(|n| n.contains(ip))))
}

/// The address lists `serve` applies and reloads on SIGHUP: ranges never counted nor banned,
/// and ranges always refused (told `BANNED`).
#[derive(Debug, Default)]
pub(crate) struct Lists {
    exempt: Vec<Network>,
    deny: Vec<Network>,
}

impl Lists {
    /// The lists of `bans.exempt` and `bans.deny`.
    pub(crate) fn from_config(bans: &Bans) -> anyhow::Result<Self> {
        let parse = |key: &str, list: &[String]| {
            list.iter()
                .map(|n| parse_network(n).map_err(|e| anyhow::anyhow!("bans.{key}: {e}")))
                .collect::<anyhow::Result<Vec<_>>>()
        };
        Ok(Self {
            exempt: parse("exempt", &bans.exempt)?,
            deny: parse("deny", &bans.deny)?,
        })
    }

    pub(crate) fn is_exempt(&self, ip: IpAddr) -> bool {
        self.exempt.iter().any(|n| n.contains(ip))
    }

    pub(crate) fn is_denied(&self, ip: IpAddr) -> bool {
        self.deny.iter().any(|n| n.contains(ip))
    }
}

/// An address range: an address and how many of its leading bits count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Network {
    fn contains(&self, ip: IpAddr) -> bool {
        fn masked(bits: u128, width: u32, prefix: u8) -> u128 {
            let keep = u32::from(prefix).min(width);
            if keep == 0 { 0 } else { bits >> (width - keep) }
        }
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), 32, self.prefix)
                    == masked(u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(net.into(), 128, self.prefix) == masked(ip.into(), 128, self.prefix)
            }
            _ => false,
        }
    }
}

pub(crate) fn parse_network(text: &str) -> Result<Network, String> {
    let bad = || format!("not an address or ADDRESS/PREFIX: {text:?}");
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
        None => (text, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let width = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = prefix.unwrap_or(width);
    if prefix > width {
        return Err(bad());
    }
    Ok(Network { addr, prefix })
}

/// A ban's end for people: `until 14:03:22 UTC (in 9 min 12 s)`.
pub(crate) fn until_text(until: SystemTime) -> String {
    let left = until.duration_since(now()).unwrap_or_default();
    let secs = until
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let day = secs % 86_400;
    format!(
        "until {:02}:{:02}:{:02} UTC (in {})",
        day / 3600,
        (day % 3600) / 60,
        day % 60,
        human(left)
    )
}

#[expect(
    clippy::disallowed_methods,
    reason = "ban ends are shown on the wall clock"
)]
pub(crate) fn now() -> SystemTime {
    SystemTime::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_match_their_addresses_only() {
        let lo = parse_network("127.0.0.0/8").unwrap();
        assert!(lo.contains("127.9.9.9".parse().unwrap()));
        assert!(lo.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!lo.contains("128.0.0.1".parse().unwrap()));
        let one = parse_network("10.0.0.7").unwrap();
        assert!(one.contains("10.0.0.7".parse().unwrap()));
        assert!(!one.contains("10.0.0.8".parse().unwrap()));
        let v6 = parse_network("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!(
            parse_network("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(parse_network("10.0.0.0/33").is_err());
        assert!(parse_network("nonsense").is_err());
    }

    #[test]
    fn a_ban_end_reads_as_a_clock_time_and_a_wait() {
        let until = SystemTime::UNIX_EPOCH + Duration::from_secs(86_400 * 3 + 3600 * 14 + 62);
        assert!(until_text(until).starts_with("until 14:01:02 UTC (in "));
    }
}
