//! Cipher suites for the record layer, as trait objects.
//!
//! | id | suite | key | overhead per record | notes |
//! | --- | --- | --- | --- | --- |
//! | 1 | [`CipherSuite::ChaCha20Poly1305`] | 32 B | 16 B tag | RFC 8439; fast without AES instructions |
//! | 2 | [`CipherSuite::Aes256Gcm`] | 32 B | 16 B tag | preferred where the CPU has AES instructions |
//! | 3 | [`CipherSuite::Aes128CbcHmacSha256`] | 16 + 32 B | 1–16 B padding + 32 B tag | encrypt-then-MAC; for peers that need CBC |
//!
//! Every suite uses the record counter as its nonce (`docs/protocol.md` §3.4), so a key never
//! sees the same nonce twice: the record layer rekeys long before the counter could wrap.
//! Every failure to open a record is the same opaque error.

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncrypt, BlockEncryptMut, KeyInit, KeyIvInit};
use aes_gcm::aead::AeadInPlace;
use bytes::BytesMut;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A record-layer cipher suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CipherSuite {
    /// ChaCha20-Poly1305 (RFC 8439), id 1.
    ChaCha20Poly1305,
    /// AES-256-GCM, id 2.
    Aes256Gcm,
    /// AES-128-CBC with PKCS#7 padding, then HMAC-SHA256 over counter and ciphertext
    /// (encrypt-then-MAC), id 3.
    Aes128CbcHmacSha256,
}

/// Which implementation performs the AEAD of suites 1 and 2 (suite 3 is always RustCrypto).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// The RustCrypto crates (`chacha20poly1305`, `aes-gcm`): pure Rust, always available.
    RustCrypto,
    /// `ring` (feature `ring`): C and assembly, much faster on small records.
    #[cfg(feature = "ring")]
    Ring,
}

impl Backend {
    /// The default for this build: `ring` when the feature is on (measured faster, see
    /// `docs/performance.md`), RustCrypto otherwise.
    pub const fn default_for_build() -> Self {
        #[cfg(feature = "ring")]
        {
            Self::Ring
        }
        #[cfg(not(feature = "ring"))]
        {
            Self::RustCrypto
        }
    }

    /// Every backend compiled into this build.
    pub const ALL: &'static [Self] = &[
        Self::RustCrypto,
        #[cfg(feature = "ring")]
        Self::Ring,
    ];
}

impl Default for Backend {
    fn default() -> Self {
        Self::default_for_build()
    }
}

/// The authentication tag of the AEAD suites (ChaCha20-Poly1305, AES-256-GCM): their whole
/// overhead per record.
pub const AEAD_TAG_LEN: usize = 16;

/// The opaque failure of [`RecordCipher::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenError;

/// Seals and opens records in place. Implementations hold their key schedule; the record layer
/// supplies a fresh nonce for every record.
pub trait RecordCipher: Send + Sync + std::fmt::Debug {
    /// Encrypts `buf[start..]` in place and appends the authentication data.
    fn seal(&self, nonce: u64, buf: &mut BytesMut, start: usize);

    /// Authenticates and decrypts `buf` in place, leaving only the plaintext.
    ///
    /// # Errors
    /// [`OpenError`] for any failure; `buf`'s contents are then unspecified.
    fn open(&self, nonce: u64, buf: &mut BytesMut) -> Result<(), OpenError>;

    /// Encrypts `content` in place and returns its 16-byte authentication tag, for ciphers
    /// whose whole overhead is such a tag (the sealed record is `content ‖ tag`). Lets the
    /// record layer seal the chunks of a large message where they were encoded, with no copy.
    ///
    /// The default returns `None`: the cipher does not seal this way, and the record layer
    /// copies each chunk and calls [`seal`](Self::seal) instead.
    fn seal_detached(&self, nonce: u64, content: &mut [u8]) -> Option<[u8; AEAD_TAG_LEN]> {
        let _ = (nonce, content);
        None
    }
}

impl CipherSuite {
    /// Every suite, in id order.
    pub const ALL: [Self; 3] = [
        Self::ChaCha20Poly1305,
        Self::Aes256Gcm,
        Self::Aes128CbcHmacSha256,
    ];

    /// The suite's identifier byte.
    pub const fn id(self) -> u8 {
        match self {
            Self::ChaCha20Poly1305 => 1,
            Self::Aes256Gcm => 2,
            Self::Aes128CbcHmacSha256 => 3,
        }
    }

    /// The suite with this identifier.
    pub const fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(Self::ChaCha20Poly1305),
            2 => Some(Self::Aes256Gcm),
            3 => Some(Self::Aes128CbcHmacSha256),
            _ => None,
        }
    }

    /// Key material per direction, in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            Self::ChaCha20Poly1305 | Self::Aes256Gcm => 32,
            Self::Aes128CbcHmacSha256 => 16 + 32,
        }
    }

    /// Whether sealing adds exactly a 16-byte tag after the ciphertext (the AEAD suites, whose
    /// ciphers implement [`RecordCipher::seal_detached`]).
    pub(crate) const fn tag_only_overhead(self) -> bool {
        matches!(self, Self::ChaCha20Poly1305 | Self::Aes256Gcm)
    }

    /// The most bytes sealing adds to a plaintext.
    pub const fn max_overhead(self) -> usize {
        match self {
            Self::ChaCha20Poly1305 | Self::Aes256Gcm => AEAD_TAG_LEN,
            Self::Aes128CbcHmacSha256 => 16 + 32,
        }
    }

    /// The default preference order for this CPU: AES-256-GCM first where the CPU has AES and
    /// carry-less multiply instructions (as rustls does), ChaCha20-Poly1305 first otherwise.
    /// AES-128-CBC + HMAC-SHA256 is never preferred; it is offered last.
    pub fn default_preference() -> Vec<Self> {
        if has_aes_instructions() {
            vec![
                Self::Aes256Gcm,
                Self::ChaCha20Poly1305,
                Self::Aes128CbcHmacSha256,
            ]
        } else {
            vec![
                Self::ChaCha20Poly1305,
                Self::Aes256Gcm,
                Self::Aes128CbcHmacSha256,
            ]
        }
    }

    /// A cipher for this suite keyed with `key` (exactly [`key_len`](Self::key_len) bytes),
    /// computed by `backend`.
    pub(crate) fn cipher(self, key: &[u8], backend: Backend) -> Box<dyn RecordCipher> {
        #[cfg(feature = "ring")]
        if backend == Backend::Ring {
            match self {
                Self::ChaCha20Poly1305 => {
                    if let Some(c) =
                        ring_backend::RingAead::new(&ring::aead::CHACHA20_POLY1305, key)
                    {
                        return Box::new(c);
                    }
                }
                Self::Aes256Gcm => {
                    if let Some(c) = ring_backend::RingAead::new(&ring::aead::AES_256_GCM, key) {
                        return Box::new(c);
                    }
                }
                Self::Aes128CbcHmacSha256 => {}
            }
        }
        let _ = backend;
        match self {
            Self::ChaCha20Poly1305 => Box::new(ChaCha {
                aead: chacha20poly1305::ChaCha20Poly1305::new(key.into()),
            }),
            Self::Aes256Gcm => Box::new(AesGcm {
                aead: aes_gcm::Aes256Gcm::new(key.into()),
            }),
            Self::Aes128CbcHmacSha256 => {
                let (enc, mac) = key.split_at(16);
                let mut mac_key = [0u8; 32];
                mac_key.copy_from_slice(mac);
                Box::new(CbcHmac {
                    enc_key: enc.try_into().unwrap_or([0; 16]),
                    mac_key,
                })
            }
        }
    }
}

fn has_aes_instructions() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// 96-bit AEAD nonce: four zero bytes, then the 64-bit counter, big-endian.
fn nonce96(n: u64) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[4..].copy_from_slice(&n.to_be_bytes());
    out
}

#[cfg(feature = "ring")]
mod ring_backend {
    use bytes::BytesMut;
    use ring::aead::{Aad, Algorithm, LessSafeKey, Nonce, UnboundKey};

    use super::{AEAD_TAG_LEN, OpenError, RecordCipher, nonce96};

    /// A suite computed by `ring`.
    pub(super) struct RingAead {
        key: LessSafeKey,
    }

    impl RingAead {
        pub(super) fn new(alg: &'static Algorithm, key: &[u8]) -> Option<Self> {
            UnboundKey::new(alg, key).ok().map(|k| Self {
                key: LessSafeKey::new(k),
            })
        }
    }

    impl std::fmt::Debug for RingAead {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Ring({:?}, <key redacted>)", self.key.algorithm())
        }
    }

    impl RecordCipher for RingAead {
        fn seal(&self, nonce: u64, buf: &mut BytesMut, start: usize) {
            let n = Nonce::assume_unique_for_key(nonce96(nonce));
            // Sealing cannot fail below ring's ~256 GiB per-message limit; an empty tag would
            // fail authentication at the peer.
            match self
                .key
                .seal_in_place_separate_tag(n, Aad::empty(), &mut buf[start..])
            {
                Ok(tag) => buf.extend_from_slice(tag.as_ref()),
                Err(_) => buf.truncate(start),
            }
        }

        fn seal_detached(&self, nonce: u64, content: &mut [u8]) -> Option<[u8; AEAD_TAG_LEN]> {
            let n = Nonce::assume_unique_for_key(nonce96(nonce));
            let tag = self
                .key
                .seal_in_place_separate_tag(n, Aad::empty(), content)
                .ok()?;
            tag.as_ref().try_into().ok()
        }

        fn open(&self, nonce: u64, buf: &mut BytesMut) -> Result<(), OpenError> {
            let n = Nonce::assume_unique_for_key(nonce96(nonce));
            let len = self
                .key
                .open_in_place(n, Aad::empty(), &mut buf[..])
                .map_err(|_| OpenError)?
                .len();
            buf.truncate(len);
            Ok(())
        }
    }
}

struct ChaCha {
    aead: chacha20poly1305::ChaCha20Poly1305,
}

struct AesGcm {
    aead: aes_gcm::Aes256Gcm,
}

macro_rules! aead_cipher {
    ($t:ty, $name:literal) => {
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!($name, "(<key redacted>)"))
            }
        }

        impl RecordCipher for $t {
            fn seal(&self, nonce: u64, buf: &mut BytesMut, start: usize) {
                let n = nonce96(nonce);
                // Encrypting in place cannot fail for plaintexts below 2^38 bytes, far above
                // any frame limit; an empty tag would fail authentication at the peer.
                let tag = self
                    .aead
                    .encrypt_in_place_detached((&n).into(), &[], &mut buf[start..])
                    .unwrap_or_default();
                buf.extend_from_slice(&tag);
            }

            fn seal_detached(&self, nonce: u64, content: &mut [u8]) -> Option<[u8; AEAD_TAG_LEN]> {
                let n = nonce96(nonce);
                let tag = self
                    .aead
                    .encrypt_in_place_detached((&n).into(), &[], content)
                    .ok()?;
                Some(tag.into())
            }

            fn open(&self, nonce: u64, buf: &mut BytesMut) -> Result<(), OpenError> {
                let Some(body_len) = buf.len().checked_sub(16) else {
                    return Err(OpenError);
                };
                let n = nonce96(nonce);
                let (body, tag) = buf.split_at_mut(body_len);
                let tag = aes_gcm::Tag::clone_from_slice(tag);
                self.aead
                    .decrypt_in_place_detached((&n).into(), &[], body, &tag)
                    .map_err(|_| OpenError)?;
                buf.truncate(body_len);
                Ok(())
            }
        }
    };
}
aead_cipher!(ChaCha, "ChaCha20Poly1305");
aead_cipher!(AesGcm, "Aes256Gcm");

struct CbcHmac {
    enc_key: [u8; 16],
    mac_key: [u8; 32],
}

impl Drop for CbcHmac {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.enc_key.zeroize();
        self.mac_key.zeroize();
    }
}

impl std::fmt::Debug for CbcHmac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Aes128CbcHmacSha256(<key redacted>)")
    }
}

type HmacSha256 = Hmac<Sha256>;

impl CbcHmac {
    /// IV = AES-128_enc_key(0^64 ‖ counter): unpredictable without the key, never repeated
    /// (NIST SP 800-38A, Appendix C).
    fn iv(&self, nonce: u64) -> [u8; 16] {
        let mut block = [0u8; 16];
        block[8..].copy_from_slice(&nonce.to_be_bytes());
        let aes = aes::Aes128::new((&self.enc_key).into());
        let mut b = block.into();
        aes.encrypt_block(&mut b);
        b.into()
    }

    fn mac(&self, nonce: u64, ciphertext: &[u8]) -> HmacSha256 {
        // A 32-byte key is always a valid HMAC key.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.mac_key)
            .unwrap_or_else(|_| <HmacSha256 as Mac>::new(&Default::default()));
        mac.update(&nonce.to_be_bytes());
        mac.update(ciphertext);
        mac
    }
}

impl RecordCipher for CbcHmac {
    fn seal(&self, nonce: u64, buf: &mut BytesMut, start: usize) {
        let msg_len = buf.len() - start;
        let pad = 16 - msg_len % 16;
        buf.resize(buf.len() + pad, 0);
        let enc =
            cbc::Encryptor::<aes::Aes128>::new((&self.enc_key).into(), &self.iv(nonce).into());
        // The buffer has exactly the room PKCS#7 needs, so padding cannot fail.
        let ct_len = enc
            .encrypt_padded_mut::<Pkcs7>(&mut buf[start..], msg_len)
            .map_or(0, <[u8]>::len);
        debug_assert_eq!(ct_len, msg_len + pad);
        let tag = self.mac(nonce, &buf[start..]).finalize().into_bytes();
        buf.extend_from_slice(&tag);
    }

    fn open(&self, nonce: u64, buf: &mut BytesMut) -> Result<(), OpenError> {
        let Some(ct_len) = buf.len().checked_sub(32) else {
            return Err(OpenError);
        };
        if ct_len == 0 || ct_len % 16 != 0 {
            return Err(OpenError);
        }
        let (ct, tag) = buf.split_at_mut(ct_len);
        // Tag first, in constant time, before any decryption (no padding oracle).
        self.mac(nonce, ct)
            .verify_slice(tag)
            .map_err(|_| OpenError)?;
        let dec =
            cbc::Decryptor::<aes::Aes128>::new((&self.enc_key).into(), &self.iv(nonce).into());
        let plain_len = dec
            .decrypt_padded_mut::<Pkcs7>(ct)
            .map_err(|_| OpenError)?
            .len();
        buf.truncate(plain_len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suites_and_backends() -> Vec<(CipherSuite, Backend)> {
        CipherSuite::ALL
            .into_iter()
            .flat_map(|s| Backend::ALL.iter().map(move |b| (s, *b)))
            .collect()
    }

    #[test]
    fn backends_agree_byte_for_byte() {
        for s in [CipherSuite::ChaCha20Poly1305, CipherSuite::Aes256Gcm] {
            let outputs: Vec<BytesMut> = Backend::ALL
                .iter()
                .map(|b| {
                    let mut buf = BytesMut::from(&b"same plaintext, every backend"[..]);
                    s.cipher(&key(s), *b).seal(77, &mut buf, 0);
                    buf
                })
                .collect();
            assert!(outputs.windows(2).all(|w| w[0] == w[1]), "{s:?}");
            // And each opens the others' records.
            for b in Backend::ALL {
                let mut rec = outputs[0].clone();
                s.cipher(&key(s), *b).open(77, &mut rec).unwrap();
            }
        }
    }

    fn key(suite: CipherSuite) -> Vec<u8> {
        (0..suite.key_len()).map(|i| i as u8).collect()
    }

    #[test]
    fn ids_round_trip() {
        for s in CipherSuite::ALL {
            assert_eq!(CipherSuite::from_id(s.id()), Some(s));
        }
        assert_eq!(CipherSuite::from_id(0), None);
        assert_eq!(CipherSuite::from_id(4), None);
        assert_eq!(CipherSuite::default_preference().len(), 3);
    }

    #[test]
    fn seal_open_round_trip_every_length() {
        for (s, b) in suites_and_backends() {
            let c = s.cipher(&key(s), b);
            for len in 0..70 {
                let plain: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
                let mut buf = BytesMut::from(&b"hdr"[..]);
                buf.extend_from_slice(&plain);
                c.seal(9, &mut buf, 3);
                assert!(buf.len() - 3 <= len as usize + s.max_overhead());
                let mut rec = buf.split_off(3);
                c.open(9, &mut rec).unwrap();
                assert_eq!(&rec[..], &plain[..], "{s:?} len {len}");
            }
        }
    }

    #[test]
    fn any_change_fails_with_the_same_error() {
        for (s, b) in suites_and_backends() {
            let c = s.cipher(&key(s), b);
            let mut sealed = BytesMut::from(&b"attack at dawn, 32 bytes of text"[..]);
            c.seal(1, &mut sealed, 0);
            // Wrong nonce.
            assert_eq!(c.open(2, &mut sealed.clone()), Err(OpenError));
            // Every single-bit flip.
            for i in 0..sealed.len() * 8 {
                let mut bad = sealed.clone();
                bad[i / 8] ^= 1 << (i % 8);
                assert_eq!(c.open(1, &mut bad), Err(OpenError), "{s:?} bit {i}");
            }
            // Truncation.
            for cut in 0..sealed.len() {
                assert_eq!(
                    c.open(1, &mut BytesMut::from(&sealed[..cut])),
                    Err(OpenError)
                );
            }
            // Wrong key.
            let other: Vec<u8> = key(s).iter().map(|b| b ^ 1).collect();
            assert_eq!(
                s.cipher(&other, b).open(1, &mut sealed.clone()),
                Err(OpenError)
            );
        }
    }

    #[test]
    fn debug_shows_no_key() {
        for (s, b) in suites_and_backends() {
            let shown = format!("{:?}", s.cipher(&[0xab; 48][..s.key_len()], b));
            assert!(shown.contains("redacted"));
            assert!(!shown.contains("ab") && !shown.contains("171"), "{shown}");
        }
    }
}
