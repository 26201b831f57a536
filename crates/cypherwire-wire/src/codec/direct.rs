//! Direct MessagePack encoding and decoding of the envelopes on the hot path: [`Request`] and
//! [`Response`].
//!
//! **Decoding.** The general path scans the input (depth, declared lengths against the bytes
//! present, UTF-8) and then deserialises it with `rmp-serde`, which validates every string a
//! second time and dispatches each field through serde. This module does both in one pass, for
//! the canonical form this crate's encoder writes: a struct as an array of its fields, strings
//! as `str`, integers in any of MessagePack's unsigned or signed forms, no extension types.
//!
//! It gives up (`None`) on anything else — another form the general path may still accept, and
//! every malformed input — and the caller then decodes with the general path, which produces
//! the value or the typed error. So it never accepts an input the general path rejects, and for
//! every input it accepts it returns what the general path returns (property-tested against
//! it, `tests/properties.rs`). The checks that bound work on untrusted input are the scan's:
//! a container deeper than the limit, or declaring more items than bytes remain, is given up
//! before anything is reserved.
//!
//! **Encoding** writes the bytes `rmp-serde` writes (every integer, length and container in its
//! shortest form; property-tested byte for byte), without serde's dispatch. A length beyond
//! MessagePack's 32-bit fields is left to the general path, which reports it.

use std::time::Duration;

use bytes::{BufMut, BytesMut};

use super::scan::Reader;
use crate::limits::Limits;
use crate::message::{Request, Response, Status, StatusCode};
use crate::value::{Integer, MAX_PREALLOC, Value};

/// Decodes a request payload (`[id, path, operation, data, metadata, deadline_ms]`), or
/// `None` if it is not in the canonical form (see the module docs).
pub(crate) fn request(src: &[u8], limits: &Limits) -> Option<Request> {
    let mut input = Input::new(src, limits);
    input.open_struct(6)?;
    let id = input.uint()?;
    let path = input.string()?;
    let operation = input.string()?;
    let data = input.value(1)?;
    let metadata = input.value(1)?;
    let deadline = if input.r.peek()? == NIL {
        input.byte()?;
        None
    } else {
        Some(Duration::from_millis(input.uint()?))
    };
    input.finish()?;
    Some(Request {
        id,
        path,
        operation,
        data,
        metadata,
        deadline,
    })
}

/// Decodes a response payload (`[id, [code, message], data, metadata]`), or `None` if it is
/// not in the canonical form.
pub(crate) fn response(src: &[u8], limits: &Limits) -> Option<Response> {
    let mut input = Input::new(src, limits);
    input.open_struct(4)?;
    let id = input.uint()?;
    input.enter(1)?;
    if input.byte()? != fixarray(2) {
        return None;
    }
    let code = StatusCode(u16::try_from(input.uint()?).ok()?);
    let message = input.string()?;
    let data = input.value(1)?;
    let metadata = input.value(1)?;
    input.finish()?;
    Some(Response {
        id,
        status: Status { code, message },
        data,
        metadata,
    })
}

/// Appends a request payload as `rmp-serde` writes it; `false` (and `dst` unchanged) if a
/// length does not fit MessagePack.
pub(crate) fn write_request(r: &Request, dst: &mut BytesMut) -> bool {
    let start = dst.len();
    dst.put_u8(fixarray(6));
    uint(dst, r.id);
    let ok = text(dst, &r.path)
        && text(dst, &r.operation)
        && value(dst, &r.data)
        && value(dst, &r.metadata);
    match r.deadline {
        None => dst.put_u8(NIL),
        // As `opt_millis` writes it.
        Some(d) => uint(dst, u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    }
    ok || undo(dst, start)
}

/// Appends a response payload as `rmp-serde` writes it; `false` (and `dst` unchanged) if a
/// length does not fit MessagePack.
pub(crate) fn write_response(r: &Response, dst: &mut BytesMut) -> bool {
    let start = dst.len();
    dst.put_u8(fixarray(4));
    uint(dst, r.id);
    dst.put_u8(fixarray(2));
    uint(dst, u64::from(r.status.code.0));
    let ok = text(dst, &r.status.message) && value(dst, &r.data) && value(dst, &r.metadata);
    ok || undo(dst, start)
}

fn undo(dst: &mut BytesMut, start: usize) -> bool {
    dst.truncate(start);
    false
}

/// The shortest unsigned form.
fn uint(dst: &mut BytesMut, v: u64) {
    match v {
        0..=0x7f => dst.put_u8(v as u8),
        0x80..=0xff => {
            dst.put_u8(0xcc);
            dst.put_u8(v as u8);
        }
        0x100..=0xffff => {
            dst.put_u8(0xcd);
            dst.put_u16(v as u16);
        }
        0x1_0000..=0xffff_ffff => {
            dst.put_u8(0xce);
            dst.put_u32(v as u32);
        }
        _ => {
            dst.put_u8(0xcf);
            dst.put_u64(v);
        }
    }
}

/// The shortest signed form of a negative value.
fn negative(dst: &mut BytesMut, v: i64) {
    match v {
        -32..=-1 => dst.put_i8(v as i8),
        -128..=-33 => {
            dst.put_u8(0xd0);
            dst.put_i8(v as i8);
        }
        -32_768..=-129 => {
            dst.put_u8(0xd1);
            dst.put_i16(v as i16);
        }
        -2_147_483_648..=-32_769 => {
            dst.put_u8(0xd2);
            dst.put_i32(v as i32);
        }
        _ => {
            dst.put_u8(0xd3);
            dst.put_i64(v);
        }
    }
}

/// The markers of one kind of MessagePack length field, shortest first.
struct LenForms {
    /// The fix form's marker and the most it holds.
    fix: Option<(u8, usize)>,
    /// The 8-bit form (strings and byte strings only).
    len8: Option<u8>,
    len16: u8,
    len32: u8,
}

const STR: LenForms = LenForms {
    fix: Some((0xa0, 31)),
    len8: Some(0xd9),
    len16: 0xda,
    len32: 0xdb,
};
const BIN: LenForms = LenForms {
    fix: None,
    len8: Some(0xc4),
    len16: 0xc5,
    len32: 0xc6,
};
const ARRAY: LenForms = LenForms {
    fix: Some((0x90, 15)),
    len8: None,
    len16: 0xdc,
    len32: 0xdd,
};
const MAP: LenForms = LenForms {
    fix: Some((0x80, 15)),
    len8: None,
    len16: 0xde,
    len32: 0xdf,
};

/// Writes `n` in the shortest of `forms`; `false` (nothing written) beyond 32 bits.
fn len(dst: &mut BytesMut, n: usize, forms: &LenForms) -> bool {
    if let Some((fix, max)) = forms.fix
        && n <= max
    {
        dst.put_u8(fix | n as u8);
    } else if let Some(len8) = forms.len8
        && let Ok(n) = u8::try_from(n)
    {
        dst.put_u8(len8);
        dst.put_u8(n);
    } else if let Ok(n) = u16::try_from(n) {
        dst.put_u8(forms.len16);
        dst.put_u16(n);
    } else if let Ok(n) = u32::try_from(n) {
        dst.put_u8(forms.len32);
        dst.put_u32(n);
    } else {
        return false;
    }
    true
}

/// A length field of `forms`, then `bytes`.
fn sized(dst: &mut BytesMut, bytes: &[u8], forms: &LenForms) -> bool {
    len(dst, bytes.len(), forms) && {
        dst.put_slice(bytes);
        true
    }
}

fn text(dst: &mut BytesMut, s: &str) -> bool {
    sized(dst, s.as_bytes(), &STR)
}

fn value(dst: &mut BytesMut, v: &Value) -> bool {
    match v {
        Value::Nil => dst.put_u8(NIL),
        Value::Bool(b) => dst.put_u8(if *b { 0xc3 } else { 0xc2 }),
        // Below zero an `Integer` fits `i64`.
        Value::Int(i) => match i.as_u64() {
            Some(u) => uint(dst, u),
            None => negative(dst, i.as_i128() as i64),
        },
        Value::Float(f) => {
            dst.put_u8(0xcb);
            dst.put_f64(*f);
        }
        Value::String(s) => return text(dst, s),
        Value::Bytes(b) => return sized(dst, b, &BIN),
        Value::Array(items) => {
            return len(dst, items.len(), &ARRAY) && items.iter().all(|item| value(dst, item));
        }
        Value::Map(pairs) => {
            return len(dst, pairs.len(), &MAP)
                && pairs.iter().all(|(k, v)| value(dst, k) && value(dst, v));
        }
    }
    true
}

const NIL: u8 = 0xc0;

const fn fixarray(len: u8) -> u8 {
    0x90 | len
}

/// The scan's cursor, with the depth limit; every failure is a give-up (`None`).
struct Input<'a> {
    r: Reader<'a>,
    max_depth: usize,
}

impl<'a> Input<'a> {
    fn new(src: &'a [u8], limits: &Limits) -> Self {
        Self {
            r: Reader::new(src),
            max_depth: limits.max_depth(),
        }
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        self.r.try_take(n)
    }

    fn be<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// A big-endian length field of 1, 2 or 4 bytes.
    fn len(&mut self, width: usize) -> Option<usize> {
        match width {
            1 => self.byte().map(usize::from),
            2 => self.be().map(|b| usize::from(u16::from_be_bytes(b))),
            _ => self
                .be()
                .and_then(|b| usize::try_from(u32::from_be_bytes(b)).ok()),
        }
    }

    /// The top-level array of a struct with `fields` fields (depth 1, which every limit
    /// allows: `Limits` keeps the depth at 1 or more).
    fn open_struct(&mut self, fields: u8) -> Option<()> {
        (self.byte()? == fixarray(fields)).then_some(())
    }

    /// Checks that a container opened inside one at `depth` stays within the depth limit; the
    /// scan counts every container, the top-level one as depth 1.
    fn enter(&self, depth: usize) -> Option<()> {
        (depth < self.max_depth).then_some(())
    }

    /// The input must end here (the scan rejects trailing bytes).
    fn finish(&self) -> Option<()> {
        (self.r.remaining() == 0).then_some(())
    }

    /// Any unsigned integer form, or a signed form holding a value ≥ 0.
    fn uint(&mut self) -> Option<u64> {
        self.integer()?.as_u64()
    }

    /// Any integer form (rmp-serde reads each into the same `Integer`, canonically).
    fn integer(&mut self) -> Option<Integer> {
        let marker = self.byte()?;
        Some(match marker {
            0x00..=0x7f => Integer::from(u64::from(marker)),
            0xe0..=0xff => Integer::from(i64::from(marker.cast_signed())),
            0xcc => Integer::from(u64::from(self.byte()?)),
            0xcd => Integer::from(u64::from(u16::from_be_bytes(self.be()?))),
            0xce => Integer::from(u64::from(u32::from_be_bytes(self.be()?))),
            0xcf => Integer::from(u64::from_be_bytes(self.be()?)),
            0xd0 => Integer::from(i64::from(i8::from_be_bytes(self.be()?))),
            0xd1 => Integer::from(i64::from(i16::from_be_bytes(self.be()?))),
            0xd2 => Integer::from(i64::from(i32::from_be_bytes(self.be()?))),
            0xd3 => Integer::from(i64::from_be_bytes(self.be()?)),
            _ => return None,
        })
    }

    /// A `str` value (a `String` field: the general path would also take a `bin` holding
    /// UTF-8, which is not the canonical form).
    fn string(&mut self) -> Option<String> {
        let len = match self.byte()? {
            m @ 0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 => self.len(1)?,
            0xda => self.len(2)?,
            0xdb => self.len(4)?,
            _ => return None,
        };
        self.text(len)
    }

    fn text(&mut self, len: usize) -> Option<String> {
        std::str::from_utf8(self.take(len)?).ok().map(str::to_owned)
    }

    /// Any value, inside a container at `depth`.
    fn value(&mut self, depth: usize) -> Option<Value> {
        let marker = self.r.peek()?;
        let value = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xcc..=0xd3 => Value::Int(self.integer()?),
            0xa0..=0xbf | 0xd9..=0xdb => Value::String(self.string()?),
            _ => {
                self.byte()?;
                match marker {
                    NIL => Value::Nil,
                    0xc2 => Value::Bool(false),
                    0xc3 => Value::Bool(true),
                    0xca => Value::Float(f64::from(f32::from_be_bytes(self.be()?))),
                    0xcb => Value::Float(f64::from_be_bytes(self.be()?)),
                    0xc4 => self.bytes(1)?,
                    0xc5 => self.bytes(2)?,
                    0xc6 => self.bytes(4)?,
                    0x90..=0x9f | 0xdc | 0xdd => {
                        let len = self.container_len(marker)?;
                        self.array(len, depth)?
                    }
                    0x80..=0x8f | 0xde | 0xdf => {
                        let len = self.container_len(marker)?;
                        self.map(len, depth)?
                    }
                    // 0xc1 (never used) and the extension types.
                    _ => return None,
                }
            }
        };
        Some(value)
    }

    /// The element (array) or entry (map) count after a container's marker.
    fn container_len(&mut self, marker: u8) -> Option<usize> {
        match marker {
            0xdc | 0xde => self.len(2),
            0xdd | 0xdf => self.len(4),
            fix => Some(usize::from(fix & 0x0f)),
        }
    }

    fn bytes(&mut self, width: usize) -> Option<Value> {
        let len = self.len(width)?;
        Some(Value::Bytes(self.take(len)?.to_vec()))
    }

    fn array(&mut self, len: usize, depth: usize) -> Option<Value> {
        self.check_container(len, depth)?;
        let mut items = Vec::with_capacity(len.min(MAX_PREALLOC));
        for _ in 0..len {
            items.push(self.value(depth + 1)?);
        }
        Some(Value::Array(items))
    }

    fn map(&mut self, len: usize, depth: usize) -> Option<Value> {
        self.check_container(len.checked_mul(2)?, depth)?;
        let mut pairs = Vec::with_capacity(len.min(MAX_PREALLOC));
        for _ in 0..len {
            let key = self.value(depth + 1)?;
            pairs.push((key, self.value(depth + 1)?));
        }
        Some(Value::Map(pairs))
    }

    /// A container opened inside one at `depth`, holding `items` values: within the depth
    /// limit, and no more items than bytes left (every value takes at least one), checked
    /// before anything is reserved.
    fn check_container(&self, items: usize, depth: usize) -> Option<()> {
        self.enter(depth)?;
        (items <= self.r.remaining()).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::codec::{MsgPack, PayloadCodec};
    use crate::message::Message;

    fn encoded<T: serde::Serialize>(value: &T) -> BytesMut {
        let mut buf = BytesMut::new();
        MsgPack.encode(value, &mut buf).unwrap();
        buf
    }

    fn nested(depth: usize) -> Value {
        (0..depth).fold(Value::Nil, |v, _| Value::Array(vec![v]))
    }

    fn every_kind_of_value() -> Value {
        Value::Map(vec![
            (Value::from("nil"), Value::Nil),
            (Value::from(true), Value::from(false)),
            (Value::from(-1i64), Value::from(i64::MIN)),
            (Value::from(200u64), Value::from(u64::MAX)),
            (Value::from(70_000u64), Value::from(-70_000i64)),
            (Value::from(1.5f64), Value::from(f64::NAN)),
            (Value::from("é".repeat(40)), Value::from("x".repeat(70_000))),
            (Value::bytes(vec![1; 300]), Value::bytes(vec![2; 70_000])),
            (Value::Array((0..20).map(Value::from).collect()), nested(5)),
        ])
    }

    #[test]
    fn canonical_requests_and_responses_take_the_direct_path() {
        let limits = Limits::default();
        let req = Request::new(u64::MAX, "/ECHO", "Ü".repeat(20))
            .with_data(every_kind_of_value())
            .with_metadata(Value::from("m"))
            .with_deadline(Duration::from_millis(1_234_567));
        let got = request(&encoded(&req), &limits).expect("canonical form");
        assert!(Message::Request(got).is_identical(&Message::Request(req)));
        let no_deadline = Request::new(7, "", "");
        assert_eq!(request(&encoded(&no_deadline), &limits), Some(no_deadline));

        let resp = Response::error(3, StatusCode(u16::MAX), "nope").with_metadata(nested(30));
        let got = response(&encoded(&resp), &limits).expect("canonical form");
        assert!(Message::Response(got).is_identical(&Message::Response(resp)));
        let ok = Response::ok(0, every_kind_of_value());
        let got = response(&encoded(&ok), &limits).expect("canonical form");
        assert!(Message::Response(got).is_identical(&Message::Response(ok)));
    }

    #[test]
    fn every_form_the_general_path_reads_alike_is_read_alike() {
        // Data in each MessagePack form, including ones this crate's encoder does not write
        // (f32, signed forms of small values, wider length fields than needed).
        let forms: &[&[u8]] = &[
            &[0x05],
            &[0xe0],
            &[0xff],
            &[0xcc, 0xc8],
            &[0xcd, 0x12, 0x34],
            &[0xce, 0x12, 0x34, 0x56, 0x78],
            &[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            &[0xd0, 0x80],
            &[0xd0, 0x05],
            &[0xd1, 0x80, 0x00],
            &[0xd2, 0x80, 0x00, 0x00, 0x00],
            &[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0],
            &[0xca, 0x3f, 0xc0, 0x00, 0x00],
            &[0xca, 0x7f, 0xc0, 0x00, 0x01],
            &[0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0],
            &[0xc0],
            &[0xc2],
            &[0xc3],
            &[0xa2, b'h', b'i'],
            &[0xd9, 0x02, b'h', b'i'],
            &[0xda, 0x00, 0x02, b'h', b'i'],
            &[0xdb, 0x00, 0x00, 0x00, 0x02, b'h', b'i'],
            &[0xc4, 0x02, 0xff, 0x00],
            &[0xc5, 0x00, 0x02, 0xff, 0x00],
            &[0xc6, 0x00, 0x00, 0x00, 0x02, 0xff, 0x00],
            &[0x92, 0x01, 0x90],
            &[0xdc, 0x00, 0x02, 0x01, 0x80],
            &[0xdd, 0x00, 0x00, 0x00, 0x01, 0xc0],
            &[0x81, 0x01, 0x02],
            &[0xde, 0x00, 0x01, 0xa1, b'k', 0xc3],
            &[0xdf, 0x00, 0x00, 0x00, 0x01, 0x90, 0x80],
        ];
        let limits = Limits::default();
        for form in forms {
            let mut input = vec![0x96, 0x01, 0xa1, b'/', 0xa1, b'B'];
            input.extend_from_slice(form);
            input.extend_from_slice(&[0xc0, 0xcd, 0x01, 0x00]);
            let direct = request(&input, &limits).expect("a form the direct path reads");
            let general = MsgPack.decode::<Request>(&input, &limits).unwrap();
            assert!(
                Message::Request(direct.clone()).is_identical(&Message::Request(general.clone())),
                "{form:x?}: {direct:?} vs {general:?}"
            );
        }
    }

    #[test]
    fn encoding_writes_the_bytes_rmp_serde_writes_at_every_form_boundary() {
        let mut values: Vec<Value> = Vec::new();
        for v in [
            0u64,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            0xffff_ffff,
            1 << 32,
            u64::MAX,
        ] {
            values.push(Value::from(v));
        }
        for v in [
            -1i64,
            -32,
            -33,
            -128,
            -129,
            -32_768,
            -32_769,
            -2_147_483_648,
            -2_147_483_649,
            i64::MIN,
        ] {
            values.push(Value::from(v));
        }
        for n in [0usize, 31, 32, 255, 256, 65_535, 65_536] {
            values.push(Value::from("s".repeat(n)));
            values.push(Value::bytes(vec![9u8; n]));
        }
        for n in [0usize, 15, 16, 65_535, 65_536] {
            values.push(Value::Array(vec![Value::Nil; n]));
            values.push(Value::Map(vec![(Value::Nil, Value::from(true)); n]));
        }
        values.extend([
            Value::from(false),
            Value::from(-0.0f64),
            Value::from(f64::NAN),
        ]);
        for v in values {
            for deadline in [None, Some(Duration::from_millis(300)), Some(Duration::MAX)] {
                let mut req = Request::new(1 << 40, "/p", "op").with_data(v.clone());
                req.deadline = deadline;
                let mut direct = BytesMut::new();
                assert!(write_request(&req, &mut direct));
                assert!(
                    direct == encoded(&req),
                    "{deadline:?}, {:?}",
                    &direct[..40.min(direct.len())]
                );
            }
            for code in [0u16, 127, 128, 255, 256, u16::MAX] {
                let resp =
                    Response::error(5, StatusCode(code), "m".repeat(40)).with_metadata(v.clone());
                let mut direct = BytesMut::new();
                assert!(write_response(&resp, &mut direct));
                assert!(direct == encoded(&resp), "code {code}");
            }
        }
    }

    #[test]
    fn a_length_beyond_32_bits_is_left_to_the_general_path() {
        // `write_*` then truncate what they wrote and `MsgPack` falls back to rmp-serde, which
        // reports the error; a 4 GiB value is too large to build here, the length field is not.
        for forms in [&STR, &BIN, &ARRAY, &MAP] {
            let mut dst = BytesMut::from(&b"kept"[..]);
            assert!(len(&mut dst, 0xffff_ffff, forms));
            assert_eq!(dst.len(), 4 + 5);
            dst.truncate(4);
            assert!(!len(&mut dst, 1 << 32, forms));
            assert_eq!(&dst[..], b"kept");
        }
    }

    #[test]
    fn the_depth_limit_is_the_scans() {
        // The request array is depth 1, so data nested `n` deep reaches depth n + 1.
        let limits = Limits::default().with_max_depth(8).unwrap();
        let at_limit = Request::new(1, "/", "GET").with_data(nested(7));
        assert!(request(&encoded(&at_limit), &limits).is_some());
        assert!(
            MsgPack
                .decode::<Request>(&encoded(&at_limit), &limits)
                .is_ok()
        );
        let over = Request::new(1, "/", "GET").with_data(nested(8));
        assert_eq!(request(&encoded(&over), &limits), None);
        assert!(MsgPack.decode::<Request>(&encoded(&over), &limits).is_err());
        // The status array counts too.
        let limits = Limits::default().with_max_depth(1).unwrap();
        assert_eq!(
            response(&encoded(&Response::ok(1, Value::Nil)), &limits),
            None
        );
    }

    #[test]
    fn other_forms_and_bad_input_are_left_to_the_general_path() {
        let limits = Limits::default();
        let req = encoded(&Request::new(1, "/A", "B").with_data(Value::from("text")));
        let mut trailing = req.to_vec();
        trailing.push(0xc0);
        let mut bad_utf8 = req.to_vec();
        let at = bad_utf8.len() - 4; // inside "text" (then metadata nil, deadline nil)
        bad_utf8[at] = 0xff;
        // The path as `bin` holding UTF-8 (the general path accepts it for a `String`), an
        // extension type as data, a map-form struct, a truncated input.
        let bin_path = [0x96, 0x01, 0xc4, 0x01, b'/', 0xa1, b'B', 0xc0, 0xc0, 0xc0];
        let ext_data = [
            0x96, 0x01, 0xa1, b'/', 0xa1, b'B', 0xd4, 0x01, 0x00, 0xc0, 0xc0,
        ];
        let array32_claiming_more_than_there_is = [
            0x96, 0x01, 0xa1, b'/', 0xa1, b'B', 0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0,
        ];
        let map_form = [0x81, 0xa2, b'i', b'd', 0x01];
        for input in [
            &trailing[..],
            &bad_utf8[..],
            &bin_path[..],
            &ext_data[..],
            &array32_claiming_more_than_there_is[..],
            &map_form[..],
            &req[..req.len() - 1],
            &[][..],
        ] {
            assert_eq!(request(input, &limits), None, "{input:x?}");
        }
        assert!(MsgPack.decode_request(&bin_path, &limits).is_ok());
        assert!(matches!(
            MsgPack.decode_request(&bad_utf8, &limits),
            Err(crate::Error::InvalidUtf8)
        ));
        assert!(matches!(
            MsgPack.decode_request(&ext_data, &limits),
            Err(crate::Error::Unsupported(_))
        ));
        // A status code over u16, and a negative id.
        let big_code = [
            0x94, 0x01, 0x92, 0xce, 0x00, 0x01, 0x00, 0x00, 0xa0, 0xc0, 0xc0,
        ];
        assert_eq!(response(&big_code, &limits), None);
        let negative_id = [0x94, 0xff, 0x92, 0x00, 0xa0, 0xc0, 0xc0];
        assert_eq!(response(&negative_id, &limits), None);
        // Signed forms holding values >= 0 are taken, as rmp-serde takes them.
        let signed_id = [0x94, 0xd0, 0x05, 0x92, 0x00, 0xa0, 0xc0, 0xc0];
        assert_eq!(response(&signed_id, &limits).map(|r| r.id), Some(5));
    }
}
