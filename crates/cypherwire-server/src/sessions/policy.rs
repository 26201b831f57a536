//! How long sessions live and how much each keeps.

use std::time::Duration;

/// Resumption settings, each a documented default.
///
/// | setting | default |
/// | --- | --- |
/// | `ttl`: how long a detached session (and its token) can be resumed | 120 s |
/// | `response_cache`: responses kept per session for resent requests | 256 |
/// | `response_cache_bytes`: their approximate total size | 4 MiB |
/// | `push_buffer`: recent pushes kept per session for replay after a cut | 1,024 |
/// | `push_buffer_bytes`: their approximate total size | 8 MiB |
/// | `max_sessions`: sessions kept at once, attached or not | 20,000 |
/// | `max_sessions_per_source`: of those, from one source (an IPv4 address or IPv6 /64) | 512 |
/// | `predecessor_ttl`: how long a token replaced by a resume stays valid | 10 s |
///
/// A session's time to live counts from when its last connection ended: a session stays
/// resumable however long its connection lived. When the table (or a source's share of it) is
/// full, the session detached longest ago makes room; only if every session is attached does a
/// new connection run without resumption (its token resumes nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResumePolicy {
    /// How long a detached session can be resumed.
    pub ttl: Duration,
    /// Responses kept per session.
    pub response_cache: usize,
    /// Approximate bytes of responses kept per session.
    pub response_cache_bytes: usize,
    /// Pushes kept per session for replay.
    pub push_buffer: usize,
    /// Approximate bytes of pushes kept per session.
    pub push_buffer_bytes: usize,
    /// Sessions kept at once.
    pub max_sessions: usize,
    /// Sessions kept at once for one source; its oldest detached session makes room.
    pub max_sessions_per_source: usize,
    /// How long the token a resume replaced stays valid, in case the Welcome carrying its
    /// successor was lost (`docs/protocol.md` §3.7 rule 5). If the resumed connection ends
    /// within this time, the predecessor stays valid for the session's `ttl` from then.
    pub predecessor_ttl: Duration,
}

impl Default for ResumePolicy {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(120),
            response_cache: 256,
            response_cache_bytes: 4 * 1024 * 1024,
            push_buffer: 1024,
            push_buffer_bytes: 8 * 1024 * 1024,
            max_sessions: 20_000,
            max_sessions_per_source: 512,
            predecessor_ttl: Duration::from_secs(10),
        }
    }
}
