//! Durations as people read them in cypherwire's messages.

use std::time::Duration;

/// A duration as cypherwire's messages print it (ban lengths, retry times): `45 s`,
/// `14 min 50 s`, `10 min`, `2 h 5 min`.
///
/// Partial seconds round up, so a ban of ten minutes that has just begun reads `10 min`, and a
/// wait that is not over never reads `0 s`.
///
/// ```
/// use std::time::Duration;
/// use cypherwire_session::human_duration;
///
/// assert_eq!(human_duration(Duration::from_millis(599_400)), "10 min");
/// assert_eq!(human_duration(Duration::from_secs(552)), "9 min 12 s");
/// assert_eq!(human_duration(Duration::from_secs(7500)), "2 h 5 min");
/// ```
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 if s.is_multiple_of(60) => format!("{} min", s / 60),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}
