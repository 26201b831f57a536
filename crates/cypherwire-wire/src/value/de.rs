//! `Deserialize` for [`Value`], and [`from_value`]: a [`Value`] into any `Deserialize` type.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{
    self, DeserializeOwned, Deserializer, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};
use serde::{Deserialize, forward_to_deserialize_any};

use super::ser::{BYTES_KEY, FLOAT_KEY, MAP_KEY};
use super::{Integer, MAX_PREALLOC, Repr, Value};
use crate::error::{Error, Result};

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let readable = d.is_human_readable();
        d.deserialize_any(ValueVisitor { readable })
    }
}

struct ValueVisitor {
    readable: bool,
}

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any cypherwire value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::from)
            .or_else(|_| u64::try_from(v).map(Value::from))
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        u64::try_from(v)
            .map(Value::from)
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(v))
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_PREALLOC));
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0).min(MAX_PREALLOC));
        while let Some(entry) = map.next_entry::<Value, Value>()? {
            pairs.push(entry);
        }
        if self.readable
            && let [(Value::String(key), _)] = pairs.as_slice()
        {
            let key = key.clone();
            if let Some((_, content)) = pairs.pop() {
                return unescape(&key, content).map_err(de::Error::custom);
            }
        }
        Ok(Value::Map(pairs))
    }
}

/// Decodes the reserved single-key objects of the human-readable form (§4.3); any other
/// single-key map is returned as it was.
fn unescape(key: &str, content: Value) -> Result<Value, String> {
    match (key, content) {
        (BYTES_KEY, Value::String(b64)) => B64
            .decode(b64.as_bytes())
            .map(Value::Bytes)
            .map_err(|e| format!("invalid {BYTES_KEY}: {e}")),
        (FLOAT_KEY, Value::String(name)) => match name.as_str() {
            "NaN" => Ok(Value::Float(f64::NAN)),
            "Infinity" => Ok(Value::Float(f64::INFINITY)),
            "-Infinity" => Ok(Value::Float(f64::NEG_INFINITY)),
            other => Err(format!("invalid {FLOAT_KEY}: {other:?}")),
        },
        (MAP_KEY, Value::Array(entries)) => entries
            .into_iter()
            .map(|e| match e {
                Value::Array(kv) if kv.len() == 2 => {
                    let mut kv = kv.into_iter();
                    match (kv.next(), kv.next()) {
                        (Some(k), Some(v)) => Ok((k, v)),
                        _ => Err(format!("invalid {MAP_KEY} entry")),
                    }
                }
                _ => Err(format!("invalid {MAP_KEY} entry")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Map),
        (BYTES_KEY | FLOAT_KEY | MAP_KEY, _) => Err(format!("malformed {key} object")),
        (other, content) => Ok(Value::Map(vec![(Value::from(other), content)])),
    }
}

/// Converts a [`Value`] into any `Deserialize` type (the inverse of
/// [`to_value`](super::to_value)).
///
/// # Errors
/// [`Error::Conversion`] when the value does not have the shape the type expects.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T> {
    T::deserialize(value)
}

impl IntoDeserializer<'_, Error> for Value {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> Deserializer<'de> for Value {
    type Error = Error;

    /// Mirrors [`to_value`](super::to_value): the compact form.
    fn is_human_readable(&self) -> bool {
        false
    }

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        match self {
            Self::Nil => v.visit_unit(),
            Self::Bool(b) => v.visit_bool(b),
            Self::Int(Integer(Repr::Signed(i))) => v.visit_i64(i),
            Self::Int(Integer(Repr::Large(u))) => v.visit_u64(u),
            Self::Float(f) => v.visit_f64(f),
            Self::String(s) => v.visit_string(s),
            Self::Bytes(b) => v.visit_byte_buf(b),
            Self::Array(items) => {
                let mut seq = SeqDeserializer::new(items.into_iter());
                let out = v.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(out)
            }
            Self::Map(pairs) => {
                let mut map = MapDeserializer::new(pairs.into_iter());
                let out = v.visit_map(&mut map)?;
                map.end()?;
                Ok(out)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value> {
        match self {
            Self::Nil => v.visit_none(),
            other => v.visit_some(other),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value> {
        match self {
            Self::String(_) => v.visit_enum(EnumDeserializer {
                variant: self,
                content: None,
            }),
            Self::Map(mut pairs) if pairs.len() == 1 => match pairs.pop() {
                Some((variant, content)) => v.visit_enum(EnumDeserializer {
                    variant,
                    content: Some(content),
                }),
                None => Err(Error::Conversion("empty enum map".into())),
            },
            _ => Err(Error::Conversion(
                "expected a variant name or a one-entry map".into(),
            )),
        }
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

struct EnumDeserializer {
    variant: Value,
    content: Option<Value>,
}

impl<'de> EnumAccess<'de> for EnumDeserializer {
    type Error = Error;
    type Variant = VariantDeserializer;

    fn variant_seed<S: de::DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, VariantDeserializer)> {
        let tag = seed.deserialize(self.variant)?;
        Ok((tag, VariantDeserializer(self.content)))
    }
}

struct VariantDeserializer(Option<Value>);

impl<'de> VariantAccess<'de> for VariantDeserializer {
    type Error = Error;

    fn unit_variant(self) -> Result<()> {
        match self.0 {
            None | Some(Value::Nil) => Ok(()),
            Some(_) => Err(Error::Conversion(
                "unexpected content for a unit variant".into(),
            )),
        }
    }

    fn newtype_variant_seed<S: de::DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value> {
        seed.deserialize(self.0.unwrap_or(Value::Nil))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, v: V) -> Result<V::Value> {
        self.0.unwrap_or(Value::Nil).deserialize_any(v)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value> {
        self.0.unwrap_or(Value::Nil).deserialize_any(v)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::value::to_value;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Empty,
        Circle(f64),
        Rect { w: u32, h: u32 },
        Pair(i8, i8),
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Doc {
        name: String,
        tags: Vec<String>,
        shapes: Vec<Shape>,
        extra: Option<BTreeMap<String, i64>>,
        unit: (),
        tuple: (u8, char, bool),
    }

    #[test]
    fn typed_structs_round_trip_through_value() {
        let doc = Doc {
            name: "n".into(),
            tags: vec!["a".into(), "b".into()],
            shapes: vec![
                Shape::Empty,
                Shape::Circle(1.5),
                Shape::Rect { w: 2, h: 3 },
                Shape::Pair(-1, 1),
            ],
            extra: Some(BTreeMap::from([("k".to_owned(), -7)])),
            unit: (),
            tuple: (9, 'z', true),
        };
        let v = to_value(&doc).unwrap();
        assert_eq!(v.get("name").and_then(Value::as_str), Some("n"));
        assert_eq!(from_value::<Doc>(v).unwrap(), doc);
    }

    #[test]
    fn shape_mismatch_is_a_conversion_error() {
        let err = from_value::<u8>(Value::from("x")).unwrap_err();
        assert!(matches!(err, Error::Conversion(_)));
        let err = from_value::<u8>(Value::from(300)).unwrap_err();
        assert!(matches!(err, Error::Conversion(_)));
        let err = from_value::<Shape>(Value::from(1)).unwrap_err();
        assert!(matches!(err, Error::Conversion(_)));
    }

    #[test]
    fn reserved_forms_decode_and_reject_malformed_content() {
        assert_eq!(
            unescape(BYTES_KEY, Value::from("AAE=")).unwrap(),
            Value::bytes([0u8, 1])
        );
        assert!(unescape(BYTES_KEY, Value::from("***")).is_err());
        assert!(unescape(FLOAT_KEY, Value::from("nan")).is_err());
        assert!(unescape(MAP_KEY, Value::from(1)).is_err());
        assert!(unescape(MAP_KEY, Value::from(vec![vec![1]])).is_err());
        assert_eq!(
            unescape("plain", Value::from(1)).unwrap(),
            Value::map([("plain", 1)])
        );
    }
}
