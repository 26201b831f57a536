//! Static X25519 identity keys (identity mode) and password verifiers (password mode).

use std::fmt;

use argon2::{Algorithm, Argon2, Params, PasswordHash, Version};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::{Error, Result};
use crate::wipe::scrubbed;

/// Text prefix of a private identity key.
pub const PRIVATE_KEY_PREFIX: &str = "idsk:";
/// Text prefix of a public identity key.
pub const PUBLIC_KEY_PREFIX: &str = "idpk:";

fn decode32(text: &str, prefix: &str, what: &'static str) -> Result<[u8; 32]> {
    let b64 = text
        .trim()
        .strip_prefix(prefix)
        .ok_or(Error::InvalidKey(what))?;
    let mut raw = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| Error::InvalidKey(what))?;
    let out = <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| Error::InvalidKey(what));
    raw.zeroize();
    out
}

/// A public X25519 identity key: what peers pin. Text form `idpk:` + unpadded base64url.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Wraps 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses the text form.
    ///
    /// # Errors
    /// [`Error::InvalidKey`].
    pub fn parse(text: &str) -> Result<Self> {
        decode32(
            text,
            PUBLIC_KEY_PREFIX,
            "public key must be idpk:<base64url of 32 bytes>",
        )
        .map(Self)
    }

    /// The text form.
    pub fn to_text(&self) -> String {
        format!("{PUBLIC_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_text())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// A static X25519 identity key pair. The private half is zeroized on drop and never shown by
/// `Debug`. Text form of the private key: `idsk:` + unpadded base64url.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct IdentityKey {
    /// Boxed, so moving the key pair moves a pointer and leaves no copy of the key behind.
    private: Box<[u8; 32]>,
    #[zeroize(skip)]
    public: PublicKey,
}

impl IdentityKey {
    /// A fresh random key pair.
    ///
    /// # Errors
    /// [`Error::Random`] if the generator fails.
    pub fn generate() -> Result<Self> {
        scrubbed(|| {
            let mut private = Zeroizing::new([0u8; 32]);
            getrandom::fill(private.as_mut()).map_err(|_| Error::Random)?;
            Self::from_private(*private)
        })
    }

    /// The key pair for a private key (the public key is computed).
    ///
    /// # Errors
    /// [`Error::InvalidKey`] if the computation fails.
    pub fn from_private(private: [u8; 32]) -> Result<Self> {
        scrubbed(|| {
            let public = x25519_public(&private)?;
            Ok(Self {
                private: Box::new(private),
                public: PublicKey(public),
            })
        })
    }

    /// Parses the private key's text form.
    ///
    /// # Errors
    /// [`Error::InvalidKey`].
    pub fn parse(text: &str) -> Result<Self> {
        Self::from_private(decode32(
            text,
            PRIVATE_KEY_PREFIX,
            "private key must be idsk:<base64url of 32 bytes>",
        )?)
    }

    /// The private key's text form. Handle with care.
    pub fn to_text(&self) -> Zeroizing<String> {
        scrubbed(|| {
            Zeroizing::new(format!(
                "{PRIVATE_KEY_PREFIX}{}",
                URL_SAFE_NO_PAD.encode(*self.private)
            ))
        })
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    pub(crate) fn private_bytes(&self) -> &[u8; 32] {
        &self.private
    }

    /// Proves to the holder of `verifier`'s private key that this key's holder speaks about
    /// `context`: `HMAC-SHA256(HKDF-SHA256(ikm = X25519(our private, verifier), info =
    /// "cypherwire/v1 key possession"), context)` (`docs/protocol.md` §7). Only the two key
    /// holders can compute it; bind `context` to the channel (a nonce the verifier chose) so
    /// it cannot be replayed elsewhere.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] if `verifier` is a low-order point (the shared secret is zero).
    pub fn prove_possession(&self, verifier: &PublicKey, context: &[u8]) -> Result<[u8; 32]> {
        scrubbed(|| {
            let key = self.possession_key(verifier)?;
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_ref())
                .map_err(|_| Error::InvalidKey("HMAC key"))?;
            mac.update(context);
            Ok(mac.finalize().into_bytes().into())
        })
    }

    /// Checks a [`prove_possession`](Self::prove_possession) proof made by `prover` for our
    /// key, in constant time.
    pub fn verify_possession(&self, prover: &PublicKey, context: &[u8], proof: &[u8]) -> bool {
        scrubbed(|| {
            let Ok(key) = self.possession_key(prover) else {
                return false;
            };
            let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key.as_ref()) else {
                return false;
            };
            mac.update(context);
            mac.verify_slice(proof).is_ok()
        })
    }

    fn possession_key(&self, peer: &PublicKey) -> Result<Zeroizing<[u8; 32]>> {
        let shared = Zeroizing::new(
            curve25519_dalek::MontgomeryPoint(peer.0)
                .mul_clamped(*self.private)
                .to_bytes(),
        );
        if shared.iter().all(|b| *b == 0) {
            return Err(Error::InvalidKey("low-order public key"));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(None, shared.as_ref())
            .expand(b"cypherwire/v1 key possession", key.as_mut())
            .map_err(|_| Error::InvalidKey("HKDF"))?;
        Ok(key)
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKey")
            .field("public", &self.public)
            .field("private", &"<redacted>")
            .finish()
    }
}

/// X25519 base-point multiplication (RFC 7748), with the curve implementation snow uses.
fn x25519_public(private: &[u8; 32]) -> Result<[u8; 32]> {
    Ok(curve25519_dalek::MontgomeryPoint::mul_base_clamped(*private).to_bytes())
}

/// Argon2id cost parameters for password verifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Argon2Cost {
    /// Memory in KiB (default 19,456 = 19 MiB, the OWASP minimum).
    pub m_kib: u32,
    /// Passes (default 2).
    pub t: u32,
    /// Lanes (default 1).
    pub p: u32,
}

impl Argon2Cost {
    /// A cost: memory in KiB, passes, lanes.
    pub const fn new(m_kib: u32, t: u32, p: u32) -> Self {
        Self { m_kib, t, p }
    }

    /// The default: m = 19,456 KiB, t = 2, p = 1 (OWASP's minimum for argon2id, and RustCrypto's
    /// default). About 15–30 ms per hash on one core of our machines.
    pub const DEFAULT_COST: Self = Self {
        m_kib: 19_456,
        t: 2,
        p: 1,
    };
}

impl Default for Argon2Cost {
    fn default() -> Self {
        Self::DEFAULT_COST
    }
}

/// Largest argon2 memory a client agrees to spend on a server's request (256 MiB): a hostile
/// server cannot make clients allocate without bound.
pub const MAX_CLIENT_ARGON2_KIB: u32 = 256 * 1024;

impl Argon2Cost {
    /// Whether a client should accept these parameters from a server.
    pub fn is_acceptable(&self) -> bool {
        (8..=MAX_CLIENT_ARGON2_KIB).contains(&self.m_kib)
            && (1..=16).contains(&self.t)
            && (1..=16).contains(&self.p)
    }

    /// The argon2id hash of `password`, in a heap block that is wiped when dropped: it is
    /// written in place and never moved, so no copy is left behind in memory freed later.
    pub(crate) fn derive(&self, password: &[u8], salt: &[u8]) -> Result<Box<Zeroizing<[u8; 32]>>> {
        scrubbed(|| {
            let params = Params::new(self.m_kib, self.t, self.p, Some(32))
                .map_err(|_| Error::Config("argon2 parameters"))?;
            let mut out = Box::new(Zeroizing::new([0u8; 32]));
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password_into(password, salt, out.as_mut().as_mut())
                .map_err(|_| Error::Config("argon2 hashing failed"))?;
            Ok(out)
        })
    }
}

/// What the server stores for password mode: an argon2id hash of the network password (PHC
/// string `$argon2id$v=19$m=…,t=…,p=…$<salt>$<hash>`), never the password.
///
/// The hash is the password-authenticated key exchange's input, so it is password-equivalent
/// for logging in (keep the file private) but an attacker who steals it must still run argon2
/// per guess to learn the password itself.
#[derive(Clone, ZeroizeOnDrop)]
pub struct PasswordVerifier {
    #[zeroize(skip)]
    pub(crate) cost: Argon2Cost,
    #[zeroize(skip)]
    pub(crate) salt: Vec<u8>,
    /// Boxed, so moving the verifier moves a pointer and leaves no copy of the hash behind.
    pub(crate) hash: Box<[u8; 32]>,
}

impl PasswordVerifier {
    /// Hashes a password with a fresh random salt (CPU-heavy: about 15–30 ms at the default
    /// cost; run it off async threads) and returns the verifier.
    ///
    /// # Errors
    /// [`Error::Config`] for invalid costs, [`Error::Random`].
    pub fn create(password: &str, cost: Argon2Cost) -> Result<Self> {
        scrubbed(|| {
            let mut salt = vec![0u8; 16];
            getrandom::fill(&mut salt).map_err(|_| Error::Random)?;
            let hash = cost.derive(password.as_bytes(), &salt)?;
            Ok(Self {
                cost,
                salt,
                hash: Box::new(**hash),
            })
        })
    }

    /// Hashes a password with the given salt (8 to 64 bytes). Use [`create`](Self::create)
    /// unless you are reproducing a test vector: salts must be random.
    ///
    /// # Errors
    /// [`Error::Config`] for a salt of the wrong length or invalid costs.
    pub fn with_salt(password: &str, salt: &[u8], cost: Argon2Cost) -> Result<Self> {
        scrubbed(|| {
            if !(8..=64).contains(&salt.len()) {
                return Err(Error::Config("salt must be 8 to 64 bytes"));
            }
            let hash = cost.derive(password.as_bytes(), salt)?;
            Ok(Self {
                cost,
                salt: salt.to_vec(),
                hash: Box::new(**hash),
            })
        })
    }

    /// Parses a PHC string produced by [`to_phc`](Self::to_phc) (or any argon2id v19 PHC string
    /// with a 32-byte output).
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for anything else.
    pub fn parse(phc: &str) -> Result<Self> {
        scrubbed(|| {
            let bad = || {
                Error::InvalidKey("verifier must be an argon2id v19 PHC string with a 32-byte hash")
            };
            let parsed = PasswordHash::new(phc.trim()).map_err(|_| bad())?;
            if parsed.algorithm.as_str() != "argon2id" || parsed.version != Some(0x13) {
                return Err(bad());
            }
            let params = Params::try_from(&parsed).map_err(|_| bad())?;
            let mut salt_buf = [0u8; 64];
            let salt = parsed
                .salt
                .ok_or_else(bad)?
                .decode_b64(&mut salt_buf)
                .map_err(|_| bad())?
                .to_vec();
            let out = parsed.hash.ok_or_else(bad)?;
            let hash = <[u8; 32]>::try_from(out.as_bytes()).map_err(|_| bad())?;
            Ok(Self {
                cost: Argon2Cost {
                    m_kib: params.m_cost(),
                    t: params.t_cost(),
                    p: params.p_cost(),
                },
                salt,
                hash: Box::new(hash),
            })
        })
    }

    /// The PHC string to store.
    pub fn to_phc(&self) -> Zeroizing<String> {
        scrubbed(|| {
            use base64::engine::general_purpose::STANDARD_NO_PAD;
            Zeroizing::new(format!(
                "$argon2id$v=19$m={},t={},p={}${}${}",
                self.cost.m_kib,
                self.cost.t,
                self.cost.p,
                STANDARD_NO_PAD.encode(&self.salt),
                STANDARD_NO_PAD.encode(*self.hash)
            ))
        })
    }

    /// The argon2 cost this verifier was made with.
    pub fn cost(&self) -> Argon2Cost {
        self.cost
    }
}

impl fmt::Debug for PasswordVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordVerifier")
            .field("cost", &self.cost)
            .field("hash", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A network password on the client side. Zeroized on drop; `Debug` redacted.
#[derive(Clone, ZeroizeOnDrop)]
pub struct Password(pub(crate) Zeroizing<String>);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Self {
        Self(Zeroizing::new(password.into()))
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn possession_proofs_verify_only_for_the_key_pair_and_context() {
        let (a, b, c) = (
            IdentityKey::generate().unwrap(),
            IdentityKey::generate().unwrap(),
            IdentityKey::generate().unwrap(),
        );
        let proof = a.prove_possession(&b.public(), b"ctx").unwrap();
        assert!(b.verify_possession(&a.public(), b"ctx", &proof));
        assert!(!b.verify_possession(&a.public(), b"other", &proof));
        assert!(
            !b.verify_possession(&c.public(), b"ctx", &proof),
            "another prover"
        );
        assert!(
            !c.verify_possession(&a.public(), b"ctx", &proof),
            "another verifier"
        );
        assert!(!b.verify_possession(&a.public(), b"ctx", &proof[..31]));
        // A low-order verifier key gives a zero secret: refused.
        let zero = PublicKey::from_bytes([0; 32]);
        assert!(a.prove_possession(&zero, b"ctx").is_err());
        assert!(!a.verify_possession(&zero, b"ctx", &[0; 32]));
    }

    #[test]
    fn identity_keys_round_trip_through_text() {
        let k = IdentityKey::generate().unwrap();
        let again = IdentityKey::parse(&k.to_text()).unwrap();
        assert_eq!(again.public(), k.public());
        assert_eq!(PublicKey::parse(&k.public().to_text()).unwrap(), k.public());
        assert!(PublicKey::parse("idpk:AAAA").is_err());
        assert!(IdentityKey::parse(&k.public().to_text()).is_err());
        let shown = format!("{k:?}");
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains(&k.to_text()[5..]));
    }

    #[test]
    fn public_key_matches_rfc7748_section_6_1() {
        // Alice's private and public key from RFC 7748 §6.1.
        let private: [u8; 32] =
            hex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let public = hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        assert_eq!(
            IdentityKey::from_private(private)
                .unwrap()
                .public()
                .as_bytes(),
            &public
        );
    }

    fn hex32(s: &str) -> [u8; 32] {
        core::array::from_fn(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
    }

    #[test]
    fn verifiers_round_trip_and_redact() {
        let cheap = Argon2Cost {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let v = PasswordVerifier::create("correct horse", cheap).unwrap();
        let phc = v.to_phc();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        let back = PasswordVerifier::parse(&phc).unwrap();
        assert_eq!(back.hash, v.hash);
        assert_eq!(back.salt, v.salt);
        assert_eq!(back.cost(), cheap);
        assert_eq!(
            &**cheap.derive(b"correct horse", &v.salt).unwrap(),
            &*v.hash
        );
        assert!(PasswordVerifier::parse("$argon2i$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA").is_err());
        assert!(PasswordVerifier::parse("password").is_err());
        assert!(!format!("{v:?}").contains(&phc[phc.len() - 10..]));
        assert_eq!(format!("{:?}", Password::new("pw")), "Password(<redacted>)");
    }
}
