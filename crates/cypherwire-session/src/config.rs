//! Session configuration.

use std::time::Duration;

use cypherwire_wire::{Codec, CodecId, Limits, Message};

use crate::error::{Error, Result};
use crate::record::RekeyPolicy;
use crate::suite::{Backend, CipherSuite};

/// Default maximum size of one reassembled message: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 16 * 1024 * 1024;

/// Default time allowed for a handshake: 10 seconds.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default largest argon2 memory a client spends on a server's password challenge: 64 MiB
/// (the default cost uses 19 MiB). A server cannot ask for more than
/// [`MAX_CLIENT_ARGON2_KIB`](crate::MAX_CLIENT_ARGON2_KIB) (256 MiB) whatever the setting.
pub const DEFAULT_MAX_ARGON2_KIB: u32 = 64 * 1024;

/// How much longer than [`Message::approx_size`] a message's encoding can be in any codec:
/// MessagePack's never is; JSON spells byte strings in base64 (4 characters per 3 bytes), a
/// byte of a text string with up to 6 characters (`\u0000`) and a scalar with fewer than 6
/// times the 16 bytes the estimate counts.
const MAX_EXPANSION: usize = 6;

/// Validated settings for one side of a session. Build with [`SessionConfig::builder`].
///
/// | setting | default |
/// | --- | --- |
/// | cipher suites, in preference order | [`CipherSuite::default_preference`] |
/// | payload codecs, in preference order | every codec compiled in, MessagePack first |
/// | frame limits after the handshake | [`Limits::default`] (1 MiB frames) |
/// | largest reassembled message | [`DEFAULT_MAX_MESSAGE_LEN`] (16 MiB) |
/// | handshake timeout | [`DEFAULT_HANDSHAKE_TIMEOUT`] (10 s) |
/// | rekey | [`RekeyPolicy::default`] (2^32 records, 64 GiB or 1 h per key) |
/// | crypto backend | [`Backend::default_for_build`] (`ring` with the `ring` feature) |
/// | largest argon2 memory a client accepts (password mode) | [`DEFAULT_MAX_ARGON2_KIB`] (64 MiB) |
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub(crate) suites: Vec<CipherSuite>,
    pub(crate) codecs: Vec<CodecId>,
    pub(crate) limits: Limits,
    pub(crate) max_message_len: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) rekey: RekeyPolicy,
    pub(crate) backend: Backend,
    pub(crate) max_argon2_kib: u32,
}

impl SessionConfig {
    /// Starts a builder with the defaults.
    pub fn builder() -> SessionConfigBuilder {
        SessionConfigBuilder::default()
    }

    /// Cipher suites in preference order.
    pub fn suites(&self) -> &[CipherSuite] {
        &self.suites
    }

    /// Payload codecs in preference order.
    pub fn codecs(&self) -> &[CodecId] {
        &self.codecs
    }

    /// Frame limits after the handshake.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Largest reassembled message.
    pub fn max_message_len(&self) -> usize {
        self.max_message_len
    }

    /// `msg`'s encoded length if it is longer than [`max_message_len`](Self::max_message_len) in
    /// a codec this configuration offers (the longest such length), so that a sender can refuse
    /// it before queueing it; `None` if it fits in every one.
    ///
    /// Cheap for the messages that fit by a wide margin (one [`Message::approx_size`]); a
    /// message near or over the limit is encoded once per offered codec to know for sure.
    pub fn oversize(&self, msg: &Message) -> Option<usize> {
        let max = self.max_message_len;
        let approx = msg.approx_size();
        let bound = if self.codecs.iter().all(|c| *c == CodecId::MsgPack) {
            approx
        } else {
            approx.saturating_mul(MAX_EXPANSION)
        };
        if bound <= max {
            return None;
        }
        self.codecs
            .iter()
            .filter_map(|id| Codec::from_id(*id).ok())
            .filter_map(|codec| msg.encoded_len(&codec).ok())
            .filter(|len| *len > max)
            .max()
    }

    /// Time allowed for the handshake.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// When records rekey.
    pub fn rekey(&self) -> RekeyPolicy {
        self.rekey
    }

    /// The crypto backend for suites 1 and 2.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Largest argon2 memory (KiB) this side spends on a server's password challenge.
    pub fn max_argon2_kib(&self) -> u32 {
        self.max_argon2_kib
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            suites: CipherSuite::default_preference(),
            codecs: Codec::ALL
                .iter()
                .map(cypherwire_wire::PayloadCodec::id)
                .collect(),
            limits: Limits::default(),
            max_message_len: DEFAULT_MAX_MESSAGE_LEN,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            rekey: RekeyPolicy::default(),
            backend: Backend::default_for_build(),
            max_argon2_kib: DEFAULT_MAX_ARGON2_KIB,
        }
    }
}

/// Builds a [`SessionConfig`]; [`build`](Self::build) validates once.
#[derive(Debug, Default)]
#[must_use = "call `build()` to get a SessionConfig"]
pub struct SessionConfigBuilder {
    inner: SessionConfig,
}

impl SessionConfigBuilder {
    /// Cipher suites to offer or accept, most preferred first.
    pub fn suites(mut self, suites: impl IntoIterator<Item = CipherSuite>) -> Self {
        self.inner.suites = suites.into_iter().collect();
        self
    }

    /// Payload codecs to offer or accept, most preferred first.
    pub fn codecs(mut self, codecs: impl IntoIterator<Item = CodecId>) -> Self {
        self.inner.codecs = codecs.into_iter().collect();
        self
    }

    /// Frame limits after the handshake.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.inner.limits = limits;
        self
    }

    /// Largest reassembled message.
    pub fn max_message_len(mut self, len: usize) -> Self {
        self.inner.max_message_len = len;
        self
    }

    /// Time allowed for the handshake.
    pub fn handshake_timeout(mut self, t: Duration) -> Self {
        self.inner.handshake_timeout = t;
        self
    }

    /// When records rekey.
    pub fn rekey(mut self, policy: RekeyPolicy) -> Self {
        self.inner.rekey = policy;
        self
    }

    /// The crypto backend for suites 1 and 2 (the choice is local: peers need not agree).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.inner.backend = backend;
        self
    }

    /// Largest argon2 memory in KiB a client spends on a server's password challenge (8 KiB to
    /// [`MAX_CLIENT_ARGON2_KIB`](crate::MAX_CLIENT_ARGON2_KIB)); a challenge asking for more
    /// fails the handshake with `UnacceptableParameters`.
    pub fn max_argon2_kib(mut self, kib: u32) -> Self {
        self.inner.max_argon2_kib = kib;
        self
    }

    /// Validates and freezes the settings.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty or duplicated suite or codec list, a codec not compiled
    /// in, a frame limit too small for a record (< 256 bytes), a zero message length, a zero
    /// handshake timeout, an argon2 memory cap outside 8 KiB to 256 MiB, or a zero rekey
    /// threshold.
    pub fn build(self) -> Result<SessionConfig> {
        let c = self.inner;
        let dup = |n: usize, ids: Vec<u8>| {
            let mut ids = ids;
            ids.sort_unstable();
            ids.dedup();
            ids.len() != n
        };
        if c.suites.is_empty() || dup(c.suites.len(), c.suites.iter().map(|s| s.id()).collect()) {
            return Err(Error::Config(
                "cipher suites must be a non-empty list without repeats",
            ));
        }
        if c.codecs.is_empty() || dup(c.codecs.len(), c.codecs.iter().map(|s| s.to_u8()).collect())
        {
            return Err(Error::Config(
                "codecs must be a non-empty list without repeats",
            ));
        }
        if c.codecs.iter().any(|id| !id.is_available()) {
            return Err(Error::Config("a codec is not compiled into this build"));
        }
        if c.limits.max_frame_len() < 256 {
            return Err(Error::Config(
                "max_frame_len must be at least 256 bytes for records",
            ));
        }
        if c.max_message_len == 0 || c.handshake_timeout.is_zero() {
            return Err(Error::Config(
                "max_message_len and handshake_timeout must be non-zero",
            ));
        }
        if !(8..=crate::MAX_CLIENT_ARGON2_KIB).contains(&c.max_argon2_kib) {
            return Err(Error::Config(
                "max_argon2_kib must be 8 KiB to MAX_CLIENT_ARGON2_KIB",
            ));
        }
        if c.rekey.records == 0 || c.rekey.bytes == 0 || c.rekey.interval.is_zero() {
            return Err(Error::Config("rekey thresholds must be non-zero"));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use cypherwire_wire::DEFAULT_MAX_FRAME_LEN;

    use super::*;

    #[test]
    fn defaults_validate() {
        let c = SessionConfig::builder().build().unwrap();
        assert_eq!(c.max_message_len(), DEFAULT_MAX_MESSAGE_LEN);
        assert_eq!(c.limits().max_frame_len(), DEFAULT_MAX_FRAME_LEN);
        assert_eq!(c.suites().len(), 3);
        assert_eq!(c.codecs()[0], CodecId::MsgPack);
    }

    #[test]
    fn invalid_settings_are_rejected() {
        let bad = [
            SessionConfig::builder().suites([]),
            SessionConfig::builder().suites([CipherSuite::Aes256Gcm, CipherSuite::Aes256Gcm]),
            SessionConfig::builder().codecs([]),
            SessionConfig::builder().limits(Limits::default().with_max_frame_len(100).unwrap()),
            SessionConfig::builder().max_message_len(0),
            SessionConfig::builder().handshake_timeout(Duration::ZERO),
            SessionConfig::builder().rekey(RekeyPolicy {
                records: 0,
                ..RekeyPolicy::default()
            }),
        ];
        for b in bad {
            assert!(matches!(b.build(), Err(Error::Config(_))));
        }
    }

    #[cfg(all(feature = "msgpack", feature = "json"))]
    #[test]
    fn oversize_is_the_longest_encoding_over_the_limit_and_only_then() {
        use cypherwire_wire::{Push, Value};
        let max = 64 * 1024;
        let both = SessionConfig::builder()
            .max_message_len(max)
            .build()
            .unwrap();
        let packed = SessionConfig::builder()
            .max_message_len(max)
            .codecs([CodecId::MsgPack])
            .build()
            .unwrap();
        let push = |v: Value| Message::from(Push::new(1, v));
        // Far under: no encoding needed, nothing reported.
        assert_eq!(both.oversize(&push(Value::bytes(vec![1; 100]))), None);
        // Many small integers: the estimate (16 bytes each) is over the limit, the encodings
        // are not, and a message that fits is not refused.
        let ints = push(Value::Array(
            (0..10_000).map(|i| Value::from(i % 100)).collect(),
        ));
        assert!(ints.approx_size() > max);
        assert_eq!(both.oversize(&ints), None);
        assert_eq!(packed.oversize(&ints), None);
        // Bytes that fit in MessagePack but not in JSON's base64: too large only where JSON is
        // offered, and the length is JSON's.
        let blob = push(Value::bytes(vec![200; 50 * 1024]));
        assert_eq!(packed.oversize(&blob), None);
        let json_len = blob.encoded_len(&Codec::Json).unwrap();
        assert!(json_len > max);
        assert_eq!(both.oversize(&blob), Some(json_len));
        // Over in every codec.
        let big = push(Value::bytes(vec![0; max + 1]));
        assert_eq!(
            packed.oversize(&big),
            Some(big.encoded_len(&Codec::MsgPack).unwrap())
        );
    }
}
