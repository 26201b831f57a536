//! The client's side of the handshake.

use std::time::Instant;

use super::auth::{ClientAuth, PeerTrust, Role};
use super::hello::{NOISE_IDENTITY, NOISE_PSK, hello_header, parse_challenge, parse_choice};
use super::keys::{check_ephemeral, remote_static};
use super::options::HandshakeOptions;
use super::outcome::{Rejected, Step, establish, fatal};
use super::password::{check_spake_msg, password_noise, spake_start};
use crate::config::SessionConfig;
use crate::error::{HandshakeFailure, Result};
use crate::identity::Password;
use crate::noise::{Noise, noise_read, noise_state, noise_write, prologue};
use crate::wipe::scrubbed;

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

impl Initiator {
    /// Starts a handshake; returns the state and the ClientHello frame body to send.
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) if the configuration offers more than
    /// [`MAX_OFFERED`](super::MAX_OFFERED) entries.
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
    /// [`Rejected`] with [`Error::AuthenticationFailed`](crate::Error::AuthenticationFailed) if
    /// the responder does not hold the credentials or the message was modified, or
    /// [`HandshakeFailure`]s for malformed
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
