//! The mesh's message names (`docs/protocol.md` §7.2, §7.4): every mesh request uses one path,
//! and its operation names the message.

use cypherwire_session::PublicKey;

/// The path of every mesh request.
pub(crate) const PATH: &str = "/mesh";
/// Auth link: a member asks to join (or re-join).
pub(crate) const OP_JOIN: &str = "JOIN";
/// Auth link: a member's heartbeat.
pub(crate) const OP_BEAT: &str = "BEAT";
/// Auth link: a member leaves.
pub(crate) const OP_LEAVE: &str = "LEAVE";
/// Direct channel: a message between members.
pub(crate) const OP_SEND: &str = "SEND";

/// What a joining member's key-possession proof covers: the auth peer's nonce for the
/// connection, the member's key and its address as sent (`docs/protocol.md` §7.2).
pub(crate) fn join_context(nonce: &[u8], key: &PublicKey, addr: &str) -> Vec<u8> {
    let mut c = Vec::with_capacity(64 + nonce.len() + addr.len());
    c.extend_from_slice(b"cypherwire/v1 mesh join");
    c.extend_from_slice(nonce);
    c.extend_from_slice(key.as_bytes());
    c.extend_from_slice(addr.as_bytes());
    c
}
