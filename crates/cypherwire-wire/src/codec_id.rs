//! The payload codec's identifier byte, on its own so that errors can name a codec without
//! depending on the codecs.

use std::fmt;

/// Identifies a payload codec on the wire (one byte, negotiated by the handshake).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CodecId {
    /// MessagePack, id 1.
    MsgPack,
    /// JSON, id 2.
    Json,
}

impl CodecId {
    /// The identifier byte.
    pub const fn to_u8(self) -> u8 {
        match self {
            Self::MsgPack => 1,
            Self::Json => 2,
        }
    }

    /// Whether this build includes the codec.
    pub const fn is_available(self) -> bool {
        match self {
            Self::MsgPack => cfg!(feature = "msgpack"),
            Self::Json => cfg!(feature = "json"),
        }
    }
}

impl fmt::Display for CodecId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::MsgPack => "MessagePack",
            Self::Json => "JSON",
        })
    }
}
