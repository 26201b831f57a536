//! What is inside each sealed value (`docs/protocol.md` §8.3): fixed-width big-endian
//! numbers, length-prefixed text, and the server's opaque bytes last.

/// A publication on a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PubBody {
    pub(crate) origin: u32,
    /// Counts the origin's publications (all topics), from 1: what replays are caught by.
    pub(crate) counter: u64,
    pub(crate) sent_ms: u64,
    pub(crate) topic: String,
    pub(crate) payload: Vec<u8>,
}

/// What one node says to another on its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeKind {
    Request = 0,
    Reply = 1,
    /// A node's message to itself, proving its subscription still delivers.
    Probe = 2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeBody {
    pub(crate) kind: NodeKind,
    pub(crate) from: u32,
    pub(crate) to: u32,
    pub(crate) id: u64,
    pub(crate) sent_ms: u64,
    pub(crate) body: Vec<u8>,
}

/// A ban (length > 0) or an unban (length 0), announced to every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BanBody {
    pub(crate) from: u32,
    pub(crate) id: u64,
    pub(crate) sent_ms: u64,
    pub(crate) length_ms: u64,
    pub(crate) source: String,
}

/// A stored ban: when it ends (Unix ms) and whom it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BanRecord {
    pub(crate) until_ms: u64,
    pub(crate) source: String,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    }
    fn text(&mut self, len: usize) -> Option<String> {
        self.take(len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(str::to_owned)
    }
    fn rest(self) -> Vec<u8> {
        self.0.to_vec()
    }
}

impl PubBody {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let topic = self.topic.as_bytes();
        let len = u16::try_from(topic.len()).unwrap_or(u16::MAX);
        let mut out = Vec::with_capacity(22 + topic.len() + self.payload.len());
        out.extend_from_slice(&self.origin.to_be_bytes());
        out.extend_from_slice(&self.counter.to_be_bytes());
        out.extend_from_slice(&self.sent_ms.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&topic[..usize::from(len)]);
        out.extend_from_slice(&self.payload);
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        let origin = r.u32()?;
        let counter = r.u64()?;
        let sent_ms = r.u64()?;
        let len = r.u16()?;
        let topic = r.text(usize::from(len))?;
        Some(Self {
            origin,
            counter,
            sent_ms,
            topic,
            payload: r.rest(),
        })
    }
}

impl NodeBody {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(25 + self.body.len());
        out.push(self.kind as u8);
        out.extend_from_slice(&self.from.to_be_bytes());
        out.extend_from_slice(&self.to.to_be_bytes());
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.sent_ms.to_be_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        let kind = match r.u8()? {
            0 => NodeKind::Request,
            1 => NodeKind::Reply,
            2 => NodeKind::Probe,
            _ => return None,
        };
        Some(Self {
            kind,
            from: r.u32()?,
            to: r.u32()?,
            id: r.u64()?,
            sent_ms: r.u64()?,
            body: r.rest(),
        })
    }
}

impl BanBody {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(28 + self.source.len());
        out.extend_from_slice(&self.from.to_be_bytes());
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.sent_ms.to_be_bytes());
        out.extend_from_slice(&self.length_ms.to_be_bytes());
        out.extend_from_slice(self.source.as_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        let (from, id, sent_ms, length_ms) = (r.u32()?, r.u64()?, r.u64()?, r.u64()?);
        let source = String::from_utf8(r.rest()).ok()?;
        Some(Self {
            from,
            id,
            sent_ms,
            length_ms,
            source,
        })
    }
}

impl BanRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        [&self.until_ms.to_be_bytes()[..], self.source.as_bytes()].concat()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        let until_ms = r.u64()?;
        let source = String::from_utf8(r.rest()).ok()?;
        Some(Self { until_ms, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_body_reads_back_and_a_short_one_is_refused() {
        let p = PubBody {
            origin: 9,
            counter: 3,
            sent_ms: 1_700_000_000_000,
            topic: "g:room".into(),
            payload: vec![1, 2, 3],
        };
        assert_eq!(PubBody::decode(&p.encode()), Some(p.clone()));
        assert_eq!(PubBody::decode(&p.encode()[..10]), None);
        let n = NodeBody {
            kind: NodeKind::Reply,
            from: 1,
            to: 2,
            id: 77,
            sent_ms: 5,
            body: b"ok".to_vec(),
        };
        assert_eq!(NodeBody::decode(&n.encode()), Some(n.clone()));
        let mut bad = n.encode();
        bad[0] = 9;
        assert_eq!(NodeBody::decode(&bad), None, "unknown kind");
        let b = BanBody {
            from: 1,
            id: 2,
            sent_ms: 3,
            length_ms: 4,
            source: "192.0.2.7".into(),
        };
        assert_eq!(BanBody::decode(&b.encode()), Some(b));
        let r = BanRecord {
            until_ms: 10,
            source: "2001:db8::/64".into(),
        };
        assert_eq!(BanRecord::decode(&r.encode()), Some(r));
    }
}
