//! Checks on the peer's X25519 keys: no low-order points, a static key that is there.

use crate::error::{HandshakeFailure, Result};
use crate::identity::PublicKey;
use crate::noise::Noise;

/// X25519 u-coordinates of small order, and their non-canonical encodings (bit 255 ignored,
/// as X25519 does): multiplying any of them by a clamped scalar gives an all-zero shared
/// secret. The list is the one libsodium uses; Wycheproof's "ZeroSharedSecret" cases are all in
/// it (tested).
const LOW_ORDER_POINTS: [[u8; 32]; 7] = {
    const fn tail_ff(first: u8) -> [u8; 32] {
        let mut p = [0xff; 32];
        p[0] = first;
        p[31] = 0x7f;
        p
    }
    let mut one = [0u8; 32];
    one[0] = 1;
    [
        [0; 32],
        one,
        [
            0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f,
            0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16,
            0x5f, 0x49, 0xb8, 0x00,
        ],
        [
            0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83,
            0xef, 0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd,
            0xd0, 0x9f, 0x11, 0x57,
        ],
        tail_ff(0xec),
        tail_ff(0xed),
        tail_ff(0xee),
    ]
};

/// Whether an X25519 public key would give an all-zero (non-contributory) shared secret.
/// Handshakes refuse such keys from the peer (`HandshakeFailure::WeakKey`).
pub fn is_low_order(public: &[u8]) -> bool {
    let Ok(mut key) = <[u8; 32]>::try_from(public) else {
        return true;
    };
    key[31] &= 0x7f;
    LOW_ORDER_POINTS.contains(&key)
}

/// Checks the peer's ephemeral key at the start of a Noise message.
pub(super) fn check_ephemeral(noise_msg: &[u8]) -> Result<()> {
    match noise_msg.get(..32) {
        Some(e) if !is_low_order(e) => Ok(()),
        Some(_) => Err(HandshakeFailure::WeakKey.into()),
        None => Err(HandshakeFailure::Malformed.into()),
    }
}

pub(super) fn remote_static(noise: &Noise) -> Result<PublicKey> {
    let raw = noise
        .get_remote_static()
        .ok_or(HandshakeFailure::Malformed)?;
    if is_low_order(raw) {
        return Err(HandshakeFailure::WeakKey.into());
    }
    let key = <[u8; 32]>::try_from(raw).map_err(|_| HandshakeFailure::Malformed)?;
    Ok(PublicKey::from_bytes(key))
}
