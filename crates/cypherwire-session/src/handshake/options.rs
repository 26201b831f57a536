//! Extra knobs for reproducible tests.

/// Extra knobs for reproducible tests (feature `test-util`).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct HandshakeOptions {
    /// Use this ephemeral private key instead of a random one. Only for test vectors: a fixed
    /// ephemeral destroys forward secrecy.
    #[cfg(feature = "test-util")]
    pub fixed_ephemeral: Option<[u8; 32]>,
    /// Seed the password mode's SPAKE2 scalar from this value instead of the operating
    /// system's generator. Only for test vectors.
    #[cfg(feature = "test-util")]
    pub spake_seed: Option<[u8; 32]>,
}

impl HandshakeOptions {
    /// The fixed ephemeral key, if test options set one.
    pub(super) fn ephemeral(&self) -> Option<&[u8; 32]> {
        #[cfg(feature = "test-util")]
        return self.fixed_ephemeral.as_ref();
        #[cfg(not(feature = "test-util"))]
        None
    }
}
