//! The handshake's byte layouts outside Noise: the ClientHello's clear header, the
//! responder's encrypted choice of suite and codec, and password mode's challenge
//! (`docs/protocol.md` §3).

use cypherwire_wire::CodecId;

use crate::config::SessionConfig;
use crate::error::{Error, HandshakeFailure, Result};
use crate::identity::{Argon2Cost, PasswordVerifier};
use crate::suite::CipherSuite;

/// Magic bytes opening every ClientHello.
pub const MAGIC: [u8; 4] = *b"CYPW";
/// Protocol version spoken by this implementation.
pub const PROTOCOL_VERSION: u8 = 1;
/// Mode byte: PSK.
pub const MODE_PSK: u8 = 1;
/// Mode byte: identity keys.
pub const MODE_IDENTITY: u8 = 2;
/// Mode byte: password.
pub const MODE_PASSWORD: u8 = 3;
/// Noise protocol of PSK mode (and of password mode's second phase).
pub const NOISE_PSK: &str = "Noise_NNpsk0_25519_ChaChaPoly_SHA256";
/// Noise protocol of identity mode.
pub const NOISE_IDENTITY: &str = "Noise_XX_25519_ChaChaPoly_SHA256";
/// Most suites or codecs a hello may list.
pub const MAX_OFFERED: usize = 16;

/// Length of a SPAKE2 message: side byte and compressed Edwards point.
pub(super) const SPAKE_MSG_LEN: usize = 33;

pub(super) fn hello_header(mode: u8, config: &SessionConfig) -> Result<Vec<u8>> {
    if config.suites.len() > MAX_OFFERED || config.codecs.len() > MAX_OFFERED {
        return Err(Error::Config(
            "at most 16 suites and 16 codecs can be offered",
        ));
    }
    let mut header = Vec::with_capacity(8 + config.suites.len() + config.codecs.len());
    header.extend_from_slice(&MAGIC);
    header.push(PROTOCOL_VERSION);
    header.push(mode);
    header.push(config.suites.len() as u8);
    header.extend(config.suites.iter().map(|s| s.id()));
    header.push(config.codecs.len() as u8);
    header.extend(config.codecs.iter().map(|c| c.to_u8()));
    Ok(header)
}

pub(super) fn expect_len(b: &[u8], len: usize) -> Result<()> {
    if b.len() == len {
        Ok(())
    } else {
        Err(HandshakeFailure::Malformed.into())
    }
}

pub(super) struct ClientHello<'a> {
    pub(super) header: &'a [u8],
    pub(super) mode: u8,
    pub(super) suites: &'a [u8],
    pub(super) codecs: &'a [u8],
    pub(super) noise: &'a [u8],
}

/// Parses a ClientHello's clear header. Pure byte checks: no cryptography.
pub(super) fn parse_client_hello(b: &[u8]) -> Result<ClientHello<'_>> {
    let malformed = || Error::Handshake(HandshakeFailure::Malformed);
    if b.len() < 4 || b[..4] != MAGIC {
        return Err(HandshakeFailure::BadMagic.into());
    }
    let version = *b.get(4).ok_or_else(malformed)?;
    if version != PROTOCOL_VERSION {
        return Err(HandshakeFailure::UnsupportedVersion(version).into());
    }
    let mode = *b.get(5).ok_or_else(malformed)?;
    if !(MODE_PSK..=MODE_PASSWORD).contains(&mode) {
        return Err(HandshakeFailure::UnsupportedMode(mode).into());
    }
    let n = usize::from(*b.get(6).ok_or_else(malformed)?);
    let suites = b.get(7..7 + n).ok_or_else(malformed)?;
    let m = usize::from(*b.get(7 + n).ok_or_else(malformed)?);
    let codecs = b.get(8 + n..8 + n + m).ok_or_else(malformed)?;
    if n == 0 || m == 0 || n > MAX_OFFERED || m > MAX_OFFERED {
        return Err(malformed());
    }
    let header_len = 8 + n + m;
    Ok(ClientHello {
        header: &b[..header_len],
        mode,
        suites,
        codecs,
        noise: &b[header_len..],
    })
}

pub(super) fn parse_choice(
    payload: &[u8],
    config: &SessionConfig,
) -> Result<(CipherSuite, CodecId)> {
    let [suite_id, codec_id] = payload else {
        return Err(HandshakeFailure::Malformed.into());
    };
    let suite = CipherSuite::from_id(*suite_id)
        .filter(|s| config.suites.contains(s))
        .ok_or(HandshakeFailure::NotOffered)?;
    let codec = CodecId::from_u8(*codec_id)
        .ok()
        .filter(|c| config.codecs.contains(c))
        .ok_or(HandshakeFailure::NotOffered)?;
    Ok((suite, codec))
}

pub(super) struct Challenge<'a> {
    pub(super) cost: Argon2Cost,
    pub(super) salt: &'a [u8],
    pub(super) spake_msg: &'a [u8],
}

/// `m_kib (u32) ‖ t (u32) ‖ p (u32) ‖ salt_len (u8) ‖ salt ‖ spake2 message (33)`.
pub(super) fn parse_challenge(b: &[u8]) -> Result<Challenge<'_>> {
    let malformed = || Error::Handshake(HandshakeFailure::Malformed);
    let u32_at = |i: usize| -> Result<u32> {
        let bytes: [u8; 4] = b
            .get(i..i + 4)
            .ok_or_else(malformed)?
            .try_into()
            .map_err(|_| malformed())?;
        Ok(u32::from_be_bytes(bytes))
    };
    let cost = Argon2Cost {
        m_kib: u32_at(0)?,
        t: u32_at(4)?,
        p: u32_at(8)?,
    };
    let salt_len = usize::from(*b.get(12).ok_or_else(malformed)?);
    if !(8..=64).contains(&salt_len) {
        return Err(malformed());
    }
    let salt = b.get(13..13 + salt_len).ok_or_else(malformed)?;
    let spake_msg = &b[13 + salt_len..];
    if spake_msg.len() != SPAKE_MSG_LEN {
        return Err(malformed());
    }
    Ok(Challenge {
        cost,
        salt,
        spake_msg,
    })
}

pub(super) fn encode_challenge(v: &PasswordVerifier, spake_msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + v.salt.len() + spake_msg.len());
    out.extend_from_slice(&v.cost.m_kib.to_be_bytes());
    out.extend_from_slice(&v.cost.t.to_be_bytes());
    out.extend_from_slice(&v.cost.p.to_be_bytes());
    out.push(v.salt.len() as u8);
    out.extend_from_slice(&v.salt);
    out.extend_from_slice(spake_msg);
    out
}
