//! The body of the `cluster_inbound` fuzz target (feature `test-util`; not a stable API):
//! what a node's subscription hears — raw bytes, and values sealed under the cluster key
//! with fuzzed contents, places, ages and positions, sent again and moved — against the
//! checks that decide what reaches the server.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cypherwire_server::{BackplaneEvent, NodeId, Position, Topic};
use tokio::sync::mpsc;

use crate::body::{BanBody, NodeBody, NodeKind, PubBody};
use crate::inbound::{Counters, Inbound, REPLAY_WINDOW, ReplayGuard, now_ms};
use crate::key::ClusterKey;
use crate::seal::{Kind, Sealer};

/// This node.
const NODE: u32 = 1;
/// The places a value can be heard at: this node's channel, the bans channel, two topics'
/// channels, and one nobody subscribed to.
const CHANNELS: [&str; 5] = ["n:1", "bans", "t:all", "t:g:room", "t:g:other"];
/// Topic names a publication's body can name.
const TOPICS: [&str; 3] = ["all", "g:room", "g:other"];
/// How old a publication may be (the history's lifetime).
const MAX_AGE: Duration = Duration::from_secs(600);
/// Ban sources: two that parse, one that does not.
const SOURCES: [&str; 3] = ["192.0.2.7", "2001:db8::/64", "not an address"];

/// Reads operation arguments; missing bytes read as zero.
struct Args<'a>(std::slice::Iter<'a, u8>);

impl Args<'_> {
    fn u8(&mut self) -> u8 {
        self.0.next().copied().unwrap_or(0)
    }

    /// A counter or id: small, or (high bit) next to `u64::MAX`.
    fn wide(&mut self) -> u64 {
        let b = self.u8();
        if b & 0x80 == 0 {
            u64::from(b)
        } else {
            u64::MAX - u64::from(b & 0x7f)
        }
    }

    fn bytes(&mut self) -> Vec<u8> {
        let n = usize::from(self.u8());
        self.0.by_ref().take(n).copied().collect()
    }

    /// A send time: now, a second ago, older than any limit, or in the future.
    fn sent_ms(&mut self, now: u64) -> (u64, Age) {
        match self.u8() % 4 {
            0 => (now, Age::Fresh),
            1 => (now.saturating_sub(1_000), Age::Fresh),
            2 => (now.saturating_sub(3_600_000), Age::Stale),
            _ => (now + 60_000, Age::Fresh),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Age {
    Fresh,
    Stale,
}

/// A sealed publication the target made, to send (again) anywhere.
struct Sealed {
    body: PubBody,
    age: Age,
    place: &'static str,
    value: Vec<u8>,
}

/// The replay guard's rule as the spec states it (§8.4): per origin, a counter is taken at one
/// (topic, sequence number) only, and counters a window below the highest are refused.
#[derive(Default)]
struct GuardModel {
    seen: HashMap<u32, Taken>,
}

/// One origin's highest counter, and where each of its counters was taken (topic, number).
type Taken = (u64, HashMap<u64, (String, u64)>);

impl GuardModel {
    fn admit(&mut self, origin: u32, counter: u64, topic: &str, seq: u64) -> bool {
        let (top, taken) = self.seen.entry(origin).or_default();
        if !taken.is_empty() && top.saturating_sub(counter) >= REPLAY_WINDOW {
            return false;
        }
        match taken.get(&counter) {
            Some((t, s)) => t == topic && *s == seq,
            None => {
                taken.insert(counter, (topic.to_owned(), seq));
                *top = (*top).max(counter);
                true
            }
        }
    }
}

/// Target `cluster_inbound`. Each operation byte (`% 5`) and its arguments:
/// 0 raw bytes at a place (nothing may come of them: the fuzzer has no key);
/// 1 a publication sealed for a place (maybe not the one it is heard at), naming a topic, of
///   some age, at a position; 2 one of those again, at another place or position;
/// 3 a node message (request, reply or probe, to this node or another), sealed for a place,
///   maybe one heard before; 4 a ban or unban announcement, likewise.
///
/// What must hold: a value reaches the server only if it opens at the place it is heard,
/// is fresh, is not a replay, and (a publication) names the topic of its channel, (a node
/// message) is addressed to this node; a publication is taken again only at its first
/// position (live and from the history); a request, reply or ban is taken once. What does
/// reach the server is exactly what was sealed.
pub fn cluster_inbound(data: &[u8]) {
    let sealer = Arc::new(
        Sealer::new(&[ClusterKey::from_bytes([0x3a; 32])]).unwrap_or_else(|| unreachable!()),
    );
    let node = NodeId::new(NODE).unwrap_or_else(|| unreachable!());
    let topics: HashMap<String, Topic> = [
        ("t:all".to_owned(), Topic::All),
        ("t:g:room".to_owned(), Topic::Group("room".into())),
    ]
    .into();
    let (events_tx, mut events) = mpsc::channel(16);
    let mut inbound = Inbound::new(
        node,
        sealer.clone(),
        CHANNELS[0].to_owned(),
        CHANNELS[1].to_owned(),
        Arc::new(Mutex::new(topics)),
        Arc::new(Mutex::new(HashMap::new())),
        events_tx,
        Arc::new(Counters::default()),
        Arc::new(AtomicU64::new(0)),
        MAX_AGE,
        Arc::new(Mutex::new(ReplayGuard::default())),
    );
    let now = now_ms();
    let mut guard = GuardModel::default();
    let mut seen_ids: HashSet<(u32, u64)> = HashSet::new();
    let mut sealed: Vec<Sealed> = Vec::new();
    let mut node_values: Vec<(&'static str, NodeBody, Age, Vec<u8>)> = Vec::new();
    let mut args = Args(data.iter());
    while let Some(&op) = args.0.next() {
        let expected = match op % 5 {
            0 => {
                let at = CHANNELS[usize::from(args.u8()) % CHANNELS.len()];
                inbound.on_message(at, &args.bytes());
                None
            }
            1 | 2 => {
                let at = CHANNELS[usize::from(args.u8()) % CHANNELS.len()];
                let position = Position::new(u64::from(args.u8()), u64::from(args.u8()));
                let s = if op % 5 == 1 || sealed.is_empty() {
                    let (sent_ms, age) = args.sent_ms(now);
                    let body = PubBody {
                        origin: u32::from(args.u8()),
                        counter: args.wide(),
                        sent_ms,
                        topic: TOPICS[usize::from(args.u8()) % TOPICS.len()].to_owned(),
                        payload: args.bytes(),
                    };
                    let place = if op & 0x80 == 0 {
                        at
                    } else {
                        CHANNELS[usize::from(op >> 3) % CHANNELS.len()]
                    };
                    let value = sealer.seal(Kind::Publication, place.as_bytes(), &body.encode());
                    sealed.push(Sealed {
                        body,
                        age,
                        place,
                        value,
                    });
                    sealed.len() - 1
                } else {
                    usize::from(args.u8()) % sealed.len()
                };
                let s = &sealed[s];
                let heard = [
                    format!("{}:{}:", position.epoch, position.seq).as_bytes(),
                    &s.value,
                ]
                .concat();
                inbound.on_message(at, &heard);
                let channel_topic = at.strip_prefix("t:").filter(|t| *t != "g:other");
                let takes = s.place == at
                    && channel_topic == Some(s.body.topic.as_str())
                    && s.age == Age::Fresh
                    && guard.admit(s.body.origin, s.body.counter, &s.body.topic, position.seq)
                    && NodeId::new(s.body.origin).is_some();
                takes.then(|| BackplaneEvent::Message {
                    topic: Topic::from_name(&s.body.topic).unwrap_or_else(|| unreachable!()),
                    publication: cypherwire_server::Publication::new(
                        NodeId::new(s.body.origin).unwrap_or_else(|| unreachable!()),
                        position,
                        s.body.payload.clone(),
                    ),
                })
            }
            3 => {
                let at = CHANNELS[usize::from(op >> 3) % 2];
                let n = if op & 0x80 != 0 && !node_values.is_empty() {
                    usize::from(args.u8()) % node_values.len()
                } else {
                    let kind = [NodeKind::Request, NodeKind::Reply, NodeKind::Probe]
                        [usize::from(args.u8()) % 3];
                    let (sent_ms, age) = args.sent_ms(now);
                    let msg = NodeBody {
                        kind,
                        from: u32::from(args.u8()),
                        to: if args.u8() % 4 == 0 { 2 } else { NODE },
                        id: args.wide(),
                        sent_ms,
                        body: args.bytes(),
                    };
                    let place = CHANNELS[usize::from(op >> 5) % 2];
                    let value = sealer.seal(Kind::Node, place.as_bytes(), &msg.encode());
                    node_values.push((place, msg, age, value));
                    node_values.len() - 1
                };
                let (place, msg, age, value) = &node_values[n];
                inbound.on_message(at, value);
                let takes = *place == at
                    && at == CHANNELS[0]
                    && msg.to == NODE
                    && *age == Age::Fresh
                    && seen_ids.insert((msg.from, msg.id ^ ((msg.kind as u64) << 62)));
                match (takes, msg.kind, NodeId::new(msg.from)) {
                    (true, NodeKind::Request, Some(from)) => Some(BackplaneEvent::Request {
                        from,
                        id: msg.id,
                        body: msg.body.clone(),
                    }),
                    _ => None,
                }
            }
            _ => {
                let at = CHANNELS[usize::from(op >> 3) % 2];
                let (sent_ms, age) = args.sent_ms(now);
                let ban = BanBody {
                    from: u32::from(args.u8()),
                    id: args.wide(),
                    sent_ms,
                    length_ms: u64::from(args.u8()) * 1000,
                    source: SOURCES[usize::from(args.u8()) % SOURCES.len()].to_owned(),
                };
                let place = CHANNELS[usize::from(op >> 5) % 2];
                let value = sealer.seal(Kind::Ban, place.as_bytes(), &ban.encode());
                // Sent twice when the high bit is set: the second must be refused. Each send
                // is checked here, so nothing is left for the check after the match.
                let times = if op & 0x80 == 0 { 1 } else { 2 };
                for _ in 0..times {
                    inbound.on_message(at, &value);
                    let takes = place == at
                        && at == CHANNELS[1]
                        && age == Age::Fresh
                        && seen_ids.insert((ban.from, ban.id));
                    let event = ban.source.parse().ok().filter(|_| takes).map(|source| {
                        if ban.length_ms == 0 {
                            BackplaneEvent::Unbanned { source }
                        } else {
                            BackplaneEvent::Banned {
                                source,
                                length: Duration::from_millis(ban.length_ms),
                            }
                        }
                    });
                    assert_eq!(events.try_recv().ok(), event, "{ban:?}");
                }
                None
            }
        };
        assert_eq!(
            events.try_recv().ok(),
            expected,
            "operation {op:#04x}: the server was told otherwise"
        );
        assert!(
            events.try_recv().is_err(),
            "more than one event from one value"
        );
    }
}
