//! The refusal: one small unauthenticated frame a responder may send instead of a handshake
//! message, saying why it will not continue (`docs/protocol.md` §3.9).
//!
//! It is advisory. Nothing authenticates it, so an on-path attacker can forge one (as it can
//! cut the connection); an initiator treats it as "refused", never as proof of anything. It
//! costs the responder no cryptographic work and tells a guesser nothing a close would not.

use std::time::Duration;

use cypherwire_wire::CloseCode;

/// The refusal's first four bytes.
pub const REFUSAL_MAGIC: &[u8; 4] = b"CYPR";

/// The refusal's version byte (the protocol version, `PROTOCOL_VERSION`).
const REFUSAL_VERSION: u8 = 1;

/// The refusal's length: magic, version, code (u16), retry-after in milliseconds (u32).
pub const REFUSAL_LEN: usize = 4 + 1 + 2 + 4;

/// Why a responder refused a handshake, as the initiator learns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// Why (a close code, §6): `AUTH_FAILED`, `BANNED`, `OVERLOADED`, `UNSUPPORTED`,
    /// `PROTOCOL_ERROR`, `TIMEOUT` or `GOING_AWAY`.
    pub code: CloseCode,
    /// When trying again may succeed (a ban's end, a rate limit's refill); `None` if the
    /// responder did not say.
    pub retry_after: Option<Duration>,
}

impl Refusal {
    /// A refusal with `code`, and `retry_after` if trying again later may succeed.
    pub fn new(code: CloseCode, retry_after: Option<Duration>) -> Self {
        Self { code, retry_after }
    }

    /// The frame body: `"CYPR" ‖ version (1) ‖ code (u16 BE) ‖ retry_after_ms (u32 BE)`, where
    /// 0 means "not said" and longer waits are capped at `u32::MAX` ms (about 49 days).
    pub fn encode(&self) -> [u8; REFUSAL_LEN] {
        let mut out = [0u8; REFUSAL_LEN];
        out[..4].copy_from_slice(REFUSAL_MAGIC);
        out[4] = REFUSAL_VERSION;
        out[5..7].copy_from_slice(&self.code.0.to_be_bytes());
        let ms = self.retry_after.map_or(0, |d| {
            // Round up: a wait of 0.4 ms is still a wait.
            let ms = d.as_micros().div_ceil(1000).max(1);
            u32::try_from(ms).unwrap_or(u32::MAX)
        });
        out[7..].copy_from_slice(&ms.to_be_bytes());
        out
    }

    /// The refusal in a handshake frame body, or `None` if the body is anything else (every
    /// handshake message is longer than a refusal, so the two cannot be confused).
    pub fn parse(body: &[u8]) -> Option<Self> {
        if body.len() != REFUSAL_LEN || &body[..4] != REFUSAL_MAGIC || body[4] != REFUSAL_VERSION {
            return None;
        }
        let code = CloseCode(u16::from_be_bytes([body[5], body[6]]));
        let ms = u32::from_be_bytes([body[7], body[8], body[9], body[10]]);
        let retry_after = (ms > 0).then(|| Duration::from_millis(ms.into()));
        Some(Self { code, retry_after })
    }
}

/// Says why a refusal ended the handshake: its code's name and, if given, when to retry.
impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.code {
            CloseCode::AUTH_FAILED => "authentication failed",
            CloseCode::BANNED => "this address is banned",
            CloseCode::OVERLOADED => "the server is over capacity",
            CloseCode::UNSUPPORTED => "the server does not support this client's offer",
            CloseCode::TIMEOUT => "the handshake took too long",
            CloseCode::GOING_AWAY => "the server is shutting down",
            CloseCode::PROTOCOL_ERROR => "the server saw a malformed handshake",
            _ => "refused",
        };
        write!(f, "{what} [{}]", self.code)?;
        if let Some(d) = self.retry_after {
            write!(f, "; retry after {:.1} s", d.as_secs_f64())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_round_trips_and_its_bytes_are_fixed() {
        let r = Refusal::new(CloseCode::BANNED, Some(Duration::from_millis(1500)));
        let bytes = r.encode();
        assert_eq!(
            bytes,
            [b'C', b'Y', b'P', b'R', 1, 0, 9, 0, 0, 0x05, 0xdc],
            "docs/protocol.md §3.9"
        );
        assert_eq!(Refusal::parse(&bytes), Some(r));
        let none = Refusal::new(CloseCode::AUTH_FAILED, None);
        assert_eq!(Refusal::parse(&none.encode()), Some(none));
        // Sub-millisecond waits round up; very long ones saturate.
        let short = Refusal::new(CloseCode::OVERLOADED, Some(Duration::from_micros(10)));
        assert_eq!(
            Refusal::parse(&short.encode()).and_then(|r| r.retry_after),
            Some(Duration::from_millis(1))
        );
        let long = Refusal::new(CloseCode::BANNED, Some(Duration::from_secs(u64::MAX / 4)));
        assert_eq!(
            Refusal::parse(&long.encode()).and_then(|r| r.retry_after),
            Some(Duration::from_millis(u32::MAX.into()))
        );
    }

    #[test]
    fn its_version_is_the_protocols() {
        assert_eq!(REFUSAL_VERSION, crate::handshake::PROTOCOL_VERSION);
    }

    #[test]
    fn anything_else_is_not_a_refusal() {
        let good = Refusal::new(CloseCode::BANNED, None).encode();
        assert_eq!(Refusal::parse(&good[..10]), None);
        let mut longer = good.to_vec();
        longer.push(0);
        assert_eq!(Refusal::parse(&longer), None);
        let mut wrong = good;
        wrong[0] = b'X';
        assert_eq!(Refusal::parse(&wrong), None);
        let mut version = good;
        version[4] = 2;
        assert_eq!(Refusal::parse(&version), None);
        // A PSK-mode answer is 50 bytes: never read as a refusal, whatever it holds.
        let mut answer = [0u8; 50];
        answer[..11].copy_from_slice(&good);
        assert_eq!(Refusal::parse(&answer), None);
    }

    #[test]
    fn the_text_names_the_reason_and_the_wait() {
        let r = Refusal::new(CloseCode::BANNED, Some(Duration::from_secs(90)));
        assert_eq!(
            r.to_string(),
            "this address is banned [BANNED (9)]; retry after 90.0 s"
        );
        assert_eq!(
            Refusal::new(CloseCode::AUTH_FAILED, None).to_string(),
            "authentication failed [AUTH_FAILED (5)]"
        );
    }
}
