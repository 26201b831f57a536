//! Allocation-free structure scans run before deserialisation.
//!
//! They bound what a decoder may be asked to do: nesting depth, declared lengths versus the
//! bytes present, UTF-8 validity, and (for MessagePack) that exactly one value spans the input.

use crate::error::{Error, Result};
use crate::limits::MAX_DEPTH_CAP;

/// Scans one MessagePack value spanning all of `src`.
#[cfg_attr(
    not(feature = "msgpack"),
    allow(dead_code, reason = "used by the msgpack codec")
)]
///
/// Iterative, with a fixed-size stack: constant memory whatever the input.
pub(crate) fn msgpack(src: &[u8], max_depth: usize) -> Result<()> {
    let max_depth = max_depth.min(MAX_DEPTH_CAP);
    // left[d] = items still to read in the container open at depth d; depth 0 is a virtual
    // container holding the single top-level value.
    let mut left = [0u64; MAX_DEPTH_CAP + 1];
    left[0] = 1;
    let mut depth = 0usize;
    let mut r = Reader::new(src);

    loop {
        if left[depth] == 0 {
            if depth == 0 {
                break;
            }
            depth -= 1;
            continue;
        }
        left[depth] -= 1;
        let marker = r.byte()?;
        let items: u64 = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => continue,
            0x80..=0x8f => 2 * u64::from(marker & 0x0f),
            0x90..=0x9f => u64::from(marker & 0x0f),
            0xa0..=0xbf => {
                r.str(usize::from(marker & 0x1f))?;
                continue;
            }
            0xc4 => {
                let n = r.len(1)?;
                r.skip(n)?;
                continue;
            }
            0xc5 => {
                let n = r.len(2)?;
                r.skip(n)?;
                continue;
            }
            0xc6 => {
                let n = r.len(4)?;
                r.skip(n)?;
                continue;
            }
            0xd9 => {
                let n = r.len(1)?;
                r.str(n)?;
                continue;
            }
            0xda => {
                let n = r.len(2)?;
                r.str(n)?;
                continue;
            }
            0xdb => {
                let n = r.len(4)?;
                r.str(n)?;
                continue;
            }
            0xcc | 0xd0 => {
                r.skip(1)?;
                continue;
            }
            0xcd | 0xd1 => {
                r.skip(2)?;
                continue;
            }
            0xca | 0xce | 0xd2 => {
                r.skip(4)?;
                continue;
            }
            0xcb | 0xcf | 0xd3 => {
                r.skip(8)?;
                continue;
            }
            0xdc => r.count(2, 1)?,
            0xdd => r.count(4, 1)?,
            0xde => r.count(2, 2)?,
            0xdf => r.count(4, 2)?,
            0xc7..=0xc9 | 0xd4..=0xd8 => {
                return Err(Error::Unsupported("MessagePack extension type"));
            }
            0xc1 => return Err(Error::Unsupported("MessagePack marker 0xc1 (never used)")),
        };
        // Every container counts towards the depth, empty or not.
        if depth + 1 > max_depth {
            return Err(Error::DepthExceeded { max: max_depth });
        }
        depth += 1;
        left[depth] = items;
    }

    match r.remaining() {
        0 => Ok(()),
        count => Err(Error::TrailingBytes { count }),
    }
}

/// A cursor over MessagePack bytes whose reads fail, with a typed error, past the end of the
/// input (shared with the direct decoder).
pub(super) struct Reader<'a> {
    src: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(src: &'a [u8]) -> Self {
        Self { src, pos: 0 }
    }

    pub(super) fn remaining(&self) -> usize {
        self.src.len() - self.pos
    }

    /// The next byte, not consumed.
    pub(super) fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn byte(&mut self) -> Result<u8> {
        let b = self.peek().ok_or(Error::LengthExceedsInput {
            declared: 1,
            remaining: 0,
        })?;
        self.pos += 1;
        Ok(b)
    }

    /// The next `n` bytes, or `None` (nothing consumed) if fewer are left.
    pub(super) fn try_take(&mut self, n: usize) -> Option<&'a [u8]> {
        let bytes = self.src.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(bytes)
    }

    /// The next `n` bytes.
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let remaining = self.remaining();
        self.try_take(n).ok_or(Error::LengthExceedsInput {
            declared: n as u64,
            remaining,
        })
    }

    fn skip(&mut self, n: usize) -> Result<()> {
        self.take(n).map(|_| ())
    }

    /// Reads a big-endian length field of `width` bytes.
    fn len(&mut self, width: usize) -> Result<usize> {
        let mut v: u64 = 0;
        for _ in 0..width {
            v = (v << 8) | u64::from(self.byte()?);
        }
        usize::try_from(v).map_err(|_| Error::LengthExceedsInput {
            declared: v,
            remaining: self.remaining(),
        })
    }

    fn str(&mut self, n: usize) -> Result<()> {
        std::str::from_utf8(self.take(n)?).map_err(|_| Error::InvalidUtf8)?;
        Ok(())
    }

    /// Reads a container's element count and checks that the input can hold its items: every
    /// MessagePack value takes at least one byte.
    fn count(&mut self, width: usize, items_per_entry: u64) -> Result<u64> {
        let n = self.len(width)? as u64;
        let items = n * items_per_entry;
        if items > self.remaining() as u64 {
            return Err(Error::LengthExceedsInput {
                declared: n,
                remaining: self.remaining(),
            });
        }
        Ok(items)
    }
}

#[cfg_attr(
    not(feature = "json"),
    allow(dead_code, reason = "used by the json codec")
)]
/// Scans a JSON document: UTF-8 validity and bracket nesting depth (outside strings).
/// Syntax is left to the JSON parser.
pub(crate) fn json(src: &[u8], max_depth: usize) -> Result<()> {
    let max_depth = max_depth.min(MAX_DEPTH_CAP);
    std::str::from_utf8(src).map_err(|_| Error::InvalidUtf8)?;
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in src {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(Error::DepthExceeded { max: max_depth });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_and_containers_scan() {
        // [1, "ab", {true: nil}, bin8(2)]
        let v = [
            0x94, 0x01, 0xa2, b'a', b'b', 0x81, 0xc3, 0xc0, 0xc4, 0x02, 0, 0,
        ];
        msgpack(&v, 8).unwrap();
    }

    #[test]
    fn depth_counts_every_container() {
        let nested = [0x91, 0x91, 0x90]; // [[[]]]
        msgpack(&nested, 3).unwrap();
        assert!(matches!(
            msgpack(&nested, 2),
            Err(Error::DepthExceeded { max: 2 })
        ));
    }

    #[test]
    fn huge_declared_lengths_fail_without_allocation() {
        // str32 claiming 4 GiB - 1.
        let s = [0xdb, 0xff, 0xff, 0xff, 0xff, b'x'];
        assert!(matches!(
            msgpack(&s, 8),
            Err(Error::LengthExceedsInput {
                declared: 0xffff_ffff,
                remaining: 1
            })
        ));
        // array32 claiming 2^32 - 1 elements.
        let a = [0xdd, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert!(matches!(
            msgpack(&a, 8),
            Err(Error::LengthExceedsInput { .. })
        ));
        // map32: entries count twice.
        let m = [0xdf, 0x00, 0x00, 0x00, 0x01, 0x01];
        assert!(matches!(
            msgpack(&m, 8),
            Err(Error::LengthExceedsInput { .. })
        ));
    }

    #[test]
    fn trailing_bytes_ext_and_bad_utf8_are_rejected() {
        assert!(matches!(
            msgpack(&[0x01, 0x02], 8),
            Err(Error::TrailingBytes { count: 1 })
        ));
        assert!(matches!(
            msgpack(&[0xd4, 0x01, 0x00], 8),
            Err(Error::Unsupported(_))
        ));
        assert!(matches!(msgpack(&[0xc1], 8), Err(Error::Unsupported(_))));
        assert!(matches!(
            msgpack(&[0xa2, 0xff, 0xfe], 8),
            Err(Error::InvalidUtf8)
        ));
        assert!(matches!(
            msgpack(&[], 8),
            Err(Error::LengthExceedsInput { .. })
        ));
    }

    #[test]
    #[cfg(feature = "json")]
    fn json_depth_ignores_brackets_in_strings() {
        json(br#"{"a": "[[[[[[[[", "b": [1, [2]]}"#, 3).unwrap();
        assert!(matches!(
            json(b"[[[]]]", 2),
            Err(Error::DepthExceeded { max: 2 })
        ));
        json(br#"["\"[[[["]"#, 1).unwrap();
        assert!(matches!(json(b"\"\xff\"", 4), Err(Error::InvalidUtf8)));
    }
}
