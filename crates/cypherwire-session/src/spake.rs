//! SPAKE2 over the Ed25519 group (sans-IO), as password mode uses it (`docs/protocol.md`
//! §3.2.3): the same bytes as the `spake2` Python package and Rust crate (version 0.4), with
//! every secret held in memory that is wiped when the exchange ends.
//!
//! - Group: the prime-order subgroup of edwards25519 (order ℓ), generator B, points encoded
//!   as 32-byte compressed Edwards y.
//! - Blinding points M (side A) and N (side B), fixed by the constants below.
//! - Password scalar: `HKDF-SHA256(salt = "", ikm = password, info = "SPAKE2 pw")`, 48 bytes,
//!   read as a big-endian integer, reduced mod ℓ.
//! - Message: the side's byte (`'A'` or `'B'`) then `X = x·B + pw·M` (side A) or
//!   `Y = y·B + pw·N` (side B); `x`, `y` are 64 random bytes read little-endian, reduced
//!   mod ℓ.
//! - Key: side A computes `K = x·(Y − pw·N)`, side B `K = y·(X − pw·M)`; both output
//!   `SHA-256(SHA-256(pw) ‖ SHA-256(idA) ‖ SHA-256(idB) ‖ X ‖ Y ‖ K)`.

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};

/// Length of a SPAKE2 message: the side byte and a compressed point.
pub(crate) const MSG_LEN: usize = 33;

/// M, the blinding point of side A (compressed).
const M: [u8; 32] = [
    0x15, 0xcf, 0xd1, 0x8e, 0x38, 0x59, 0x52, 0x98, 0x2b, 0x6a, 0x8f, 0x8c, 0x78, 0x54, 0x96, 0x3b,
    0x58, 0xe3, 0x43, 0x88, 0xc8, 0xe6, 0xda, 0xe8, 0x91, 0xdb, 0x75, 0x64, 0x81, 0xa0, 0x23, 0x12,
];

/// N, the blinding point of side B (compressed).
const N: [u8; 32] = [
    0xf0, 0x4f, 0x2e, 0x7e, 0xb7, 0x34, 0xb2, 0xa8, 0xf8, 0xb4, 0x72, 0xea, 0xf9, 0xc3, 0xc6, 0x32,
    0x57, 0x6a, 0xc6, 0x4a, 0xea, 0x65, 0x0b, 0x49, 0x6a, 0x8a, 0x20, 0xff, 0x00, 0xe5, 0x83, 0xc3,
];

/// Which side of the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The initiator (message byte `'A'`, blinded by M).
    A,
    /// The responder (message byte `'B'`, blinded by N).
    B,
}

impl Side {
    fn byte(self) -> u8 {
        match self {
            Self::A => b'A',
            Self::B => b'B',
        }
    }

    fn blinding(self) -> Result<EdwardsPoint> {
        point(match self {
            Self::A => &M,
            Self::B => &N,
        })
    }

    fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }
}

fn point(bytes: &[u8; 32]) -> Result<EdwardsPoint> {
    CompressedEdwardsY(*bytes)
        .decompress()
        .ok_or(Error::AuthenticationFailed)
}

/// The password's scalar (see the module docs).
fn password_scalar(password: &[u8]) -> Scalar {
    let mut okm = Zeroizing::new([0u8; 48]);
    // 48 bytes is within HKDF-SHA256's output bound: `expand` cannot fail.
    let _ = Hkdf::<Sha256>::new(Some(b""), password).expand(b"SPAKE2 pw", okm.as_mut());
    let mut wide = Zeroizing::new([0u8; 64]);
    for (i, b) in okm.iter().enumerate() {
        wide[47 - i] = *b;
    }
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// One side's state between its message and the peer's. Every field is wiped on drop; the
/// password itself is not kept (only its scalar and its SHA-256, which the key needs).
pub(crate) struct Spake {
    side: Side,
    secret: Scalar,
    pw_scalar: Scalar,
    pw_hash: [u8; 32],
    /// Our message's point (compressed).
    ours: [u8; 32],
    id_a: &'static [u8],
    id_b: &'static [u8],
}

impl Drop for Spake {
    fn drop(&mut self) {
        self.secret.zeroize();
        self.pw_scalar.zeroize();
        self.pw_hash.zeroize();
    }
}

impl Spake {
    /// Starts side `side` with `password`, the identities, and 64 random bytes for its secret
    /// scalar; returns the state and the message to send.
    pub(crate) fn start(
        side: Side,
        password: &[u8],
        id_a: &'static [u8],
        id_b: &'static [u8],
        random: &[u8; 64],
    ) -> Result<(Self, [u8; MSG_LEN])> {
        let secret = Scalar::from_bytes_mod_order_wide(random);
        let pw_scalar = password_scalar(password);
        let own = EdwardsPoint::mul_base(&secret) + side.blinding()? * pw_scalar;
        let ours = own.compress().to_bytes();
        let mut msg = [0u8; MSG_LEN];
        msg[0] = side.byte();
        msg[1..].copy_from_slice(&ours);
        let state = Self {
            side,
            secret,
            pw_scalar,
            pw_hash: Sha256::digest(password).into(),
            ours,
            id_a,
            id_b,
        };
        Ok((state, msg))
    }

    /// Finishes with the peer's message; returns the shared key.
    ///
    /// # Errors
    /// [`Error::AuthenticationFailed`] for a message of the wrong length or side, or one that
    /// is not a point.
    pub(crate) fn finish(self, peer: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        let Some((&side, body)) = peer.split_first() else {
            return Err(Error::AuthenticationFailed);
        };
        let theirs: [u8; 32] = body.try_into().map_err(|_| Error::AuthenticationFailed)?;
        if side != self.side.other().byte() {
            return Err(Error::AuthenticationFailed);
        }
        let unblinding = self.side.other().blinding()?;
        let k = (point(&theirs)? - unblinding * self.pw_scalar) * self.secret;
        let k = Zeroizing::new(k.compress().to_bytes());
        let (x, y) = match self.side {
            Side::A => (&self.ours, &theirs),
            Side::B => (&theirs, &self.ours),
        };
        let mut transcript = Sha256::new();
        transcript.update(self.pw_hash);
        transcript.update(Sha256::digest(self.id_a));
        transcript.update(Sha256::digest(self.id_b));
        transcript.update(x);
        transcript.update(y);
        transcript.update(k.as_ref());
        Ok(Zeroizing::new(transcript.finalize().into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_agree_and_a_wrong_password_does_not() {
        let (a, ma) = Spake::start(Side::A, b"pw", b"ida", b"idb", &[1; 64]).unwrap();
        let (b, mb) = Spake::start(Side::B, b"pw", b"ida", b"idb", &[2; 64]).unwrap();
        let (ka, kb) = (a.finish(&mb).unwrap(), b.finish(&ma).unwrap());
        assert_eq!(*ka, *kb);
        let (a, _) = Spake::start(Side::A, b"pw", b"ida", b"idb", &[1; 64]).unwrap();
        let (b, _) = Spake::start(Side::B, b"other", b"ida", b"idb", &[2; 64]).unwrap();
        let (_, mb2) = Spake::start(Side::B, b"other", b"ida", b"idb", &[2; 64]).unwrap();
        assert_ne!(*a.finish(&mb2).unwrap(), *kb);
        drop(b);
        // Wrong side, length or point.
        let (a, ma) = Spake::start(Side::A, b"pw", b"ida", b"idb", &[1; 64]).unwrap();
        assert!(a.finish(&ma).is_err(), "its own side");
        let (a, _) = Spake::start(Side::A, b"pw", b"ida", b"idb", &[1; 64]).unwrap();
        assert!(a.finish(&mb[..32]).is_err());
    }

    /// Byte for byte what the `spake2` crate 0.4 computes (kept as a dev-dependency for this
    /// comparison only), for random inputs through the same seeded generator.
    #[test]
    fn matches_the_spake2_crate() {
        use rand_core::{CryptoRng, RngCore};
        struct Fixed([u8; 64]);
        impl RngCore for Fixed {
            fn next_u32(&mut self) -> u32 {
                0
            }
            fn next_u64(&mut self) -> u64 {
                0
            }
            fn fill_bytes(&mut self, dest: &mut [u8]) {
                dest.copy_from_slice(&self.0[..dest.len()]);
            }
            fn try_fill_bytes(
                &mut self,
                dest: &mut [u8],
            ) -> std::result::Result<(), rand_core::Error> {
                self.fill_bytes(dest);
                Ok(())
            }
        }
        impl CryptoRng for Fixed {}
        use spake2::{Ed25519Group, Identity, Password, Spake2};
        for round in 0u8..16 {
            let pw: Vec<u8> = (0..=round).map(|i| i.wrapping_mul(37)).collect();
            let ra = [round.wrapping_add(1); 64];
            let rb = [round.wrapping_add(101); 64];
            let (id_a, id_b): (&'static [u8], &'static [u8]) = (b"client id", b"server id");
            let (theirs_a, theirs_ma) = Spake2::<Ed25519Group>::start_a_with_rng(
                &Password::new(&pw),
                &Identity::new(id_a),
                &Identity::new(id_b),
                Fixed(ra),
            );
            let (theirs_b, theirs_mb) = Spake2::<Ed25519Group>::start_b_with_rng(
                &Password::new(&pw),
                &Identity::new(id_a),
                &Identity::new(id_b),
                Fixed(rb),
            );
            let (a, ma) = Spake::start(Side::A, &pw, id_a, id_b, &ra).unwrap();
            let (b, mb) = Spake::start(Side::B, &pw, id_a, id_b, &rb).unwrap();
            assert_eq!(ma.as_slice(), theirs_ma.as_slice());
            assert_eq!(mb.as_slice(), theirs_mb.as_slice());
            let key = theirs_a.finish(&theirs_mb).unwrap();
            assert_eq!(a.finish(&mb).unwrap().as_slice(), key.as_slice());
            assert_eq!(
                b.finish(&ma).unwrap().as_slice(),
                theirs_b.finish(&theirs_ma).unwrap().as_slice()
            );
        }
    }
}
