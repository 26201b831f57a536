//! Wiping what the stack keeps: dead stack bytes hold copies of secrets after any computation
//! with them (hash buffers fed a key, scalars, base64 buffers), and such bytes can reach the
//! heap later as the padding of a value that is moved there. Every function of this crate that
//! computes with a long-term secret runs inside [`scrubbed`].

/// Stack below the caller overwritten by [`scrub_stack`]: more than a handshake step uses
/// (argon2's, SPAKE2's, `snow`'s and the hashes' frames).
const SCRUB_BYTES: usize = 32 * 1024;

/// Overwrites the stack just below the caller's frame, where a handshake step's callees left
/// copies of secrets (hash buffers fed a key or a password hash, scalars): dead stack bytes can
/// otherwise be copied into the heap as the padding of a value moved later, and outlive the
/// step. About 2 µs per call.
#[inline(never)]
fn scrub_stack() {
    let mut area = [0u8; SCRUB_BYTES];
    // The area is handed to an opaque use, so the fill cannot be optimised away.
    std::hint::black_box(&mut area).fill(0);
    std::hint::black_box(&area);
}

/// Runs `f`, then overwrites the stack its frames used (up to 32 KiB below this call).
pub(crate) fn scrubbed<T>(f: impl FnOnce() -> T) -> T {
    let out = f();
    scrub_stack();
    out
}
