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

mod auth;
mod hello;
mod initiator;
mod keys;
mod options;
mod outcome;
mod password;
pub(crate) mod refusal;
mod responder;

pub use self::auth::{ClientAuth, KeyCheck, PeerTrust, Role, ServerAuth};
pub use self::hello::{
    MAGIC, MAX_OFFERED, MODE_IDENTITY, MODE_PASSWORD, MODE_PSK, NOISE_IDENTITY, NOISE_PSK,
    PROTOCOL_VERSION,
};
pub use self::initiator::Initiator;
pub use self::keys::is_low_order;
pub use self::options::HandshakeOptions;
pub use self::outcome::{Established, Rejected, Step, handshake_limits};
pub use self::refusal::{REFUSAL_LEN, REFUSAL_MAGIC, Refusal};
pub use self::responder::Responder;
