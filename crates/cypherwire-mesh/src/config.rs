//! Settings shared by the authenticating peer and join peers.

use std::time::Duration;

use cypherwire_session::{HeartbeatPolicy, IdentityKey, SessionConfig};

use crate::core::DEFAULT_DEDUP_WINDOW;
use crate::error::Error;
use crate::peer_list::ListLimits;

/// A member's settings. Every field has a documented default ([`MeshConfig::default`]).
///
/// | setting | default |
/// | --- | --- |
/// | `heartbeat` | every 2 s, 3 missed → gone ([`HeartbeatPolicy::default`]) |
/// | `list_limits` | 1,024 members ([`ListLimits::default`]) |
/// | `send_timeout` (acknowledgement of one message) | 5 s |
/// | `queue` / `queue_bytes` (unacknowledged messages towards one peer) | 256 / 8 MiB |
/// | `event_capacity` | 1,024 |
/// | `dedup_window` (recent message numbers remembered per sender) | 4,096 |
/// | `direct_listen` (this member's direct listener) | `127.0.0.1:0` |
/// | `identity` (this member's static key) | generated at start |
/// | `session` | [`SessionConfig::default`] |
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MeshConfig {
    /// Heartbeats between the authenticating peer and each member.
    pub heartbeat: HeartbeatPolicy,
    /// Caps on a received peer list.
    pub list_limits: ListLimits,
    /// How long a message waits for its acknowledgement before [`Error::SendFailed`].
    pub send_timeout: Duration,
    /// Unacknowledged messages towards one peer before [`Error::QueueFull`].
    pub queue: usize,
    /// Their approximate bytes.
    pub queue_bytes: usize,
    /// Events buffered for the application. Messages wait for room (senders slow down);
    /// membership events beyond it are counted and reported as `Lagged`.
    pub event_capacity: usize,
    /// Recent message numbers remembered per sender to drop repeats.
    pub dedup_window: usize,
    /// Where this member's direct listener binds (other members connect here).
    pub direct_listen: String,
    /// This member's identity key (its peer id is derived from the public half).
    pub identity: Option<IdentityKey>,
    /// Session settings for every channel.
    pub session: SessionConfig,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            heartbeat: HeartbeatPolicy::default(),
            list_limits: ListLimits::default(),
            send_timeout: Duration::from_secs(5),
            queue: 256,
            queue_bytes: 8 * 1024 * 1024,
            event_capacity: 1024,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            direct_listen: "127.0.0.1:0".into(),
            identity: None,
            session: SessionConfig::default(),
        }
    }
}

impl MeshConfig {
    /// Sets the heartbeat.
    #[must_use]
    pub fn with_heartbeat(mut self, interval: Duration, missed: u32) -> Self {
        self.heartbeat = HeartbeatPolicy::new(interval, missed);
        self
    }

    /// Sets the identity key.
    #[must_use]
    pub fn with_identity(mut self, key: IdentityKey) -> Self {
        self.identity = Some(key);
        self
    }

    /// Sets where the direct listener binds.
    #[must_use]
    pub fn with_direct_listen(mut self, addr: impl Into<String>) -> Self {
        self.direct_listen = addr.into();
        self
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if !self.heartbeat.is_valid()
            || self.send_timeout.is_zero()
            || self.queue == 0
            || self.queue_bytes == 0
            || self.event_capacity == 0
            || self.list_limits.max_peers == 0
        {
            return Err(Error::Config(
                "heartbeat, timeouts, queues and limits must be non-zero",
            ));
        }
        Ok(())
    }
}

/// Which addresses an authenticating peer never bans (a closure, shown opaquely).
#[derive(Clone)]
pub(crate) struct Exempt(pub(crate) std::sync::Arc<dyn Fn(std::net::IpAddr) -> bool + Send + Sync>);

impl std::fmt::Debug for Exempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Exempt(..)")
    }
}
