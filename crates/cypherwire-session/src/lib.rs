//! # cypherwire-session
//!
//! The security layer of cypherwire, between the [wire layer](cypherwire_wire) below and the
//! server and client above.
//!
//! **What it does**
//! - **PSK mode handshake** ([`handshake`]): Noise `NNpsk0` run by `snow` — mutual
//!   authentication by a 32-byte [`Psk`], forward secrecy from ephemeral X25519 — with the
//!   protocol version and the offered cipher suites and payload codecs bound into the Noise
//!   prologue, so a tampered offer fails the handshake. Sans-IO: [`Initiator`], [`Responder`].
//! - **Records** ([`record`]): one key per direction derived from the Noise split and bound to
//!   the handshake hash; strict implicit counters (a replayed, reordered, dropped, reflected
//!   or modified record fails and is never delivered; a failed open does not advance the
//!   counter); messages larger than a record are chunked; rekeying by records, bytes and time;
//!   an authenticated close, so EOF without it is [`Error::Truncated`].
//! - **Cipher suites** ([`suite`]) as trait objects: ChaCha20-Poly1305, AES-256-GCM (preferred
//!   where the CPU has AES instructions) and AES-128-CBC + HMAC-SHA256 (encrypt-then-MAC).
//! - **A tokio adapter** ([`connect`], [`accept`], [`SecureStream`]) for any
//!   `AsyncRead + AsyncWrite`.
//!
//! - **Session tokens** ([`token`]): random, single-use, expiring, constant-time, bounded.
//! - **Attempt limits and bans** ([`bans`]) for the server and the mesh, checked before any
//!   cryptographic work.
//! - **Fernet** ([`fernet`]) for the CYPHER_PROTOCOL compat mode (legacy).
//!
//! - **Identity mode**: Noise `XX` with static X25519 [`IdentityKey`]s checked against an
//!   allow-list ([`PeerTrust`]).
//! - **Password mode**: SPAKE2 keyed by an argon2id hash of the password, whose output keys a
//!   Noise `NNpsk0` handshake: the password never crosses the wire and a recorded handshake
//!   gives no way to test guesses offline. The server stores a [`PasswordVerifier`] (PHC
//!   string), never the password.
//!
//! **What it does not do**: open sockets, or decide policy (who is banned, which keys are
//! trusted): the server and mesh layers do, with the tools here.
//!
//! ```
//! use cypherwire_session::{ClientAuth, Initiator, Psk, Responder, ServerAuth, SessionConfig, Step};
//! # fn main() -> Result<(), cypherwire_session::Error> {
//! # #[expect(clippy::disallowed_methods, reason = "example")]
//! let now = std::time::Instant::now();
//! let psk = Psk::from_passphrase("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U")?;
//! let config = SessionConfig::default();
//!
//! let (initiator, client_hello) = Initiator::start(&ClientAuth::Psk(psk.clone()), &config)?;
//! let responder = Responder::new(&ServerAuth::Psk(psk), &config);
//! let Step::Done { established: mut server, send: Some(server_hello) } =
//!     responder.handle(&client_hello, now)? else { unreachable!() };
//! let Step::Done { established: mut client, .. } = initiator.handle(&server_hello, now)? else {
//!     unreachable!()
//! };
//! assert_eq!(client.handshake_hash, server.handshake_hash);
//!
//! let mut wire = bytes::BytesMut::new();
//! client.sealer.seal_message(b"/NUMBER READ", now, &mut wire)?;
//! let record = wire.split_off(4); // frame header, then the record
//! let opened = server.opener.open(record)?;
//! assert_eq!(opened, cypherwire_session::record::Opened::Message(b"/NUMBER READ"[..].into()));
//! # Ok(()) }
//! ```
//!
//! The byte layouts are in `docs/protocol.md` §3. The legacy CYPHER_PROTOCOL format (Fernet
//! tokens of JSON, NUL-delimited) is in [`compat`] and [`fernet`]; see `docs/compat.md`.
//!
//! ## Features
//!
//! | feature | default | enables |
//! | --- | --- | --- |
//! | `msgpack` | yes | the MessagePack payload codec |
//! | `json` | yes | the JSON payload codec |
//! | `ring` | yes | the `ring` backend for ChaCha20-Poly1305 and AES-256-GCM records (otherwise pure Rust) |
//! | `test-util` | no | fixed ephemerals and seeded PAKE randomness for reproducible transcripts; never in production |

#![doc(test(attr(deny(warnings))))]

pub mod bans;
pub mod compat;
mod config;
mod error;
/// Shared with the server and client crates of this workspace; not part of the public API (no
/// semver promise).
#[doc(hidden)]
pub mod fasthash;
pub mod fernet;
pub mod handshake;
mod heartbeat;
mod human;
mod identity;
mod noise;
mod psk;
pub mod record;
mod spake;
mod stream;
pub mod suite;
#[cfg(feature = "test-util")]
pub mod test_util;
pub mod token;
mod wipe;

pub use crate::bans::{
    AttemptLimiter, BanPolicy, Banned, Denied, Outcome, ParseSourceKeyError, SourceKey,
};
pub use crate::config::{
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_ARGON2_KIB, DEFAULT_MAX_MESSAGE_LEN, SessionConfig,
    SessionConfigBuilder,
};
pub use crate::error::{Error, HandshakeFailure, Result};
pub use crate::handshake::{
    ClientAuth, Established, Initiator, KeyCheck, PeerTrust, Refusal, Responder, Role, ServerAuth,
    Step,
};
pub use crate::heartbeat::{HeartbeatPolicy, LinkChange, LinkMonitor};
pub use crate::human::human_duration;
pub use crate::identity::{
    Argon2Cost, IdentityKey, MAX_CLIENT_ARGON2_KIB, PRIVATE_KEY_PREFIX, PUBLIC_KEY_PREFIX,
    Password, PasswordVerifier, PublicKey,
};
pub use crate::psk::{MIN_PASSPHRASE_LEN, PSK_LEN, PSK_TEXT_PREFIX, Psk};
pub use crate::record::RekeyPolicy;
pub use crate::stream::{
    MAX_CONCURRENT_ARGON2, SecureReader, SecureStream, SecureWriter, SessionInfo, accept,
    accept_guarded, connect, refuse,
};
pub use crate::suite::{Backend, CipherSuite};
pub use crate::token::{SessionToken, TokenStore};
