//! Bans that survive a restart: a small text file, rewritten atomically on every change.
//!
//! ```text
//! # cypherwire mesh bans v1
//! ip 192.0.2.7 1795000000
//! peer 0123456789abcdef 1795003600
//! ```
//!
//! One ban per line: what (`ip ADDRESS` or `peer ID`) and until when (Unix seconds). Lines
//! starting with `#` and blank lines are ignored. Expired bans are dropped when the file is
//! next written.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::Error;
use crate::peer_list::PeerId;

/// Largest ban file read (4 MiB): a corrupt or hostile file cannot exhaust memory.
pub const MAX_BAN_FILE_LEN: u64 = 4 * 1024 * 1024;

/// What a ban applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BanTarget {
    /// Every connection from this address (refused before any handshake work).
    Addr(IpAddr),
    /// This member's key (refused when it asks to join).
    Peer(PeerId),
}

/// One ban and when it ends (wall clock, so it survives restarts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanEntry {
    /// What is banned.
    pub target: BanTarget,
    /// When the ban ends.
    pub until: SystemTime,
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Renders bans in the file format.
pub fn render(bans: &[BanEntry]) -> String {
    let mut out = String::from("# cypherwire mesh bans v1\n");
    for b in bans {
        let until = unix_secs(b.until);
        let _ = match b.target {
            BanTarget::Addr(ip) => writeln!(out, "ip {ip} {until}"),
            BanTarget::Peer(id) => writeln!(out, "peer {id} {until}"),
        };
    }
    out
}

/// Parses the file format.
///
/// # Errors
/// [`Error::BanFile`] naming the first bad line.
pub fn parse(text: &str) -> Result<Vec<BanEntry>, Error> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || {
            Error::BanFile(format!(
                "line {}: expected `ip|peer WHAT UNIX_SECONDS`",
                n + 1
            ))
        };
        let mut parts = line.split_ascii_whitespace();
        let (Some(kind), Some(what), Some(until), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let target = match kind {
            "ip" => BanTarget::Addr(what.parse().map_err(|_| bad())?),
            "peer" => BanTarget::Peer(PeerId::parse(what).map_err(|_| bad())?),
            _ => return Err(bad()),
        };
        let secs: u64 = until.parse().map_err(|_| bad())?;
        let until = UNIX_EPOCH
            .checked_add(Duration::from_secs(secs))
            .ok_or_else(bad)?;
        out.push(BanEntry { target, until });
    }
    Ok(out)
}

/// Reads a ban file; a missing file is no bans.
///
/// # Errors
/// [`Error::BanFile`] if it cannot be read, exceeds [`MAX_BAN_FILE_LEN`], or does not parse.
pub fn load(path: &Path) -> Result<Vec<BanEntry>, Error> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::BanFile(format!("{}: {e}", path.display()))),
        Ok(m) if m.len() > MAX_BAN_FILE_LEN => {
            return Err(Error::BanFile(format!(
                "{}: larger than {MAX_BAN_FILE_LEN} bytes",
                path.display()
            )));
        }
        Ok(_) => {}
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::BanFile(format!("{}: {e}", path.display())))?;
    parse(&text)
}

/// Writes a ban file atomically (a temporary file renamed over the old one).
///
/// # Errors
/// [`Error::BanFile`] if writing fails.
pub fn store(path: &Path, bans: &[BanEntry]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, render(bans))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| Error::BanFile(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let bans = vec![
            BanEntry {
                target: BanTarget::Addr("192.0.2.7".parse().unwrap()),
                until: UNIX_EPOCH + Duration::from_secs(1_795_000_000),
            },
            BanEntry {
                target: BanTarget::Peer(PeerId::from_bytes([0xab; 8])),
                until: UNIX_EPOCH + Duration::from_secs(1_795_003_600),
            },
        ];
        let text = render(&bans);
        assert_eq!(
            text,
            "# cypherwire mesh bans v1\nip 192.0.2.7 1795000000\npeer abababababababab 1795003600\n"
        );
        assert_eq!(parse(&text).unwrap(), bans);
        for bad in [
            "ip nonsense 1",
            "peer 12 1",
            "ip 1.2.3.4",
            "ip 1.2.3.4 x",
            "host a 1",
            "ip 1.2.3.4 1 extra",
        ] {
            assert!(matches!(parse(bad), Err(Error::BanFile(_))), "{bad}");
        }
        let dir = std::env::temp_dir().join(format!("cw-bans-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bans.txt");
        assert!(load(&path).unwrap().is_empty(), "a missing file is no bans");
        store(&path, &bans).unwrap();
        assert_eq!(load(&path).unwrap(), bans);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
