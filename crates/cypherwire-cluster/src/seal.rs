//! Sealing (`docs/protocol.md` §8.2): XChaCha20-Poly1305 under a key derived from the cluster
//! key, a fresh random nonce per value, and the value's place (its channel or key name) as
//! associated data, so a sealed value moved to another place does not open.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::key::ClusterKey;

/// The first bytes of every sealed value: format name and version.
const MAGIC: &[u8; 3] = b"cw1";
/// What the associated data starts with.
const AAD_PREFIX: &[u8] = b"cypherwire-cluster v1\0";

/// What a sealed value holds: part of its associated data, so that a value sealed as one kind
/// never opens as another at the same place (`docs/protocol.md` §8.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A publication (live, or a stream entry).
    Publication,
    /// A node's request, reply or probe.
    Node,
    /// A ban or unban announcement.
    Ban,
    /// A stored ban.
    BanRecord,
}

impl Kind {
    fn label(self) -> &'static [u8] {
        match self {
            Self::Publication => b"pub",
            Self::Node => b"node",
            Self::Ban => b"ban",
            Self::BanRecord => b"ban-record",
        }
    }
}
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = MAGIC.len() + 4 + NONCE_LEN;

/// Why a sealed value did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unsealed {
    /// Too short or not this format.
    Malformed,
    /// Sealed under a key this instance does not hold.
    UnknownKey(u32),
    /// Authentication failed: altered, forged, or moved from another place.
    Forged,
}

/// Seals with the first key, opens with any.
pub(crate) struct Sealer {
    keys: Vec<(u32, XChaCha20Poly1305)>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self
            .keys
            .iter()
            .map(|(id, _)| format!("{id:08x}"))
            .collect();
        f.debug_struct("Sealer").field("keys", &ids).finish()
    }
}

impl Sealer {
    /// A sealer over `keys` (the first seals); `None` for no keys.
    pub(crate) fn new(keys: &[ClusterKey]) -> Option<Self> {
        if keys.is_empty() {
            return None;
        }
        let keys = keys
            .iter()
            .map(|k| {
                let mut okm = Zeroizing::new([0u8; 32]);
                // 32 bytes is far below HKDF-SHA256's 8160-byte limit.
                let _ = Hkdf::<Sha256>::new(None, k.bytes())
                    .expand(b"cypherwire cluster seal v1", okm.as_mut());
                (k.id(), XChaCha20Poly1305::new((&*okm).into()))
            })
            .collect();
        Some(Self { keys })
    }

    /// The id of the sealing key.
    pub(crate) fn key_id(&self) -> u32 {
        self.keys[0].0
    }

    fn aad(kind: Kind, place: &[u8]) -> Vec<u8> {
        [AAD_PREFIX, kind.label(), b"\0", place].concat()
    }

    /// Seals `plain`, a body of `kind`, for `place`.
    pub(crate) fn seal(&self, kind: Kind, place: &[u8], plain: &[u8]) -> Vec<u8> {
        let (id, cipher) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        // A failing system random source leaves nothing safe to do.
        #[expect(clippy::expect_used, reason = "no random source: no nonce can be safe")]
        getrandom::fill(&mut nonce).expect("system random source");
        let aad = Self::aad(kind, place);
        // Encryption into a Vec only fails for inputs beyond 256 GiB.
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a value sealed as a body of `kind` for `place`.
    pub(crate) fn open(
        &self,
        kind: Kind,
        place: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, Unsealed> {
        if sealed.len() < HEADER_LEN + TAG_LEN || &sealed[..MAGIC.len()] != MAGIC {
            return Err(Unsealed::Malformed);
        }
        let id = u32::from_be_bytes([sealed[3], sealed[4], sealed[5], sealed[6]]);
        let Some((_, cipher)) = self.keys.iter().find(|(k, _)| *k == id) else {
            return Err(Unsealed::UnknownKey(id));
        };
        let nonce = XNonce::from_slice(&sealed[7..HEADER_LEN]);
        let aad = Self::aad(kind, place);
        cipher
            .decrypt(
                nonce,
                Payload {
                    msg: &sealed[HEADER_LEN..],
                    aad: &aad,
                },
            )
            .map_err(|_| Unsealed::Forged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ClusterKey {
        ClusterKey::generate().unwrap()
    }

    #[test]
    fn a_sealed_value_opens_in_its_place_only() {
        let s = Sealer::new(&[key()]).unwrap();
        let sealed = s.seal(Kind::Node, b"chan:a", b"hello");
        assert!(!sealed.windows(5).any(|w| w == b"hello"), "no plaintext");
        assert_eq!(s.open(Kind::Node, b"chan:a", &sealed).unwrap(), b"hello");
        assert_eq!(
            s.open(Kind::Node, b"chan:b", &sealed),
            Err(Unsealed::Forged)
        );
    }

    #[test]
    fn an_altered_byte_anywhere_is_a_forgery() {
        let s = Sealer::new(&[key()]).unwrap();
        let sealed = s.seal(Kind::Node, b"p", b"data data data");
        for i in MAGIC.len() + 4..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(
                s.open(Kind::Node, b"p", &bad),
                Err(Unsealed::Forged),
                "byte {i}"
            );
        }
        assert_eq!(
            s.open(Kind::Node, b"p", &sealed[..10]),
            Err(Unsealed::Malformed)
        );
    }

    #[test]
    fn rotation_opens_the_old_key_and_seals_with_the_new() {
        let (old, new) = (key(), key());
        let before = Sealer::new(std::slice::from_ref(&old)).unwrap();
        let during = Sealer::new(&[new.clone(), old.clone()]).unwrap();
        let after = Sealer::new(std::slice::from_ref(&new)).unwrap();
        let v = before.seal(Kind::Node, b"p", b"x");
        assert_eq!(during.open(Kind::Node, b"p", &v).unwrap(), b"x");
        assert_eq!(
            after.open(Kind::Node, b"p", &v),
            Err(Unsealed::UnknownKey(old.id()))
        );
        assert_eq!(during.key_id(), new.id());
        assert_eq!(
            before.open(Kind::Node, b"p", &during.seal(Kind::Node, b"p", b"y")),
            Err(Unsealed::UnknownKey(new.id()))
        );
    }
}
