//! The MessagePack codec.

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{CodecId, PayloadCodec, direct, scan};
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::message::{Request, Response};

/// MessagePack via `rmp-serde`: structs are encoded as arrays of their fields in declaration
/// order, integers in their shortest form, byte strings as `bin`.
///
/// Decoding first scans the input (see [the module docs](crate::codec)); extension types are
/// rejected with [`Error::Unsupported`]. Requests and responses in the form this codec writes
/// are decoded in one pass that makes the same checks (`decode_request`, `decode_response`);
/// any other input takes the general path, so the result is the same either way. They are
/// encoded without serde's dispatch, to the bytes `rmp-serde` writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsgPack;

impl PayloadCodec for MsgPack {
    fn id(&self) -> CodecId {
        CodecId::MsgPack
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T, dst: &mut BytesMut) -> Result<()> {
        let start = dst.len();
        let mut w = dst.writer();
        rmp_serde::encode::write(&mut w, value).map_err(|e| {
            w.get_mut().truncate(start);
            Error::Encode {
                codec: CodecId::MsgPack,
                reason: e.to_string(),
            }
        })
    }

    fn decode<T: DeserializeOwned>(&self, src: &[u8], limits: &Limits) -> Result<T> {
        scan::msgpack(src, limits.max_depth())?;
        let mut de = rmp_serde::Deserializer::from_read_ref(src);
        T::deserialize(&mut de).map_err(|e| match e {
            rmp_serde::decode::Error::DepthLimitExceeded => Error::DepthExceeded {
                max: limits.max_depth(),
            },
            other => Error::Decode {
                codec: CodecId::MsgPack,
                reason: other.to_string(),
            },
        })
    }

    fn encode_request(&self, request: &Request, dst: &mut BytesMut) -> Result<()> {
        if direct::write_request(request, dst) {
            Ok(())
        } else {
            self.encode(request, dst)
        }
    }

    fn encode_response(&self, response: &Response, dst: &mut BytesMut) -> Result<()> {
        if direct::write_response(response, dst) {
            Ok(())
        } else {
            self.encode(response, dst)
        }
    }

    fn decode_request(&self, src: &[u8], limits: &Limits) -> Result<Request> {
        direct::request(src, limits).map_or_else(|| self.decode(src, limits), Ok)
    }

    fn decode_response(&self, src: &[u8], limits: &Limits) -> Result<Response> {
        direct::response(src, limits).map_or_else(|| self.decode(src, limits), Ok)
    }
}
