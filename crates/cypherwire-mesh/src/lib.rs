//! # cypherwire-mesh
//!
//! The peer-to-peer mesh of cypherwire: pyile-protocol's model, done securely.
//!
//! - An [`AuthPeer`] listens (default port [`DEFAULT_AUTH_PORT`], 4702) and admits members
//!   who know the network password, through the session layer's password mode: a PAKE, so the
//!   password never crosses the wire and a recorded handshake allows no offline guessing.
//!   Addresses that fail `max_attempts` times are banned (escalating) **before** any further
//!   handshake work; the operator can kick and ban by peer id or address, and bans can live in
//!   a file that survives restarts. The authenticating peer is itself a full member.
//! - On every membership change it distributes a **signed, versioned peer list** (id, address,
//!   identity key of each member; Ed25519, capped in size). Members ignore stale, foreign or
//!   unsigned lists.
//! - Members talk **directly** over their own channels (identity mode, the peer's key pinned
//!   from the list). A member's direct listener asks the current list during every handshake,
//!   so a member removed from the list can no longer reach anyone.
//! - **Heartbeats** run between the authenticating peer and every member: a member that misses
//!   them is removed, the new list goes out, and it must authenticate again; a member that
//!   loses the authenticating peer hears [`Event::AuthPeerLost`] and reconnects with backoff.
//! - [`Member::broadcast`] reaches every other member once (each message is acknowledged;
//!   repeats after a reconnect are dropped by the receiver); [`Member::send`] is a direct
//!   message. Errors are typed in pyile's categories ([`Error`]).
//! - The membership, list and heartbeat logic is sans-IO ([`core`]) and is tested in virtual
//!   time, including a 25-node simulation with loss and partitions.
//!
//! ```
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use cypherwire_mesh::{AuthPeer, Event, JoinPeer, MeshConfig};
//! use cypherwire_session::{Argon2Cost, Password, PasswordVerifier};
//!
//! // Cheap argon2 for the example; use the default cost in production.
//! let verifier = PasswordVerifier::create("correct horse", Argon2Cost::new(64, 1, 1))?;
//! let auth = AuthPeer::builder(verifier).listen("127.0.0.1:0").start().await?;
//!
//! let alice = JoinPeer::join(auth.local_addr().to_string(), Password::new("correct horse"),
//!     MeshConfig::default()).await?;
//! let mut auth_events = auth.take_events().unwrap();
//! let report = alice.broadcast("hello, mesh").await?;
//! assert!(report.is_complete());
//! loop {
//!     if let Some(Event::Message { from, .. }) = auth_events.next().await {
//!         assert_eq!(from, alice.id());
//!         break;
//!     }
//! }
//! alice.leave().await;
//! auth.leave().await;
//! # Ok(()) }
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The wire messages are specified in `docs/protocol.md` §7.
//!
//! ## Features
//!
//! | feature | default | enables |
//! | --- | --- | --- |
//! | `msgpack` | yes | the MessagePack payload codec |
//! | `json` | yes | the JSON payload codec |
//! | `ring` | yes | the `ring` crypto backend for records (otherwise pure Rust) |

#![doc(test(attr(deny(warnings))))]

mod auth_peer;
pub mod banfile;
mod config;
pub mod core;
mod error;
mod events;
mod join_peer;
mod node;
mod peer_list;
mod protocol;

pub use crate::auth_peer::{AuthPeer, AuthPeerBuilder};
pub use crate::banfile::{BanEntry, BanTarget};
pub use crate::config::MeshConfig;
pub use crate::error::Error;
pub use crate::events::{Event, Events};
pub use crate::join_peer::JoinPeer;
pub use crate::node::{Broadcast, Member};
pub use crate::peer_list::{
    DEFAULT_MAX_PEERS, LeaveReason, ListError, ListLimits, ListSigner, ListVerifier, PeerEntry,
    PeerId, PeerList, SignedPeerList,
};

/// The default port of an authenticating peer, as in pyile-protocol.
pub const DEFAULT_AUTH_PORT: u16 = 4702;
