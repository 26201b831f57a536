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
//!
//! The file holds at most [`MAX_BAN_ENTRIES`] bans, so it stays within [`MAX_BAN_FILE_LEN`]:
//! when there are more, the bans that end last are kept (written and loaded alike) and the
//! number dropped is logged. A larger file (written by hand, or by another version) is read
//! up to [`MAX_BAN_FILE_READ`] and trimmed the same way: it never stops the authenticating
//! peer from starting.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read as _};
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::Error;
use crate::peer_list::PeerId;

/// Largest ban file written (4 MiB).
pub const MAX_BAN_FILE_LEN: u64 = 4 * 1024 * 1024;

/// Most bans a ban file holds (65,536): a line is at most 64 bytes (`ip ` + the longest IPv6
/// text + a 20-digit time), so these always fit in [`MAX_BAN_FILE_LEN`].
pub const MAX_BAN_ENTRIES: usize = 65_536;

/// Most bytes of a ban file read (64 MiB): what lies beyond is ignored, and memory stays
/// bounded by [`MAX_BAN_ENTRIES`] whatever the file holds.
pub const MAX_BAN_FILE_READ: u64 = 64 * 1024 * 1024;

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

/// Parses one line; `Ok(None)` for a comment or a blank line.
fn parse_line(n: usize, line: &str) -> Result<Option<BanEntry>, Error> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
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
    Ok(Some(BanEntry { target, until }))
}

/// The [`MAX_BAN_ENTRIES`] bans that end last, kept as they stream by: memory stays bounded
/// however many there are.
#[derive(Default)]
struct Newest {
    heap: BinaryHeap<Reverse<(SystemTime, usize)>>,
    entries: Vec<Option<BanEntry>>,
    seen: usize,
}

impl Newest {
    fn push(&mut self, entry: BanEntry) {
        self.seen += 1;
        let until = entry.until;
        if self.heap.len() < MAX_BAN_ENTRIES {
            self.heap.push(Reverse((until, self.entries.len())));
            self.entries.push(Some(entry));
            return;
        }
        if let Some(Reverse((oldest, slot))) = self.heap.peek().copied()
            && oldest < until
        {
            self.heap.pop();
            self.entries[slot] = Some(entry);
            self.heap.push(Reverse((until, slot)));
        }
    }

    /// The bans kept, in the order first seen, and how many were dropped.
    fn finish(self) -> (Vec<BanEntry>, usize) {
        let kept: Vec<BanEntry> = self.entries.into_iter().flatten().collect();
        let dropped = self.seen - kept.len();
        (kept, dropped)
    }
}

/// Parses the file format (every line; no bound).
///
/// # Errors
/// [`Error::BanFile`] naming the first bad line.
pub fn parse(text: &str) -> Result<Vec<BanEntry>, Error> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if let Some(entry) = parse_line(n, line)? {
            out.push(entry);
        }
    }
    Ok(out)
}

/// Reads a ban file; a missing file is no bans. At most [`MAX_BAN_ENTRIES`] bans are kept
/// (those that end last; the number dropped is logged) from at most [`MAX_BAN_FILE_READ`]
/// bytes.
///
/// # Errors
/// [`Error::BanFile`] if it cannot be read or a line does not parse.
pub fn load(path: &Path) -> Result<Vec<BanEntry>, Error> {
    let err = |e: std::io::Error| Error::BanFile(format!("{}: {e}", path.display()));
    let file = match std::fs::File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err(e)),
        Ok(f) => f,
    };
    let len = file.metadata().map_err(err)?.len();
    let mut reader = BufReader::new(file.take(MAX_BAN_FILE_READ));
    let mut newest = Newest::default();
    let mut line = Vec::new();
    for n in 0.. {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(err)? == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        match parse_line(n, &text) {
            Ok(Some(entry)) => newest.push(entry),
            Ok(None) => {}
            // A line cut by the read bound is not an error.
            Err(_) if len > MAX_BAN_FILE_READ && !line.ends_with(b"\n") => break,
            Err(e) => return Err(e),
        }
    }
    let (kept, dropped) = newest.finish();
    if dropped > 0 || len > MAX_BAN_FILE_READ {
        tracing::warn!(
            file = %path.display(),
            kept = kept.len(),
            dropped,
            unread_bytes = len.saturating_sub(MAX_BAN_FILE_READ),
            "ban file over its bound: kept the bans that end last"
        );
    }
    Ok(kept)
}

/// Writes a ban file atomically (a temporary file renamed over the old one), with at most
/// [`MAX_BAN_ENTRIES`] bans (those that end last; the number dropped is logged).
///
/// # Errors
/// [`Error::BanFile`] if writing fails.
pub fn store(path: &Path, bans: &[BanEntry]) -> Result<(), Error> {
    let mut newest = Newest::default();
    for b in bans {
        newest.push(*b);
    }
    let (kept, dropped) = newest.finish();
    if dropped > 0 {
        tracing::warn!(file = %path.display(), dropped, "more bans than a ban file holds: kept the bans that end last");
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, render(&kept))
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

    #[test]
    fn a_file_keeps_the_bans_that_end_last_within_its_bound() {
        let bans: Vec<BanEntry> = (0..MAX_BAN_ENTRIES as u64 + 10)
            .map(|n| BanEntry {
                target: BanTarget::Addr(IpAddr::from([
                    10,
                    (n >> 16) as u8,
                    (n >> 8) as u8,
                    n as u8,
                ])),
                until: UNIX_EPOCH + Duration::from_secs(1_800_000_000 + n),
            })
            .collect();
        let dir = std::env::temp_dir().join(format!("cw-bans-bound-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bans.txt");
        store(&path, &bans).unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() <= MAX_BAN_FILE_LEN);
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.len(), MAX_BAN_ENTRIES);
        let oldest = loaded.iter().map(|b| b.until).min().unwrap();
        assert_eq!(oldest, UNIX_EPOCH + Duration::from_secs(1_800_000_010));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
