//! Helpers for fuzz targets and benchmarks (feature `test-util`): never for production.

use std::time::Instant;

use cypherwire_wire::FrameCodec;

use crate::SessionConfig;
use crate::record::{Opener, Sealer};
use crate::suite::CipherSuite;

/// A sealer and the opener of the same direction, keyed from `seed` without a handshake, with
/// `config`'s limits, backend and rekey policy: for fuzz targets and benchmarks that must reach
/// the transport phase without the cost of a handshake per input. Never for production: the
/// key comes from the seed alone.
pub fn fixed_key_pair(
    suite: CipherSuite,
    seed: &[u8],
    config: &SessionConfig,
    now: Instant,
) -> (Sealer, Opener) {
    let key = crate::record::direction_key(suite, seed, b"cypherwire test-util fixed key");
    let frames = FrameCodec::new(config.limits);
    let sealer = Sealer::new(
        suite,
        config.backend,
        key.clone(),
        frames,
        config.rekey,
        now,
    );
    let opener = Opener::new(suite, config.backend, key, config.max_message_len);
    (sealer, opener)
}
