//! # cypherwire-test-support
//!
//! Helpers shared by cypherwire's tests, benchmarks and fuzz targets (`publish = false`).
//!
//! - [`balance`]: a client connector that stands in for a load balancer.
//! - [`cluster`]: what the cluster tests watch of their clients.
//! - [`fuzz`]: the bodies of the fuzz targets, as plain functions, so that `fuzz/` (cargo-fuzz)
//!   and the `#[test]`s replaying the committed corpus run the same code.
//! - [`corpus`]: reads a committed fuzz corpus directory.
//! - [`mitm`]: an in-process man in the middle that tampers with framed streams.
//! - [`proxy`]: a TCP fault proxy (cut every connection, stall forwarding).
//! - [`handshake`]: runs a whole handshake in memory and records its messages.
//! - [`redis`]: a real `redis-server` child process for the cluster tests.
//! - [`rng`]: the seeded generator behind every fault schedule.
//! - [`simnet`]: a simulated network (latency, cuts, partitions) for the real server and client
//!   in virtual time.
//! - [`workspace_root`]: locates files such as `docs/test-vectors/` from any test.

use std::path::PathBuf;

pub mod balance;
pub mod cluster;
pub mod corpus;
pub mod fuzz;
pub mod handshake;
pub mod mitm;
pub mod proxy;
pub mod python;
pub mod redis;
pub mod rng;
pub mod simnet;

/// The workspace root directory (where the top-level `Cargo.toml` is).
pub fn workspace_root() -> PathBuf {
    // This crate lives at <root>/crates/cypherwire-test-support.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// The one sanctioned clock read for tests and fuzz bodies: an instant to pass as `now` into
/// the sans-IO state machines (which never read clocks themselves).
#[expect(clippy::disallowed_methods, reason = "tests need a starting instant")]
pub fn epoch() -> std::time::Instant {
    std::time::Instant::now()
}
