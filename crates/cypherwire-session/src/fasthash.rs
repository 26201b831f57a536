//! A fast keyed hash for the small, bounded hot-path tables of the layers above: the server's
//! route table (fixed when the server is built), each server session's response cache and
//! running set, and the client's table of pending requests (request ids; every such table has a
//! documented bound).
//!
//! std's SipHash costs ≈ 100–200 instructions per lookup, several per request. This hash mixes
//! 8 bytes per multiply under a per-process random seed. It is not a defence against an
//! attacker who learns the seed, and it does not need to be: the tables are bounded, so the
//! worst case is a probe over a few hundred entries, never unbounded work.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::OnceLock;

/// Builds [`FastHasher`]s seeded once per process.
#[derive(Debug, Clone, Copy)]
pub struct FastState {
    seed: u64,
}

impl Default for FastState {
    fn default() -> Self {
        static SEED: OnceLock<u64> = OnceLock::new();
        let seed = *SEED.get_or_init(|| RandomState::new().hash_one(0x6379_7068_6572_7769_u64));
        Self { seed }
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;

    fn build_hasher(&self) -> FastHasher {
        FastHasher(self.seed)
    }
}

/// Multiply–rotate over 8-byte words (see the module docs for what it is and is not for).
#[derive(Debug, Clone, Copy)]
pub struct FastHasher(u64);

const K: u64 = 0x9e37_79b9_7f4a_7c15;

impl FastHasher {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(K).rotate_left(29);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            self.mix(u64::from_le_bytes(b));
        }
        let rest = words.remainder();
        // Byte by byte (at most 7): a copy of a variable length is a call to `memcpy`.
        let tail = rest
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        // The length keeps "ab" and "ab\0" apart.
        self.mix(tail ^ ((rest.len() as u64) << 59));
    }

    fn write_u8(&mut self, v: u8) {
        // Every `str` key ends with one (`Hash for str` writes 0xff after the bytes).
        self.mix(u64::from(v) | (1 << 63));
    }

    fn write_u64(&mut self, v: u64) {
        self.mix(v);
    }

    fn finish(&self) -> u64 {
        // Final avalanche (from splitmix64), so that the low bits hashbrown uses depend on
        // every input bit.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn distinct_keys_spread_over_buckets() {
        let state = FastState::default();
        // Sequential ids (what clients send) and short route strings: the low 8 bits of the
        // hashes, which pick buckets in a small table, take many values.
        let ids: HashSet<u64> = (0..256u64).map(|i| state.hash_one(i) & 0xff).collect();
        assert!(ids.len() > 140, "{}", ids.len());
        let paths: HashSet<u64> = (0..256)
            .map(|i| state.hash_one(format!("/ROUTE/{i}")) & 0xff)
            .collect();
        assert!(paths.len() > 140, "{}", paths.len());
    }

    #[test]
    fn equal_keys_hash_equal_and_lengths_matter() {
        let state = FastState::default();
        assert_eq!(state.hash_one("/ECHO"), state.hash_one("/ECHO"));
        assert_ne!(state.hash_one(&b"ab"[..]), state.hash_one(&b"ab\0"[..]));
        assert_ne!(state.hash_one(1u64), state.hash_one(2u64));
        // Every byte of a tail shorter than a word counts, in its place.
        for (a, b) in [
            ("/ECHO", "/ECHP"),
            ("/ECHO", "0ECHO"),
            ("ab", "ba"),
            ("a", ""),
        ] {
            assert_ne!(state.hash_one(a), state.hash_one(b), "{a:?} {b:?}");
        }
        assert_ne!(state.hash_one(7u8), state.hash_one(8u8));
    }
}
