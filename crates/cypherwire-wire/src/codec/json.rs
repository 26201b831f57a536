//! The JSON codec.

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{CodecId, PayloadCodec, scan};
use crate::error::{Error, Result};
use crate::limits::Limits;

/// JSON via `serde_json`: structs are objects with named fields.
///
/// [`Value`](crate::Value) maps onto JSON losslessly: byte strings, maps with non-string keys
/// and non-finite floats use reserved single-key objects (`$bytes`, `$map`, `$float`); see
/// `docs/protocol.md` §4.3.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json;

impl PayloadCodec for Json {
    fn id(&self) -> CodecId {
        CodecId::Json
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T, dst: &mut BytesMut) -> Result<()> {
        let start = dst.len();
        let mut w = dst.writer();
        serde_json::to_writer(&mut w, value).map_err(|e| {
            w.get_mut().truncate(start);
            Error::Encode {
                codec: CodecId::Json,
                reason: e.to_string(),
            }
        })
    }

    fn decode<T: DeserializeOwned>(&self, src: &[u8], limits: &Limits) -> Result<T> {
        scan::json(src, limits.max_depth())?;
        serde_json::from_slice(src).map_err(|e| Error::Decode {
            codec: CodecId::Json,
            reason: e.to_string(),
        })
    }
}
