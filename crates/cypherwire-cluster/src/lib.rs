//! # cypherwire-cluster
//!
//! Several `cypherwire` servers behind a load balancer, acting as one: [`RedisBackplane`] is
//! the [`Backplane`](cypherwire_server::Backplane) over Redis 7 that
//! [`ServerBuilder::cluster`](cypherwire_server::ServerBuilder::cluster) takes.
//!
//! **What it does** (the server's side is in [`cypherwire_server`]'s `Cluster` docs; the
//! failure semantics in `docs/cluster.md`; the key layout and formats in `docs/protocol.md`
//! §8):
//! - Fan-out: one Lua call per publication numbers it in its topic (epoch and sequence
//!   number), appends it to the topic's capped stream and publishes it; a node that sees a gap
//!   reads the stream to fill it.
//! - Directed requests to one node over its channel; a node nobody listens for is
//!   `NoSuchNode` at once, no answer in time is `Indeterminate` (never retried).
//! - Bans as expiring keys plus an announcement; failed handshakes counted per source over
//!   the whole cluster (`INCR` with `PEXPIRE … NX`).
//! - A node directory kept alive by heartbeats, and a probe through each node's own
//!   subscription, so a subscription that stays connected but stops delivering is renewed.
//! - **Sealed**: everything written to Redis is XChaCha20-Poly1305 under the [`ClusterKey`]
//!   (with a key id, so keys rotate: [`RedisBackplane::connect_with`] takes several, the first
//!   sealing), bound to its channel or key name; publications carry their origin's counter,
//!   so one replayed into another place is refused, and requests, replies and bans carry a
//!   time and an id. [`RedisBackplane::seal_stats`] counts what was refused.
//!
//! ```no_run
//! use cypherwire_cluster::{ClusterKey, RedisBackplane};
//! use cypherwire_server::Server;
//! use cypherwire_session::Psk;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let key = ClusterKey::from_hex(&std::fs::read_to_string("cluster.key")?)?;
//! let backplane = RedisBackplane::connect("redis://127.0.0.1:6379", key).await?;
//! let psk = Psk::from_passphrase("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U")?;
//! let server = Server::builder(psk).cluster(backplane).bind("127.0.0.1:0").await?;
//! server.handle().broadcast("to every connection of every instance");
//! # Ok(()) }
//! ```
//!
//! ## Features
//!
//! | feature | default | enables |
//! | --- | --- | --- |
//! | `tls` | no | `rediss://` URLs (rustls with `ring`; a private CA through `RedisOptions::tls_root_cert`) |

mod backplane;
mod body;
mod error;
#[cfg(feature = "test-util")]
#[doc(hidden)]
pub mod fuzzing;
mod inbound;
mod key;
mod names;
mod seal;

pub use crate::backplane::{RedisBackplane, RedisOptions, SealStats};
pub use crate::error::Error;
pub use crate::key::{ClusterKey, KEY_LEN};
