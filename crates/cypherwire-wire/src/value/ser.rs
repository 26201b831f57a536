//! `Serialize` for [`Value`], and [`to_value`]: any `Serialize` type into a [`Value`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::ser::{self, Serialize, SerializeMap, SerializeSeq, Serializer};

use super::{Integer, Repr, Value};
use crate::error::{Error, Result};

/// Reserved single-key object names used to express [`Value`] losslessly in human-readable
/// formats (JSON). `docs/protocol.md` §4.3.
pub(super) const BYTES_KEY: &str = "$bytes";
pub(super) const MAP_KEY: &str = "$map";
pub(super) const FLOAT_KEY: &str = "$float";

pub(super) fn is_reserved(key: &str) -> bool {
    matches!(key, BYTES_KEY | MAP_KEY | FLOAT_KEY)
}

impl Serialize for Integer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Repr::Signed(v) if v >= 0 => s.serialize_u64(v.unsigned_abs()),
            Repr::Signed(v) => s.serialize_i64(v),
            Repr::Large(v) => s.serialize_u64(v),
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let readable = s.is_human_readable();
        match self {
            Self::Nil => s.serialize_unit(),
            Self::Bool(b) => s.serialize_bool(*b),
            Self::Int(i) => i.serialize(s),
            Self::Float(f) if readable && !f.is_finite() => {
                let name = if f.is_nan() {
                    "NaN"
                } else if *f > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                };
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(FLOAT_KEY, name)?;
                m.end()
            }
            Self::Float(f) => s.serialize_f64(*f),
            Self::String(v) => s.serialize_str(v),
            Self::Bytes(b) if readable => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(BYTES_KEY, &B64.encode(b))?;
                m.end()
            }
            Self::Bytes(b) => s.serialize_bytes(b),
            Self::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Self::Map(pairs) if readable && needs_escape(pairs) => {
                // {"$map": [[k, v], ...]}
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(MAP_KEY, &Pairs(pairs))?;
                m.end()
            }
            Self::Map(pairs) => {
                let mut m = s.serialize_map(Some(pairs.len()))?;
                for (k, v) in pairs {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
    }
}

/// A map needs the `$map` form in JSON when a key is not a string, or when it would otherwise
/// be mistaken for one of the reserved single-key forms.
fn needs_escape(pairs: &[(Value, Value)]) -> bool {
    let non_string = pairs.iter().any(|(k, _)| k.as_str().is_none());
    let mistakable = matches!(pairs, [(Value::String(k), _)] if is_reserved(k));
    non_string || mistakable
}

struct Pairs<'a>(&'a [(Value, Value)]);

impl Serialize for Pairs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (k, v) in self.0 {
            seq.serialize_element(&(k, v))?;
        }
        seq.end()
    }
}

/// Converts any `Serialize` value into a [`Value`].
///
/// Structs become maps with string keys, sequences and tuples arrays, `None` and `()` nil,
/// enums follow serde's externally tagged form (a unit variant is its name; other variants are
/// a one-entry map from the name to the content).
///
/// # Errors
/// [`Error::Conversion`] if the type's `Serialize` implementation fails, or for an integer
/// outside the `i64`/`u64` range.
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value> {
    value.serialize(ValueSerializer)
}

struct ValueSerializer;

fn variant(name: &'static str, content: Value) -> Value {
    Value::Map(vec![(Value::from(name), content)])
}

impl Serializer for ValueSerializer {
    type Ok = Value;
    type Error = Error;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = SeqBuilder;
    type SerializeTupleStruct = SeqBuilder;
    type SerializeTupleVariant = SeqBuilder;
    type SerializeMap = MapBuilder;
    type SerializeStruct = MapBuilder;
    type SerializeStructVariant = MapBuilder;

    /// [`Value`] can hold bytes and any map key natively: types serialise in their compact
    /// form, and `Value` itself maps onto itself.
    fn is_human_readable(&self) -> bool {
        false
    }

    fn serialize_bool(self, v: bool) -> Result<Value> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value> {
        Ok(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<Value> {
        Ok(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<Value> {
        Ok(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<Value> {
        Ok(v.into())
    }
    fn serialize_i128(self, v: i128) -> Result<Value> {
        if let Ok(i) = i64::try_from(v) {
            Ok(i.into())
        } else if let Ok(u) = u64::try_from(v) {
            Ok(u.into())
        } else {
            Err(Error::Conversion(format!("integer {v} out of range")))
        }
    }
    fn serialize_u8(self, v: u8) -> Result<Value> {
        Ok(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<Value> {
        Ok(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<Value> {
        Ok(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<Value> {
        Ok(v.into())
    }
    fn serialize_u128(self, v: u128) -> Result<Value> {
        u64::try_from(v)
            .map(Value::from)
            .map_err(|_| Error::Conversion(format!("integer {v} out of range")))
    }
    fn serialize_f32(self, v: f32) -> Result<Value> {
        Ok(v.into())
    }
    fn serialize_f64(self, v: f64) -> Result<Value> {
        Ok(v.into())
    }
    fn serialize_char(self, v: char) -> Result<Value> {
        Ok(Value::String(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Value> {
        Ok(v.into())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn serialize_none(self) -> Result<Value> {
        Ok(Value::Nil)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value> {
        Ok(Value::Nil)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value> {
        Ok(Value::Nil)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<Value> {
        Ok(variant.into())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Value> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        name: &'static str,
        value: &T,
    ) -> Result<Value> {
        Ok(variant(name, to_value(value)?))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder> {
        Ok(SeqBuilder::new(len, None))
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder> {
        Ok(SeqBuilder::new(Some(len), None))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<SeqBuilder> {
        Ok(SeqBuilder::new(Some(len), None))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        name: &'static str,
        len: usize,
    ) -> Result<SeqBuilder> {
        Ok(SeqBuilder::new(Some(len), Some(name)))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<MapBuilder> {
        Ok(MapBuilder::new(len, None))
    }
    fn serialize_struct(self, _: &'static str, len: usize) -> Result<MapBuilder> {
        Ok(MapBuilder::new(Some(len), None))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        name: &'static str,
        len: usize,
    ) -> Result<MapBuilder> {
        Ok(MapBuilder::new(Some(len), Some(name)))
    }
}

/// Builds arrays; for a tuple variant, wraps the array in `{variant: [...]}`.
struct SeqBuilder {
    items: Vec<Value>,
    variant: Option<&'static str>,
}

impl SeqBuilder {
    fn new(len: Option<usize>, variant: Option<&'static str>) -> Self {
        // The hint comes from local code, but stay cautious anyway.
        let items = Vec::with_capacity(len.unwrap_or(0).min(4096));
        Self { items, variant }
    }

    fn push<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        self.items.push(to_value(v)?);
        Ok(())
    }

    fn finish(self) -> Value {
        let arr = Value::Array(self.items);
        match self.variant {
            Some(name) => variant(name, arr),
            None => arr,
        }
    }
}

impl SerializeSeq for SeqBuilder {
    type Ok = Value;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        self.push(v)
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

impl ser::SerializeTuple for SeqBuilder {
    type Ok = Value;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        self.push(v)
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleStruct for SeqBuilder {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        self.push(v)
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleVariant for SeqBuilder {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<()> {
        self.push(v)
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

/// Builds maps; for a struct variant, wraps the map in `{variant: {...}}`.
struct MapBuilder {
    pairs: Vec<(Value, Value)>,
    pending_key: Option<Value>,
    variant: Option<&'static str>,
}

impl MapBuilder {
    fn new(len: Option<usize>, variant: Option<&'static str>) -> Self {
        Self {
            pairs: Vec::with_capacity(len.unwrap_or(0).min(4096)),
            pending_key: None,
            variant,
        }
    }

    fn finish(self) -> Value {
        let map = Value::Map(self.pairs);
        match self.variant {
            Some(name) => variant(name, map),
            None => map,
        }
    }
}

impl SerializeMap for MapBuilder {
    type Ok = Value;
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
        self.pending_key = Some(to_value(key)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        let key = self
            .pending_key
            .take()
            .ok_or_else(|| Error::Conversion("map value without a key".into()))?;
        self.pairs.push((key, to_value(value)?));
        Ok(())
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

impl ser::SerializeStruct for MapBuilder {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) -> Result<()> {
        self.pairs.push((key.into(), to_value(v)?));
        Ok(())
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

impl ser::SerializeStructVariant for MapBuilder {
    type Ok = Value;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, v: &T) -> Result<()> {
        self.pairs.push((key.into(), to_value(v)?));
        Ok(())
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}
