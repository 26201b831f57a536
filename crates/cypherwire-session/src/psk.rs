//! Pre-shared keys.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};
use crate::wipe::scrubbed;

/// Length of a pre-shared key in bytes.
pub const PSK_LEN: usize = 32;

/// Shortest passphrase [`Psk::from_passphrase`] accepts, in bytes.
pub const MIN_PASSPHRASE_LEN: usize = 16;

/// Prefix of the documented text form of a key (`psk:` + unpadded base64url of 32 bytes).
pub const PSK_TEXT_PREFIX: &str = "psk:";

/// HKDF salt for [`Psk::from_passphrase`] (`docs/protocol.md` §3.2).
const PASSPHRASE_SALT: &[u8] = b"cypherwire/v1 psk from passphrase";

/// A 32-byte pre-shared key for PSK mode (Noise `NNpsk0`).
///
/// Zeroized on drop; `Debug` never shows the key.
///
/// ```
/// use cypherwire_session::Psk;
///
/// // The seeds' 32-character key strings work as passphrases.
/// let a = Psk::from_passphrase("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U")?;
/// // A random key in its text form.
/// let b = Psk::generate()?;
/// let text = b.to_text();
/// assert_eq!(Psk::parse(&text)?, b);
/// assert_eq!(format!("{a:?}"), "Psk(<redacted>)");
/// # Ok::<(), cypherwire_session::Error>(())
/// ```
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Psk(Box<[u8; PSK_LEN]>);

impl Psk {
    /// Wraps 32 raw key bytes.
    pub fn from_bytes(bytes: [u8; PSK_LEN]) -> Self {
        Self(Box::new(bytes))
    }

    /// A fresh random key from the operating system's generator.
    ///
    /// # Errors
    /// [`Error::Random`] if the generator fails.
    pub fn generate() -> Result<Self> {
        scrubbed(|| {
            let mut k = [0u8; PSK_LEN];
            getrandom::fill(&mut k).map_err(|_| Error::Random)?;
            Ok(Self(Box::new(k)))
        })
    }

    /// Derives a key from a passphrase such as CYPHER_PROTOCOL's 32-character key strings:
    /// `HKDF-SHA256(salt = "cypherwire/v1 psk from passphrase", ikm = passphrase, info = "")`.
    ///
    /// **Only for random, high-entropy strings.** A recorded PSK-mode handshake lets an
    /// attacker test guesses offline, so a human-chosen password must use password mode
    /// instead, which is built for that.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] if the passphrase is shorter than [`MIN_PASSPHRASE_LEN`] bytes.
    pub fn from_passphrase(passphrase: &str) -> Result<Self> {
        scrubbed(|| {
            if passphrase.len() < MIN_PASSPHRASE_LEN {
                return Err(Error::InvalidKey("passphrase shorter than 16 bytes"));
            }
            let hk = Hkdf::<Sha256>::new(Some(PASSPHRASE_SALT), passphrase.as_bytes());
            let mut k = [0u8; PSK_LEN];
            hk.expand(&[], &mut k)
                .map_err(|_| Error::InvalidKey("key derivation failed"))?;
            Ok(Self(Box::new(k)))
        })
    }

    /// Parses a key in one of its text forms: `psk:<base64url, no padding>` (what
    /// [`to_text`](Self::to_text) writes), 64 hex digits, or standard base64 of 32 bytes.
    /// Surrounding whitespace is ignored.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] if the text is none of these.
    pub fn parse(text: &str) -> Result<Self> {
        scrubbed(|| {
            let t = text.trim();
            let mut bytes = if let Some(b64) = t.strip_prefix(PSK_TEXT_PREFIX) {
                URL_SAFE_NO_PAD
                    .decode(b64)
                    .map_err(|_| Error::InvalidKey("bad base64url after psk:"))?
            } else if t.len() == 2 * PSK_LEN && t.bytes().all(|b| b.is_ascii_hexdigit()) {
                (0..PSK_LEN)
                    .map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16))
                    .collect::<Result<Vec<u8>, _>>()
                    .map_err(|_| Error::InvalidKey("bad hex"))?
            } else {
                STANDARD
                    .decode(t)
                    .map_err(|_| Error::InvalidKey("not psk:…, hex or base64 of 32 bytes"))?
            };
            let out = <[u8; PSK_LEN]>::try_from(bytes.as_slice())
                .map(|k| Self(Box::new(k)))
                .map_err(|_| Error::InvalidKey("key must be 32 bytes"));
            bytes.zeroize();
            out
        })
    }

    /// The documented text form: `psk:` followed by unpadded base64url of the 32 bytes.
    pub fn to_text(&self) -> String {
        scrubbed(|| format!("{PSK_TEXT_PREFIX}{}", URL_SAFE_NO_PAD.encode(*self.0)))
    }

    pub(crate) fn as_bytes(&self) -> &[u8; PSK_LEN] {
        &self.0
    }
}

impl PartialEq for Psk {
    /// Constant-time comparison.
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq as _;
        self.0[..].ct_eq(&other.0[..]).into()
    }
}

impl Eq for Psk {}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Psk(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_parse_to_the_same_key() {
        let k = Psk::from_bytes(core::array::from_fn(|i| i as u8));
        let hex: String = (0..32).map(|i| format!("{i:02x}")).collect();
        assert_eq!(Psk::parse(&hex).unwrap(), k);
        assert_eq!(Psk::parse(&k.to_text()).unwrap(), k);
        assert_eq!(
            Psk::parse(&format!(" {}\n", STANDARD.encode(*k.0))).unwrap(),
            k
        );
        assert!(k.to_text().starts_with("psk:"));
    }

    #[test]
    fn bad_text_is_rejected() {
        for bad in ["", "psk:", "psk:AAAA", "zz", &"0".repeat(63), "psk:!!!!"] {
            assert!(
                matches!(Psk::parse(bad), Err(Error::InvalidKey(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn passphrases_derive_stably_and_short_ones_fail() {
        let a = Psk::from_passphrase("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U").unwrap();
        let b = Psk::from_passphrase("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U").unwrap();
        let c = Psk::from_passphrase("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3V").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(matches!(
            Psk::from_passphrase("short"),
            Err(Error::InvalidKey(_))
        ));
    }

    #[test]
    fn generated_keys_differ_and_debug_is_redacted() {
        let a = Psk::generate().unwrap();
        let b = Psk::generate().unwrap();
        assert_ne!(a, b);
        let shown = format!("{a:?}");
        assert_eq!(shown, "Psk(<redacted>)");
        assert!(!shown.contains(&a.to_text()[4..10]));
    }
}
