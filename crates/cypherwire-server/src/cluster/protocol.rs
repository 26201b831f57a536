//! What nodes say to one another over the backplane: the payload of a publication and the
//! requests one node sends another, with their replies (MessagePack, `docs/protocol.md` §8).

use std::net::SocketAddr;

use cypherwire_wire::{Action, Message, Value};
use serde::{Deserialize, Serialize};

use super::seam::ClusterError;
use crate::id::ConnectionId;

/// What a publication asks every receiving node to deliver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Frame {
    /// A push to each connection (numbered per session).
    Push(Value),
    /// An action to each connection.
    Action(Action),
}

/// A request to one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum NodeRequest {
    /// Push `data` to the node's connection `local`.
    SendTo { local: u64, data: Value },
    /// Kick the node's connection `local`.
    Kick { local: u64 },
    /// How many connections the node has.
    Count,
    /// The node's connections.
    List,
    /// The node's members of a group.
    Members { group: String },
    /// Hand over the session `token` redeems (a resume that landed on the asking node).
    Handoff {
        token: [u8; 16],
        last_push_seq: u64,
        /// The resuming connection's source (as `SourceKey` displays it) and identity.
        source: String,
        identity: Option<[u8; 32]>,
        /// What the asking node calls this handoff in `Completed`.
        forward: u64,
    },
    /// A request that was running when its session was handed over finished.
    Completed { forward: u64, response: Message },
}

/// A node's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum NodeReply {
    Done,
    UnknownConnection,
    SlowConsumer,
    Count(u64),
    List(Vec<(u64, SocketAddr)>),
    /// Connection ids.
    Members(Vec<u64>),
    /// The request could not be read.
    BadRequest,
    /// The session, for the resuming node to continue.
    HandedOver {
        push_seq: u64,
        replay: Vec<(u64, Message)>,
        responses: Vec<(u64, Message)>,
        running: Vec<u64>,
    },
    /// No session for that token and origin here (unknown, used, expired, or pushes lost).
    Refused,
}

impl NodeReply {
    pub(crate) fn into_result(self, id: ConnectionId) -> Result<(), ClusterError> {
        match self {
            Self::Done => Ok(()),
            Self::SlowConsumer => Err(ClusterError::SlowConsumer(id)),
            _ => Err(ClusterError::UnknownConnection(id)),
        }
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Every type here is plain data (enums, numbers, strings, `Value`), which MessagePack can
    // always express.
    rmp_serde::to_vec(value).unwrap_or_default()
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Option<T> {
    rmp_serde::from_slice(bytes).ok()
}

/// Most frames in one publication.
pub(crate) const MAX_FRAMES: usize = 256;

/// Most payload bytes in one publication made of several frames (a frame larger than this
/// travels alone).
pub(crate) const MAX_PUBLICATION_BYTES: usize = 256 * 1024;

/// A publication's payload: encoded frames (each from [`encode`]) as one MessagePack array,
/// in order (`docs/protocol.md` §8.4). Written by hand because the frames are already
/// encoded: the array's header followed by the frames, as MessagePack concatenates.
pub(crate) fn frames_payload(frames: &[Vec<u8>]) -> Vec<u8> {
    let body: usize = frames.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(5 + body);
    let n = frames.len();
    if n < 16 {
        // fixarray; `n < 16`, so the cast is exact.
        out.push(0x90 | u8::try_from(n).unwrap_or(0x0f));
    } else if let Ok(n) = u16::try_from(n) {
        out.push(0xdc);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
    }
    for f in frames {
        out.extend_from_slice(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_frames_survive_their_encoding() {
        let requests = [
            NodeRequest::SendTo {
                local: 7,
                data: Value::from("hi"),
            },
            NodeRequest::Kick { local: 9 },
            NodeRequest::Count,
            NodeRequest::List,
            NodeRequest::Members {
                group: "red".into(),
            },
        ];
        for r in requests {
            assert_eq!(decode::<NodeRequest>(&encode(&r)), Some(r));
        }
        let f = Frame::Action(Action::new("chat", Value::from(3), 0));
        assert_eq!(decode::<Frame>(&encode(&f)), Some(f));
        let reply = NodeReply::List(vec![(1, "127.0.0.1:9".parse().unwrap())]);
        assert_eq!(decode::<NodeReply>(&encode(&reply)), Some(reply));
    }

    #[test]
    fn the_encoding_is_the_one_the_spec_writes() {
        // docs/protocol.md §8.4: a unit variant is its name; others a one-entry map from the
        // name to the fields as an array.
        assert_eq!(encode(&NodeRequest::Count), b"\xa5Count");
        assert_eq!(
            encode(&NodeRequest::SendTo {
                local: 7,
                data: Value::from("hi")
            }),
            b"\x81\xa6SendTo\x92\x07\xa2hi"
        );
        assert_eq!(encode(&NodeReply::Count(3)), b"\x81\xa5Count\x03");
        assert_eq!(
            encode(&NodeRequest::Members { group: "r".into() }),
            b"\x81\xa7Members\x91\xa1r"
        );
        assert_eq!(
            encode(&NodeReply::Members(vec![5])),
            b"\x81\xa7Members\x91\x05"
        );
        assert_eq!(encode(&Frame::Push(Value::from(1))), b"\x81\xa4Push\x01");
        assert_eq!(
            encode(&Frame::Action(Action::new("n", 2, 3))),
            b"\x81\xa6Action\x93\xa1n\x02\x03"
        );
    }

    #[test]
    fn a_handed_over_session_survives_its_encoding() {
        let push = Message::from(cypherwire_wire::Push::new(3, Value::from(5)));
        let answer = Message::from(cypherwire_wire::Response::ok(9, Value::from("x")));
        let reply = NodeReply::HandedOver {
            push_seq: 3,
            replay: vec![(3, push)],
            responses: vec![(9, answer.clone())],
            running: vec![1],
        };
        assert_eq!(decode::<NodeReply>(&encode(&reply)), Some(reply));
        let done = NodeRequest::Completed {
            forward: 4,
            response: answer,
        };
        assert_eq!(decode::<NodeRequest>(&encode(&done)), Some(done));
    }

    #[test]
    fn a_publication_is_an_array_of_frames() {
        for n in [1usize, 2, 15, 16, 17, 300, 70_000] {
            let frames: Vec<Frame> = (0..n)
                .map(|i| {
                    if i % 2 == 0 {
                        Frame::Push(Value::from(i as u64))
                    } else {
                        Frame::Action(Action::new("a", Value::from("x"), 1))
                    }
                })
                .collect();
            let encoded: Vec<Vec<u8>> = frames.iter().map(encode).collect();
            let payload = frames_payload(&encoded);
            assert_eq!(payload, encode(&frames), "{n} frames");
            assert_eq!(decode::<Vec<Frame>>(&payload), Some(frames));
        }
        // docs/protocol.md §8.4's example.
        assert_eq!(
            frames_payload(&[encode(&Frame::Push(Value::from(1)))]),
            b"\x91\x81\xa4Push\x01"
        );
    }

    #[test]
    fn garbage_is_not_a_request() {
        assert_eq!(decode::<NodeRequest>(&[0xc1, 0, 1]), None);
    }
}
