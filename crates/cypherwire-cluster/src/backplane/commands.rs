//! The commands a [`RedisBackplane`](super::RedisBackplane) sends: publishing (one Lua call
//! per batch), following a topic, reading its history, bans, failure counts, the node
//! directory, requests between nodes.

use std::collections::HashMap;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cypherwire_server::{BackplaneError, History, NodeId, Position, Published, Topic};
use cypherwire_session::SourceKey;
use redis::{AsyncCommands, Value};
use tokio::sync::oneshot;

use super::Inner;
use crate::body::{BanBody, BanRecord, NodeBody, NodeKind, PubBody};
use crate::inbound::{self, now_ms, parse_source};
use crate::seal::Kind;

/// One Lua call per batch of publications: for each, take the topic's next number (starting a
/// new epoch, and an empty history, if the topic has no data), append it to the history and
/// publish it; then refresh the TTLs. (`docs/protocol.md` §8.5.)
pub(super) const PUBLISH: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[3]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
end
local seq, n = 0, 0
for i = 5, #ARGV do
  seq = redis.call('HINCRBY', KEYS[1], 's', 1)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], seq .. '-0', 'p', ARGV[i])
  n = redis.call('PUBLISH', ARGV[1], epoch .. ':' .. seq .. ':' .. ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return {epoch, seq, n}
";

/// What a failed command means: refused before it was sent (nothing happened), or lost on the
/// way or unanswered in time (it may have happened).
pub(super) fn unavailable(e: &redis::RedisError) -> BackplaneError {
    if e.is_connection_refusal() {
        BackplaneError::Unavailable(e.to_string())
    } else if e.is_timeout() || e.is_connection_dropped() || e.is_io_error() {
        BackplaneError::Indeterminate(Duration::ZERO)
    } else {
        BackplaneError::Unavailable(e.to_string())
    }
}

pub(super) fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // Without a random source there is nothing unique to give; 0 is still a valid id.
    let _ = getrandom::fill(&mut b);
    u64::from_be_bytes(b)
}

impl Inner {
    pub(super) fn topics(&self) -> std::sync::MutexGuard<'_, HashMap<String, Topic>> {
        self.topics.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn ttl_ms(&self) -> u64 {
        u64::try_from(self.options.history_ttl.as_millis()).unwrap_or(u64::MAX)
    }

    pub(super) fn sealed_node_message(
        &self,
        to: NodeId,
        kind: NodeKind,
        id: u64,
        body: Vec<u8>,
    ) -> Vec<u8> {
        let msg = NodeBody {
            kind,
            from: self.node.get(),
            to: to.get(),
            id,
            sent_ms: now_ms(),
            body,
        };
        self.sealer.seal(
            Kind::Node,
            self.names.node_channel(to).as_bytes(),
            &msg.encode(),
        )
    }

    pub(super) async fn send_node(
        &self,
        to: NodeId,
        kind: NodeKind,
        id: u64,
        body: Vec<u8>,
    ) -> Result<u32, BackplaneError> {
        let sealed = self.sealed_node_message(to, kind, id, body);
        let mut con = self.commands.clone();
        con.publish(self.names.node_channel(to), sealed)
            .await
            .map_err(|e| unavailable(&e))
    }

    pub(super) async fn publish(
        &self,
        topic: &Topic,
        payloads: Vec<Vec<u8>>,
    ) -> Result<Published, BackplaneError> {
        let channel = self.names.topic_channel(topic);
        let name = topic.name();
        let sealed: Vec<Vec<u8>> = payloads
            .into_iter()
            .map(|payload| {
                let body = PubBody {
                    origin: self.node.get(),
                    counter: self.published.fetch_add(1, Ordering::Relaxed) + 1,
                    sent_ms: now_ms(),
                    topic: name.clone(),
                    payload,
                };
                self.sealer
                    .seal(Kind::Publication, channel.as_bytes(), &body.encode())
            })
            .collect();
        // A new epoch: 52 random bits, so that Lua's doubles hold it exactly.
        let epoch = (random_u64() >> 12).max(1);
        let mut con = self.commands.clone();
        let (epoch, seq, receivers): (String, u64, u32) = self
            .script
            .key(self.names.topic_meta(topic))
            .key(self.names.topic_log(topic))
            .arg(&channel)
            .arg(self.options.history)
            .arg(epoch)
            .arg(self.ttl_ms())
            .arg(sealed)
            .invoke_async(&mut con)
            .await
            .map_err(|e| match unavailable(&e) {
                BackplaneError::Indeterminate(_) => {
                    BackplaneError::Indeterminate(self.options.command_timeout)
                }
                other => other,
            })?;
        let epoch = epoch
            .parse()
            .map_err(|_| BackplaneError::Malformed("topic epoch".into()))?;
        Ok(Published::new(Position::new(epoch, seq), Some(receivers)))
    }

    pub(super) async fn position(&self, topic: &Topic) -> Result<Position, BackplaneError> {
        let mut con = self.commands.clone();
        let (e, s): (Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(self.names.topic_meta(topic))
            .arg("e")
            .arg("s")
            .query_async(&mut con)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(Position::new(e.unwrap_or(0), s.unwrap_or(0)))
    }

    pub(super) async fn history(
        &self,
        topic: &Topic,
        after: u64,
        max: usize,
    ) -> Result<History, BackplaneError> {
        let mut con = self.commands.clone();
        let ((e, s), entries): ((Option<u64>, Option<u64>), Value) = redis::pipe()
            .atomic()
            .cmd("HMGET")
            .arg(self.names.topic_meta(topic))
            .arg("e")
            .arg("s")
            .cmd("XRANGE")
            .arg(self.names.topic_log(topic))
            .arg(format!("({after}-0"))
            .arg("+")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut con)
            .await
            .map_err(|e| unavailable(&e))?;
        let epoch = e.unwrap_or(0);
        let channel = self.names.topic_channel(topic);
        let mut out = Vec::new();
        let mut guard = self
            .history_guard
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (seq, sealed) in stream_entries(entries) {
            if let Some(p) = guard.admit(&channel, topic, Position::new(epoch, seq), &sealed) {
                out.push(p);
            }
        }
        Ok(History::new(epoch, s.unwrap_or(0), out))
    }

    pub(super) async fn ban(
        &self,
        source: &SourceKey,
        length: Duration,
    ) -> Result<(), BackplaneError> {
        let text = source.to_string();
        let digest = self.names.source_digest(&text);
        let key = self.names.ban(&digest);
        let length_ms = u64::try_from(length.as_millis()).unwrap_or(u64::MAX).max(1);
        let until = now_ms().saturating_add(length_ms);
        let record = BanRecord {
            until_ms: until,
            source: text.clone(),
        };
        let announce = BanBody {
            from: self.node.get(),
            id: random_u64(),
            sent_ms: now_ms(),
            length_ms,
            source: text,
        };
        let bans = self.names.bans_channel();
        let mut con = self.commands.clone();
        let _: () = redis::pipe()
            .cmd("SET")
            .arg(&key)
            .arg(
                self.sealer
                    .seal(Kind::BanRecord, key.as_bytes(), &record.encode()),
            )
            .arg("PX")
            .arg(length_ms)
            .ignore()
            .zadd(self.names.bans(), &digest, until)
            .ignore()
            .publish(
                &bans,
                self.sealer
                    .seal(Kind::Ban, bans.as_bytes(), &announce.encode()),
            )
            .ignore()
            .query_async(&mut con)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(())
    }

    pub(super) async fn unban(&self, source: &SourceKey) -> Result<bool, BackplaneError> {
        let text = source.to_string();
        let digest = self.names.source_digest(&text);
        let announce = BanBody {
            from: self.node.get(),
            id: random_u64(),
            sent_ms: now_ms(),
            length_ms: 0,
            source: text,
        };
        let bans = self.names.bans_channel();
        let mut con = self.commands.clone();
        let (deleted,): (u32,) = redis::pipe()
            .del(self.names.ban(&digest))
            .zrem(self.names.bans(), &digest)
            .ignore()
            .publish(
                &bans,
                self.sealer
                    .seal(Kind::Ban, bans.as_bytes(), &announce.encode()),
            )
            .ignore()
            .query_async(&mut con)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(deleted > 0)
    }

    pub(super) async fn bans(&self) -> Result<Vec<(SourceKey, Duration)>, BackplaneError> {
        let now = now_ms();
        let mut con = self.commands.clone();
        let (digests,): (Vec<String>,) = redis::pipe()
            .zrembyscore(self.names.bans(), "-inf", now)
            .ignore()
            .zrangebyscore(self.names.bans(), now, "+inf")
            .query_async(&mut con)
            .await
            .map_err(|e| unavailable(&e))?;
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = digests.iter().map(|d| self.names.ban(d)).collect();
        let values: Vec<Option<Vec<u8>>> = con.mget(&keys).await.map_err(|e| unavailable(&e))?;
        let mut out = Vec::new();
        for (key, value) in keys.iter().zip(values) {
            let Some(sealed) = value else { continue };
            let Ok(plain) = self.sealer.open(Kind::BanRecord, key.as_bytes(), &sealed) else {
                self.counters.forged.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let Some(record) = BanRecord::decode(&plain) else {
                continue;
            };
            let Some(source) = parse_source(&record.source) else {
                continue;
            };
            if record.until_ms > now {
                out.push((source, Duration::from_millis(record.until_ms - now)));
            }
        }
        Ok(out)
    }

    pub(super) async fn record_failure(
        &self,
        source: &SourceKey,
        window: Duration,
    ) -> Result<u64, BackplaneError> {
        let key = self.names.failures(&source.to_string());
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut con = self.commands.clone();
        let (n,): (u64,) = redis::pipe()
            .incr(&key, 1)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(window_ms)
            .arg("NX")
            .ignore()
            .query_async(&mut con)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(n)
    }

    /// Leaves the directory and every channel (the node's key and entry go at once, not
    /// after the node TTL).
    pub(super) async fn leave(&self) {
        self.left.store(true, Ordering::Relaxed);
        let mut con = self.commands.clone();
        let gone: Result<(), _> = redis::pipe()
            .del(self.names.node_key(self.node))
            .ignore()
            .zrem(self.names.nodes(), self.node.get())
            .ignore()
            .query_async(&mut con)
            .await;
        if let Err(e) = gone {
            tracing::debug!(error = %e, "leaving the node directory failed (it expires)");
        }
        let mut sub = self.subscriber.clone();
        let mut channels = vec![
            self.names.node_channel(self.node),
            self.names.bans_channel(),
        ];
        channels.extend(self.topics().keys().cloned());
        for c in channels {
            let _ = sub.unsubscribe(&c).await;
        }
    }

    pub(super) async fn nodes(&self) -> Result<Vec<NodeId>, BackplaneError> {
        let mut con = self.commands.clone();
        let ids: Vec<u32> = con
            .zrangebyscore(self.names.nodes(), now_ms(), "+inf")
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(ids.into_iter().filter_map(NodeId::new).collect())
    }

    pub(super) async fn request(
        &self,
        to: NodeId,
        body: Vec<u8>,
        deadline: Duration,
    ) -> Result<Vec<u8>, BackplaneError> {
        let id = random_u64();
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, tx);
        let forget = || {
            self.pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        };
        match self.send_node(to, NodeKind::Request, id, body).await {
            Ok(0) => {
                forget();
                return Err(BackplaneError::NoSuchNode(to));
            }
            Ok(_) => {}
            Err(e) => {
                forget();
                return Err(e);
            }
        }
        match tokio::time::timeout(deadline, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            _ => {
                forget();
                Err(BackplaneError::Indeterminate(deadline))
            }
        }
    }
}

/// `(seq, sealed)` of each `XRANGE` entry (ids `<seq>-0`, one field `p`).
fn stream_entries(v: Value) -> Vec<(u64, Vec<u8>)> {
    let Value::Array(entries) = v else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter_map(|e| {
            let Value::Array(mut parts) = e else {
                return None;
            };
            if parts.len() != 2 {
                return None;
            }
            let fields = parts.pop()?;
            let id = inbound::text(parts.pop()?)?;
            let seq = id.split_once('-')?.0.parse().ok()?;
            let Value::Array(mut fields) = fields else {
                return None;
            };
            if fields.len() != 2 {
                return None;
            }
            let sealed = inbound::bytes(fields.pop()?)?;
            Some((seq, sealed))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_publish_script_is_the_one_the_spec_writes() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
        let Ok(spec) = std::fs::read_to_string(path) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "docs/protocol.md is missing"
            );
            eprintln!("skipped: docs/protocol.md is not beside this crate");
            return;
        };
        let flows = &spec[spec.find("### 8.5 Flows").expect("§8.5")..];
        let start = flows.find("```lua\n").expect("a Lua block in §8.5") + "```lua\n".len();
        let end = start + flows[start..].find("```").expect("its end");
        let written: String = flows[start..end]
            .lines()
            .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
            .collect();
        assert_eq!(written.trim(), super::PUBLISH.trim());
    }
}
