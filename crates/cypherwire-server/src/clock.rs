//! The server's clocks: monotonic time through tokio (so paused test time applies) for every
//! rule, and the wall clock only for timestamps shown to people.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The server's wall clock, for timestamps shown to users (events, registry).
#[expect(
    clippy::disallowed_methods,
    reason = "timestamps for humans; never used for logic"
)]
pub(crate) fn wall_clock() -> SystemTime {
    SystemTime::now()
}

/// Seconds since the Unix epoch by the wall clock (the compat mode's Fernet timestamps).
pub(crate) fn unix_secs() -> u64 {
    wall_clock()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The monotonic clock as the sans-IO types want it: tokio's, so paused test time applies.
pub(crate) fn monotonic() -> Instant {
    tokio::time::Instant::now().into_std()
}
