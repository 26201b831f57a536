//! Decoding limits with documented defaults.

use crate::error::{Error, Result};

/// Default maximum frame body length after the handshake: 1 MiB.
///
/// Large enough for typical requests, small enough that 10,000 connections each holding one
/// maximal frame stay within a few GiB. Raise it per deployment with
/// [`Limits::with_max_frame_len`]; messages larger than a frame are the session layer's job
/// (it chunks them).
pub const DEFAULT_MAX_FRAME_LEN: usize = 1024 * 1024;

/// Maximum frame body length before the handshake completes: 64 KiB.
///
/// Handshake messages are small; an unauthenticated peer must not make the server buffer more.
pub const HANDSHAKE_MAX_FRAME_LEN: usize = 64 * 1024;

/// Largest frame body the four-byte header can announce.
pub const MAX_FRAME_LEN_CAP: usize = u32::MAX as usize;

/// Default maximum nesting depth of a payload: 32 containers, the envelope's own included.
pub const DEFAULT_MAX_DEPTH: usize = 32;

/// Largest nesting depth that may be configured (the JSON decoder's own recursion limit is
/// 128, and the structure scanner keeps its stack in a fixed array of this size).
pub const MAX_DEPTH_CAP: usize = 128;

/// Limits applied while decoding untrusted input.
///
/// A value of this type is always valid: the constructors check their arguments.
///
/// | limit | default | range |
/// | --- | --- | --- |
/// | [`max_frame_len`](Self::max_frame_len) | [`DEFAULT_MAX_FRAME_LEN`] (1 MiB) | 2 ..= [`MAX_FRAME_LEN_CAP`] |
/// | [`max_depth`](Self::max_depth) | [`DEFAULT_MAX_DEPTH`] (32) | 1 ..= [`MAX_DEPTH_CAP`] |
///
/// ```
/// use cypherwire_wire::Limits;
/// let limits = Limits::default().with_max_frame_len(64 * 1024)?.with_max_depth(16)?;
/// assert_eq!(limits.max_frame_len(), 65536);
/// # Ok::<(), cypherwire_wire::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    max_frame_len: usize,
    max_depth: usize,
}

impl Limits {
    /// Limits for the handshake phase: [`HANDSHAKE_MAX_FRAME_LEN`] and the default depth.
    pub const HANDSHAKE: Self = Self {
        max_frame_len: HANDSHAKE_MAX_FRAME_LEN,
        max_depth: DEFAULT_MAX_DEPTH,
    };

    /// Returns these limits with a different maximum frame body length.
    ///
    /// # Errors
    /// [`Error::InvalidLimit`] unless `2 <= len <= MAX_FRAME_LEN_CAP` (every message has at
    /// least a two-byte envelope header).
    pub fn with_max_frame_len(mut self, len: usize) -> Result<Self> {
        if !(2..=MAX_FRAME_LEN_CAP).contains(&len) {
            return Err(Error::InvalidLimit("max_frame_len must be in 2..=u32::MAX"));
        }
        self.max_frame_len = len;
        Ok(self)
    }

    /// Returns these limits with a different maximum nesting depth.
    ///
    /// # Errors
    /// [`Error::InvalidLimit`] unless `1 <= depth <= MAX_DEPTH_CAP`.
    pub fn with_max_depth(mut self, depth: usize) -> Result<Self> {
        if !(1..=MAX_DEPTH_CAP).contains(&depth) {
            return Err(Error::InvalidLimit("max_depth must be in 1..=128"));
        }
        self.max_depth = depth;
        Ok(self)
    }

    /// The largest frame body accepted, in bytes (the four header bytes not counted).
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// The deepest nesting of arrays and maps accepted in a payload.
    pub fn max_depth(&self) -> usize {
        self.max_depth
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented_values() {
        let l = Limits::default();
        assert_eq!(l.max_frame_len(), 1 << 20);
        assert_eq!(l.max_depth(), 32);
        assert_eq!(Limits::HANDSHAKE.max_frame_len(), 65536);
    }

    #[test]
    fn out_of_range_limits_are_rejected() {
        assert!(matches!(
            Limits::default().with_max_frame_len(1),
            Err(Error::InvalidLimit(_))
        ));
        assert!(matches!(
            Limits::default().with_max_depth(0),
            Err(Error::InvalidLimit(_))
        ));
        assert!(matches!(
            Limits::default().with_max_depth(129),
            Err(Error::InvalidLimit(_))
        ));
        assert!(Limits::default().with_max_depth(128).is_ok());
        assert!(
            Limits::default()
                .with_max_frame_len(MAX_FRAME_LEN_CAP)
                .is_ok()
        );
    }
}
