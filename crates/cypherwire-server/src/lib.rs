//! # cypherwire-server
//!
//! The server of cypherwire: a router keyed by (path, operation) for requests, named actions,
//! a connection registry with events, push and broadcast with bounded outboxes, and graceful
//! shutdown. It stands on [`cypherwire_session`] for every connection's security.
//!
//! **Status:** not implemented yet (tracked in the project's issue "Server"). This crate
//! currently only re-exports the layer it builds on, so that the crate structure and the layer
//! rule are in place and checked from the start.

#![doc(test(attr(deny(warnings))))]

/// The layer this one builds on.
pub use cypherwire_session as session;
