//! How a [`Value`] reads: `Display` is JSON-like, `Debug` of an [`Integer`] is the number.

use std::fmt;

use super::{Integer, Repr, Value};

/// JSON-like: `null`, `true`, `42`, `1.5`, `"text"` (escaped as in Rust), `[1, 2]`,
/// `{"k": "v"}` (keys of any type), byte strings as `b"..."` with non-printable bytes escaped.
///
/// ```
/// use cypherwire_wire::Value;
///
/// let v = Value::map([("n", Value::from(2)), ("tags", Value::from(vec!["a", "b"]))]);
/// assert_eq!(v.to_string(), r#"{"n": 2, "tags": ["a", "b"]}"#);
/// assert_eq!(Value::from(&b"hi\n"[..]).to_string(), r#"b"hi\n""#);
/// ```
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Nil => f.write_str("null"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Float(x) if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e16 => {
                write!(f, "{x:.1}")
            }
            Self::Float(x) => write!(f, "{x}"),
            Self::String(s) => write!(f, "{s:?}"),
            Self::Bytes(b) => write!(f, "b\"{}\"", b.escape_ascii()),
            Self::Array(items) => {
                f.write_str("[")?;
                for (n, item) in items.iter().enumerate() {
                    if n > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Self::Map(entries) => {
                f.write_str("{")?;
                for (n, (k, v)) in entries.iter().enumerate() {
                    if n > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

impl fmt::Debug for Integer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Repr::Signed(v) => fmt::Debug::fmt(&v, f),
            Repr::Large(v) => fmt::Debug::fmt(&v, f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_like_json() {
        let v = Value::Array(vec![
            Value::Nil,
            Value::Bool(false),
            Value::from(-3),
            Value::from(u64::MAX),
            Value::Float(2.0),
            Value::Float(0.25),
            Value::Float(f64::NAN),
            Value::from("say \"hi\""),
            Value::Bytes(vec![0, b'a']),
            Value::Map(vec![(Value::from(1), Value::Array(vec![]))]),
        ]);
        assert_eq!(
            v.to_string(),
            r#"[null, false, -3, 18446744073709551615, 2.0, 0.25, NaN, "say \"hi\"", b"\x00a", {1: []}]"#
        );
    }

    #[test]
    fn debug_shows_numbers_as_numbers() {
        assert_eq!(format!("{:?}", Value::from(2)), "Int(2)");
        assert_eq!(
            format!("{:?}", Value::from(u64::MAX)),
            "Int(18446744073709551615)"
        );
    }
}
