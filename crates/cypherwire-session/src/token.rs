//! Session tokens (sans-IO): issued inside the encrypted channel, single-use, expiring.
//!
//! pnetwork's per-client token, done safely: 128 random bits from the operating system, never
//! sent in clear (it travels only inside records), never logged (`Debug` is redacted), looked
//! up by its SHA-256 digest and compared in constant time, removed on use (the resumed session
//! gets a fresh token), and forgotten after its time to live. Resumption always follows a
//! fresh handshake, so forward secrecy is kept.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};

/// Length of a session token in bytes (128 bits).
pub const TOKEN_LEN: usize = 16;
/// Default time a token stays redeemable: 2 minutes.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(120);
/// Default maximum number of live tokens in a store.
pub const DEFAULT_TOKEN_CAPACITY: usize = 100_000;

/// A secret session token. Zeroized on drop; `Debug` redacted; equality in constant time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SessionToken([u8; TOKEN_LEN]);

impl SessionToken {
    /// A fresh random token.
    ///
    /// # Errors
    /// [`Error::Random`] if the operating system's generator fails.
    pub fn generate() -> Result<Self> {
        let mut t = [0u8; TOKEN_LEN];
        getrandom::fill(&mut t).map_err(|_| Error::Random)?;
        Ok(Self(t))
    }

    /// Wraps bytes received inside an encrypted record.
    pub fn from_bytes(bytes: [u8; TOKEN_LEN]) -> Self {
        Self(bytes)
    }

    /// The bytes, to send inside an encrypted record.
    pub fn as_bytes(&self) -> &[u8; TOKEN_LEN] {
        &self.0
    }

    fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0).into()
    }
}

impl PartialEq for SessionToken {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for SessionToken {}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

/// Why a token was not redeemed. Deliberately coarse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedeemError {
    /// Unknown, already used, or expired: indistinguishable on purpose.
    Invalid,
}

struct Entry<T> {
    token: SessionToken,
    value: T,
    expires: Instant,
}

/// Live tokens and what each resumes (e.g. a session id), bounded in number and time.
pub struct TokenStore<T> {
    entries: HashMap<[u8; 32], Entry<T>>,
    ttl: Duration,
    capacity: usize,
}

impl<T> fmt::Debug for TokenStore<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenStore")
            .field("live", &self.entries.len())
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl<T> TokenStore<T> {
    /// A store with the given time to live and capacity.
    ///
    /// # Errors
    /// [`Error::Config`] for a zero TTL or capacity.
    pub fn new(ttl: Duration, capacity: usize) -> Result<Self> {
        if ttl.is_zero() || capacity == 0 {
            return Err(Error::Config("token ttl and capacity must be non-zero"));
        }
        Ok(Self {
            entries: HashMap::new(),
            ttl,
            capacity,
        })
    }

    /// Live tokens (expired ones may still be counted until the next purge).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no token is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Issues a fresh token for `value`, valid until `now + ttl`.
    ///
    /// # Errors
    /// [`Error::Config`] if the store is full of unexpired tokens (the caller should then
    /// refuse resumption for this session rather than evict another), [`Error::Random`].
    pub fn issue(&mut self, value: T, now: Instant) -> Result<SessionToken> {
        if self.entries.len() >= self.capacity {
            self.purge(now);
            if self.entries.len() >= self.capacity {
                return Err(Error::Config("token store is full"));
            }
        }
        let token = SessionToken::generate()?;
        self.entries.insert(
            token.digest(),
            Entry {
                token: token.clone(),
                value,
                expires: now + self.ttl,
            },
        );
        Ok(token)
    }

    /// Redeems a token once: returns its value and forgets the token.
    ///
    /// # Errors
    /// [`RedeemError::Invalid`] if the token is unknown, used or expired.
    pub fn redeem(&mut self, token: &SessionToken, now: Instant) -> Result<T, RedeemError> {
        let key = token.digest();
        let Some(entry) = self.entries.remove(&key) else {
            return Err(RedeemError::Invalid);
        };
        // spec: §3.6 "tokens MUST be compared in constant time"
        if entry.token != *token || now >= entry.expires {
            return Err(RedeemError::Invalid);
        }
        Ok(entry.value)
    }

    /// Forgets a token without redeeming it (e.g. on logout).
    pub fn revoke(&mut self, token: &SessionToken) {
        self.entries.remove(&token.digest());
    }

    /// Drops every expired token.
    pub fn purge(&mut self, now: Instant) {
        self.entries.retain(|_, e| now < e.expires);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods, reason = "test epoch")]
    fn tokens_are_single_use_expire_and_are_bounded() {
        let t0 = Instant::now();
        let mut store = TokenStore::new(Duration::from_secs(10), 2).unwrap();
        let a = store.issue("a", t0).unwrap();
        let b = store.issue("b", t0).unwrap();
        assert!(store.issue("c", t0).is_err(), "capacity bound");
        assert_eq!(store.redeem(&a, t0), Ok("a"));
        assert_eq!(
            store.redeem(&a, t0),
            Err(RedeemError::Invalid),
            "single use"
        );
        let forged = SessionToken::from_bytes([0; TOKEN_LEN]);
        assert_eq!(store.redeem(&forged, t0), Err(RedeemError::Invalid));
        assert_eq!(
            store.redeem(&b, t0 + Duration::from_secs(10)),
            Err(RedeemError::Invalid),
            "expired"
        );
        let c = store.issue("c", t0).unwrap();
        let d = store.issue("d", t0).unwrap();
        // Expired entries make room.
        assert!(store.issue("e", t0 + Duration::from_secs(11)).is_ok());
        assert_eq!(store.len(), 1);
        store.revoke(&c);
        assert_eq!(store.redeem(&d, t0), Err(RedeemError::Invalid));
    }

    #[test]
    fn tokens_are_random_and_redacted() {
        let a = SessionToken::generate().unwrap();
        let b = SessionToken::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(format!("{a:?}"), "SessionToken(<redacted>)");
    }
}
