//! PSK-mode handshake (sans-IO): Noise `NNpsk0` run by `snow`, with the version and the offered
//! cipher suites and codecs bound into the Noise prologue.
//!
//! ```text
//! initiator                                              responder
//! ClientHello = header ‖ Noise msg 1 (-> psk, e)   ──▶   checks header, reads msg 1,
//!                                                        picks suite + codec
//!            ◀──   ServerHello = Noise msg 2 (<- e, ee), payload = suite ‖ codec
//! both: record keys from the Noise split (one per direction), bound to the handshake hash
//! ```
//!
//! `header = "CYPW" ‖ version (1) ‖ mode (1 = PSK) ‖ n ‖ suites[n] ‖ m ‖ codecs[m]` travels in
//! clear, and the Noise prologue is `"cypherwire/v1 handshake" ‖ header`, so a modified offer
//! makes message 1 fail authentication: no downgrade. The responder's choice is encrypted and
//! authenticated in message 2. Both messages are frames (`docs/protocol.md` §3.1–§3.3).
//!
//! Security properties: mutual authentication by the PSK; forward secrecy from the ephemeral
//! Diffie–Hellman (a later leak of the PSK does not expose recorded sessions' records). Not
//! claimed: resistance to key-compromise impersonation among PSK holders (any holder can
//! impersonate any other), and identity hiding (there are no identities in this mode). A
//! replayed ClientHello makes the responder answer, but the replayer cannot derive keys.

use std::time::Instant;

use cypherwire_wire::{CodecId, FrameCodec, Limits};

use crate::config::SessionConfig;
use crate::error::{Error, HandshakeFailure, Result};
use crate::psk::Psk;
use crate::record::{Opener, Sealer, direction_key};
use crate::suite::CipherSuite;

/// Magic bytes opening every ClientHello.
pub const MAGIC: [u8; 4] = *b"CYPW";
/// Protocol version spoken by this implementation.
pub const PROTOCOL_VERSION: u8 = 1;
/// Authentication mode byte for PSK mode.
pub const MODE_PSK: u8 = 1;
/// The Noise protocol name of PSK mode.
pub const NOISE_PSK: &str = "Noise_NNpsk0_25519_ChaChaPoly_SHA256";
/// Most suites or codecs a hello may list.
pub const MAX_OFFERED: usize = 16;

const PROLOGUE_LABEL: &[u8] = b"cypherwire/v1 handshake";
/// Room for a Noise message: ephemeral key, payload, tag.
const NOISE_BUF: usize = 256;

/// Which side of the handshake a session was on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// Sent the ClientHello (usually the client).
    Initiator,
    /// Answered it (usually the server).
    Responder,
}

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
    /// binding).
    pub handshake_hash: [u8; 32],
    /// Seals what this side sends.
    pub sealer: Sealer,
    /// Opens what this side receives.
    pub opener: Opener,
}

/// Extra knobs for reproducible tests (feature `test-util`).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct HandshakeOptions {
    /// Use this ephemeral private key instead of a random one. Only for test vectors: a fixed
    /// ephemeral destroys forward secrecy.
    #[cfg(feature = "test-util")]
    pub fixed_ephemeral: Option<[u8; 32]>,
}

fn noise_state(
    psk: &Psk,
    prologue: &[u8],
    opts: &HandshakeOptions,
    role: Role,
) -> Result<snow::HandshakeState> {
    let params = NOISE_PSK
        .parse()
        .map_err(|_| Error::Config("Noise parameters"))?;
    let builder = snow::Builder::new(params)
        .psk(0, psk.as_bytes())
        .and_then(|b| b.prologue(prologue))
        .map_err(|_| Error::Config("Noise builder"))?;
    #[cfg(feature = "test-util")]
    let builder = match &opts.fixed_ephemeral {
        Some(e) => builder.fixed_ephemeral_key_for_testing_only(e),
        None => builder,
    };
    #[cfg(not(feature = "test-util"))]
    let _ = opts;
    match role {
        Role::Initiator => builder.build_initiator(),
        Role::Responder => builder.build_responder(),
    }
    .map_err(|_| Error::Config("Noise state"))
}

fn prologue(header: &[u8]) -> Vec<u8> {
    [PROLOGUE_LABEL, header].concat()
}

/// The initiator after sending its ClientHello, waiting for the ServerHello.
pub struct Initiator {
    noise: snow::HandshakeState,
    offered_suites: Vec<CipherSuite>,
    offered_codecs: Vec<CodecId>,
    config: SessionConfig,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiator")
            .field("offered_suites", &self.offered_suites)
            .field("offered_codecs", &self.offered_codecs)
            .finish_non_exhaustive()
    }
}

impl Initiator {
    /// Starts a handshake; returns the state and the ClientHello frame body to send.
    ///
    /// # Errors
    /// [`Error::Config`] if the configuration offers more than [`MAX_OFFERED`] entries.
    pub fn start(psk: &Psk, config: &SessionConfig) -> Result<(Self, Vec<u8>)> {
        Self::start_with(psk, config, &HandshakeOptions::default())
    }

    /// [`start`](Self::start) with test options.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with(
        psk: &Psk,
        config: &SessionConfig,
        opts: &HandshakeOptions,
    ) -> Result<(Self, Vec<u8>)> {
        if config.suites.len() > MAX_OFFERED || config.codecs.len() > MAX_OFFERED {
            return Err(Error::Config(
                "at most 16 suites and 16 codecs can be offered",
            ));
        }
        let mut header = Vec::with_capacity(8 + config.suites.len() + config.codecs.len());
        header.extend_from_slice(&MAGIC);
        header.push(PROTOCOL_VERSION);
        header.push(MODE_PSK);
        header.push(config.suites.len() as u8);
        header.extend(config.suites.iter().map(|s| s.id()));
        header.push(config.codecs.len() as u8);
        header.extend(config.codecs.iter().map(|c| c.to_u8()));

        let mut noise = noise_state(psk, &prologue(&header), opts, Role::Initiator)?;
        let mut msg = [0u8; NOISE_BUF];
        let n = noise
            .write_message(&[], &mut msg)
            .map_err(|_| Error::Config("Noise write"))?;
        let mut hello = header;
        hello.extend_from_slice(&msg[..n]);
        Ok((
            Self {
                noise,
                offered_suites: config.suites.clone(),
                offered_codecs: config.codecs.clone(),
                config: config.clone(),
            },
            hello,
        ))
    }

    /// Reads the ServerHello and completes the handshake.
    ///
    /// # Errors
    /// [`Error::AuthenticationFailed`] if the responder does not hold the PSK or the message
    /// was modified; [`HandshakeFailure::NotOffered`] if it chose something not offered.
    pub fn finish(mut self, server_hello: &[u8], now: Instant) -> Result<Established> {
        let mut payload = [0u8; NOISE_BUF];
        let n = self
            .noise
            .read_message(server_hello, &mut payload)
            .map_err(|_| Error::AuthenticationFailed)?;
        let [suite_id, codec_id] = payload[..n] else {
            return Err(HandshakeFailure::Malformed.into());
        };
        let suite = CipherSuite::from_id(suite_id)
            .filter(|s| self.offered_suites.contains(s))
            .ok_or(HandshakeFailure::NotOffered)?;
        let codec = CodecId::from_u8(codec_id)
            .ok()
            .filter(|c| self.offered_codecs.contains(c))
            .ok_or(HandshakeFailure::NotOffered)?;
        establish(self.noise, Role::Initiator, suite, codec, &self.config, now)
    }
}

/// The responder side: answers a ClientHello in one step.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Responder;

impl Responder {
    /// Reads a ClientHello, picks the suite and codec (the responder's preference among those
    /// offered), and returns the completed session and the ServerHello frame body to send.
    ///
    /// # Errors
    /// [`HandshakeFailure`]s for a malformed or incompatible hello (checked before any
    /// Diffie–Hellman work), [`Error::AuthenticationFailed`] if the initiator does not hold the
    /// PSK or the hello was modified.
    pub fn accept(
        psk: &Psk,
        config: &SessionConfig,
        client_hello: &[u8],
        now: Instant,
    ) -> Result<(Established, Vec<u8>)> {
        Self::accept_with(psk, config, client_hello, now, &HandshakeOptions::default())
    }

    /// [`accept`](Self::accept) with test options.
    ///
    /// # Errors
    /// As [`accept`](Self::accept).
    pub fn accept_with(
        psk: &Psk,
        config: &SessionConfig,
        client_hello: &[u8],
        now: Instant,
        opts: &HandshakeOptions,
    ) -> Result<(Established, Vec<u8>)> {
        let hello = parse_client_hello(client_hello)?;
        let suite = config
            .suites
            .iter()
            .copied()
            .find(|s| hello.suites.contains(&s.id()))
            .ok_or(HandshakeFailure::NoCommonSuite)?;
        let codec = config
            .codecs
            .iter()
            .copied()
            .find(|c| hello.codecs.contains(&c.to_u8()))
            .ok_or(HandshakeFailure::NoCommonCodec)?;

        let mut noise = noise_state(psk, &prologue(hello.header), opts, Role::Responder)?;
        let mut scratch = [0u8; NOISE_BUF];
        noise
            .read_message(hello.noise, &mut scratch)
            .map_err(|_| Error::AuthenticationFailed)?;
        let mut reply = vec![0u8; NOISE_BUF];
        let n = noise
            .write_message(&[suite.id(), codec.to_u8()], &mut reply)
            .map_err(|_| Error::Config("Noise write"))?;
        reply.truncate(n);
        let est = establish(noise, Role::Responder, suite, codec, config, now)?;
        Ok((est, reply))
    }
}

struct ClientHello<'a> {
    header: &'a [u8],
    suites: &'a [u8],
    codecs: &'a [u8],
    noise: &'a [u8],
}

/// Parses a ClientHello's clear header. Pure byte checks: no cryptography.
fn parse_client_hello(b: &[u8]) -> Result<ClientHello<'_>> {
    let malformed = || Error::Handshake(HandshakeFailure::Malformed);
    if b.len() < 4 || b[..4] != MAGIC {
        return Err(HandshakeFailure::BadMagic.into());
    }
    let version = *b.get(4).ok_or_else(malformed)?;
    if version != PROTOCOL_VERSION {
        return Err(HandshakeFailure::UnsupportedVersion(version).into());
    }
    let mode = *b.get(5).ok_or_else(malformed)?;
    if mode != MODE_PSK {
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
    // Noise message 1 of NNpsk0 is exactly 32 + 16 bytes (ephemeral key, empty payload's tag).
    let noise = &b[header_len..];
    if noise.len() != 48 {
        return Err(malformed());
    }
    Ok(ClientHello {
        header: &b[..header_len],
        suites,
        codecs,
        noise,
    })
}

fn establish(
    mut noise: snow::HandshakeState,
    role: Role,
    suite: CipherSuite,
    codec: CodecId,
    config: &SessionConfig,
    now: Instant,
) -> Result<Established> {
    if !noise.is_handshake_finished() {
        return Err(HandshakeFailure::Malformed.into());
    }
    let mut handshake_hash = [0u8; 32];
    handshake_hash.copy_from_slice(noise.get_handshake_hash());
    // Noise Split(): the first key protects initiator-to-responder traffic on both sides.
    let (mut i2r, mut r2i) = noise.dangerously_get_raw_split();
    let k_i2r = direction_key(suite, &i2r, &handshake_hash);
    let k_r2i = direction_key(suite, &r2i, &handshake_hash);
    zeroize::Zeroize::zeroize(&mut i2r);
    zeroize::Zeroize::zeroize(&mut r2i);
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
        sealer: Sealer::new(suite, send, frames, config.rekey, now),
        opener: Opener::new(suite, recv, config.max_message_len),
    })
}

/// Frame limits during the handshake (64 KiB frames).
pub fn handshake_limits() -> Limits {
    Limits::HANDSHAKE
}
