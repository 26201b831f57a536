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
/// being sealed and sent (`docs/performance.md`, "What explains the figures").
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
#[allow(clippy::unwrap_used, reason = "test code")]
mod tests;
