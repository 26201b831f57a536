//! The cluster key: what seals everything an instance writes to the backplane.

use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::Error;

/// Bytes in a cluster key.
pub const KEY_LEN: usize = 32;

/// A 32-byte secret every instance of a cluster holds, with a 32-bit id (the first four bytes
/// of its SHA-256 digest) that every sealed value names, so that keys can be rotated: an
/// instance seals with its first key and opens values sealed with any of its keys.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ClusterKey {
    bytes: [u8; KEY_LEN],
}

impl ClusterKey {
    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self { bytes }
    }

    /// A fresh random key.
    ///
    /// # Errors
    /// [`Error::Key`] if the system's random source fails.
    pub fn generate() -> Result<Self, Error> {
        let mut bytes = [0u8; KEY_LEN];
        getrandom::fill(&mut bytes).map_err(|_| Error::Key("no random source".into()))?;
        Ok(Self { bytes })
    }

    /// A key written as 64 hex digits (surrounding whitespace ignored).
    ///
    /// # Errors
    /// [`Error::Key`] for anything else.
    pub fn from_hex(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        if text.len() != 2 * KEY_LEN || !text.is_ascii() {
            return Err(Error::Key(format!(
                "a cluster key is {} hex digits, not {} characters",
                2 * KEY_LEN,
                text.chars().count()
            )));
        }
        let mut bytes = [0u8; KEY_LEN];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|_| Error::Key("a cluster key is hex digits only".into()))?;
        }
        Ok(Self { bytes })
    }

    /// The key as 64 lowercase hex digits (for writing a key file).
    pub fn to_hex(&self) -> String {
        self.bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The keys in a key file: one key per line as hex digits, the first sealing, all of them
    /// opening (blank lines and lines starting with `#` are skipped).
    ///
    /// # Errors
    /// [`Error::Key`] if the file cannot be read, holds no key, or a line is not a key.
    pub fn read_file(path: &Path) -> Result<Vec<Self>, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Key(format!("cannot read {}: {e}", path.display())))?;
        let keys = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(Self::from_hex)
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(Error::Key(format!("{} holds no key", path.display())));
        }
        Ok(keys)
    }

    /// The key's id, as sealed values name it.
    pub fn id(&self) -> u32 {
        let digest = Sha256::digest(self.bytes);
        u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey(id {:08x})", self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_reads_back_from_its_hex_and_never_prints_its_bytes() {
        let k = ClusterKey::generate().unwrap();
        let again = ClusterKey::from_hex(&format!("  {}\n", k.to_hex())).unwrap();
        assert_eq!(again.bytes(), k.bytes());
        assert_eq!(again.id(), k.id());
        assert!(!format!("{k:?}").contains(&k.to_hex()[..8]));
    }

    #[test]
    fn malformed_keys_are_refused_with_the_reason() {
        let short = ClusterKey::from_hex("abcd").unwrap_err().to_string();
        assert!(short.contains("64 hex digits"), "{short}");
        let bad = "zz".repeat(32);
        assert!(
            ClusterKey::from_hex(&bad)
                .unwrap_err()
                .to_string()
                .contains("hex digits only")
        );
    }

    #[test]
    fn a_key_file_lists_the_sealing_key_first() {
        let dir = std::env::temp_dir().join(format!("cw-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (
            ClusterKey::generate().unwrap(),
            ClusterKey::generate().unwrap(),
        );
        let path = dir.join("keys");
        std::fs::write(
            &path,
            format!("# rotation\n{}\n\n{}\n", a.to_hex(), b.to_hex()),
        )
        .unwrap();
        let keys = ClusterKey::read_file(&path).unwrap();
        assert_eq!(
            keys.iter().map(ClusterKey::id).collect::<Vec<_>>(),
            [a.id(), b.id()]
        );
        std::fs::write(&path, "# nothing\n").unwrap();
        assert!(
            ClusterKey::read_file(&path)
                .unwrap_err()
                .to_string()
                .contains("holds no key")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
