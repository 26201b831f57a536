//! # cypherwire-client
//!
//! The reconnecting client of cypherwire: a cheap clonable handle whose driver task connects,
//! reconnects with exponential backoff and full jitter, reports online/offline status, and
//! resends unanswered requests after a reconnect so that none is lost. It stands on
//! [`cypherwire_session`] for every connection's security.
//!
//! **Status:** not implemented yet (tracked in the project's issue "Reconnecting client"). This
//! crate currently only re-exports the layer it builds on, so that the crate structure and the
//! layer rule are in place and checked from the start.

#![doc(test(attr(deny(warnings))))]

/// The layer this one builds on.
pub use cypherwire_session as session;
