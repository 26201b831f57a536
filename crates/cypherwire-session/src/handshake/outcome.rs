//! What a handshake step produces: the next state and a message, a rejection, or the
//! established session with its record layer.

use std::time::Instant;

use cypherwire_wire::{CodecId, FrameCodec, Limits};
use zeroize::Zeroizing;

use super::auth::Role;
use crate::config::SessionConfig;
use crate::error::{Error, HandshakeFailure, Result};
use crate::identity::PublicKey;
use crate::noise::Noise;
use crate::record::{Opener, Sealer, direction_key};
use crate::suite::CipherSuite;

/// A completed handshake: the negotiated parameters and the record layer, ready to use.
#[derive(Debug)]
#[non_exhaustive]
pub struct Established {
    /// This side's role.
    pub role: Role,
    /// The negotiated cipher suite.
    pub suite: CipherSuite,
    /// The negotiated payload codec.
    pub codec: CodecId,
    /// The Noise handshake hash: unique per session, identical on both sides (channel
    /// binding; not secret).
    pub handshake_hash: [u8; 32],
    /// The peer's authenticated static key (identity mode only).
    pub peer_identity: Option<PublicKey>,
    /// Seals what this side sends.
    pub sealer: Sealer,
    /// Opens what this side receives.
    pub opener: Opener,
}

/// What a handshake step produced. (Exhaustive on purpose: a step either continues or ends.)
#[derive(Debug)]
pub enum Step<S> {
    /// Send `send`, then feed the peer's next message to `state`.
    Continue {
        /// The next state.
        state: S,
        /// The frame body to send.
        send: Vec<u8>,
    },
    /// The handshake is complete; send `send` first if present.
    Done {
        /// The session.
        established: Box<Established>,
        /// A last frame body for the peer.
        send: Option<Vec<u8>>,
    },
}

/// A rejected handshake message.
///
/// Steps are transactional for unauthenticated input: when a message is rejected before it
/// authenticates (malformed, a weak key, a failed Noise read), `state` holds the unchanged
/// state, so a driver that can tell garbage from the peer's real message (e.g. over datagrams)
/// may keep waiting. When the rejection comes after authentication (the peer itself
/// misbehaved), or password mode's single-use SPAKE2 state was spent, `state` is `None`. Over
/// TCP every rejection ends the connection.
#[derive(Debug)]
pub struct Rejected<S> {
    /// Why.
    pub error: Error,
    /// The state as it was before the message, when it is still usable.
    pub state: Option<Box<S>>,
}

impl<S> From<Rejected<S>> for Error {
    fn from(r: Rejected<S>) -> Self {
        r.error
    }
}

pub(super) fn fatal<S>(error: Error) -> Rejected<S> {
    Rejected { error, state: None }
}

pub(super) fn establish(
    mut noise: Noise,
    role: Role,
    suite: CipherSuite,
    codec: CodecId,
    peer_identity: Option<PublicKey>,
    config: &SessionConfig,
    now: Instant,
) -> Result<Established> {
    if !noise.is_handshake_finished() {
        return Err(HandshakeFailure::Malformed.into());
    }
    let mut handshake_hash = [0u8; 32];
    handshake_hash.copy_from_slice(noise.get_handshake_hash());
    // Noise Split(): the first key protects initiator-to-responder traffic on both sides.
    let (i2r, r2i) = noise.dangerously_get_raw_split();
    let (i2r, r2i) = (Zeroizing::new(i2r), Zeroizing::new(r2i));
    let k_i2r = direction_key(suite, i2r.as_ref(), &handshake_hash);
    let k_r2i = direction_key(suite, r2i.as_ref(), &handshake_hash);
    let (send, recv) = match role {
        Role::Initiator => (k_i2r, k_r2i),
        Role::Responder => (k_r2i, k_i2r),
    };
    let frames = FrameCodec::new(config.limits);
    Ok(Established {
        role,
        suite,
        codec,
        handshake_hash,
        peer_identity,
        sealer: Sealer::new(suite, config.backend, send, frames, config.rekey, now),
        opener: Opener::new(suite, config.backend, recv, config.max_message_len),
    })
}

/// Frame limits during the handshake (64 KiB frames).
pub fn handshake_limits() -> Limits {
    Limits::HANDSHAKE
}
