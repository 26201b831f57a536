//! Message envelopes: what every upper layer sends.
//!
//! An envelope is the body of one frame (or, after the handshake, the plaintext of one
//! record):
//!
//! ```text
//! +---------+--------+----------------------------------------------+
//! | version | kind   | payload: the kind's struct, encoded by the   |
//! | u8 = 1  | u8     | connection's payload codec                   |
//! +---------+--------+----------------------------------------------+
//! ```
//!
//! | kind | message | payload fields, in order |
//! | --- | --- | --- |
//! | `0x01` | [`Request`] | id, path, operation, data, metadata, deadline_ms |
//! | `0x02` | [`Response`] | id, status (code, message), data, metadata |
//! | `0x03` | [`Action`] | name, data, created_at_ms |
//! | `0x04` | [`Push`] | seq, data, metadata |
//! | `0x05` | [`Cancel`] | id |
//! | `0x06` | [`Ping`] | nonce |
//! | `0x07` | [`Pong`] | nonce |
//! | `0x08` | [`Close`] | code, reason |
//! | `0x40` | [`Welcome`] | token, ttl_ms, resumed |
//! | `0x41` | [`Resume`] | token, last_push_seq |
//!
//! Other kinds in `0x40..=0x7f` are reserved for the session layer and `0x80..=0xbf` for the
//! mesh; they decode here as [`Error::UnknownKind`](crate::Error::UnknownKind). The normative text is
//! `docs/protocol.md` §4.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::value::Value;

/// The envelope format version this implementation speaks.
pub const ENVELOPE_VERSION: u8 = 1;

/// A request: CYPHER_PROTOCOL's `{PATH, OPERATION, DATA, METADATA}` plus an id and a deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Request {
    /// Chosen by the client, unique among its requests in flight; the response carries it.
    pub id: u64,
    /// What the request addresses, e.g. `/SEQUENCE`.
    pub path: String,
    /// What to do with it, e.g. `UPDATE`.
    pub operation: String,
    /// The request's payload.
    pub data: Value,
    /// Side information (CYPHER_PROTOCOL's `METADATA`).
    pub metadata: Value,
    /// Time budget: the server should not start work after this much time has passed since it
    /// received the request. Relative, so clocks need not agree.
    #[serde(rename = "deadline_ms", with = "opt_millis")]
    pub deadline: Option<Duration>,
}

impl Request {
    /// A request with nil data and metadata and no deadline.
    pub fn new(id: u64, path: impl Into<String>, operation: impl Into<String>) -> Self {
        Self {
            id,
            path: path.into(),
            operation: operation.into(),
            data: Value::Nil,
            metadata: Value::Nil,
            deadline: None,
        }
    }

    /// Sets the data.
    #[must_use]
    pub fn with_data(mut self, data: impl Into<Value>) -> Self {
        self.data = data.into();
        self
    }

    /// Sets the metadata.
    #[must_use]
    pub fn with_metadata(mut self, metadata: impl Into<Value>) -> Self {
        self.metadata = metadata.into();
        self
    }

    /// Sets the deadline (a time budget, millisecond resolution on the wire).
    #[must_use]
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }
}

/// A response status code. `0` is success; `1..=999` are protocol-defined; `1000` and above
/// are free for applications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StatusCode(pub u16);

impl StatusCode {
    /// Success.
    pub const OK: Self = Self(0);
    /// The request was malformed or its data had the wrong shape.
    pub const BAD_REQUEST: Self = Self(1);
    /// No handler for this (path, operation).
    pub const NOT_FOUND: Self = Self(2);
    /// The handler failed (or panicked); details stay in the server's log.
    pub const INTERNAL: Self = Self(3);
    /// The deadline passed before the work was done.
    pub const DEADLINE_EXCEEDED: Self = Self(4);
    /// The caller is not allowed to do this.
    pub const UNAUTHORIZED: Self = Self(5);
    /// The server is shutting down or overloaded; retrying later may succeed.
    pub const UNAVAILABLE: Self = Self(6);
    /// The request or its response exceeds a size limit.
    pub const TOO_LARGE: Self = Self(7);
    /// The request was cancelled.
    pub const CANCELLED: Self = Self(8);
    /// First code for application-defined errors.
    pub const APPLICATION_MIN: Self = Self(1000);

    /// Whether this is [`StatusCode::OK`].
    pub fn is_ok(self) -> bool {
        self == Self::OK
    }

    /// The code's name as `docs/protocol.md` §4.6 spells it (`NOT_FOUND`), or `None` for a code
    /// this version does not define (application codes).
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::OK => "OK",
            Self::BAD_REQUEST => "BAD_REQUEST",
            Self::NOT_FOUND => "NOT_FOUND",
            Self::INTERNAL => "INTERNAL",
            Self::DEADLINE_EXCEEDED => "DEADLINE_EXCEEDED",
            Self::UNAUTHORIZED => "UNAUTHORIZED",
            Self::UNAVAILABLE => "UNAVAILABLE",
            Self::TOO_LARGE => "TOO_LARGE",
            Self::CANCELLED => "CANCELLED",
            _ => return None,
        })
    }
}

/// The name (`NOT_FOUND (2)`), or the number with its range for other codes
/// (`application status 1001`).
impl std::fmt::Display for StatusCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None if *self >= Self::APPLICATION_MIN => write!(f, "application status {}", self.0),
            None => write!(f, "status {}", self.0),
        }
    }
}

/// A response status: a code and a human-readable message (empty on success).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Status {
    /// The code.
    pub code: StatusCode,
    /// A short description for humans; never contains secrets or internal details.
    pub message: String,
}

impl Status {
    /// Success.
    pub fn ok() -> Self {
        Self {
            code: StatusCode::OK,
            message: String::new(),
        }
    }

    /// An error status.
    pub fn error(code: StatusCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The answer to a [`Request`] with the same id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Response {
    /// The id of the request this answers.
    pub id: u64,
    /// Success or an error code.
    pub status: Status,
    /// The result.
    pub data: Value,
    /// Side information.
    pub metadata: Value,
}

impl Response {
    /// A successful response.
    pub fn ok(id: u64, data: impl Into<Value>) -> Self {
        Self {
            id,
            status: Status::ok(),
            data: data.into(),
            metadata: Value::Nil,
        }
    }

    /// An error response with nil data.
    pub fn error(id: u64, code: StatusCode, message: impl Into<String>) -> Self {
        Self {
            id,
            status: Status::error(code, message),
            data: Value::Nil,
            metadata: Value::Nil,
        }
    }

    /// Sets the metadata.
    #[must_use]
    pub fn with_metadata(mut self, metadata: impl Into<Value>) -> Self {
        self.metadata = metadata.into();
        self
    }
}

/// A named, fire-and-forget packet (pnetwork's packets bound to handlers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Action {
    /// The action's name, e.g. `chat`.
    pub name: String,
    /// The action's payload.
    pub data: Value,
    /// When the sender created it, in milliseconds since the Unix epoch (sender's clock).
    pub created_at_ms: u64,
}

impl Action {
    /// An action.
    pub fn new(name: impl Into<String>, data: impl Into<Value>, created_at_ms: u64) -> Self {
        Self {
            name: name.into(),
            data: data.into(),
            created_at_ms,
        }
    }
}

/// A server-initiated message to a client (send-to, broadcast).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Push {
    /// Per-session sequence number, starting at 1: lets a resumed session deliver queued pushes
    /// in order and exactly once.
    pub seq: u64,
    /// The payload.
    pub data: Value,
    /// Side information.
    pub metadata: Value,
}

impl Push {
    /// A push with nil metadata.
    pub fn new(seq: u64, data: impl Into<Value>) -> Self {
        Self {
            seq,
            data: data.into(),
            metadata: Value::Nil,
        }
    }
}

/// Asks the server to abandon the request with this id; it is not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Cancel {
    /// The request to cancel.
    pub id: u64,
}

impl Cancel {
    /// A cancellation.
    pub fn new(id: u64) -> Self {
        Self { id }
    }
}

/// Liveness probe; answered by a [`Pong`] with the same nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Ping {
    /// Echoed in the pong.
    pub nonce: u64,
}

impl Ping {
    /// A ping.
    pub fn new(nonce: u64) -> Self {
        Self { nonce }
    }
}

/// The answer to a [`Ping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Pong {
    /// The ping's nonce.
    pub nonce: u64,
}

impl Pong {
    /// A pong.
    pub fn new(nonce: u64) -> Self {
        Self { nonce }
    }
}

/// Why a connection is closing (`docs/protocol.md` §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// Normal end: the sender is done.
    pub const NORMAL: Self = Self(0);
    /// The sender is shutting down (e.g. server drain).
    pub const GOING_AWAY: Self = Self(1);
    /// The peer broke the protocol (malformed frame, bad envelope, …).
    pub const PROTOCOL_ERROR: Self = Self(2);
    /// A frame exceeded the size limit.
    pub const FRAME_TOO_LARGE: Self = Self(3);
    /// The peer used a version, kind, codec or suite the sender does not support.
    pub const UNSUPPORTED: Self = Self(4);
    /// Authentication failed (no detail is given).
    pub const AUTH_FAILED: Self = Self(5);
    /// A handshake, idle or heartbeat timeout expired.
    pub const TIMEOUT: Self = Self(6);
    /// The peer did not read fast enough and its outbox filled.
    pub const SLOW_CONSUMER: Self = Self(7);
    /// An operator removed the connection.
    pub const KICKED: Self = Self(8);
    /// The source is banned.
    pub const BANNED: Self = Self(9);
    /// The sender hit an internal error.
    pub const INTERNAL_ERROR: Self = Self(10);
    /// A server-side limit (connections, per-IP) refused the connection.
    pub const OVERLOADED: Self = Self(11);
    /// Pushes to this connection were lost on their way between server instances; its
    /// session is gone, so a resume starts afresh.
    pub const PUSHES_LOST: Self = Self(12);

    /// The code's name as `docs/protocol.md` §6 spells it (`KICKED`), or `None` for a code
    /// this version does not define.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::NORMAL => "NORMAL",
            Self::GOING_AWAY => "GOING_AWAY",
            Self::PROTOCOL_ERROR => "PROTOCOL_ERROR",
            Self::FRAME_TOO_LARGE => "FRAME_TOO_LARGE",
            Self::UNSUPPORTED => "UNSUPPORTED",
            Self::AUTH_FAILED => "AUTH_FAILED",
            Self::TIMEOUT => "TIMEOUT",
            Self::SLOW_CONSUMER => "SLOW_CONSUMER",
            Self::KICKED => "KICKED",
            Self::BANNED => "BANNED",
            Self::INTERNAL_ERROR => "INTERNAL_ERROR",
            Self::OVERLOADED => "OVERLOADED",
            Self::PUSHES_LOST => "PUSHES_LOST",
            _ => return None,
        })
    }
}

/// The name (`KICKED (8)`), or `close code N` for a code this version does not define.
impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "close code {}", self.0),
        }
    }
}

/// Ends a connection, with a code and a short reason for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Close {
    /// Why.
    pub code: CloseCode,
    /// A short description; never contains secrets or internal details.
    pub reason: String,
}

impl Close {
    /// A close message.
    pub fn new(code: CloseCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// A session token as it travels inside the encrypted channel (16 bytes; MessagePack `bin`).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenBytes(pub [u8; 16]);

impl std::fmt::Debug for TokenBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenBytes(<redacted>)")
    }
}

impl Serialize for TokenBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for TokenBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TokenBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("16 bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<TokenBytes, E> {
                <[u8; 16]>::try_from(v)
                    .map(TokenBytes)
                    .map_err(|_| E::invalid_length(v.len(), &self))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<TokenBytes, A::Error> {
                let mut out = [0u8; 16];
                for (i, b) in out.iter_mut().enumerate() {
                    *b = seq
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                if seq.next_element::<u8>()?.is_some() {
                    return Err(serde::de::Error::invalid_length(17, &self));
                }
                Ok(TokenBytes(out))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// Server → client, right after every handshake: the session's resumption token (single-use,
/// valid for `ttl_ms`) and the session's last push sequence number. `docs/protocol.md` §3.7.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Welcome {
    /// The token to present in [`Resume`] after a reconnect.
    pub token: TokenBytes,
    /// How long the token stays valid, in milliseconds.
    pub ttl_ms: u64,
    /// Whether this connection continues an earlier session (after a successful [`Resume`]).
    pub resumed: bool,
}

impl Welcome {
    /// A welcome.
    pub fn new(token: [u8; 16], ttl_ms: u64, resumed: bool) -> Self {
        Self {
            token: TokenBytes(token),
            ttl_ms,
            resumed,
        }
    }
}

/// Client → server, as the first message after a fresh handshake: continue the session of
/// `token`, whose pushes up to `last_push_seq` the client has received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Resume {
    /// The token from the last [`Welcome`].
    pub token: TokenBytes,
    /// The highest push sequence number received.
    pub last_push_seq: u64,
}

impl Resume {
    /// A resume request.
    pub fn new(token: [u8; 16], last_push_seq: u64) -> Self {
        Self {
            token: TokenBytes(token),
            last_push_seq,
        }
    }
}

/// Any envelope. The serde form of this enum (externally tagged, e.g. `{"Ping": {"nonce": 1}}`)
/// is used for descriptions such as the test vectors; on the wire, [`Message::encode`] writes
/// the binary envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
#[expect(
    missing_docs,
    reason = "each variant is the message type of the same name"
)]
pub enum Message {
    Request(Request),
    Response(Response),
    Action(Action),
    Push(Push),
    Cancel(Cancel),
    Ping(Ping),
    Pong(Pong),
    Close(Close),
    Welcome(Welcome),
    Resume(Resume),
}

/// Message kind bytes (`docs/protocol.md` §4.1).
pub mod kind {
    /// [`Request`](super::Request).
    pub const REQUEST: u8 = 0x01;
    /// [`Response`](super::Response).
    pub const RESPONSE: u8 = 0x02;
    /// [`Action`](super::Action).
    pub const ACTION: u8 = 0x03;
    /// [`Push`](super::Push).
    pub const PUSH: u8 = 0x04;
    /// [`Cancel`](super::Cancel).
    pub const CANCEL: u8 = 0x05;
    /// [`Ping`](super::Ping).
    pub const PING: u8 = 0x06;
    /// [`Pong`](super::Pong).
    pub const PONG: u8 = 0x07;
    /// [`Close`](super::Close).
    pub const CLOSE: u8 = 0x08;
    /// First kind reserved for the session layer.
    pub const SESSION_MIN: u8 = 0x40;
    /// [`Welcome`](super::Welcome).
    pub const WELCOME: u8 = 0x40;
    /// [`Resume`](super::Resume).
    pub const RESUME: u8 = 0x41;
    /// First kind reserved for the mesh.
    pub const MESH_MIN: u8 = 0x80;
}

/// What [`Message::approx_size`] counts for a message's fixed fields (ids, status codes, the
/// envelope): more than their encoding takes.
const FIXED_FIELDS: usize = 64;

impl Request {
    /// An approximate size in bytes (strings, data and metadata by [`Value::approx_size`], plus
    /// a fixed allowance for the other fields): for byte bounds on queued requests and for
    /// reserving buffers. Never below the MessagePack envelope's length.
    #[inline]
    pub fn approx_size(&self) -> usize {
        FIXED_FIELDS
            + self.path.len()
            + self.operation.len()
            + self.data.approx_size()
            + self.metadata.approx_size()
    }
}

impl Response {
    /// An approximate size in bytes, as [`Request::approx_size`] counts it.
    #[inline]
    pub fn approx_size(&self) -> usize {
        FIXED_FIELDS
            + self.status.message.len()
            + self.data.approx_size()
            + self.metadata.approx_size()
    }
}

impl Message {
    /// An approximate size in bytes, as [`Request::approx_size`] counts it: never below the
    /// MessagePack envelope's length, so a buffer reserved with it does not grow while the
    /// message is encoded with that codec.
    #[inline]
    pub fn approx_size(&self) -> usize {
        match self {
            Self::Request(r) => r.approx_size(),
            Self::Response(r) => r.approx_size(),
            Self::Action(a) => FIXED_FIELDS + a.name.len() + a.data.approx_size(),
            Self::Push(p) => FIXED_FIELDS + p.data.approx_size() + p.metadata.approx_size(),
            Self::Close(c) => FIXED_FIELDS + c.reason.len(),
            Self::Cancel(_)
            | Self::Ping(_)
            | Self::Pong(_)
            | Self::Welcome(_)
            | Self::Resume(_) => FIXED_FIELDS,
        }
    }

    /// This message's kind byte.
    pub fn kind(&self) -> u8 {
        match self {
            Self::Request(_) => kind::REQUEST,
            Self::Response(_) => kind::RESPONSE,
            Self::Action(_) => kind::ACTION,
            Self::Push(_) => kind::PUSH,
            Self::Cancel(_) => kind::CANCEL,
            Self::Ping(_) => kind::PING,
            Self::Pong(_) => kind::PONG,
            Self::Close(_) => kind::CLOSE,
            Self::Welcome(_) => kind::WELCOME,
            Self::Resume(_) => kind::RESUME,
        }
    }

    /// Structural identity (see [`Value::is_identical`]): what a codec round trip preserves.
    pub fn is_identical(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Request(a), Self::Request(b)) => {
                a.id == b.id
                    && a.path == b.path
                    && a.operation == b.operation
                    && a.deadline == b.deadline
                    && a.data.is_identical(&b.data)
                    && a.metadata.is_identical(&b.metadata)
            }
            (Self::Response(a), Self::Response(b)) => {
                a.id == b.id
                    && a.status == b.status
                    && a.data.is_identical(&b.data)
                    && a.metadata.is_identical(&b.metadata)
            }
            (Self::Action(a), Self::Action(b)) => {
                a.name == b.name
                    && a.created_at_ms == b.created_at_ms
                    && a.data.is_identical(&b.data)
            }
            (Self::Push(a), Self::Push(b)) => {
                a.seq == b.seq
                    && a.data.is_identical(&b.data)
                    && a.metadata.is_identical(&b.metadata)
            }
            _ => self == other,
        }
    }
}

macro_rules! into_message {
    ($($t:ident),*) => {$(
        impl From<$t> for Message {
            fn from(m: $t) -> Self {
                Self::$t(m)
            }
        }
    )*};
}
into_message!(
    Request, Response, Action, Push, Cancel, Ping, Pong, Close, Welcome, Resume
);

/// Serde adapter: `Option<Duration>` as optional whole milliseconds (saturating at `u64::MAX`).
mod opt_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}
