//! The wire layer's error type.

use std::fmt;
use std::io;

use crate::codec_id::CodecId;

/// Every error the wire layer returns.
///
/// Errors describe *local* failures in detail so that they can be logged and matched on. Upper
/// layers never echo these details to the peer: they map an error to a [`CloseCode`] with
/// [`Error::close_code`].
///
/// [`CloseCode`]: crate::CloseCode
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A frame header announced a body longer than the configured maximum. Detected from the
    /// four header bytes alone, before anything is allocated for the body.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The length the header announced.
        len: u64,
        /// The maximum in force.
        max: usize,
    },
    /// A frame header announced an empty body; every protocol message has at least two bytes.
    #[error("empty frame")]
    EmptyFrame,
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame: {available} of {needed} bytes present")]
    Truncated {
        /// Bytes the frame (header included) needs.
        needed: usize,
        /// Bytes that arrived before the end of the stream.
        available: usize,
    },
    /// A payload nests containers deeper than [`Limits::max_depth`](crate::Limits::max_depth).
    #[error("payload nests deeper than the limit of {max}")]
    DepthExceeded {
        /// The limit in force.
        max: usize,
    },
    /// A MessagePack length field declares more items or bytes than the input holds (the
    /// "4 GiB string" bomb). Rejected before anything is allocated.
    #[error("declared length {declared} exceeds the {remaining} bytes remaining")]
    LengthExceedsInput {
        /// The length the input declared.
        declared: u64,
        /// Bytes that actually remain.
        remaining: usize,
    },
    /// A string in the payload is not valid UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// Bytes follow the end of a complete payload value.
    #[error("{count} unexpected bytes after the payload")]
    TrailingBytes {
        /// How many bytes were left over.
        count: usize,
    },
    /// The payload uses a construct the protocol does not allow (for example MessagePack
    /// extension types).
    #[error("unsupported payload construct: {0}")]
    Unsupported(&'static str),
    /// The payload is syntactically broken or does not match the expected shape.
    #[error("cannot decode {codec} payload: {reason}")]
    Decode {
        /// The codec in use.
        codec: CodecId,
        /// What the decoder reported.
        reason: String,
    },
    /// A value could not be encoded (for example a map with non-string keys in a typed struct
    /// that JSON cannot express).
    #[error("cannot encode {codec} payload: {reason}")]
    Encode {
        /// The codec in use.
        codec: CodecId,
        /// What the encoder reported.
        reason: String,
    },
    /// Converting between [`Value`](crate::Value) and a Rust type failed.
    #[error("value conversion failed: {0}")]
    Conversion(String),
    /// An envelope carries a format version this implementation does not speak.
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u8),
    /// An envelope carries a message kind this implementation does not know (for example one
    /// added by a newer peer).
    #[error("unknown message kind 0x{0:02x}")]
    UnknownKind(u8),
    /// A codec identifier that names no codec compiled into this build.
    #[error("unknown payload codec id {0}")]
    UnknownCodec(u8),
    /// A limit was configured with a value outside its documented range.
    #[error("invalid limit: {0}")]
    InvalidLimit(&'static str),
    /// The underlying transport failed (only produced through the `tokio_util` codec traits).
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Error {
    /// The close code a connection that failed with this error sends to its peer.
    ///
    /// The mapping is total: every variant names its code, so adding a variant forces a
    /// decision here.
    pub fn close_code(&self) -> crate::CloseCode {
        use crate::CloseCode;
        match self {
            Self::FrameTooLarge { .. } => CloseCode::FRAME_TOO_LARGE,
            Self::EmptyFrame
            | Self::Truncated { .. }
            | Self::DepthExceeded { .. }
            | Self::LengthExceedsInput { .. }
            | Self::InvalidUtf8
            | Self::TrailingBytes { .. }
            | Self::Decode { .. } => CloseCode::PROTOCOL_ERROR,
            Self::Unsupported(_)
            | Self::UnsupportedVersion(_)
            | Self::UnknownKind(_)
            | Self::UnknownCodec(_) => CloseCode::UNSUPPORTED,
            Self::Encode { .. } | Self::Conversion(_) | Self::InvalidLimit(_) | Self::Io(_) => {
                CloseCode::INTERNAL_ERROR
            }
        }
    }
}

impl serde::ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::Conversion(msg.to_string())
    }
}

impl serde::de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::Conversion(msg.to_string())
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
