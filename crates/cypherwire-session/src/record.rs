//! The record layer (sans-IO): sealing and opening frames with strict per-direction counters,
//! chunking of large messages, rekeying and authenticated close.
//!
//! A record is the body of one frame (`docs/protocol.md` §3.4):
//!
//! ```text
//! frame body = seal(key, nonce = counter, plaintext = content ‖ type)
//! type: 0x00 FINAL (last or only chunk of a message), 0x01 MORE (more chunks follow),
//!       0x02 CLOSE (authenticated end of stream, empty content),
//!       0x03 KEY_UPDATE (the sender switches to the next key after this record)
//! ```
//!
//! The counter is implicit: both sides count the records of each direction from 0, so a
//! replayed, reordered, dropped or reflected record fails authentication. A record that fails
//! to open does not advance the counter; the connection must then be closed.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use cypherwire_wire::{FRAME_HEADER_LEN, FrameCodec};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::suite::{AEAD_TAG_LEN, Backend, CipherSuite, RecordCipher};

/// Record type: the last (or only) chunk of a message.
pub(crate) const TYPE_FINAL: u8 = 0x00;
/// Record type: a chunk with more to follow.
pub(crate) const TYPE_MORE: u8 = 0x01;
/// Record type: authenticated end of stream.
pub(crate) const TYPE_CLOSE: u8 = 0x02;
/// Record type: the sender switches keys after this record.
pub(crate) const TYPE_KEY_UPDATE: u8 = 0x03;

/// The most content this side puts in one record, whatever the frame limit allows: a large
/// message goes out as 64 KiB chunks, so the peer opens the first while the rest is still
/// being sealed and sent (1 MiB echoes: +32 % over one record per MiB, docs/performance.md).
/// Messages of up to 64 KiB stay one record.
pub const MAX_CHUNK: usize = 64 * 1024;

/// Extra room reserved when a chunked message starts, for its last chunk.
const REASSEMBLY_SLACK: usize = 64 * 1024;

/// Default: rekey after this many records under one key (2^32).
pub const DEFAULT_REKEY_RECORDS: u64 = 1 << 32;
/// Default: rekey after this many plaintext bytes under one key (64 GiB).
pub const DEFAULT_REKEY_BYTES: u64 = 1 << 36;
/// Default: rekey after this much time under one key (one hour).
pub const DEFAULT_REKEY_INTERVAL: Duration = Duration::from_secs(3600);
/// Records under one key can never exceed this (2^62); reaching it is an error. Rekeying keeps
/// real connections far below it.
pub const HARD_RECORD_LIMIT: u64 = 1 << 62;

/// When the record layer switches to a fresh key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RekeyPolicy {
    /// Records per key.
    pub records: u64,
    /// Plaintext bytes per key.
    pub bytes: u64,
    /// Time per key.
    pub interval: Duration,
}

impl Default for RekeyPolicy {
    fn default() -> Self {
        Self {
            records: DEFAULT_REKEY_RECORDS,
            bytes: DEFAULT_REKEY_BYTES,
            interval: DEFAULT_REKEY_INTERVAL,
        }
    }
}

/// Key material of one direction; derives its successor for key updates.
struct DirectionKey {
    suite: CipherSuite,
    backend: Backend,
    key: Zeroizing<Vec<u8>>,
}

impl DirectionKey {
    fn cipher(&self) -> Box<dyn RecordCipher> {
        self.suite.cipher(&self.key, self.backend)
    }

    /// `next = HKDF-SHA256(salt = none, ikm = key, info = "cypherwire/v1 key update")`.
    fn next(&self) -> Self {
        let hk = Hkdf::<Sha256>::new(None, &self.key);
        let mut key = Zeroizing::new(vec![0u8; self.suite.key_len()]);
        // key_len <= 48 is far below HKDF-SHA256's 8160-byte limit.
        let _ = hk.expand(b"cypherwire/v1 key update", &mut key);
        Self {
            suite: self.suite,
            backend: self.backend,
            key,
        }
    }
}

/// Derives one direction's record key from the Noise split (`docs/protocol.md` §3.3):
/// `HKDF-SHA256(salt = handshake hash, ikm = split key, info = "cypherwire/v1 record" ‖ suite)`.
pub(crate) fn direction_key(
    suite: CipherSuite,
    split_key: &[u8],
    handshake_hash: &[u8],
) -> Vec<u8> {
    let hk = Hkdf::<Sha256>::new(Some(handshake_hash), split_key);
    let mut key = vec![0u8; suite.key_len()];
    let _ = hk.expand_multi_info(&[b"cypherwire/v1 record", &[suite.id()]], &mut key);
    key
}

/// The sending half of the record layer.
pub struct Sealer {
    key: DirectionKey,
    cipher: Box<dyn RecordCipher>,
    seq: u64,
    bytes_under_key: u64,
    /// When the current key's time is up (`None`: beyond what `Instant` can express). Compared,
    /// not subtracted, on every message.
    rekey_at: Option<Instant>,
    policy: RekeyPolicy,
    frames: FrameCodec,
    max_chunk: usize,
    closed: bool,
    key_updates: u64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("suite", &self.key.suite)
            .field("seq", &self.seq)
            .field("key_updates", &self.key_updates)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Sealer {
    pub(crate) fn new(
        suite: CipherSuite,
        backend: Backend,
        key: Vec<u8>,
        frames: FrameCodec,
        policy: RekeyPolicy,
        now: Instant,
    ) -> Self {
        let key = DirectionKey {
            suite,
            backend,
            key: Zeroizing::new(key),
        };
        // Room in a frame for the content: the limit minus the type byte and the suite's
        // overhead (for CBC the padding is part of the overhead).
        let max_chunk = (frames.max_frame_len() - 1 - suite.max_overhead()).min(MAX_CHUNK);
        Self {
            cipher: key.cipher(),
            key,
            seq: 0,
            bytes_under_key: 0,
            rekey_at: now.checked_add(policy.interval),
            policy,
            frames,
            max_chunk,
            closed: false,
            key_updates: 0,
        }
    }

    /// Largest message content sealed in a single record (the smaller of [`MAX_CHUNK`] and what
    /// the frame limit leaves); longer messages are chunked.
    pub fn max_record_content(&self) -> usize {
        self.max_chunk
    }

    /// Seals larger chunks than this implementation does (as another implementation may, up
    /// to the frame limit), for tests of the receiving side.
    #[cfg(test)]
    pub(crate) fn set_max_chunk(&mut self, n: usize) {
        self.max_chunk = n;
    }

    /// Reserves room in `dst` for the records of a message of about `len` bytes, so that
    /// writing and sealing it does not grow the buffer step by step (each step copying what is
    /// already there).
    pub fn reserve(&self, dst: &mut BytesMut, len: usize) {
        let per_record = FRAME_HEADER_LEN + 1 + self.key.suite.max_overhead();
        // No division for a message of one record (the common case).
        let records = if len <= self.max_chunk {
            1
        } else {
            len.div_ceil(self.max_chunk)
        };
        dst.reserve(len + records * per_record);
    }

    /// How many times this direction has switched keys.
    pub fn key_updates(&self) -> u64 {
        self.key_updates
    }

    /// Appends the frames for one message to `dst`: one record if it fits, otherwise chunks,
    /// each copied once into its record.
    ///
    /// # Errors
    /// [`Error::Closed`] after [`seal_close`](Self::seal_close).
    pub fn seal_message(&mut self, msg: &[u8], now: Instant, dst: &mut BytesMut) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        self.reserve(dst, msg.len());
        if msg.len() <= self.max_chunk {
            return self.seal_with(now, dst, |buf| {
                buf.extend_from_slice(msg);
                Ok(())
            });
        }
        // Each chunk copied once, straight into its record.
        self.seal_chunks(msg, dst)?;
        self.maybe_rekey(now, dst)
    }

    /// Like [`seal_message`](Self::seal_message), but `write` appends the message straight
    /// into the output buffer (e.g. an envelope encoder), so a message that fits one record is
    /// encrypted where it was written: no copy.
    ///
    /// # Errors
    /// [`Error::Closed`] after close, or whatever `write` returns; `dst` is then unchanged.
    pub fn seal_with(
        &mut self,
        now: Instant,
        dst: &mut BytesMut,
        write: impl FnOnce(&mut BytesMut) -> Result<()>,
    ) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        let start = FrameCodec::begin_frame(dst);
        if let Err(e) = write(dst) {
            dst.truncate(start);
            return Err(e);
        }
        let len = dst.len() - start - FRAME_HEADER_LEN;
        if len <= self.max_chunk {
            dst.put_u8(TYPE_FINAL);
            self.finish_record(dst, start, len)?;
        } else if self.key.suite.tag_only_overhead() {
            self.seal_chunks_in_place(dst, start, len)?;
        } else {
            // Chunk: take the written message out (no copy) and re-seal it in pieces.
            let msg = dst.split_off(start + FRAME_HEADER_LEN);
            dst.truncate(start);
            // One reservation for every record of the message: growing record by record would
            // copy what is already sealed each time the buffer doubles.
            self.reserve(dst, len);
            self.seal_chunks(&msg, dst)?;
        }
        self.maybe_rekey(now, dst)
    }

    /// Appends `msg`, longer than one chunk, as MORE … FINAL records, each chunk copied into
    /// its record and sealed there. Checks the counter limit for all of them first, so that
    /// either every record is sealed or (`dst` unchanged) none.
    fn seal_chunks(&mut self, msg: &[u8], dst: &mut BytesMut) -> Result<()> {
        let records = msg.len().div_ceil(self.max_chunk);
        if self.seq.saturating_add(records as u64) > HARD_RECORD_LIMIT {
            return Err(Error::Closed);
        }
        let mut chunks = msg.chunks(self.max_chunk).peekable();
        while let Some(chunk) = chunks.next() {
            let ty = if chunks.peek().is_some() {
                TYPE_MORE
            } else {
                TYPE_FINAL
            };
            self.seal_record(ty, chunk, dst)?;
        }
        Ok(())
    }

    /// Appends the authenticated close record. Nothing can be sent afterwards.
    ///
    /// # Errors
    /// [`Error::Closed`] if already closed.
    pub fn seal_close(&mut self, dst: &mut BytesMut) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        self.seal_record(TYPE_CLOSE, &[], dst)?;
        self.closed = true;
        Ok(())
    }

    /// Forces a key update now (normally automatic, see [`RekeyPolicy`]).
    ///
    /// # Errors
    /// [`Error::Closed`] if closed.
    pub fn seal_key_update(&mut self, now: Instant, dst: &mut BytesMut) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        self.seal_record(TYPE_KEY_UPDATE, &[], dst)?;
        self.key = self.key.next();
        self.cipher = self.key.cipher();
        self.seq = 0;
        self.bytes_under_key = 0;
        self.rekey_at = now.checked_add(self.policy.interval);
        self.key_updates += 1;
        Ok(())
    }

    /// Seals the message at `dst[start + FRAME_HEADER_LEN..]`, longer than one chunk, as
    /// MORE … FINAL records where it lies: the chunks move up to make room for each record's
    /// header, type byte and tag (the first chunk does not move), then each is sealed in place.
    /// No allocation beyond the buffer's growth, no copy into separate records.
    fn seal_chunks_in_place(&mut self, dst: &mut BytesMut, start: usize, len: usize) -> Result<()> {
        let chunk = self.max_chunk;
        let records = len.div_ceil(chunk);
        let overhead = FRAME_HEADER_LEN + 1 + AEAD_TAG_LEN;
        if self.seq.saturating_add(records as u64) > HARD_RECORD_LIMIT {
            dst.truncate(start);
            return Err(Error::Closed);
        }
        let body = start + FRAME_HEADER_LEN;
        dst.resize(start + len + records * overhead, 0);
        // Last chunk first: chunk r's destination overlaps only its own source and the chunks
        // after it, which have already moved.
        for r in (1..records).rev() {
            let from = body + r * chunk;
            let n = chunk.min(len - r * chunk);
            dst.copy_within(
                from..from + n,
                start + r * (chunk + overhead) + FRAME_HEADER_LEN,
            );
        }
        for r in 0..records {
            let record = start + r * (chunk + overhead);
            let content = record + FRAME_HEADER_LEN;
            let n = chunk.min(len - r * chunk);
            dst[content + n] = if r + 1 < records {
                TYPE_MORE
            } else {
                TYPE_FINAL
            };
            let tag = self
                .cipher
                .seal_detached(self.seq, &mut dst[content..=content + n]);
            // `n + 1 + AEAD_TAG_LEN` is at most the frame limit (that is how `chunk` was
            // chosen), and a built-in AEAD seals anything below 2^38 bytes: neither failure can
            // happen, but if one did the stream could not go on.
            let (Some(tag), Ok(header)) = (tag, u32::try_from(n + 1 + AEAD_TAG_LEN)) else {
                dst.truncate(start);
                self.closed = true;
                return Err(Error::Closed);
            };
            dst[content + n + 1..content + n + 1 + AEAD_TAG_LEN].copy_from_slice(&tag);
            dst[record..content].copy_from_slice(&header.to_be_bytes());
            self.seq += 1;
            self.bytes_under_key += n as u64;
        }
        Ok(())
    }

    fn seal_record(&mut self, ty: u8, content: &[u8], dst: &mut BytesMut) -> Result<()> {
        dst.reserve(FRAME_HEADER_LEN + content.len() + 1 + self.key.suite.max_overhead());
        let start = FrameCodec::begin_frame(dst);
        dst.extend_from_slice(content);
        dst.put_u8(ty);
        self.finish_record(dst, start, content.len())
    }

    /// Encrypts the plaintext written after the header at `start` and completes the frame.
    fn finish_record(
        &mut self,
        dst: &mut BytesMut,
        start: usize,
        content_len: usize,
    ) -> Result<()> {
        // spec: §3.4 "a sender MUST NOT reuse a counter value under one key"
        if self.seq >= HARD_RECORD_LIMIT {
            dst.truncate(start);
            return Err(Error::Closed);
        }
        self.cipher.seal(self.seq, dst, start + FRAME_HEADER_LEN);
        self.frames.finish_frame(dst, start)?;
        self.seq += 1;
        self.bytes_under_key += content_len as u64;
        Ok(())
    }

    fn maybe_rekey(&mut self, now: Instant, dst: &mut BytesMut) -> Result<()> {
        let due = self.seq >= self.policy.records
            || self.bytes_under_key >= self.policy.bytes
            || self.rekey_at.is_some_and(|at| now >= at);
        if due {
            self.seal_key_update(now, dst)
        } else {
            Ok(())
        }
    }
}

/// What [`Opener::open`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Opened {
    /// A complete message.
    Message(Bytes),
    /// A chunk of a longer message was absorbed; nothing to deliver yet.
    Partial,
    /// The peer switched keys; nothing to deliver.
    KeyUpdate,
    /// The peer closed the stream (authenticated).
    Close,
}

/// The receiving half of the record layer.
pub struct Opener {
    key: DirectionKey,
    cipher: Box<dyn RecordCipher>,
    seq: u64,
    partial: BytesMut,
    max_message_len: usize,
    closed: bool,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener")
            .field("suite", &self.key.suite)
            .field("seq", &self.seq)
            .field("partial", &self.partial.len())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Opener {
    pub(crate) fn new(
        suite: CipherSuite,
        backend: Backend,
        key: Vec<u8>,
        max_message_len: usize,
    ) -> Self {
        let key = DirectionKey {
            suite,
            backend,
            key: Zeroizing::new(key),
        };
        Self {
            cipher: key.cipher(),
            key,
            seq: 0,
            partial: BytesMut::new(),
            max_message_len,
            closed: false,
        }
    }

    /// The next expected record counter (for tests and diagnostics).
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// Opens one record (a frame body).
    ///
    /// # Errors
    /// [`Error::Decrypt`] if the record fails authentication (the counter does not advance),
    /// [`Error::UnexpectedRecord`] for an unknown type or content where none is allowed,
    /// [`Error::MessageTooLarge`] if reassembly would exceed the maximum message length,
    /// [`Error::Closed`] for records after the peer's close.
    pub fn open(&mut self, record: BytesMut) -> Result<Opened> {
        self.open_record(record, false)
    }

    /// Whether a message is being reassembled: its next record's body may be read straight
    /// into the reassembly buffer ([`begin_append`](Self::begin_append)).
    pub(crate) fn assembling(&self) -> bool {
        !self.partial.is_empty()
    }

    /// Prepares to read the next record's body (`len` bytes) of the message being reassembled
    /// straight behind the message so far, where [`open_appended`](Self::open_appended) opens
    /// it: the message then grows without a copy. Reserves room for the body and `extra`
    /// bytes more; returns the position the body starts at. The caller appends the body to
    /// [`reassembly`](Self::reassembly).
    ///
    /// # Errors
    /// [`Error::MessageTooLarge`] if the record's content would take the message past its
    /// limit whatever its padding: checked before anything is reserved (the exact check
    /// follows when the record is opened).
    pub(crate) fn begin_append(&mut self, len: usize, extra: usize) -> Result<usize> {
        let start = self.partial.len();
        // The least content a body of `len` bytes can carry: less the type byte and the most
        // the suite adds.
        let content = len.saturating_sub(1 + self.key.suite.max_overhead());
        if start + content > self.max_message_len {
            self.partial = BytesMut::new();
            return Err(Error::MessageTooLarge {
                len: start + content,
                max: self.max_message_len,
            });
        }
        self.partial.reserve(len + extra);
        Ok(start)
    }

    /// The reassembly buffer, for appending a record body after
    /// [`begin_append`](Self::begin_append).
    pub(crate) fn reassembly(&mut self) -> &mut BytesMut {
        &mut self.partial
    }

    /// Opens the record whose body was appended to the reassembly buffer at `start` (see
    /// [`begin_append`](Self::begin_append)). As [`open`](Self::open) otherwise.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub(crate) fn open_appended(&mut self, start: usize) -> Result<Opened> {
        let record = self.partial.split_off(start);
        self.open_record(record, true)
    }

    /// `appended`: `record` was split off the end of `partial` (and goes back there).
    fn open_record(&mut self, mut record: BytesMut, appended: bool) -> Result<Opened> {
        if self.closed {
            return Err(Error::Closed);
        }
        // spec: §3.4 "a failed open MUST NOT advance the counter"
        self.cipher
            .open(self.seq, &mut record)
            .map_err(|_| Error::Decrypt)?;
        self.seq += 1;
        let Some(ty) = record.last().copied() else {
            return Err(Error::UnexpectedRecord(0xff));
        };
        record.truncate(record.len() - 1);
        match ty {
            TYPE_FINAL if self.partial.is_empty() => Ok(Opened::Message(record.freeze())),
            TYPE_FINAL | TYPE_MORE => {
                let total = self.partial.len() + record.len();
                if total > self.max_message_len {
                    self.partial = BytesMut::new();
                    return Err(Error::MessageTooLarge {
                        len: total,
                        max: self.max_message_len,
                    });
                }
                if self.partial.is_empty() {
                    // A MORE record is a full chunk of the sender's. Room for a tail of up to
                    // 64 KiB more: a message just over one chunk ends in a small FINAL, which
                    // would otherwise reallocate and copy the whole first chunk.
                    let tail = record.len().min(REASSEMBLY_SLACK);
                    self.partial
                        .reserve((record.len() + tail).min(self.max_message_len));
                }
                if appended {
                    // Contiguous with the message so far: joined without a copy.
                    self.partial.unsplit(record);
                } else {
                    self.partial.extend_from_slice(&record);
                }
                if ty == TYPE_FINAL {
                    // Taken whole: the opener keeps no share of a large message's buffer.
                    Ok(Opened::Message(std::mem::take(&mut self.partial).freeze()))
                } else {
                    Ok(Opened::Partial)
                }
            }
            TYPE_CLOSE | TYPE_KEY_UPDATE if !record.is_empty() => Err(Error::UnexpectedRecord(ty)),
            TYPE_CLOSE => {
                self.closed = true;
                Ok(Opened::Close)
            }
            TYPE_KEY_UPDATE => {
                self.key = self.key.next();
                self.cipher = self.key.cipher();
                self.seq = 0;
                Ok(Opened::KeyUpdate)
            }
            other => Err(Error::UnexpectedRecord(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use cypherwire_wire::Limits;
    use tokio_util::codec::Decoder;

    use super::*;

    /// A sealer of `suite` with a fixed key, the default limits and `policy`.
    fn sealer_with(suite: CipherSuite, now: Instant, policy: RekeyPolicy) -> Sealer {
        Sealer::new(
            suite,
            Backend::default(),
            vec![7u8; suite.key_len()],
            FrameCodec::new(Limits::default()),
            policy,
            now,
        )
    }

    /// A sealer of `suite` with a fixed key and the default limits and rekey policy.
    fn sealer(suite: CipherSuite, now: Instant) -> Sealer {
        sealer_with(suite, now, RekeyPolicy::default())
    }

    /// A reassembled message takes its whole buffer with it: the opener keeps no share of it
    /// (and no spare capacity) once the message is handed out.
    #[test]
    fn reassembly_keeps_nothing_after_the_message() {
        let suite = CipherSuite::Aes256Gcm;
        let key = vec![7u8; suite.key_len()];
        let limits = Limits::default().with_max_frame_len(1024).unwrap();
        let now = tokio::time::Instant::now().into_std();
        let mut sealer = Sealer::new(
            suite,
            Backend::default(),
            key.clone(),
            FrameCodec::new(limits),
            RekeyPolicy::default(),
            now,
        );
        let mut opener = Opener::new(suite, Backend::default(), key, 1 << 20);
        let msg = vec![3u8; 5000];
        let mut wire = BytesMut::new();
        sealer.seal_message(&msg, now, &mut wire).unwrap();
        let mut frames = FrameCodec::new(limits);
        let mut got = None;
        while let Some(f) = frames.decode(&mut wire).unwrap() {
            if let Opened::Message(m) = opener.open(f).unwrap() {
                got = Some(m);
            }
        }
        assert_eq!(got.unwrap(), msg);
        assert_eq!(opener.partial.capacity(), 0);
    }

    /// A record that would take the message being reassembled past its limit is refused from
    /// its length alone, before its body is read: nothing is reserved for it, and what was
    /// reassembled so far is given back.
    #[test]
    fn an_appended_record_over_the_limit_reserves_nothing() {
        let suite = CipherSuite::Aes256Gcm;
        let key = vec![7u8; suite.key_len()];
        let limits = Limits::default().with_max_frame_len(1024).unwrap();
        let now = tokio::time::Instant::now().into_std();
        let mut sealer = Sealer::new(
            suite,
            Backend::default(),
            key.clone(),
            FrameCodec::new(limits),
            RekeyPolicy::default(),
            now,
        );
        let mut opener = Opener::new(suite, Backend::default(), key, 4000);
        let mut wire = BytesMut::new();
        sealer.seal_message(&[3u8; 3000], now, &mut wire).unwrap();
        let first = FrameCodec::new(limits).decode(&mut wire).unwrap().unwrap();
        assert!(matches!(opener.open(first).unwrap(), Opened::Partial));
        assert!(opener.assembling());
        // A record announcing 1 MiB more.
        let err = opener.begin_append(1 << 20, FRAME_HEADER_LEN).unwrap_err();
        assert!(
            matches!(err, Error::MessageTooLarge { max: 4000, .. }),
            "{err:?}"
        );
        assert_eq!(opener.reassembly().capacity(), 0);
    }

    /// `seal_message` reserves every record of the message up front: a chunked message sealed
    /// into an empty buffer takes exactly the room of its records (growing while the chunks
    /// move apart would double it).
    #[test]
    fn seal_message_reserves_its_records_once() {
        let now = tokio::time::Instant::now().into_std();
        for suite in CipherSuite::ALL {
            let mut sealer = sealer(suite, now);
            let len = 5 * MAX_CHUNK + 17;
            let mut exact = BytesMut::new();
            sealer.reserve(&mut exact, len);
            let mut dst = BytesMut::new();
            sealer.seal_message(&vec![1u8; len], now, &mut dst).unwrap();
            assert_eq!(dst.capacity(), exact.capacity(), "{suite:?}");
        }
    }

    /// `seal_message` copies each chunk of a long message straight into its record; the
    /// records are the ones `seal_with` makes when the message is written into the buffer
    /// and its chunks moved apart (same key, same counters), byte for byte, for every suite.
    #[test]
    fn seal_message_makes_the_records_seal_with_makes() {
        let now = tokio::time::Instant::now().into_std();
        for suite in CipherSuite::ALL {
            let (mut a, mut b) = (sealer(suite, now), sealer(suite, now));
            for len in [
                0,
                100,
                MAX_CHUNK,
                MAX_CHUNK + 1,
                3 * MAX_CHUNK,
                5 * MAX_CHUNK + 17,
            ] {
                let msg: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                let (mut by_copy, mut in_place) = (BytesMut::new(), BytesMut::new());
                a.seal_message(&msg, now, &mut by_copy).unwrap();
                b.seal_with(now, &mut in_place, |d| {
                    d.extend_from_slice(&msg);
                    Ok(())
                })
                .unwrap();
                assert!(by_copy == in_place, "{suite:?}, {len} bytes");
            }
            assert_eq!(a.seq, b.seq);
        }
    }

    /// A chunked message is sealed whole or not at all at the counter limit: every path checks
    /// the counters all its records need before sealing the first (one record short, nothing
    /// is written and the counter does not move; exactly enough, every record is sealed).
    #[test]
    fn a_chunked_message_fits_under_the_counter_limit_whole_or_not_at_all() {
        let now = tokio::time::Instant::now().into_std();
        let never = RekeyPolicy {
            records: u64::MAX,
            bytes: u64::MAX,
            interval: Duration::from_secs(1 << 40),
        };
        let msg = vec![3u8; 3 * MAX_CHUNK];
        type Seal = fn(&mut Sealer, &[u8], Instant, &mut BytesMut) -> Result<()>;
        let paths: [(&str, Seal); 2] = [
            ("seal_message", |s, m, now, dst| s.seal_message(m, now, dst)),
            ("seal_with", |s, m, now, dst| {
                s.seal_with(now, dst, |d| {
                    d.extend_from_slice(m);
                    Ok(())
                })
            }),
        ];
        for suite in CipherSuite::ALL {
            for (name, seal) in paths {
                let mut sealer = sealer_with(suite, now, never);
                sealer.seq = HARD_RECORD_LIMIT - 2;
                let mut dst = BytesMut::from(&b"queued"[..]);
                let err = seal(&mut sealer, &msg, now, &mut dst).unwrap_err();
                assert!(matches!(err, Error::Closed), "{suite:?} {name}: {err:?}");
                assert_eq!(&dst[..], b"queued", "{suite:?} {name}");
                assert_eq!(sealer.seq, HARD_RECORD_LIMIT - 2, "{suite:?} {name}");

                sealer.seq = HARD_RECORD_LIMIT - 3;
                seal(&mut sealer, &msg, now, &mut dst).unwrap();
                assert_eq!(sealer.seq, HARD_RECORD_LIMIT, "{suite:?} {name}");
                assert!(dst.len() > 3 * MAX_CHUNK, "{suite:?} {name}");
            }
        }
    }

    /// After `reserve`, a message of that size is written and sealed without the buffer moving:
    /// in one record for every suite, and chunked for the AEAD suites (CBC + HMAC chunks a
    /// message by taking it out of the buffer and sealing it into a new one).
    #[test]
    fn reserved_room_holds_every_record_of_the_message() {
        let now = tokio::time::Instant::now().into_std();
        for suite in CipherSuite::ALL {
            let limits = Limits::default();
            let mut sealer = Sealer::new(
                suite,
                Backend::default(),
                vec![7u8; suite.key_len()],
                FrameCodec::new(limits),
                RekeyPolicy::default(),
                now,
            );
            for len in [0, 100, MAX_CHUNK, MAX_CHUNK + 1, 5 * MAX_CHUNK + 17] {
                let msg = vec![1u8; len];
                let mut dst = BytesMut::new();
                sealer.reserve(&mut dst, len);
                let at = dst.as_ptr();
                sealer
                    .seal_with(now, &mut dst, |d| {
                        d.extend_from_slice(&msg);
                        Ok(())
                    })
                    .unwrap();
                if len <= MAX_CHUNK || suite.tag_only_overhead() {
                    assert_eq!(dst.as_ptr(), at, "{suite:?}, {len} bytes: the buffer moved");
                }
            }
        }
    }
}
