//! The server's side of the handshake.

use std::time::Instant;

use cypherwire_wire::CodecId;

use super::auth::{Role, ServerAuth};
use super::hello::{
    MODE_IDENTITY, MODE_PASSWORD, MODE_PSK, NOISE_IDENTITY, NOISE_PSK, SPAKE_MSG_LEN,
    encode_challenge, expect_len, parse_client_hello,
};
use super::keys::{check_ephemeral, remote_static};
use super::options::HandshakeOptions;
use super::outcome::{Rejected, Step, establish, fatal};
use super::password::{check_spake_msg, password_noise, spake_start};
use crate::config::SessionConfig;
use crate::error::{HandshakeFailure, Result};
use crate::noise::{Noise, noise_read, noise_state, noise_write, prologue};
use crate::spake::Spake;
use crate::suite::CipherSuite;
use crate::wipe::scrubbed;

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
    /// [`Error::AuthenticationFailed`](crate::Error::AuthenticationFailed) if the initiator does
    /// not hold the credentials or a message was modified,
    /// [`HandshakeFailure::UntrustedKey`] for an identity not allowed.
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
                let est = establish(noise, Role::Responder, suite, codec, None, &config, now)?;
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
                let (spake, spake_msg) = spake_start(&verifier.hash[..], Role::Responder, &opts)?;
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
