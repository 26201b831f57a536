//! A joining member: admitted by password, keeps a reconnecting link to the authenticating
//! peer (heartbeats, list updates), and talks to other members directly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cypherwire_client::{Backoff, Client, Incoming, OfflineReason, Status};
use cypherwire_session::{ClientAuth, LinkChange, LinkMonitor, Password, PublicKey};
use cypherwire_wire::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::MeshConfig;
use crate::error::Error;
use crate::events::Event;
use crate::node::{Member, Node, lock, monotonic};
use crate::peer_list::{ListVerifier, SignedPeerList};
use crate::protocol::{OP_BEAT, OP_JOIN, OP_LEAVE, PATH, join_context};

fn signed_list(v: &Value) -> Option<SignedPeerList> {
    let body = v.get("body")?.as_bytes()?.to_vec();
    let signature = <[u8; 64]>::try_from(v.get("sig")?.as_bytes()?).ok()?;
    Some(SignedPeerList { body, signature })
}

struct JoinInner {
    node: Arc<Node>,
    link: Client,
    verifier: Mutex<Option<ListVerifier>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for JoinInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinPeer")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl JoinInner {
    /// Asks to be admitted (or re-admitted) and takes the list from the answer.
    async fn register(&self) -> Result<(), Error> {
        let me = &self.node.me;
        let addr = me.addr.to_string();
        let mut fields = vec![
            ("key", Value::bytes(me.key.as_bytes().to_vec())),
            ("addr", Value::from(addr.clone())),
        ];
        let mut data = self.join_request(fields.clone()).await?;
        if data.get("status").and_then(Value::as_str) == Some("prove") {
            // Prove that we hold our key, for this connection's nonce.
            let auth_key = data
                .get("key")
                .and_then(Value::as_bytes)
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .map(PublicKey::from_bytes);
            let nonce = data.get("nonce").and_then(Value::as_bytes);
            let (Some(auth_key), Some(nonce)) = (auth_key, nonce) else {
                return Err(Error::Receive("malformed join answer".into()));
            };
            let context = join_context(nonce, &me.key, &addr);
            let proof = self
                .node
                .identity
                .prove_possession(&auth_key, &context)
                .map_err(|e| Error::Receive(format!("cannot prove our key: {e}")))?;
            fields.push(("proof", Value::bytes(proof.to_vec())));
            data = self.join_request(fields).await?;
        }
        match data.get("status").and_then(Value::as_str) {
            Some("ok") => {}
            Some("banned") => {
                let ms = data
                    .get("remaining_ms")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                return Err(Error::Banned {
                    remaining: (ms > 0).then(|| Duration::from_millis(ms)),
                });
            }
            _ => return Err(Error::Receive("malformed join answer".into())),
        }
        let verifier = data
            .get("signer")
            .and_then(Value::as_bytes)
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| Error::Receive("join answer without a signing key".into()))
            .and_then(|b| Ok(ListVerifier::from_bytes(&b)?))?;
        let signed = data
            .get("list")
            .and_then(signed_list)
            .ok_or_else(|| Error::Receive("join answer without a list".into()))?;
        let list = signed.verify(&verifier, self.node.config.list_limits)?;
        if !list.contains_key(&me.key) {
            return Err(Error::Receive("the list does not include us".into()));
        }
        *lock(&self.verifier) = Some(verifier);
        let members = list.entries.len();
        self.node.apply(list, true)?;
        self.node.emit(Event::Joined { id: me.id, members });
        Ok(())
    }

    async fn join_request(&self, fields: Vec<(&'static str, Value)>) -> Result<Value, Error> {
        let reply = self
            .link
            .request(PATH, OP_JOIN)
            .data(Value::map(fields))
            .deadline(self.node.config.send_timeout)
            .send()
            .await
            .map_err(link_error)?;
        Ok(reply.data)
    }

    /// A push from the authenticating peer: a new list, or its goodbye.
    fn on_push(&self, data: &Value) {
        if data.get("closing").and_then(Value::as_bool) == Some(true) {
            self.node.emit(Event::AuthPeerLeft);
            return;
        }
        let Some(signed) = data.get("list").and_then(signed_list) else {
            tracing::debug!("ignoring an unknown push from the authenticating peer");
            return;
        };
        let Some(verifier) = *lock(&self.verifier) else {
            return;
        };
        match signed.verify(&verifier, self.node.config.list_limits) {
            Ok(list) => {
                if let Err(e) = self.node.apply(list, false) {
                    tracing::debug!(error = %e, "peer list not taken");
                }
            }
            Err(e) => tracing::warn!(error = %e, "peer list refused"),
        }
    }

    /// One heartbeat: `Ok(true)` if the authenticating peer knows us, `Ok(false)` if we must
    /// join again.
    async fn beat(&self) -> Result<bool, Error> {
        let version = self.node.list().map_or(0, |l| l.version);
        let reply = self
            .link
            .request(PATH, OP_BEAT)
            .data(Value::map([
                ("id", Value::from(self.node.me.id.to_string())),
                ("version", Value::from(version)),
            ]))
            .deadline(self.node.config.heartbeat.interval)
            .send()
            .await
            .map_err(|e| Error::Receive(e.to_string()))?;
        let known = reply.data.get("known").and_then(Value::as_bool) == Some(true);
        if known && reply.data.get("list").is_some() {
            // We missed an update: the answer carries the latest list.
            self.on_push(&reply.data);
        }
        Ok(known)
    }
}

/// Heartbeats, list updates and re-admission, until stopped.
async fn link_loop(inner: Arc<JoinInner>, mut stop: watch::Receiver<bool>) {
    let Some(mut incoming) = inner.link.take_incoming() else {
        return;
    };
    let mut status = inner.link.status_events();
    let hb = inner.node.config.heartbeat;
    let mut monitor = LinkMonitor::new(hb, monotonic());
    let mut tick = tokio::time::interval(hb.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rejoin = false;
    let mut status_open = true;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            item = incoming.next() => match item {
                Some(Incoming::Push(p)) => inner.on_push(&p.data),
                Some(_) => {}
                None => return,
            },
            s = status.next(), if status_open => match s {
                // Every new connection is a new password handshake; make sure we are listed.
                Some(Status::Online { .. }) => rejoin = true,
                Some(Status::Kicked { reason }) => {
                    // The peer removed us on purpose: coming back by ourselves would undo it.
                    inner.node.emit(Event::Kicked { reason });
                    return;
                }
                Some(Status::Offline { reason: OfflineReason::Banned { retry_after } }) => {
                    inner.node.emit(Event::BannedByAuthPeer { remaining: retry_after });
                    return;
                }
                Some(Status::GaveUp) => return,
                None => status_open = false,
                _ => {}
            },
            _ = tick.tick() => {
                let ok = if rejoin {
                    match inner.register().await {
                        Ok(()) => {
                            rejoin = false;
                            true
                        }
                        Err(Error::Banned { remaining }) => {
                            // Said once; trying again would only be refused again.
                            inner.node.emit(Event::BannedByAuthPeer { remaining });
                            return;
                        }
                        Err(Error::Kicked { reason }) => {
                            inner.node.emit(Event::Kicked { reason });
                            return;
                        }
                        Err(_) => false,
                    }
                } else {
                    match inner.beat().await {
                        Ok(true) => true,
                        Ok(false) => {
                            rejoin = inner.register().await.is_err();
                            !rejoin
                        }
                        Err(_) => false,
                    }
                };
                let now = monotonic();
                let change = if ok { monitor.answered(now) } else { monitor.check(now) };
                match change {
                    Some(LinkChange::Lost) => inner.node.emit(Event::AuthPeerLost),
                    Some(LinkChange::Regained) => inner.node.emit(Event::AuthPeerRegained),
                    None => {}
                }
            }
        }
    }
}

/// A member that joins through an authenticating peer (pyile's `JoinPeer`). See the
/// [crate docs](crate).
#[derive(Debug)]
pub struct JoinPeer {
    inner: Arc<JoinInner>,
    member: Member,
}

impl std::ops::Deref for JoinPeer {
    type Target = Member;

    /// `id`, `peers`, `broadcast`, `send`, events.
    fn deref(&self) -> &Member {
        &self.member
    }
}

impl JoinPeer {
    /// Joins the mesh whose authenticating peer listens at `auth`, proving `password`.
    /// Returns once admitted, with the peer list in hand.
    ///
    /// # Errors
    /// [`Error::Authentication`] (wrong password, banned address, or unreachable),
    /// [`Error::Banned`] (this member's key is banned), [`Error::Config`], [`Error::Listen`],
    /// [`Error::Receive`] for a malformed answer.
    pub async fn join(
        auth: impl Into<String>,
        password: Password,
        config: MeshConfig,
    ) -> Result<Self, Error> {
        let (node, events_rx) = Node::start(config).await?;
        let hb = node.config.heartbeat;
        // Reconnect at least once per heartbeat interval, so a member cut off by a partition
        // is back (and re-admitted) within an interval or two of the heal.
        let mut backoff = Backoff::default();
        backoff.max = hb.interval.max(backoff.initial);
        let link = Client::builder(ClientAuth::Password(password))
            .session_config(node.config.session.clone())
            .backoff(backoff)
            .heartbeat(hb.interval, hb.missed)
            .connect(auth)
            .map_err(|e| Error::Config(config_reason(&e)));
        let link = match link {
            Ok(l) => l,
            Err(e) => {
                node.shutdown(false).await;
                return Err(e);
            }
        };
        // The first attempt decides: admitted, or told why not.
        let mut status = link.status();
        let first = status
            .wait_for(|s| !matches!(s, Status::Connecting))
            .await
            .map(|s| s.clone());
        let failure = match first {
            Ok(Status::Online { .. }) => None,
            Ok(Status::Offline { reason }) => Some(first_failure(reason)),
            Ok(other) => Some(Error::Authentication {
                reason: OfflineReason::ConnectionLost(format!("{other:?}")),
            }),
            Err(_) => Some(Error::Left),
        };
        let (stop, _) = watch::channel(false);
        let inner = Arc::new(JoinInner {
            node,
            link,
            verifier: Mutex::new(None),
            stop,
            task: Mutex::new(None),
        });
        let admitted = match failure {
            Some(e) => Err(e),
            None => inner.register().await,
        };
        if let Err(e) = admitted {
            inner.link.close_within(Duration::ZERO).await;
            inner.node.shutdown(false).await;
            return Err(e);
        }
        // Subscribed before the task starts, so a leave right after the join is not missed.
        let stop = inner.stop.subscribe();
        let task = tokio::spawn(link_loop(inner.clone(), stop));
        *lock(&inner.task) = Some(task);
        let member = Member::new(inner.node.clone(), events_rx);
        Ok(Self { inner, member })
    }

    /// Leaves: tells the authenticating peer (others see us leave at once), closes every
    /// channel and listener, and joins all tasks.
    pub async fn leave(self) {
        self.stop_task(false).await;
        // Say goodbye only over a live link: an unreachable authenticating peer will drop us
        // after the heartbeat timeout anyway.
        let online = self.inner.link.status().borrow().is_online();
        if online {
            let _ = self
                .inner
                .link
                .request(PATH, OP_LEAVE)
                .data(Value::map([("id", Value::from(self.id().to_string()))]))
                .deadline(Duration::from_secs(2))
                .send()
                .await;
        }
        self.inner
            .link
            .close_within(Duration::from_millis(200))
            .await;
        self.inner.node.shutdown(true).await;
    }

    /// Stops at once without telling anyone (a crash, for tests and emergencies): the
    /// authenticating peer notices through the missed heartbeats.
    pub async fn abort(self) {
        self.stop_task(true).await;
        self.inner.link.close_within(Duration::ZERO).await;
        self.inner.node.shutdown(false).await;
    }

    async fn stop_task(&self, abort: bool) {
        self.inner.stop.send_replace(true);
        let task = lock(&self.inner.task).take();
        if let Some(t) = task {
            if abort {
                t.abort();
            }
            let _ = t.await;
        }
    }
}

/// What a failed request on the link to the authenticating peer means for the member.
fn link_error(e: cypherwire_client::Error) -> Error {
    use cypherwire_client::Error as E;
    match e {
        E::AuthenticationFailed => Error::Authentication {
            reason: OfflineReason::AuthenticationFailed,
        },
        E::Banned { retry_after } => Error::Banned {
            remaining: retry_after,
        },
        E::Kicked { reason } => Error::Kicked { reason },
        other => Error::Authentication {
            reason: OfflineReason::ConnectionLost(other.to_string()),
        },
    }
}

/// What the link's first failure means for a join.
fn first_failure(reason: OfflineReason) -> Error {
    match reason {
        OfflineReason::Banned { retry_after } => Error::Banned {
            remaining: retry_after,
        },
        other => Error::Authentication { reason: other },
    }
}

fn config_reason(e: &cypherwire_client::Error) -> &'static str {
    match e {
        cypherwire_client::Error::Config(m) => m,
        _ => "invalid link settings",
    }
}
