//! A global allocator for tests that looks for secrets in memory as it is freed.
//!
//! Install it in a test binary, register the secret bytes with [`watch`], run the code under
//! test, then read [`Watch::hits`]: the number of heap blocks that still held the secret when
//! they were freed (or moved by `realloc`). A secret wiped before its memory is freed is never
//! counted; one left behind in a freed block is, whichever crate allocated it.
//!
//! ```
//! #[global_allocator]
//! static ALLOC: cypherwire_freed_scan::FreedScanner = cypherwire_freed_scan::FreedScanner;
//!
//! fn main() {
//!     let secret = *b"a secret of 32 bytes, no more!!!";
//!     let watch = cypherwire_freed_scan::watch(&secret);
//!     drop(std::hint::black_box(secret.to_vec()));
//!     assert_eq!(watch.hits(), 1);
//! }
//! ```
//!
//! Up to [`SLOTS`] secrets of 8 to [`MAX_SECRET`] bytes are watched at once. Scanning makes
//! every free proportional to the block's size: for tests only.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// Secrets watched at once.
pub const SLOTS: usize = 8;
/// Longest secret watched, in bytes.
pub const MAX_SECRET: usize = 64;

struct Slot {
    len: AtomicUsize,
    bytes: [AtomicU8; MAX_SECRET],
    hits: AtomicUsize,
    /// Size of the last block found holding the secret, and the secret's offset in it.
    last: (AtomicUsize, AtomicUsize),
}

#[allow(
    clippy::declare_interior_mutable_const,
    reason = "array initialiser only"
)]
const EMPTY_SLOT: Slot = Slot {
    len: AtomicUsize::new(0),
    bytes: [const { AtomicU8::new(0) }; MAX_SECRET],
    hits: AtomicUsize::new(0),
    last: (AtomicUsize::new(0), AtomicUsize::new(0)),
};

static SLOT_TABLE: [Slot; SLOTS] = [EMPTY_SLOT; SLOTS];

/// The scanning allocator: [`System`] underneath.
#[derive(Debug, Clone, Copy, Default)]
pub struct FreedScanner;

/// A registered secret. Dropping it stops the watch.
#[derive(Debug)]
pub struct Watch {
    slot: usize,
}

impl Watch {
    /// Freed blocks that held the secret so far.
    pub fn hits(&self) -> usize {
        SLOT_TABLE[self.slot].hits.load(Ordering::SeqCst)
    }

    /// The size of the last freed block found holding the secret and the secret's offset in
    /// it (to tell which structure it was), if any.
    pub fn last_hit(&self) -> Option<(usize, usize)> {
        let slot = &SLOT_TABLE[self.slot];
        (self.hits() > 0).then(|| {
            (
                slot.last.0.load(Ordering::SeqCst),
                slot.last.1.load(Ordering::SeqCst),
            )
        })
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        SLOT_TABLE[self.slot].len.store(0, Ordering::SeqCst);
    }
}

/// Starts watching `secret` (8 to [`MAX_SECRET`] bytes; shorter ones would match by chance).
///
/// # Panics
/// If the secret's length is out of range or all [`SLOTS`] are taken (test code).
pub fn watch(secret: &[u8]) -> Watch {
    assert!(
        (8..=MAX_SECRET).contains(&secret.len()),
        "secrets of 8 to {MAX_SECRET} bytes"
    );
    for (i, slot) in SLOT_TABLE.iter().enumerate() {
        // Claim a free slot (length 0) with a marker length no scan can use.
        if slot
            .len
            .compare_exchange(0, usize::MAX, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            for (b, s) in slot.bytes.iter().zip(secret) {
                b.store(*s, Ordering::SeqCst);
            }
            slot.hits.store(0, Ordering::SeqCst);
            slot.len.store(secret.len(), Ordering::SeqCst);
            return Watch { slot: i };
        }
    }
    panic!("all {SLOTS} watch slots are taken");
}

static ABORT_ON_HIT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes the next hit abort the process, so a debugger shows who freed the block (for
/// finding a leak; off by default).
pub fn abort_on_hit(on: bool) {
    ABORT_ON_HIT.store(on, Ordering::Relaxed);
}

/// Counts, for each watched secret, whether `block` holds it.
fn scan(block: &[u8]) {
    for slot in &SLOT_TABLE {
        let len = slot.len.load(Ordering::Acquire);
        if len == 0 || len > MAX_SECRET || block.len() < len {
            continue;
        }
        let mut needle = [0u8; MAX_SECRET];
        for (n, b) in needle.iter_mut().zip(&slot.bytes) {
            *n = b.load(Ordering::Relaxed);
        }
        let needle = &needle[..len];
        if let Some(at) = block.windows(len).position(|w| w == needle) {
            slot.last.0.store(block.len(), Ordering::SeqCst);
            slot.last.1.store(at, Ordering::SeqCst);
            slot.hits.fetch_add(1, Ordering::SeqCst);
            if ABORT_ON_HIT.load(Ordering::Relaxed) {
                std::process::abort();
            }
        }
    }
}

fn watching() -> bool {
    SLOT_TABLE
        .iter()
        .any(|s| (1..=MAX_SECRET).contains(&s.len.load(Ordering::Relaxed)))
}

#[allow(unsafe_code, reason = "a global allocator is an unsafe trait")]
// SAFETY: every method forwards to `System` with the caller's pointer and layout; the only
// addition reads the block being freed (valid for `layout.size()` bytes until it is freed).
unsafe impl GlobalAlloc for FreedScanner {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if watching() {
            // SAFETY: `ptr` is a live block of `layout.size()` bytes allocated by us.
            scan(unsafe { std::slice::from_raw_parts(ptr, layout.size()) });
        }
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !watching() {
            // SAFETY: the caller's contract, forwarded.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // Move by hand so the old block passes through the scan: `System.realloc` would free
        // it out of sight.
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        // SAFETY: `new_layout` has a non-zero size (the caller's contract for `realloc`).
        let new = unsafe { System.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the smaller size and do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
            // SAFETY: as in `dealloc`.
            unsafe { self.dealloc(ptr, layout) };
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static ALLOC: FreedScanner = FreedScanner;

    #[test]
    fn a_secret_left_in_a_freed_block_is_counted_and_a_wiped_one_is_not() {
        let secret = *b"0123456789abcdef-not-so-secret!!";
        let w = watch(&secret);
        let mut kept = Box::new([0u8; 100]);
        kept[10..42].copy_from_slice(&secret);
        drop(std::hint::black_box(kept));
        assert_eq!(w.hits(), 1);
        let mut wiped = vec![0u8; 100];
        wiped[5..37].copy_from_slice(&secret);
        wiped.fill(0);
        assert!(std::hint::black_box(&wiped).iter().all(|b| *b == 0));
        drop(wiped);
        assert_eq!(w.hits(), 1);
        // A block moved by realloc is scanned too.
        let mut grown = Vec::with_capacity(40);
        grown.extend_from_slice(&secret);
        grown.reserve(10_000);
        assert_eq!(w.hits(), 2);
        grown.fill(0);
        drop(grown);
        assert_eq!(w.hits(), 2);
    }
}
