//! The wire format of CYPHER_PROTOCOL 1.5.0 (PyPI `cypher-protocol-p-y-r-o-b-o-t`), for the
//! legacy compat mode of the server and client. **Legacy**: no forward secrecy, no replay
//! protection, keys shared by every client. Never used by the native protocol.
//!
//! A message is a Fernet token ([`crate::fernet`]) of a JSON object with `PATH`,
//! `OPERATION`, `DATA` and `METADATA`, followed by one NUL byte. Each direction has its own
//! key. The Python side decodes the JSON as ASCII, so [`encode`] escapes every non-ASCII
//! character as `\uXXXX`. Sans-IO: [`NulFramer`] splits a byte stream into messages, checking
//! the length as bytes arrive.

use bytes::{Buf, Bytes, BytesMut};
use cypherwire_wire::Value;

use crate::error::Result as SessionResult;
use crate::fernet::FernetKey;

/// Default largest compat message (token bytes before the NUL): 16 MiB.
pub const DEFAULT_MAX_COMPAT_MESSAGE: usize = 16 * 1024 * 1024;

/// Why a compat message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompatError {
    /// No NUL within the maximum length.
    #[error("compat message of at least {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Bytes buffered without a NUL.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The token is malformed or fails authentication (wrong key, tampering). No detail.
    #[error("invalid Fernet token")]
    InvalidToken,
    /// The plaintext is not a JSON object of the expected shape.
    #[error("invalid compat message: {0}")]
    Malformed(String),
}

/// The two keys of one side, named as the Python constructors name them: `encryption` seals
/// what this side sends, `decryption` opens what it receives.
#[derive(Clone)]
pub struct CypherKeys {
    /// Seals outgoing messages.
    pub encryption: FernetKey,
    /// Opens incoming messages.
    pub decryption: FernetKey,
}

impl std::fmt::Debug for CypherKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CypherKeys(..)")
    }
}

impl CypherKeys {
    /// From the package's 32-character key strings.
    ///
    /// # Errors
    /// [`crate::Error::InvalidKey`] unless each is exactly 32 bytes.
    pub fn new(encryption_key: &str, decryption_key: &str) -> SessionResult<Self> {
        Ok(Self {
            encryption: FernetKey::from_cypher_key(encryption_key)?,
            decryption: FernetKey::from_cypher_key(decryption_key)?,
        })
    }

    /// One key for both directions (as in the package's README).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn same(key: &str) -> SessionResult<Self> {
        Self::new(key, key)
    }
}

/// One compat message: a request, or the object a server answers with.
#[derive(Debug, Clone, PartialEq)]
pub struct CompatMessage {
    /// `PATH`.
    pub path: String,
    /// `OPERATION`.
    pub operation: String,
    /// `DATA`.
    pub data: Value,
    /// `METADATA`.
    pub metadata: Value,
}

/// Splits a byte stream at NUL bytes, refusing a message longer than `max` as soon as that
/// many bytes have arrived without a NUL.
#[derive(Debug)]
pub struct NulFramer {
    buf: BytesMut,
    scanned: usize,
    max: usize,
}

impl NulFramer {
    /// A framer for messages of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            scanned: 0,
            max,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message (without its NUL), if one has arrived. Not copied: a view
    /// of the receive buffer.
    ///
    /// # Errors
    /// [`CompatError::TooLarge`] once more than `max` bytes precede any NUL.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, CompatError> {
        match self.buf[self.scanned..].iter().position(|b| *b == 0) {
            Some(i) => {
                let end = self.scanned + i;
                if end > self.max {
                    return Err(CompatError::TooLarge {
                        len: end,
                        max: self.max,
                    });
                }
                let msg = self.buf.split_to(end).freeze();
                self.buf.advance(1);
                self.scanned = 0;
                Ok(Some(msg))
            }
            None => {
                self.scanned = self.buf.len();
                if self.buf.len() > self.max {
                    return Err(CompatError::TooLarge {
                        len: self.buf.len(),
                        max: self.max,
                    });
                }
                Ok(None)
            }
        }
    }

    /// Bytes buffered.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// Seals `msg` with `key`: the token followed by a NUL, ready to write.
///
/// # Errors
/// [`CompatError::Malformed`] for a value JSON cannot carry (never for the JSON types);
/// [`CompatError::InvalidToken`] if the random generator fails.
pub fn encode(msg: &CompatMessage, key: &FernetKey, now_unix: u64) -> Result<Vec<u8>, CompatError> {
    let object = serde_json::Value::Object(
        [
            ("PATH", serde_json::Value::from(msg.path.as_str())),
            ("OPERATION", serde_json::Value::from(msg.operation.as_str())),
            ("DATA", value_to_json(&msg.data)),
            ("METADATA", value_to_json(&msg.metadata)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
    );
    let text = ascii_json(&object);
    let token = key
        .encrypt(text.as_bytes(), now_unix)
        .map_err(|_| CompatError::InvalidToken)?;
    let mut out = token.into_bytes();
    out.push(0);
    Ok(out)
}

/// Opens one message (the bytes before its NUL) with `key`. No TTL, as the package uses none.
/// A missing `DATA` or `METADATA` is `Nil`.
///
/// # Errors
/// [`CompatError::InvalidToken`], or [`CompatError::Malformed`] for anything but a JSON
/// object with string `PATH` and `OPERATION`.
pub fn decode(token: &[u8], key: &FernetKey) -> Result<CompatMessage, CompatError> {
    let plain = key
        .decrypt(token, 0, None)
        .map_err(|_| CompatError::InvalidToken)?;
    let json: serde_json::Value =
        serde_json::from_slice(&plain).map_err(|e| CompatError::Malformed(e.to_string()))?;
    let serde_json::Value::Object(mut map) = json else {
        return Err(CompatError::Malformed("not a JSON object".into()));
    };
    let mut text = |name: &str| match map.remove(name) {
        Some(serde_json::Value::String(s)) => Ok(s),
        _ => Err(CompatError::Malformed(format!("{name} must be a string"))),
    };
    let path = text("PATH")?;
    let operation = text("OPERATION")?;
    Ok(CompatMessage {
        path,
        operation,
        data: map.remove("DATA").map_or(Value::Nil, json_to_value),
        metadata: map.remove("METADATA").map_or(Value::Nil, json_to_value),
    })
}

/// A JSON value as a [`Value`] (objects become maps with string keys, in order).
pub fn json_to_value(v: serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => n
            .as_i64()
            .map(Value::from)
            .or_else(|| n.as_u64().map(Value::from))
            .unwrap_or_else(|| Value::Float(n.as_f64().unwrap_or(f64::NAN))),
        serde_json::Value::String(s) => Value::String(s),
        serde_json::Value::Array(a) => Value::Array(a.into_iter().map(json_to_value).collect()),
        serde_json::Value::Object(o) => Value::Map(
            o.into_iter()
                .map(|(k, v)| (Value::String(k), json_to_value(v)))
                .collect(),
        ),
    }
}

/// A [`Value`] as JSON. JSON has no bytes, non-string keys or non-finite floats: bytes become
/// a lower-case hex string, keys their JSON text, and NaN/infinity `null` (documented in
/// `docs/compat.md`).
pub fn value_to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Int(i) => i.as_i64().map_or_else(
            || serde_json::Value::from(i.as_u64().unwrap_or_default()),
            serde_json::Value::from,
        ),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Bytes(b) => {
            serde_json::Value::String(b.iter().map(|x| format!("{x:02x}")).collect())
        }
        Value::Array(a) => serde_json::Value::Array(a.iter().map(value_to_json).collect()),
        Value::Map(m) => serde_json::Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::String(s) => s.clone(),
                        other => value_to_json(other).to_string(),
                    };
                    (key, value_to_json(v))
                })
                .collect(),
        ),
        _ => serde_json::Value::Null,
    }
}

/// JSON text with every non-ASCII character escaped (`\uXXXX`, surrogate pairs beyond the
/// BMP), as Python's `json.dumps` writes it and as the package's ASCII decoding requires.
pub fn ascii_json(v: &serde_json::Value) -> String {
    let text = v.to_string();
    if text.is_ascii() {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            // Non-ASCII only occurs inside strings in serde_json's output.
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U";

    fn msg(data: Value) -> CompatMessage {
        CompatMessage {
            path: "/SEQUENCE".into(),
            operation: "UPDATE".into(),
            data,
            metadata: Value::map([("k", Value::from(1))]),
        }
    }

    #[test]
    fn round_trip_with_escaped_non_ascii() {
        let keys = CypherKeys::same(KEY).unwrap();
        let m = msg(Value::from("héllo 🦀"));
        let wire = encode(&m, &keys.encryption, 1_700_000_000).unwrap();
        assert_eq!(wire.last(), Some(&0));
        let token = &wire[..wire.len() - 1];
        let plain = keys.decryption.decrypt(token, 0, None).unwrap();
        assert!(plain.is_ascii(), "{}", String::from_utf8_lossy(&plain));
        assert!(String::from_utf8_lossy(&plain).contains("h\\u00e9llo \\ud83e\\udd80"));
        assert_eq!(decode(token, &keys.decryption).unwrap(), m);
    }

    #[test]
    fn every_json_type_survives() {
        let keys = CypherKeys::same(KEY).unwrap();
        let data = Value::Array(vec![
            Value::Nil,
            Value::Bool(true),
            Value::from(-5),
            Value::from(u64::MAX),
            Value::Float(1.5),
            Value::from("s"),
            Value::map([("nested", Value::Array(vec![Value::from(1)]))]),
        ]);
        let wire = encode(&msg(data.clone()), &keys.encryption, 0).unwrap();
        assert_eq!(
            decode(&wire[..wire.len() - 1], &keys.decryption)
                .unwrap()
                .data,
            data
        );
    }

    #[test]
    fn bad_input_is_typed() {
        let keys = CypherKeys::same(KEY).unwrap();
        let other = CypherKeys::same("0123456789abcdef0123456789abcdef").unwrap();
        let wire = encode(&msg(Value::Nil), &keys.encryption, 0).unwrap();
        let token = &wire[..wire.len() - 1];
        assert_eq!(
            decode(token, &other.decryption),
            Err(CompatError::InvalidToken)
        );
        assert_eq!(
            decode(b"garbage", &keys.decryption),
            Err(CompatError::InvalidToken)
        );
        for plain in [
            &b"[1,2]"[..],
            b"{\"PATH\":1,\"OPERATION\":\"x\"}",
            b"not json",
        ] {
            let t = keys.encryption.encrypt(plain, 0).unwrap();
            assert!(matches!(
                decode(t.as_bytes(), &keys.decryption),
                Err(CompatError::Malformed(_))
            ));
        }
        assert!(CypherKeys::same("short").is_err());
    }

    #[test]
    fn framer_splits_at_nul_and_bounds_length_as_bytes_arrive() {
        let mut f = NulFramer::new(8);
        f.push(b"abc\0de");
        assert_eq!(f.next_message().unwrap().as_deref(), Some(&b"abc"[..]));
        assert_eq!(f.next_message().unwrap(), None);
        f.push(b"f\0");
        assert_eq!(f.next_message().unwrap().as_deref(), Some(&b"def"[..]));
        // Byte by byte: refused once 9 bytes arrived without a NUL, before any more arrive.
        let mut f = NulFramer::new(8);
        for i in 0..9 {
            f.push(b"x");
            let r = f.next_message();
            if i < 8 {
                assert_eq!(r, Ok(None));
            } else {
                assert_eq!(r, Err(CompatError::TooLarge { len: 9, max: 8 }));
            }
        }
        assert_eq!(f.buffered(), 9);
    }
}
