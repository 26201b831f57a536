//! # cypherwire-session
//!
//! The security layer of cypherwire, between the [wire layer](cypherwire_wire) below and the
//! server and client above.
//!
//! **What it will do** (tracked in the project's issue "Session layer"): Noise handshakes run by
//! `snow` (PSK mode `NNpsk0`, identity mode with pinned static keys, password mode with a PAKE
//! in the psk slot), a record layer with directional keys, strict counters, chunking, rekey and
//! authenticated close over swappable AEAD suites, single-use session tokens, argon2id
//! verifiers with an attempt/ban table, and Fernet for the CYPHER_PROTOCOL compat mode.
//!
//! **Status:** not implemented yet. This crate currently exports only the wire layer it builds
//! on, so that the layer structure (`wire ← session ← {server, client} ← mesh`) is in place and
//! checked from the start. Nothing here encrypts anything yet; do not rely on it.

#![doc(test(attr(deny(warnings))))]

/// The layer this one builds on.
pub use cypherwire_wire as wire;
