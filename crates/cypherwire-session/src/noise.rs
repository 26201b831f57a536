//! The Noise glue (`snow`): building handshake states, reading and writing messages, and
//! keeping long-term secrets wipeable.
//!
//! `snow` wipes nothing. Two of its copies of long-term secrets are reachable and are wiped
//! here: the PSK slots of a handshake state ([`Noise`] overwrites them before the state is
//! freed, through `snow`'s own `set_psk`), and the static private key, which lives in a
//! Diffie–Hellman object this module provides ([`WipedX25519`], zeroized on drop) instead of
//! `snow`'s. What `snow` still keeps unwiped is listed in `docs/security.md` ("Secrets in
//! memory").

use std::ops::{Deref, DerefMut};

use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver, FallbackResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, HandshakeFailure, Result};
use crate::identity::IdentityKey;

/// The prologue's fixed label.
const PROLOGUE_LABEL: &[u8] = b"cypherwire/v1 handshake";

/// Room for any Noise message of these patterns.
const NOISE_BUF: usize = 256;

/// PSK slots in a `snow` handshake state.
const PSK_SLOTS: usize = 10;

/// A `snow` handshake state whose PSK slots are overwritten before it is freed.
pub(crate) struct Noise(Box<snow::HandshakeState>);

impl Deref for Noise {
    type Target = snow::HandshakeState;

    fn deref(&self) -> &snow::HandshakeState {
        &self.0
    }
}

impl DerefMut for Noise {
    fn deref_mut(&mut self) -> &mut snow::HandshakeState {
        &mut self.0
    }
}

impl Drop for Noise {
    fn drop(&mut self) {
        // In place: the state is boxed, so this is the memory that is about to be freed.
        for slot in 0..PSK_SLOTS {
            let _ = self.0.set_psk(slot, &[0u8; 32]);
        }
    }
}

/// X25519 for `snow` with the private key zeroized on drop (`snow`'s own keeps it).
#[derive(Default, Zeroize, ZeroizeOnDrop)]
struct WipedX25519 {
    private: [u8; 32],
    #[zeroize(skip)]
    public: [u8; 32],
}

impl WipedX25519 {
    fn derive_public(&mut self) {
        self.public = curve25519_dalek::MontgomeryPoint::mul_base_clamped(self.private).to_bytes();
    }
}

impl Dh for WipedX25519 {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        32
    }

    fn priv_len(&self) -> usize {
        32
    }

    fn set(&mut self, privkey: &[u8]) {
        let n = privkey.len().min(32);
        self.private = [0; 32];
        self.private[..n].copy_from_slice(&privkey[..n]);
        self.derive_public();
    }

    fn generate(&mut self, rng: &mut dyn Random) -> std::result::Result<(), snow::Error> {
        rng.try_fill_bytes(&mut self.private)?;
        self.derive_public();
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        &self.private
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> std::result::Result<(), snow::Error> {
        let peer: [u8; 32] = pubkey
            .get(..32)
            .and_then(|p| p.try_into().ok())
            .ok_or(snow::Error::Dh)?;
        let mut shared = curve25519_dalek::MontgomeryPoint(peer)
            .mul_clamped(self.private)
            .to_bytes();
        let n = out.len().min(32);
        out[..n].copy_from_slice(&shared[..n]);
        shared.zeroize();
        Ok(())
    }
}

/// Our X25519; everything else from `snow`'s default resolver.
struct Resolver;

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        None
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::<WipedX25519>::default()),
            _ => None,
        }
    }

    fn resolve_hash(&self, _: &HashChoice) -> Option<Box<dyn Hash>> {
        None
    }

    fn resolve_cipher(&self, _: &CipherChoice) -> Option<Box<dyn Cipher>> {
        None
    }
}

pub(crate) fn noise_state(
    pattern: &str,
    psk: Option<&[u8; 32]>,
    static_key: Option<&IdentityKey>,
    prologue: &[u8],
    fixed_ephemeral: Option<&[u8; 32]>,
    initiator: bool,
) -> Result<Noise> {
    let params = pattern
        .parse()
        .map_err(|_| Error::Config("Noise parameters"))?;
    let resolver = FallbackResolver::new(Box::new(Resolver), Box::new(DefaultResolver));
    let mut builder = snow::Builder::with_resolver(params, Box::new(resolver))
        .prologue(prologue)
        .map_err(|_| Error::Config("Noise builder"))?;
    if let Some(k) = psk {
        builder = builder.psk(0, k).map_err(|_| Error::Config("Noise psk"))?;
    }
    if let Some(k) = static_key {
        builder = builder
            .local_private_key(k.private_bytes())
            .map_err(|_| Error::Config("Noise static key"))?;
    }
    if let Some(e) = fixed_ephemeral {
        builder = builder.fixed_ephemeral_key_for_testing_only(e);
    }
    if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    }
    .map(|state| Noise(Box::new(state)))
    .map_err(|_| Error::Config("Noise state"))
}

pub(crate) fn prologue(parts: &[&[u8]]) -> Vec<u8> {
    let mut p = PROLOGUE_LABEL.to_vec();
    for part in parts {
        p.extend_from_slice(part);
    }
    p
}

pub(crate) fn noise_write(noise: &mut snow::HandshakeState, payload: &[u8]) -> Result<Vec<u8>> {
    let mut out = vec![0u8; NOISE_BUF];
    let n = noise
        .write_message(payload, &mut out)
        .map_err(|_| Error::Config("Noise write"))?;
    out.truncate(n);
    Ok(out)
}

pub(crate) fn noise_read(noise: &mut snow::HandshakeState, msg: &[u8]) -> Result<Vec<u8>> {
    if msg.len() > NOISE_BUF {
        return Err(HandshakeFailure::Malformed.into());
    }
    let mut out = vec![0u8; NOISE_BUF];
    let n = noise
        .read_message(msg, &mut out)
        .map_err(|_| Error::AuthenticationFailed)?;
    out.truncate(n);
    Ok(out)
}
