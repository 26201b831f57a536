//! Password mode's glue: SPAKE2 (its messages, its seeded generator for test vectors) and
//! the Noise `NNpsk0` handshake keyed by its output.

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::auth::Role;
use super::hello::{NOISE_PSK, SPAKE_MSG_LEN};
use super::options::HandshakeOptions;
use crate::error::{Error, HandshakeFailure, Result};
use crate::noise::{Noise, noise_state, prologue};
use crate::spake::{Side as SpakeSide, Spake};

const SPAKE_ID_CLIENT: &[u8] = b"cypherwire/v1 password client";
const SPAKE_ID_SERVER: &[u8] = b"cypherwire/v1 password server";

/// Checks a SPAKE2 message from side `side` (`b'A'` or `b'B'`) without consuming any state:
/// length, side byte, and that the element is a valid Ed25519 point.
pub(super) fn check_spake_msg(msg: &[u8], side: u8) -> Result<()> {
    let ok = msg.len() == SPAKE_MSG_LEN
        && msg[0] == side
        && <[u8; 32]>::try_from(&msg[1..])
            .ok()
            .and_then(|b| curve25519_dalek::edwards::CompressedEdwardsY(b).decompress())
            .is_some();
    if ok {
        Ok(())
    } else {
        Err(HandshakeFailure::Malformed.into())
    }
}

/// A deterministic generator for test vectors: the ChaCha20 keystream of a seed.
#[cfg(feature = "test-util")]
struct SeededRng(chacha20::ChaCha20);

#[cfg(feature = "test-util")]
impl SeededRng {
    fn new(seed: &[u8; 32]) -> Self {
        use chacha20::cipher::KeyIvInit;
        Self(chacha20::ChaCha20::new(seed.into(), &[0u8; 12].into()))
    }
}

#[cfg(feature = "test-util")]
impl rand_core::RngCore for SeededRng {
    fn next_u32(&mut self) -> u32 {
        rand_core::impls::next_u32_via_fill(self)
    }
    fn next_u64(&mut self) -> u64 {
        rand_core::impls::next_u64_via_fill(self)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        use chacha20::cipher::StreamCipher;
        dest.fill(0);
        self.0.apply_keystream(dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

#[cfg(feature = "test-util")]
impl rand_core::CryptoRng for SeededRng {}

/// Starts SPAKE2 on `side` ('A' for the initiator, 'B' for the responder), with the seeded
/// generator when test options ask for it.
pub(super) fn spake_start(
    w: &[u8],
    side: Role,
    opts: &HandshakeOptions,
) -> Result<(Spake, Vec<u8>)> {
    let mut random = Zeroizing::new([0u8; 64]);
    #[cfg(feature = "test-util")]
    let seeded = if let Some(seed) = &opts.spake_seed {
        rand_core::RngCore::fill_bytes(&mut SeededRng::new(seed), random.as_mut());
        true
    } else {
        false
    };
    #[cfg(not(feature = "test-util"))]
    let (seeded, _) = (false, opts);
    if !seeded {
        getrandom::fill(random.as_mut()).map_err(|_| Error::Random)?;
    }
    let side = match side {
        Role::Initiator => SpakeSide::A,
        Role::Responder => SpakeSide::B,
    };
    let (state, msg) = Spake::start(side, w, SPAKE_ID_CLIENT, SPAKE_ID_SERVER, &random)?;
    Ok((state, msg.to_vec()))
}

/// Password mode's second phase: finishes SPAKE2 with the peer's message and starts the Noise
/// `NNpsk0` handshake keyed by its output, over a prologue of `parts`.
pub(super) fn password_noise(
    spake: Spake,
    peer_msg: &[u8],
    parts: &[&[u8]],
    opts: &HandshakeOptions,
    role: Role,
) -> Result<Noise> {
    let key = spake.finish(peer_msg)?;
    let psk = password_psk(key.as_ref());
    noise_state(
        NOISE_PSK,
        Some(&psk),
        None,
        &prologue(parts),
        opts.ephemeral(),
        role == Role::Initiator,
    )
}

/// Password mode's Noise PSK: `HKDF-SHA256(salt = none, ikm = SPAKE2 key, info = label)`.
pub(super) fn password_psk(spake_key: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut k = Zeroizing::new([0u8; 32]);
    let _ = Hkdf::<Sha256>::new(None, spake_key).expand(b"cypherwire/v1 password psk", k.as_mut());
    k
}
