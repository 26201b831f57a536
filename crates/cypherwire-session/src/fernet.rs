//! Fernet tokens, for the CYPHER_PROTOCOL compat mode (legacy; never used by the native
//! protocol).
//!
//! A token is url-safe base64 (padded) of
//! `0x80 ‖ timestamp (u64 BE, seconds) ‖ IV (16) ‖ AES-128-CBC(PKCS#7) ciphertext ‖
//! HMAC-SHA256(signing key, everything before)`. The 32-byte key is the signing key (first 16
//! bytes) followed by the encryption key (last 16). Sans-IO: the clock and the IV are
//! arguments. Every failure is the same [`Error::InvalidToken`]; the MAC is checked, in
//! constant time, before anything is decrypted.

use std::fmt;

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};

/// The only Fernet version byte.
const VERSION: u8 = 0x80;
/// Tokens stamped further than this in the future are rejected when a TTL is checked (as the
/// reference implementation does).
pub const MAX_CLOCK_SKEW_SECS: u64 = 60;
/// version + timestamp + IV + one cipher block + HMAC.
const MIN_TOKEN_LEN: usize = 1 + 8 + 16 + 16 + 32;

/// A Fernet key: 16 bytes for signing, 16 for encryption. Zeroized on drop; `Debug` redacted.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct FernetKey {
    signing: [u8; 16],
    encryption: [u8; 16],
}

impl FernetKey {
    /// The key from its 32 raw bytes (signing key first).
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let mut signing = [0u8; 16];
        let mut encryption = [0u8; 16];
        signing.copy_from_slice(&bytes[..16]);
        encryption.copy_from_slice(&bytes[16..]);
        Self {
            signing,
            encryption,
        }
    }

    /// The key in Fernet's usual text form: url-safe base64 of 32 bytes.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] if the text does not decode to exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self> {
        let mut raw = URL_SAFE
            .decode(text.trim())
            .map_err(|_| Error::InvalidKey("Fernet key is not url-safe base64"))?;
        let key = <&[u8; 32]>::try_from(raw.as_slice())
            .map(Self::from_bytes)
            .map_err(|_| Error::InvalidKey("Fernet key must be 32 bytes"));
        raw.zeroize();
        key
    }

    /// The key as CYPHER_PROTOCOL 1.5.0 derives it from its 32-character key strings: the
    /// package base64-encodes the string to form a Fernet key, so the effective key is the
    /// string's 32 ASCII bytes.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] unless the string is exactly 32 bytes.
    pub fn from_cypher_key(key: &str) -> Result<Self> {
        <&[u8; 32]>::try_from(key.as_bytes())
            .map(Self::from_bytes)
            .map_err(|_| Error::InvalidKey("CYPHER_PROTOCOL keys are 32 characters"))
    }

    fn mac(&self) -> Hmac<Sha256> {
        // 16 bytes is a valid HMAC key length.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.signing)
            .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()))
    }

    /// Makes a token for `plaintext`, stamped `now_unix` (seconds since the Unix epoch), with
    /// the given IV. The IV must be fresh and unpredictable for every token:
    /// use [`encrypt`](Self::encrypt) unless you are reproducing a test vector.
    pub fn encrypt_with_iv(&self, plaintext: &[u8], now_unix: u64, iv: [u8; 16]) -> String {
        let pad = 16 - plaintext.len() % 16;
        let mut buf = Vec::with_capacity(MIN_TOKEN_LEN + plaintext.len() + pad);
        buf.push(VERSION);
        buf.extend_from_slice(&now_unix.to_be_bytes());
        buf.extend_from_slice(&iv);
        let ct_start = buf.len();
        buf.extend_from_slice(plaintext);
        buf.resize(buf.len() + pad, 0);
        let enc = cbc::Encryptor::<aes::Aes128>::new((&self.encryption).into(), (&iv).into());
        // Room for the padding was reserved above.
        let _ = enc.encrypt_padded_mut::<Pkcs7>(&mut buf[ct_start..], plaintext.len());
        let mut mac = self.mac();
        mac.update(&buf);
        buf.extend_from_slice(&mac.finalize().into_bytes());
        URL_SAFE.encode(&buf)
    }

    /// Makes a token with a random IV.
    ///
    /// # Errors
    /// [`Error::Random`] if the operating system's generator fails.
    pub fn encrypt(&self, plaintext: &[u8], now_unix: u64) -> Result<String> {
        let mut iv = [0u8; 16];
        getrandom::fill(&mut iv).map_err(|_| Error::Random)?;
        Ok(self.encrypt_with_iv(plaintext, now_unix, iv))
    }

    /// Verifies and decrypts a token. With `ttl_secs`, a token older than that, or stamped
    /// more than [`MAX_CLOCK_SKEW_SECS`] in the future, is rejected (CYPHER_PROTOCOL uses no
    /// TTL).
    ///
    /// # Errors
    /// [`Error::InvalidToken`] for every failure.
    pub fn decrypt(&self, token: &[u8], now_unix: u64, ttl_secs: Option<u64>) -> Result<Vec<u8>> {
        let mut data = URL_SAFE.decode(token).map_err(|_| Error::InvalidToken)?;
        if data.len() < MIN_TOKEN_LEN || data[0] != VERSION || (data.len() - 57) % 16 != 0 {
            return Err(Error::InvalidToken);
        }
        let (signed, tag) = data.split_at(data.len() - 32);
        let mut mac = self.mac();
        mac.update(signed);
        mac.verify_slice(tag).map_err(|_| Error::InvalidToken)?;

        let mut ts = [0u8; 8];
        ts.copy_from_slice(&data[1..9]);
        let stamped = u64::from_be_bytes(ts);
        if let Some(ttl) = ttl_secs
            && (stamped.saturating_add(ttl) < now_unix
                || now_unix.saturating_add(MAX_CLOCK_SKEW_SECS) < stamped)
        {
            return Err(Error::InvalidToken);
        }
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&data[9..25]);
        let end = data.len() - 32;
        let dec = cbc::Decryptor::<aes::Aes128>::new((&self.encryption).into(), (&iv).into());
        let plain_len = dec
            .decrypt_padded_mut::<Pkcs7>(&mut data[25..end])
            .map_err(|_| Error::InvalidToken)?
            .len();
        data.copy_within(25..25 + plain_len, 0);
        data.truncate(plain_len);
        Ok(data)
    }
}

impl fmt::Debug for FernetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FernetKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let key = FernetKey::from_cypher_key("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U").unwrap();
        for len in [0usize, 1, 15, 16, 17, 1000] {
            let msg = vec![0x41u8; len];
            let token = key.encrypt(&msg, 1_700_000_000).unwrap();
            assert_eq!(
                key.decrypt(token.as_bytes(), 1_700_000_000, None).unwrap(),
                msg
            );
            let mut bad = token.into_bytes();
            let i = bad.len() / 2;
            bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
            assert!(matches!(
                key.decrypt(&bad, 1_700_000_000, None),
                Err(Error::InvalidToken)
            ));
        }
        assert!(FernetKey::from_cypher_key("short").is_err());
        assert_eq!(format!("{key:?}"), "FernetKey(<redacted>)");
    }
}
