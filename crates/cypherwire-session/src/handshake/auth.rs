//! Who a handshake authenticates and how: the roles, the client's and server's
//! authentication modes, and how a client trusts a server's identity key.

use super::hello::{MODE_IDENTITY, MODE_PASSWORD, MODE_PSK};
use crate::identity::{IdentityKey, Password, PasswordVerifier, PublicKey};
use crate::psk::Psk;

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
    /// application decides what that key may do (see
    /// [`Established::peer_identity`](super::Established::peer_identity)).
    AnyKey,
    /// Keys for which a run-time check says yes, asked during each handshake (e.g. "is this
    /// key in the current peer list?"), so a key removed from the set is refused at once.
    Check(KeyCheck),
}

impl PeerTrust {
    pub(super) fn allows(&self, key: &PublicKey) -> bool {
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
    pub(super) fn mode(&self) -> u8 {
        match self {
            Self::Psk(_) => MODE_PSK,
            Self::Identity(..) => MODE_IDENTITY,
            Self::Password(_) => MODE_PASSWORD,
        }
    }
}
