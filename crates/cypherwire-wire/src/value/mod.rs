//! [`Value`]: send anything.
//!
//! A dynamic value for "send anything" use: nil, booleans, integers, floats, strings, byte
//! strings, arrays and maps (with keys of any type, in insertion order). It round-trips
//! identically through every payload codec, and converts from and to any `serde` type with
//! [`to_value`] and [`from_value`].
//!
//! Python users: a `tuple`, `list` or `set` becomes an [`Value::Array`]; a `dict` a
//! [`Value::Map`]; `bytes` a [`Value::Bytes`].
//!
//! ```
//! use cypherwire_wire::{Value, from_value, to_value};
//!
//! let v = Value::map([("name", Value::from("ada")), ("tags", Value::from(vec!["x", "y"]))]);
//! assert_eq!(v.get("name").and_then(Value::as_str), Some("ada"));
//!
//! #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
//! struct Point { x: i32, y: i32 }
//! let p = to_value(&Point { x: 1, y: -2 })?;
//! assert_eq!(from_value::<Point>(p)?, Point { x: 1, y: -2 });
//! # Ok::<(), cypherwire_wire::Error>(())
//! ```

mod de;
mod display;
mod ser;

use std::collections::{BTreeMap, HashMap};

pub use self::de::from_value;
pub use self::ser::to_value;

/// Upper bound on capacity reserved from a declared container length (elements), for every
/// decoder of [`Value`]: declared lengths have been checked against the input by then, this
/// just keeps one declaration from reserving much.
pub(crate) const MAX_PREALLOC: usize = 4096;

/// A dynamically typed value. See [the module docs](self).
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub enum Value {
    /// Absence of a value (MessagePack `nil`, JSON `null`, Python `None`).
    #[default]
    Nil,
    /// A boolean.
    Bool(bool),
    /// An integer in the range of `i64` or `u64`.
    Int(Integer),
    /// A 64-bit float.
    Float(f64),
    /// A UTF-8 string.
    String(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// An ordered sequence.
    Array(Vec<Self>),
    /// An ordered list of key–value pairs. Keys may be any value; duplicate keys are kept as
    /// sent (lookups with [`Value::get`] find the first).
    Map(Vec<(Self, Self)>),
}

/// An integer that fits `i64` or `u64`.
///
/// The representation is canonical (non-negative values that fit `i64` are stored as such), so
/// equal numbers compare equal however they were built or decoded.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Integer(Repr);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Repr {
    Signed(i64),
    /// Only for values above `i64::MAX`.
    Large(u64),
}

impl Integer {
    /// The value as `i64`, if it fits.
    pub fn as_i64(self) -> Option<i64> {
        match self.0 {
            Repr::Signed(v) => Some(v),
            Repr::Large(_) => None,
        }
    }

    /// The value as `u64`, if it fits.
    pub fn as_u64(self) -> Option<u64> {
        match self.0 {
            Repr::Signed(v) => u64::try_from(v).ok(),
            Repr::Large(v) => Some(v),
        }
    }

    /// The value as `i128` (always fits).
    pub fn as_i128(self) -> i128 {
        match self.0 {
            Repr::Signed(v) => i128::from(v),
            Repr::Large(v) => i128::from(v),
        }
    }
}

impl From<u64> for Integer {
    fn from(v: u64) -> Self {
        match i64::try_from(v) {
            Ok(s) => Self(Repr::Signed(s)),
            Err(_) => Self(Repr::Large(v)),
        }
    }
}

impl From<i64> for Integer {
    fn from(v: i64) -> Self {
        Self(Repr::Signed(v))
    }
}

impl std::fmt::Display for Integer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Repr::Signed(v) => v.fmt(f),
            Repr::Large(v) => v.fmt(f),
        }
    }
}

impl Value {
    /// An approximate size in bytes: the string and byte contents plus a fixed 16 bytes per
    /// scalar and 24 per string, byte string, array and map. Not exact: meant for byte bounds
    /// on buffered values and for reserving buffers. It is never below the value's MessagePack
    /// encoding (which takes at most 9 bytes per scalar and 5 per header).
    #[inline]
    pub fn approx_size(&self) -> usize {
        // Inlined for the common leaves (it runs for every message sent); containers recurse
        // out of line.
        match self {
            Self::String(s) => 24 + s.len(),
            Self::Bytes(b) => 24 + b.len(),
            Self::Array(_) | Self::Map(_) => self.container_size(),
            _ => 16,
        }
    }

    fn container_size(&self) -> usize {
        match self {
            Self::Array(a) => 24 + a.iter().map(Self::approx_size).sum::<usize>(),
            Self::Map(m) => {
                24 + m
                    .iter()
                    .map(|(k, v)| k.approx_size() + v.approx_size())
                    .sum::<usize>()
            }
            leaf => leaf.approx_size(),
        }
    }

    /// A byte-string value.
    pub fn bytes(b: impl Into<Vec<u8>>) -> Self {
        Self::Bytes(b.into())
    }

    /// A map from key–value pairs, in the given order.
    pub fn map<K: Into<Self>, V: Into<Self>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// Whether this is [`Value::Nil`].
    pub fn is_nil(&self) -> bool {
        matches!(self, Self::Nil)
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The integer as `i64`, if this is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Int(i) => i.as_i64(),
            _ => None,
        }
    }

    /// The integer as `u64`, if this is an integer that fits.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Int(i) => i.as_u64(),
            _ => None,
        }
    }

    /// The number as `f64`, if this is a float or an integer.
    #[expect(
        clippy::cast_precision_loss,
        reason = "documented: integers widen to f64"
    )]
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Float(f) => Some(*f),
            Self::Int(i) => Some(i.as_i128() as f64),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The bytes, if this is a byte string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Self::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Self]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The pairs, if this is a map.
    pub fn as_map(&self) -> Option<&[(Self, Self)]> {
        match self {
            Self::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The value under a string key, if this is a map that has it (first match).
    pub fn get(&self, key: &str) -> Option<&Self> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// Structural identity: like `==`, except that floats compare by bit pattern, so `NaN` is
    /// identical to itself and `0.0` is not identical to `-0.0`. This is the relation codecs
    /// preserve exactly.
    pub fn is_identical(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Float(a), Self::Float(b)) => a.to_bits() == b.to_bits(),
            (Self::Array(a), Self::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.is_identical(y))
            }
            (Self::Map(a), Self::Map(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((k1, v1), (k2, v2))| k1.is_identical(k2) && v1.is_identical(v2))
            }
            _ => self == other,
        }
    }
}

macro_rules! from_int {
    ($via:ty: $($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Self::Int(Integer::from(<$via>::from(v)))
            }
        }
    )*};
}
from_int!(i64: i8, i16, i32, i64);
from_int!(u64: u8, u16, u32, u64);

impl From<isize> for Value {
    fn from(v: isize) -> Self {
        // isize is at most 64 bits on every supported target.
        Self::Int(Integer::from(v as i64))
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Self::Int(Integer::from(v as u64))
    }
}

impl From<Integer> for Value {
    fn from(v: Integer) -> Self {
        Self::Int(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

impl From<f32> for Value {
    fn from(v: f32) -> Self {
        Self::Float(f64::from(v))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Self::Float(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Self::String(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Self::String(v)
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Self::Bytes(v.to_vec())
    }
}

impl From<()> for Value {
    fn from((): ()) -> Self {
        Self::Nil
    }
}

impl<T: Into<Self>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Nil, Into::into)
    }
}

impl<T: Into<Self>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Self {
        Self::Array(v.into_iter().map(Into::into).collect())
    }
}

impl<K: Into<Self>, V: Into<Self>> From<BTreeMap<K, V>> for Value {
    fn from(m: BTreeMap<K, V>) -> Self {
        Self::map(m)
    }
}

impl<K: Into<Self>, V: Into<Self>, S> From<HashMap<K, V, S>> for Value {
    fn from(m: HashMap<K, V, S>) -> Self {
        Self::map(m)
    }
}

impl<T: Into<Self>> FromIterator<T> for Value {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Self::Array(iter.into_iter().map(Into::into).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_canonical() {
        assert_eq!(Value::from(5u64), Value::from(5i8));
        assert_eq!(Value::from(u64::MAX).as_u64(), Some(u64::MAX));
        assert_eq!(Value::from(u64::MAX).as_i64(), None);
        assert_eq!(Value::from(-1i32).as_u64(), None);
        assert_eq!(Value::from(-1i32).as_i64(), Some(-1));
    }

    #[test]
    fn accessors_and_lookup() {
        let v = Value::map([("a", Value::from(1)), ("b", Value::bytes(*b"xy"))]);
        assert_eq!(v.get("a").and_then(Value::as_i64), Some(1));
        assert_eq!(v.get("b").and_then(Value::as_bytes), Some(&b"xy"[..]));
        assert!(v.get("c").is_none());
        assert!(Value::from(None::<i32>).is_nil());
        assert_eq!(Value::from(2.5f32).as_f64(), Some(2.5));
        assert_eq!(
            Value::from_iter([1, 2]).as_array().map(<[Value]>::len),
            Some(2)
        );
    }

    #[test]
    fn identity_distinguishes_float_bits() {
        assert!(Value::Float(f64::NAN).is_identical(&Value::Float(f64::NAN)));
        assert!(!Value::Float(0.0).is_identical(&Value::Float(-0.0)));
        assert_eq!(Value::Float(0.0), Value::Float(-0.0));
    }
}
