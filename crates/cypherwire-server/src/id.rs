//! Connection ids.

use std::fmt;

/// Names one server instance of a cluster: 24 bits, never zero (zero is the node of a server
/// outside any cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(u32);

impl NodeId {
    /// The largest node id.
    pub const MAX: u32 = (1 << 24) - 1;

    /// The node id `n`, if it is in `1..=NodeId::MAX`.
    pub const fn new(n: u32) -> Option<Self> {
        if n >= 1 && n <= Self::MAX {
            Some(Self(n))
        } else {
            None
        }
    }

    /// The id as a number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {}", self.0)
    }
}

/// Bits of a [`ConnectionId`] that number connections within their node.
const LOCAL_BITS: u32 = 40;

/// Identifies a connection for the lifetime of a server (never reused).
///
/// The top 24 bits name the [`NodeId`] of the instance that holds the connection (zero for a
/// server outside any cluster); the low 40 bits count connections on that instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

impl ConnectionId {
    /// The id of connection `local` on node `node` (zero: a server outside a cluster).
    pub(crate) fn on(node: u32, local: u64) -> Self {
        Self((u64::from(node) << LOCAL_BITS) | (local & ((1 << LOCAL_BITS) - 1)))
    }

    /// The node holding the connection (`None` for a server outside any cluster).
    pub fn node(self) -> Option<NodeId> {
        u32::try_from(self.0 >> LOCAL_BITS)
            .ok()
            .and_then(NodeId::new)
    }

    /// The connection's number within its node.
    pub fn local(self) -> u64 {
        self.0 & ((1 << LOCAL_BITS) - 1)
    }
}

/// A connection id that does not parse: not `#N` or `#NODE.N` (the `#` optional).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a connection id (#N or #NODE.N): {0:?}")]
pub struct ParseConnectionIdError(String);

impl std::str::FromStr for ConnectionId {
    type Err = ParseConnectionIdError;

    /// Reads what [`Display`](fmt::Display) writes: `#N`, or `#NODE.N` in a cluster.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseConnectionIdError(s.to_owned());
        let text = s.trim().trim_start_matches('#');
        match text.split_once('.') {
            None => text.parse().map(Self).map_err(|_| bad()),
            Some((node, local)) => {
                let node: u32 = node.parse().map_err(|_| bad())?;
                let local: u64 = local.parse().map_err(|_| bad())?;
                if NodeId::new(node).is_none() || local >= 1 << LOCAL_BITS {
                    return Err(bad());
                }
                Ok(Self::on(node, local))
            }
        }
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.node() {
            Some(node) => write!(f, "#{}.{}", node.get(), self.local()),
            None => write!(f, "#{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_names_its_node_and_number() {
        let id = ConnectionId::on(0xAB_CDEF, 42);
        assert_eq!(id.node(), NodeId::new(0xAB_CDEF));
        assert_eq!(id.local(), 42);
        assert_eq!(id.to_string(), "#11259375.42");
        let alone = ConnectionId::on(0, 42);
        assert_eq!(
            alone,
            ConnectionId(42),
            "outside a cluster, ids are plain numbers"
        );
        assert_eq!(alone.node(), None);
        assert_eq!(alone.to_string(), "#42");
    }

    #[test]
    fn an_id_reads_back_from_its_display() {
        for id in [
            ConnectionId::on(7, 3),
            ConnectionId(42),
            ConnectionId::on(NodeId::MAX, 1),
        ] {
            assert_eq!(id.to_string().parse::<ConnectionId>(), Ok(id));
        }
        assert_eq!("12".parse::<ConnectionId>(), Ok(ConnectionId(12)));
        for bad in ["", "#x", "#0.5", "#16777216.1", "#1.2.3", "#-1"] {
            assert!(bad.parse::<ConnectionId>().is_err(), "{bad}");
        }
    }
}

/// Identifies a session on one server instance: stable across the connections that resume
/// it there, never reused while the instance runs. Shown as `s` and a number. It is not the
/// session's token and grants nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub(crate) u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}
