//! The server's limits.

use std::time::Duration;

use crate::error::Error;

/// Limits of a server, each a documented default.
///
/// | limit | default |
/// | --- | --- |
/// | `max_connections` (handshaking or authenticated) | 10,000 |
/// | `max_connections_per_ip` | 256 |
/// | `max_handshakes` in progress | 256 |
/// | `idle_timeout` (no message from the peer) | 5 min |
/// | `outbox_capacity` (messages queued to one peer; beyond: slow-consumer disconnect) | 1,024 |
/// | `max_in_flight` requests per connection (beyond: stop reading) | 64 |
/// | `shutdown_grace` for in-flight requests | 10 s |
/// | `handshake_rate_per_ip` under load (≥ half the handshake slots busy) | 20 per second, bursts of 5 |
///
/// The handshake timeout and frame limits are in the [`SessionConfig`](cypherwire_session::SessionConfig); bans in the
/// [`BanPolicy`](cypherwire_session::BanPolicy).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ServerLimits {
    /// Connections at once, handshaking or authenticated.
    pub max_connections: usize,
    /// Connections at once from one IP address.
    pub max_connections_per_ip: usize,
    /// Handshakes in progress at once; further connections are refused before any work.
    pub max_handshakes: usize,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// Messages queued to one connection; a push to a full outbox disconnects it.
    pub outbox_capacity: usize,
    /// Requests being handled at once per connection; the server stops reading beyond it.
    pub max_in_flight: usize,
    /// How long graceful shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// New connections per IP address (token bucket) while the server is under load (at
    /// least half of `max_handshakes` in progress).
    pub handshake_rate_per_ip: crate::RateLimit,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_ip: 256,
            max_handshakes: 256,
            idle_timeout: Duration::from_secs(300),
            outbox_capacity: 1024,
            max_in_flight: 64,
            shutdown_grace: Duration::from_secs(10),
            handshake_rate_per_ip: crate::rate::DEFAULT_HANDSHAKE_RATE,
        }
    }
}

impl ServerLimits {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.max_connections == 0
            || self.max_connections_per_ip == 0
            || self.max_handshakes == 0
            || self.outbox_capacity == 0
            || self.max_in_flight == 0
            || self.idle_timeout.is_zero()
            // NaN fails these too.
            || !self.handshake_rate_per_ip.per_second.is_finite()
            || self.handshake_rate_per_ip.per_second <= 0.0
            || !self.handshake_rate_per_ip.burst.is_finite()
            || self.handshake_rate_per_ip.burst < 1.0
        {
            return Err(Error::Config("server limits must be non-zero"));
        }
        Ok(())
    }
}
