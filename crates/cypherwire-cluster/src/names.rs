//! Where things live in Redis (`docs/protocol.md` §8.1). Every name starts with the cluster's
//! prefix; topic, group and source names appear only as digests, and every key has a TTL
//! except the two pruned sorted sets.

use cypherwire_server::{NodeId, Topic};
use sha2::{Digest, Sha256};

/// The names of one cluster's keys and channels.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    prefix: String,
}

impl Names {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// 32 hex digits of SHA-256 over the prefix, a kind and a name.
    fn digest(&self, kind: &str, name: &str) -> String {
        let d = Sha256::new()
            .chain_update(self.prefix.as_bytes())
            .chain_update([0])
            .chain_update(kind.as_bytes())
            .chain_update([0])
            .chain_update(name.as_bytes())
            .finalize();
        d[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn topic_tag(&self, topic: &Topic) -> String {
        self.digest("topic", &topic.name())
    }

    /// A topic's live channel.
    pub(crate) fn topic_channel(&self, topic: &Topic) -> String {
        format!("{}t:{}", self.prefix, self.topic_tag(topic))
    }

    /// A topic's epoch and last sequence number (hash fields `e`, `s`).
    pub(crate) fn topic_meta(&self, topic: &Topic) -> String {
        format!("{}{{t:{}}}:meta", self.prefix, self.topic_tag(topic))
    }

    /// A topic's bounded history (a stream; entry ids are sequence numbers).
    pub(crate) fn topic_log(&self, topic: &Topic) -> String {
        format!("{}{{t:{}}}:log", self.prefix, self.topic_tag(topic))
    }

    /// A node's channel (requests, replies, probes).
    pub(crate) fn node_channel(&self, node: NodeId) -> String {
        format!("{}n:{}", self.prefix, node.get())
    }

    /// The key a live node holds (claimed with `NX`, kept alive with a TTL).
    pub(crate) fn node_key(&self, node: NodeId) -> String {
        format!("{}node:{}", self.prefix, node.get())
    }

    /// Live nodes, scored by when each one's entry expires (Unix ms).
    pub(crate) fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    /// Ban and unban announcements.
    pub(crate) fn bans_channel(&self) -> String {
        format!("{}t:bans", self.prefix)
    }

    /// Bans in force, scored by when each ends (Unix ms); members are source digests.
    pub(crate) fn bans(&self) -> String {
        format!("{}bans", self.prefix)
    }

    pub(crate) fn source_digest(&self, source: &str) -> String {
        self.digest("source", source)
    }

    /// One ban (its sealed record), by source digest.
    pub(crate) fn ban(&self, digest: &str) -> String {
        format!("{}ban:{digest}", self.prefix)
    }

    /// Failed handshakes of one source in the current window.
    pub(crate) fn failures(&self, source: &str) -> String {
        format!("{}fail:{}", self.prefix, self.source_digest(source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_hide_topics_and_sources_and_differ_per_prefix() {
        let a = Names::new("cw:a:");
        let b = Names::new("cw:b:");
        let room = Topic::Group("secret-room".into());
        assert!(!a.topic_channel(&room).contains("secret"));
        assert!(!a.failures("192.0.2.7").contains("192.0"));
        assert_ne!(a.topic_channel(&room), b.topic_channel(&room));
        assert!(a.topic_meta(&room).starts_with("cw:a:{t:"));
        assert_eq!(
            a.topic_meta(&room).replace(":meta", ""),
            a.topic_log(&room).replace(":log", ""),
            "one hash tag: one slot"
        );
    }
}
