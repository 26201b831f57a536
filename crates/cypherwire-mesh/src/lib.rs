//! # cypherwire-mesh
//!
//! The peer-to-peer mesh of cypherwire (pyile-protocol's model, done securely): an
//! authenticating peer (default port 4702) that admits members by password with attempt limits
//! and bans, distributes a signed peer list, runs heartbeats, and members that broadcast and
//! send direct messages over their own authenticated channels. Sockets go through
//! [`cypherwire_server`] and [`cypherwire_client`].
//!
//! **Status:** not implemented yet (tracked in the project's issue "P2P mesh"). This crate
//! currently only re-exports the layers it builds on, so that the crate structure and the layer
//! rule are in place and checked from the start.

#![doc(test(attr(deny(warnings))))]

/// The default port of an authenticating peer, as in pyile-protocol.
pub const DEFAULT_AUTH_PORT: u16 = 4702;

/// The layer this one builds on (accepting side).
pub use cypherwire_server as server;

/// The layer this one builds on (connecting side).
pub use cypherwire_client as client;
