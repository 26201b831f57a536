//! The cluster crate's error type.

use cypherwire_server::NodeId;

/// Why connecting a backplane failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis could not be reached, or refused.
    #[error("redis: {0}")]
    Redis(String),
    /// The cluster key is missing or malformed.
    #[error("cluster key: {0}")]
    Key(String),
    /// The node id asked for is held by a live node.
    #[error("{0} is taken by a live node")]
    NodeTaken(NodeId),
}
