//! The ban policy flags of `serve` and `chat host`, and how bans are shown.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use cypherwire::session::BanPolicy;
pub(crate) use cypherwire::session::human_duration as human;

/// How failed handshakes are counted and banned.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BanArgs {
    /// Failed handshakes (wrong key or password) per address within --ban-window before a ban.
    #[arg(long, default_value_t = 5)]
    pub(crate) ban_attempts: u32,
    /// Seconds failures are remembered.
    #[arg(long, default_value_t = 900)]
    pub(crate) ban_window: u64,
    /// Seconds the first ban of an address lasts; each further one lasts twice as long.
    #[arg(long, default_value_t = 60)]
    pub(crate) ban_length: u64,
    /// Longest ban in seconds, however often an address is banned.
    #[arg(long, default_value_t = 86_400)]
    pub(crate) ban_max: u64,
    /// Addresses never counted nor banned, as ADDRESS or ADDRESS/PREFIX (repeatable), e.g.
    /// `--ban-exempt 127.0.0.0/8` while developing on one machine.
    #[arg(long, value_parser = parse_network)]
    pub(crate) ban_exempt: Vec<Network>,
}

impl BanArgs {
    /// The policy these flags describe.
    pub(crate) fn policy(&self) -> anyhow::Result<BanPolicy> {
        anyhow::ensure!(self.ban_attempts > 0, "--ban-attempts must be positive");
        anyhow::ensure!(
            self.ban_window > 0 && self.ban_length > 0,
            "--ban-window and --ban-length must be positive"
        );
        anyhow::ensure!(
            self.ban_max >= self.ban_length,
            "--ban-max must be at least --ban-length"
        );
        let mut p = BanPolicy::default();
        p.max_attempts = self.ban_attempts;
        p.window = Duration::from_secs(self.ban_window);
        p.ban = Duration::from_secs(self.ban_length);
        p.max_ban = Duration::from_secs(self.ban_max);
        Ok(p)
    }

    /// Whether `ip` is exempt, or `None` if no exemption was given.
    pub(crate) fn exempt(&self) -> Option<impl Fn(IpAddr) -> bool + Send + Sync + 'static> {
        let nets = self.ban_exempt.clone();
        if nets.is_empty() {
            return None;
        }
        Some(move |ip: IpAddr| nets.iter().any(|n| n.contains(ip)))
    }
}

/// An address range: an address and how many of its leading bits count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Network {
    addr: IpAddr,
    prefix: u8,
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

fn parse_network(text: &str) -> Result<Network, String> {
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
