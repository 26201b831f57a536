//! Handshakes (sans-IO): three authentication modes over Noise, run by `snow`.
//!
//! Every handshake starts with a ClientHello whose clear header is
//! `"CYPW" ‖ version (1) ‖ mode ‖ n ‖ suites[n] ‖ m ‖ codecs[m]`; the Noise prologue is
//! `"cypherwire/v1 handshake" ‖ header` (plus, in password mode, the PAKE messages), so any
//! change to the offer fails authentication: no downgrade. The responder's choice of suite and
//! codec travels encrypted and authenticated in its Noise message.
//!
//! | mode | byte | Noise pattern | authenticates | messages |
//! | --- | --- | --- | --- | --- |
//! | PSK | 1 | `NNpsk0` | both sides, by a shared 32-byte key | hello+e → ← e,ee |
//! | identity | 2 | `XX` | both sides, by static X25519 keys checked against an allow-list | hello+e → ← e,ee,s,es → s,se |
//! | password | 3 | SPAKE2, then `NNpsk0` keyed by its output | both sides, by a network password; no offline guessing from a transcript | hello → ← challenge → spake+e ← e,ee |
//!
//! All modes give forward secrecy (ephemeral X25519). The state machines are driven by
//! [`Initiator::handle`] / [`Responder::handle`], each consuming the state and returning a
//! [`Step`]. Byte layouts: `docs/protocol.md` §3.

use std::time::Instant;

use cypherwire_wire::{CodecId, FrameCodec, Limits};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::config::SessionConfig;
use crate::error::{Error, HandshakeFailure, Result};
use crate::identity::{Argon2Cost, IdentityKey, Password, PasswordVerifier, PublicKey};
use crate::noise::{Noise, noise_read, noise_state, noise_write, prologue};
use crate::psk::Psk;
use crate::record::{Opener, Sealer, direction_key};
use crate::spake::{Side as SpakeSide, Spake};
use crate::suite::CipherSuite;
use crate::wipe::scrubbed;

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

const SPAKE_ID_CLIENT: &[u8] = b"cypherwire/v1 password client";
const SPAKE_ID_SERVER: &[u8] = b"cypherwire/v1 password server";
const SPAKE_MSG_LEN: usize = 33;

/// Which side of the handshake a session was on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// Sent the ClientHello (usually the client).
    Initiator,
    /// Answered it (usually the server).
    Responder,
}

/// Which static keys a side accepts from its peer in identity mode.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerTrust {
    /// Only these keys (pinned).
    AllowList(Vec<PublicKey>),
    /// Any key: the handshake authenticates that the peer holds the key it presents, and the
    /// application decides what that key may do (see [`Established::peer_identity`]).
    AnyKey,
    /// Keys for which a run-time check says yes, asked during each handshake (e.g. "is this
    /// key in the current peer list?"), so a key removed from the set is refused at once.
    Check(KeyCheck),
}

impl PeerTrust {
    fn allows(&self, key: &PublicKey) -> bool {
        match self {
            Self::AllowList(keys) => keys.contains(key),
            Self::AnyKey => true,
            Self::Check(check) => (check.0)(key),
        }
    }
}

/// A run-time trust decision for [`PeerTrust::Check`]: cheap, non-blocking, called once per
/// handshake with the peer's authenticated static key.
#[derive(Clone)]
pub struct KeyCheck(std::sync::Arc<dyn Fn(&PublicKey) -> bool + Send + Sync>);

impl KeyCheck {
    /// Wraps the decision `allows`.
    pub fn new(allows: impl Fn(&PublicKey) -> bool + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(allows))
    }
}

impl std::fmt::Debug for KeyCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyCheck(..)")
    }
}

impl PartialEq for KeyCheck {
    /// The same check (the same allocation), not the same decisions.
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for KeyCheck {}

/// The initiator's credentials.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientAuth {
    /// PSK mode.
    Psk(Psk),
    /// Identity mode: our key, and the keys we accept from the responder.
    Identity(IdentityKey, PeerTrust),
    /// Password mode.
    Password(Password),
}

/// The responder's credentials.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ServerAuth {
    /// PSK mode.
    Psk(Psk),
    /// Identity mode: our key, and the keys we accept from initiators.
    Identity(IdentityKey, PeerTrust),
    /// Password mode: the stored verifier.
    Password(PasswordVerifier),
}

impl From<Psk> for ClientAuth {
    fn from(p: Psk) -> Self {
        Self::Psk(p)
    }
}

impl From<Psk> for ServerAuth {
    fn from(p: Psk) -> Self {
        Self::Psk(p)
    }
}

impl From<PasswordVerifier> for ServerAuth {
    fn from(v: PasswordVerifier) -> Self {
        Self::Password(v)
    }
}

impl From<Password> for ClientAuth {
    fn from(p: Password) -> Self {
        Self::Password(p)
    }
}

impl ClientAuth {
    fn mode(&self) -> u8 {
        match self {
            Self::Psk(_) => MODE_PSK,
            Self::Identity(..) => MODE_IDENTITY,
            Self::Password(_) => MODE_PASSWORD,
        }
    }
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

fn fatal<S>(error: Error) -> Rejected<S> {
    Rejected { error, state: None }
}

/// Checks a SPAKE2 message from side `side` (`b'A'` or `b'B'`) without consuming any state:
/// length, side byte, and that the element is a valid Ed25519 point.
fn check_spake_msg(msg: &[u8], side: u8) -> Result<()> {
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

/// Extra knobs for reproducible tests (feature `test-util`).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct HandshakeOptions {
    /// Use this ephemeral private key instead of a random one. Only for test vectors: a fixed
    /// ephemeral destroys forward secrecy.
    #[cfg(feature = "test-util")]
    pub fixed_ephemeral: Option<[u8; 32]>,
    /// Seed the password mode's SPAKE2 scalar from this value instead of the operating
    /// system's generator. Only for test vectors.
    #[cfg(feature = "test-util")]
    pub spake_seed: Option<[u8; 32]>,
}

impl HandshakeOptions {
    /// The fixed ephemeral key, if test options set one.
    fn ephemeral(&self) -> Option<&[u8; 32]> {
        #[cfg(feature = "test-util")]
        return self.fixed_ephemeral.as_ref();
        #[cfg(not(feature = "test-util"))]
        None
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
fn spake_start(w: &[u8], side: Role, opts: &HandshakeOptions) -> Result<(Spake, Vec<u8>)> {
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
fn check_ephemeral(noise_msg: &[u8]) -> Result<()> {
    match noise_msg.get(..32) {
        Some(e) if !is_low_order(e) => Ok(()),
        Some(_) => Err(HandshakeFailure::WeakKey.into()),
        None => Err(HandshakeFailure::Malformed.into()),
    }
}

/// Password mode's second phase: finishes SPAKE2 with the peer's message and starts the Noise
/// `NNpsk0` handshake keyed by its output, over a prologue of `parts`.
fn password_noise(
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
fn password_psk(spake_key: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut k = Zeroizing::new([0u8; 32]);
    let _ = Hkdf::<Sha256>::new(None, spake_key).expand(b"cypherwire/v1 password psk", k.as_mut());
    k
}

/// The initiator's state between messages.
pub struct Initiator {
    state: IState,
    header: Vec<u8>,
    config: SessionConfig,
    opts: HandshakeOptions,
}

enum IState {
    /// PSK or identity mode: waiting for the responder's Noise message.
    Noise {
        noise: Noise,
        trust: Option<PeerTrust>,
    },
    /// Password mode: waiting for the challenge.
    PasswordChallenge { password: Password },
    /// Password mode: waiting for the responder's Noise message.
    PasswordNoise { noise: Noise },
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            IState::Noise { .. } => "Noise",
            IState::PasswordChallenge { .. } => "PasswordChallenge",
            IState::PasswordNoise { .. } => "PasswordNoise",
        };
        f.debug_struct("Initiator")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

fn hello_header(mode: u8, config: &SessionConfig) -> Result<Vec<u8>> {
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

impl Initiator {
    /// Starts a handshake; returns the state and the ClientHello frame body to send.
    ///
    /// # Errors
    /// [`Error::Config`] if the configuration offers more than [`MAX_OFFERED`] entries.
    pub fn start(auth: &ClientAuth, config: &SessionConfig) -> Result<(Self, Vec<u8>)> {
        Self::start_with(auth, config, HandshakeOptions::default())
    }

    /// [`start`](Self::start) with test options.
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with(
        auth: &ClientAuth,
        config: &SessionConfig,
        opts: HandshakeOptions,
    ) -> Result<(Self, Vec<u8>)> {
        let header = hello_header(auth.mode(), config)?;
        let mut hello = header.clone();
        let state = match auth {
            ClientAuth::Psk(psk) => {
                let mut noise = noise_state(
                    NOISE_PSK,
                    Some(psk.as_bytes()),
                    None,
                    &prologue(&[&header]),
                    opts.ephemeral(),
                    true,
                )?;
                hello.extend(noise_write(&mut noise, &[])?);
                IState::Noise { noise, trust: None }
            }
            ClientAuth::Identity(key, trust) => {
                let mut noise = noise_state(
                    NOISE_IDENTITY,
                    None,
                    Some(key),
                    &prologue(&[&header]),
                    opts.ephemeral(),
                    true,
                )?;
                hello.extend(noise_write(&mut noise, &[])?);
                IState::Noise {
                    noise,
                    trust: Some(trust.clone()),
                }
            }
            ClientAuth::Password(pw) => IState::PasswordChallenge {
                password: pw.clone(),
            },
        };
        Ok((
            Self {
                state,
                header,
                config: config.clone(),
                opts,
            },
            hello,
        ))
    }

    /// Whether the next step is CPU-heavy (password mode runs argon2 on the challenge): a
    /// driver should run it off the async threads.
    pub fn next_step_is_expensive(&self) -> bool {
        matches!(self.state, IState::PasswordChallenge { .. })
    }

    /// Feeds the responder's next message.
    ///
    /// Afterwards it overwrites 32 KiB of stack below its frame, where the step left copies of
    /// secrets (`docs/security.md`, "Secrets in memory"): call it with that much stack to
    /// spare.
    ///
    /// # Errors
    /// [`Rejected`] with [`Error::AuthenticationFailed`] if the responder does not hold the
    /// credentials or the message was modified, or [`HandshakeFailure`]s for malformed
    /// messages, a choice that was not offered, an untrusted or weak key, or unacceptable
    /// password parameters. See [`Rejected`] for when the state survives.
    pub fn handle(self, msg: &[u8], now: Instant) -> Result<Step<Self>, Rejected<Self>> {
        scrubbed(|| self.step(msg, now))
    }

    fn step(mut self, msg: &[u8], now: Instant) -> Result<Step<Self>, Rejected<Self>> {
        // Phase 1, transactional: checks of unauthenticated input and the authenticated read
        // (snow restores its state when a read fails).
        let read = match &mut self.state {
            IState::Noise { noise, .. } | IState::PasswordNoise { noise } => check_ephemeral(msg)
                .and_then(|()| noise_read(noise, msg))
                .map(Some),
            IState::PasswordChallenge { .. } => parse_challenge(msg).and_then(|ch| {
                if !ch.cost.is_acceptable() || ch.cost.m_kib > self.config.max_argon2_kib {
                    return Err(HandshakeFailure::UnacceptableParameters.into());
                }
                check_spake_msg(ch.spake_msg, b'B').map(|()| None)
            }),
        };
        let payload = match read {
            Ok(p) => p,
            Err(error) => {
                return Err(Rejected {
                    error,
                    state: Some(Box::new(self)),
                });
            }
        };
        // Phase 2 consumes the state.
        self.advance(msg, payload.unwrap_or_default(), now)
            .map_err(fatal)
    }

    fn advance(self, msg: &[u8], payload: Vec<u8>, now: Instant) -> Result<Step<Self>> {
        let Self {
            state,
            header,
            config,
            opts,
        } = self;
        match state {
            IState::Noise { mut noise, trust } => {
                let (suite, codec) = parse_choice(&payload, &config)?;
                let mut send = None;
                let mut peer = None;
                if let Some(trust) = trust {
                    // Identity mode: check the responder's key, then send ours (msg 3).
                    let key = remote_static(&noise)?;
                    if !trust.allows(&key) {
                        return Err(HandshakeFailure::UntrustedKey.into());
                    }
                    peer = Some(key);
                    send = Some(noise_write(&mut noise, &[])?);
                }
                let established =
                    establish(noise, Role::Initiator, suite, codec, peer, &config, now)?;
                Ok(Step::Done {
                    established: Box::new(established),
                    send,
                })
            }
            IState::PasswordChallenge { password } => {
                let ch = parse_challenge(msg)?;
                let w = ch.cost.derive(password.0.as_bytes(), ch.salt)?;
                let (spake, spake_msg) = spake_start(&w[..], Role::Initiator, &opts)?;
                let mut noise = password_noise(
                    spake,
                    ch.spake_msg,
                    &[&header, msg, &spake_msg],
                    &opts,
                    Role::Initiator,
                )?;
                let mut send = spake_msg;
                send.extend(noise_write(&mut noise, &[])?);
                Ok(Step::Continue {
                    state: Self {
                        state: IState::PasswordNoise { noise },
                        header,
                        config,
                        opts,
                    },
                    send,
                })
            }
            IState::PasswordNoise { noise } => {
                let (suite, codec) = parse_choice(&payload, &config)?;
                let established =
                    establish(noise, Role::Initiator, suite, codec, None, &config, now)?;
                Ok(Step::Done {
                    established: Box::new(established),
                    send: None,
                })
            }
        }
    }
}

fn parse_choice(payload: &[u8], config: &SessionConfig) -> Result<(CipherSuite, CodecId)> {
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

fn remote_static(noise: &Noise) -> Result<PublicKey> {
    let raw = noise
        .get_remote_static()
        .ok_or(HandshakeFailure::Malformed)?;
    if is_low_order(raw) {
        return Err(HandshakeFailure::WeakKey.into());
    }
    let key = <[u8; 32]>::try_from(raw).map_err(|_| HandshakeFailure::Malformed)?;
    Ok(PublicKey::from_bytes(key))
}

struct Challenge<'a> {
    cost: Argon2Cost,
    salt: &'a [u8],
    spake_msg: &'a [u8],
}

/// `m_kib (u32) ‖ t (u32) ‖ p (u32) ‖ salt_len (u8) ‖ salt ‖ spake2 message (33)`.
fn parse_challenge(b: &[u8]) -> Result<Challenge<'_>> {
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

fn encode_challenge(v: &PasswordVerifier, spake_msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + v.salt.len() + spake_msg.len());
    out.extend_from_slice(&v.cost.m_kib.to_be_bytes());
    out.extend_from_slice(&v.cost.t.to_be_bytes());
    out.extend_from_slice(&v.cost.p.to_be_bytes());
    out.push(v.salt.len() as u8);
    out.extend_from_slice(&v.salt);
    out.extend_from_slice(spake_msg);
    out
}

/// The responder's state between messages.
pub struct Responder {
    state: RState,
    auth: ServerAuth,
    config: SessionConfig,
    opts: HandshakeOptions,
}

enum RState {
    /// Waiting for the ClientHello.
    Hello,
    /// Identity mode: waiting for message 3.
    IdentityFinish {
        noise: Noise,
        suite: CipherSuite,
        codec: CodecId,
    },
    /// Password mode: waiting for the client's SPAKE2 message and Noise message 1.
    PasswordResponse {
        spake: Box<Spake>,
        header: Vec<u8>,
        challenge: Vec<u8>,
        suite: CipherSuite,
        codec: CodecId,
    },
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            RState::Hello => "Hello",
            RState::IdentityFinish { .. } => "IdentityFinish",
            RState::PasswordResponse { .. } => "PasswordResponse",
        };
        f.debug_struct("Responder")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl Responder {
    /// A responder waiting for a ClientHello.
    pub fn new(auth: &ServerAuth, config: &SessionConfig) -> Self {
        Self::new_with(auth, config, HandshakeOptions::default())
    }

    /// [`new`](Self::new) with test options.
    pub fn new_with(auth: &ServerAuth, config: &SessionConfig, opts: HandshakeOptions) -> Self {
        Self {
            state: RState::Hello,
            auth: auth.clone(),
            config: config.clone(),
            opts,
        }
    }

    /// Feeds the initiator's next message.
    ///
    /// The ClientHello's clear header is checked (magic, version, mode, a common suite and
    /// codec) before any cryptographic work.
    ///
    /// Afterwards it overwrites 32 KiB of stack below its frame, where the step left copies of
    /// secrets (`docs/security.md`, "Secrets in memory"): call it with that much stack to
    /// spare.
    ///
    /// # Errors
    /// [`Rejected`] with [`HandshakeFailure`]s for a malformed or incompatible message,
    /// [`Error::AuthenticationFailed`] if the initiator does not hold the credentials or a
    /// message was modified, [`HandshakeFailure::UntrustedKey`] for an identity not allowed.
    /// See [`Rejected`] for when the state survives.
    pub fn handle(self, msg: &[u8], now: Instant) -> Result<Step<Self>, Rejected<Self>> {
        scrubbed(|| self.step(msg, now))
    }

    fn step(mut self, msg: &[u8], now: Instant) -> Result<Step<Self>, Rejected<Self>> {
        // Phase 1, transactional (see `Initiator::handle`). A ClientHello builds its Noise state
        // from scratch, so every rejection of one leaves the responder as it was.
        let pre = match &mut self.state {
            RState::Hello => Ok(()),
            RState::IdentityFinish { noise, .. } => noise_read(noise, msg).map(drop),
            RState::PasswordResponse { .. } => {
                if msg.len() == SPAKE_MSG_LEN + 48 {
                    let (spake_msg, noise_msg) = msg.split_at(SPAKE_MSG_LEN);
                    check_spake_msg(spake_msg, b'A').and_then(|()| check_ephemeral(noise_msg))
                } else {
                    Err(HandshakeFailure::Malformed.into())
                }
            }
        };
        if let Err(error) = pre {
            return Err(Rejected {
                error,
                state: Some(Box::new(self)),
            });
        }
        if matches!(self.state, RState::Hello) {
            return match self.on_hello(msg, now) {
                Ok(step) => Ok(step),
                Err(error) => Err(Rejected {
                    error,
                    state: Some(Box::new(self)),
                }),
            };
        }
        self.advance(msg, now).map_err(fatal)
    }

    /// Answers a ClientHello without changing `self` (the next state is built from copies).
    fn on_hello(&self, msg: &[u8], now: Instant) -> Result<Step<Self>> {
        let (auth, config, opts) = (self.auth.clone(), self.config.clone(), self.opts.clone());
        {
            {
                let hello = parse_client_hello(msg)?;
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
                let choice = [suite.id(), codec.to_u8()];
                match (&auth, hello.mode) {
                    (ServerAuth::Psk(psk), MODE_PSK) => {
                        expect_len(hello.noise, 48)?;
                        check_ephemeral(hello.noise)?;
                        let mut noise = noise_state(
                            NOISE_PSK,
                            Some(psk.as_bytes()),
                            None,
                            &prologue(&[hello.header]),
                            opts.ephemeral(),
                            false,
                        )?;
                        noise_read(&mut noise, hello.noise)?;
                        let send = noise_write(&mut noise, &choice)?;
                        let est =
                            establish(noise, Role::Responder, suite, codec, None, &config, now)?;
                        Ok(Step::Done {
                            established: Box::new(est),
                            send: Some(send),
                        })
                    }
                    (ServerAuth::Identity(key, _), MODE_IDENTITY) => {
                        expect_len(hello.noise, 32)?;
                        check_ephemeral(hello.noise)?;
                        let mut noise = noise_state(
                            NOISE_IDENTITY,
                            None,
                            Some(key),
                            &prologue(&[hello.header]),
                            opts.ephemeral(),
                            false,
                        )?;
                        noise_read(&mut noise, hello.noise)?;
                        let send = noise_write(&mut noise, &choice)?;
                        Ok(Step::Continue {
                            state: Self {
                                state: RState::IdentityFinish {
                                    noise,
                                    suite,
                                    codec,
                                },
                                auth,
                                config,
                                opts,
                            },
                            send,
                        })
                    }
                    (ServerAuth::Password(verifier), MODE_PASSWORD) => {
                        expect_len(hello.noise, 0)?;
                        let (spake, spake_msg) =
                            spake_start(&verifier.hash[..], Role::Responder, &opts)?;
                        let challenge = encode_challenge(verifier, &spake_msg);
                        Ok(Step::Continue {
                            state: Self {
                                state: RState::PasswordResponse {
                                    spake: Box::new(spake),
                                    header: hello.header.to_vec(),
                                    challenge: challenge.clone(),
                                    suite,
                                    codec,
                                },
                                auth,
                                config,
                                opts,
                            },
                            send: challenge,
                        })
                    }
                    (_, mode) => Err(HandshakeFailure::UnsupportedMode(mode).into()),
                }
            }
        }
    }

    /// Completes a step whose input passed phase 1; consumes the state.
    fn advance(self, msg: &[u8], now: Instant) -> Result<Step<Self>> {
        let Self {
            state,
            auth,
            config,
            opts,
        } = self;
        match state {
            RState::Hello => Err(HandshakeFailure::Malformed.into()),
            RState::IdentityFinish {
                noise,
                suite,
                codec,
            } => {
                // Message 3 was read in phase 1.
                let key = remote_static(&noise)?;
                let ServerAuth::Identity(_, trust) = &auth else {
                    return Err(HandshakeFailure::Malformed.into());
                };
                if !trust.allows(&key) {
                    return Err(HandshakeFailure::UntrustedKey.into());
                }
                let est = establish(
                    noise,
                    Role::Responder,
                    suite,
                    codec,
                    Some(key),
                    &config,
                    now,
                )?;
                Ok(Step::Done {
                    established: Box::new(est),
                    send: None,
                })
            }
            RState::PasswordResponse {
                spake,
                header,
                challenge,
                suite,
                codec,
            } => {
                // Length, SPAKE2 element and ephemeral key were checked in phase 1.
                let (spake_msg, noise_msg) = msg.split_at(SPAKE_MSG_LEN);
                let mut noise = password_noise(
                    *spake,
                    spake_msg,
                    &[&header, &challenge, spake_msg],
                    &opts,
                    Role::Responder,
                )?;
                // A wrong password gives SPAKE2 keys that differ, so this read fails.
                noise_read(&mut noise, noise_msg)?;
                let send = noise_write(&mut noise, &[suite.id(), codec.to_u8()])?;
                let est = establish(noise, Role::Responder, suite, codec, None, &config, now)?;
                Ok(Step::Done {
                    established: Box::new(est),
                    send: Some(send),
                })
            }
        }
    }
}

fn expect_len(b: &[u8], len: usize) -> Result<()> {
    if b.len() == len {
        Ok(())
    } else {
        Err(HandshakeFailure::Malformed.into())
    }
}

struct ClientHello<'a> {
    header: &'a [u8],
    mode: u8,
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

fn establish(
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
