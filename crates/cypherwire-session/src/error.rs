//! The session layer's error type.

use std::io;

use cypherwire_wire::CloseCode;

/// Every error the session layer returns.
///
/// Authentication and decryption failures carry no detail on purpose: an attacker learns
/// nothing from which check failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer does not hold the same key (or the handshake was tampered with). No detail is
    /// given.
    #[error("authentication failed")]
    AuthenticationFailed,
    /// A record failed authentication: it was modified, replayed, reordered, dropped or
    /// reflected. The connection must be closed. No detail is given.
    #[error("record authentication failed")]
    Decrypt,
    /// The stream ended without an authenticated close: the peer vanished or an attacker cut
    /// the connection. Data sent before may be incomplete.
    #[error("stream truncated: ended without an authenticated close")]
    Truncated,
    /// The peer broke the handshake protocol.
    #[error("handshake failed: {0}")]
    Handshake(HandshakeFailure),
    /// The source is banned after too many failed attempts; nothing was read from it and no
    /// cryptographic work was done.
    #[error("source is banned")]
    Banned,
    /// The responder refused the handshake and said why (an unauthenticated, advisory
    /// [`Refusal`](crate::handshake::Refusal): banned, over capacity, unsupported offer). A
    /// refusal saying `AUTH_FAILED` is reported as [`Error::AuthenticationFailed`] instead.
    #[error("refused by the server: {0}")]
    Refused(crate::handshake::refusal::Refusal),
    /// The handshake did not complete within its deadline.
    #[error("handshake timed out")]
    HandshakeTimeout,
    /// A reassembled message would exceed the configured maximum.
    #[error("message of at least {len} bytes exceeds the maximum of {max} bytes")]
    MessageTooLarge {
        /// Bytes received so far (or the size of the message being sent).
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The peer sent a record type that is not valid here.
    #[error("unexpected record type 0x{0:02x}")]
    UnexpectedRecord(u8),
    /// Sending after the session was closed (by either side).
    #[error("session closed")]
    Closed,
    /// A key could not be parsed or is too weak.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// A Fernet token is malformed, fails authentication, or has expired. No further detail.
    #[error("invalid Fernet token")]
    InvalidToken,
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    /// The operating system's random generator failed.
    #[error("random generator failed")]
    Random,
    /// Framing failed (e.g. a frame over the limit).
    #[error(transparent)]
    Wire(#[from] cypherwire_wire::Error),
    /// The transport failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Why a handshake failed (the peer's fault, or no common parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeFailure {
    /// The first bytes are not a cypherwire hello.
    #[error("not a cypherwire handshake")]
    BadMagic,
    /// The peer speaks another protocol version.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// The peer asked for an authentication mode this side is not configured for.
    #[error("unsupported authentication mode {0}")]
    UnsupportedMode(u8),
    /// No cipher suite is offered by both sides.
    #[error("no common cipher suite")]
    NoCommonSuite,
    /// No payload codec is offered by both sides.
    #[error("no common payload codec")]
    NoCommonCodec,
    /// The peer chose a suite or codec that was not offered (a downgrade attempt or a bug).
    #[error("peer chose a parameter that was not offered")]
    NotOffered,
    /// A handshake message is too short, too long or malformed.
    #[error("malformed handshake message")]
    Malformed,
    /// The peer's static key is not in the allow-list (identity mode).
    #[error("peer identity not trusted")]
    UntrustedKey,
    /// The peer sent a public key of small order (its Diffie–Hellman output would be all
    /// zeros): a key-substitution attempt or a broken peer.
    #[error("peer sent a weak public key")]
    WeakKey,
    /// The server asked for password-hashing parameters outside the client's bounds.
    #[error("unacceptable password parameters")]
    UnacceptableParameters,
}

impl Error {
    /// What an initiator makes of a refusal (§3.9): a failed authentication is
    /// [`Error::AuthenticationFailed`], anything else [`Error::Refused`].
    pub(crate) fn from_refusal(refusal: crate::handshake::refusal::Refusal) -> Self {
        if refusal.code == CloseCode::AUTH_FAILED {
            Self::AuthenticationFailed
        } else {
            Self::Refused(refusal)
        }
    }

    /// The close code for a connection that fails with this error.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::AuthenticationFailed | Self::InvalidToken => CloseCode::AUTH_FAILED,
            Self::Decrypt | Self::UnexpectedRecord(_) | Self::Truncated => {
                CloseCode::PROTOCOL_ERROR
            }
            Self::Handshake(HandshakeFailure::UnsupportedVersion(_))
            | Self::Handshake(HandshakeFailure::UnsupportedMode(_))
            | Self::Handshake(HandshakeFailure::NoCommonSuite)
            | Self::Handshake(HandshakeFailure::NoCommonCodec) => CloseCode::UNSUPPORTED,
            Self::Handshake(HandshakeFailure::UntrustedKey) => CloseCode::AUTH_FAILED,
            Self::Handshake(_) => CloseCode::PROTOCOL_ERROR,
            Self::HandshakeTimeout => CloseCode::TIMEOUT,
            Self::Banned => CloseCode::BANNED,
            Self::Refused(r) => r.code,
            Self::MessageTooLarge { .. } => CloseCode::FRAME_TOO_LARGE,
            Self::Closed => CloseCode::NORMAL,
            Self::InvalidKey(_) | Self::Config(_) | Self::Random | Self::Io(_) => {
                CloseCode::INTERNAL_ERROR
            }
            Self::Wire(e) => e.close_code(),
        }
    }
}

impl From<HandshakeFailure> for Error {
    fn from(f: HandshakeFailure) -> Self {
        Self::Handshake(f)
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
