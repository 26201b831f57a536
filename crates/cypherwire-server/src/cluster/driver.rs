//! The node's side of the backplane: a publisher task (publications, bans, failed handshakes
//! in the order they were made) and a receiver task (publications of other nodes delivered to
//! this node's connections, gaps filled or reported, requests of other nodes answered, bans
//! mirrored, group topics followed while this node has a member).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cypherwire_session::SourceKey;
use tokio::sync::{Notify, mpsc};

use super::handoff;
use super::link::{Adopted, ClusterLink, Command, Counters, PUBLISH_QUEUE, bump};
use super::position::{Cursor, Filled, Seen};
use super::protocol::{self, Frame, NodeReply, NodeRequest};
use super::seam::{Backplane, BackplaneError, BackplaneEvent, Partial, Publication, Topic};
use crate::events::DisconnectReason;
use crate::id::ConnectionId;
use crate::registry::Link;
use crate::shared::Shared;

/// Most publications asked of a topic's history to fill one gap.
const HISTORY_BATCH: usize = 4096;

/// Asks every live node (this one answers directly).
pub(crate) async fn ask_all(
    link: &ClusterLink,
    shared: &Shared,
    request: NodeRequest,
    deadline: Duration,
) -> Result<Partial<Vec<NodeReply>>, BackplaneError> {
    let nodes = link.backplane.nodes().await?;
    let me = link.node();
    let mut asks = tokio::task::JoinSet::new();
    for node in nodes.into_iter().filter(|n| *n != me) {
        let fut = link
            .backplane
            .request(node, protocol::encode(&request), deadline);
        asks.spawn(async move { (node, fut.await) });
    }
    let mut value = vec![serve(shared, &request)];
    let mut missing = Vec::new();
    while let Some(done) = asks.join_next().await {
        let Ok((node, answer)) = done else { continue };
        match answer.ok().and_then(|b| protocol::decode(&b)) {
            Some(reply) => value.push(reply),
            None => missing.push(node),
        }
    }
    missing.sort();
    Ok(Partial { value, missing })
}

/// Answers a request for this node's own connections.
pub(crate) fn serve(shared: &Shared, request: &NodeRequest) -> NodeReply {
    let own = |local: u64| ConnectionId::on(shared.node, local);
    match request {
        NodeRequest::SendTo { local, data } => {
            let id = own(*local);
            match crate::delivery::push_to(shared, id, data.clone()) {
                Ok(()) => NodeReply::Done,
                Err(crate::Error::SlowConsumer(_)) => NodeReply::SlowConsumer,
                Err(_) => NodeReply::UnknownConnection,
            }
        }
        NodeRequest::Kick { local } => match shared.registry.link(own(*local)) {
            Some(link) => {
                link.stop.send_replace(Some(DisconnectReason::Kicked));
                shared.stats.kicks.fetch_add(1, Ordering::Relaxed);
                NodeReply::Done
            }
            None => NodeReply::UnknownConnection,
        },
        NodeRequest::Count => NodeReply::Count(shared.registry.len() as u64),
        NodeRequest::List => NodeReply::List(
            shared
                .registry
                .list()
                .into_iter()
                .map(|c| (c.id.0, c.peer))
                .collect(),
        ),
        NodeRequest::Members { group } => NodeReply::Members(
            shared
                .state
                .members(group)
                .into_iter()
                .map(|id| id.0)
                .collect(),
        ),
        // Answered by the receiver, which holds the link.
        NodeRequest::Handoff { .. } | NodeRequest::Completed { .. } => NodeReply::BadRequest,
    }
}

/// Joins the cluster: hears the all-connections topic and mirrors the bans in force, then
/// starts the two tasks. Runs before the server accepts its first connection.
pub(crate) async fn start(
    backplane: Arc<dyn Backplane>,
) -> Result<(Arc<ClusterLink>, Starter), BackplaneError> {
    let events = backplane
        .take_events()
        .ok_or_else(|| BackplaneError::Unavailable("the backplane's events are taken".into()))?;
    let all = backplane.subscribe(&Topic::All).await?;
    let bans = backplane.bans().await?;
    let (commands, queue) = mpsc::channel(PUBLISH_QUEUE);
    let link = Arc::new(ClusterLink {
        backplane,
        commands,
        interest: Notify::new(),
        counters: Counters::default(),
        adopted: Adopted::default(),
    });
    let mut cursors = HashMap::new();
    cursors.insert(Topic::All, Cursor::new(all));
    Ok((
        link,
        Starter {
            events,
            queue,
            cursors,
            bans,
        },
    ))
}

/// What [`start`] prepared, to run once the server's shared state exists.
pub(crate) struct Starter {
    events: mpsc::Receiver<BackplaneEvent>,
    queue: mpsc::Receiver<Command>,
    cursors: HashMap<Topic, Cursor>,
    bans: Vec<(SourceKey, Duration)>,
}

impl Starter {
    pub(crate) fn run(self, shared: &Arc<Shared>, link: &Arc<ClusterLink>) {
        let now = crate::clock::monotonic();
        for (source, left) in &self.bans {
            shared.state.ban(source, *left, now);
        }
        tokio::spawn(publisher(shared.clone(), link.clone(), self.queue));
        let receiver = Receiver {
            shared: shared.clone(),
            link: link.clone(),
            cursors: self.cursors,
        };
        tokio::spawn(receiver.run(self.events));
    }
}

async fn publisher(
    shared: Arc<Shared>,
    link: Arc<ClusterLink>,
    mut queue: mpsc::Receiver<Command>,
) {
    let mut shutdown = shared.shutdown_rx();
    let b = &link.backplane;
    let c = &link.counters;
    let mut next = None;
    loop {
        let command = match next.take() {
            Some(c) => c,
            None => tokio::select! {
                () = down(&mut shutdown) => break,
                c = queue.recv() => match c { Some(c) => c, None => break },
            },
        };
        let outcome = match command {
            Command::Publish(topic, payload) => {
                // Frames waiting for the same topic go in one publication (one sealing, one
                // round trip, one message to each node), in order; whatever follows waits
                // for the next turn.
                let mut bytes = payload.len();
                let mut batch = vec![payload];
                while batch.len() < protocol::MAX_FRAMES && bytes < protocol::MAX_PUBLICATION_BYTES
                {
                    match queue.try_recv() {
                        Ok(Command::Publish(t, p))
                            if t == topic && bytes + p.len() <= protocol::MAX_PUBLICATION_BYTES =>
                        {
                            bytes += p.len();
                            batch.push(p);
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let n = batch.len() as u64;
                let publication = vec![protocol::frames_payload(&batch)];
                match publish_retrying(&**b, &topic, publication, &mut shutdown).await {
                    Ok(()) => {
                        bump(&c.published, n);
                        Ok(())
                    }
                    Err(e) => {
                        bump(&c.publish_failed, n);
                        Err(e)
                    }
                }
            }
            Command::Ban(source, length) => b.ban(&source, length).await,
            Command::Unban(source) => b.unban(&source).await.map(drop),
            Command::Failure(source) => {
                let policy = shared.bans;
                match b.record_failure(&source, policy.window).await {
                    Ok(n) if n >= u64::from(policy.max_attempts) => {
                        shared
                            .state
                            .ban(&source, policy.ban, crate::clock::monotonic());
                        b.ban(&source, policy.ban).await
                    }
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "backplane operation failed");
        }
    }
}

/// How long a publication waits for an unreachable backplane before it is given up.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(10);

/// Publishes, trying again while the backplane refuses before anything happened
/// ([`BackplaneError::Unavailable`]); an unknown outcome is not retried.
async fn publish_retrying(
    b: &dyn Backplane,
    topic: &Topic,
    payload: Vec<Vec<u8>>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), BackplaneError> {
    let start = crate::clock::monotonic();
    loop {
        match b.publish(topic, payload.clone()).await {
            Ok(_) => return Ok(()),
            Err(BackplaneError::Unavailable(e))
                if crate::clock::monotonic().saturating_duration_since(start)
                    < PUBLISH_PATIENCE
                    && !*shutdown.borrow() =>
            {
                tracing::debug!(error = %e, "backplane unavailable: publication waits");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

struct Receiver {
    shared: Arc<Shared>,
    link: Arc<ClusterLink>,
    cursors: HashMap<Topic, Cursor>,
}

impl Receiver {
    async fn run(mut self, mut events: mpsc::Receiver<BackplaneEvent>) {
        let mut shutdown = self.shared.shutdown_rx();
        let link = self.link.clone();
        loop {
            tokio::select! {
                () = down(&mut shutdown) => break,
                () = link.interest.notified() => self.follow_groups().await,
                ev = events.recv() => match ev {
                    Some(ev) => self.on_event(ev).await,
                    None => break,
                },
            }
        }
    }

    async fn on_event(&mut self, event: BackplaneEvent) {
        match event {
            BackplaneEvent::Message { topic, publication } => {
                self.on_publication(topic, publication).await;
            }
            BackplaneEvent::Request { from, id, body } => {
                bump(&self.link.counters.requests_served, 1);
                let reply = match protocol::decode::<NodeRequest>(&body) {
                    Some(request @ NodeRequest::Handoff { .. }) => {
                        handoff::hand_over(&self.shared, &self.link, from, &request)
                    }
                    Some(NodeRequest::Completed { forward, response }) => {
                        handoff::completed(&self.link, forward, response)
                    }
                    Some(request) => serve(&self.shared, &request),
                    None => NodeReply::BadRequest,
                };
                let send = self
                    .link
                    .backplane
                    .reply(from, id, protocol::encode(&reply));
                tokio::spawn(async move {
                    if let Err(e) = send.await {
                        tracing::debug!(error = %e, "reply to another node failed");
                    }
                });
            }
            BackplaneEvent::Banned { source, length } => {
                self.shared
                    .state
                    .ban(&source, length, crate::clock::monotonic());
                self.shared.close_banned(&source);
            }
            BackplaneEvent::Unbanned { source } => {
                self.shared.state.unban(&source);
            }
            BackplaneEvent::LinkDown => tracing::warn!("backplane link down"),
            BackplaneEvent::LinkUp => {
                // A subscription that failed while the link was down is tried again.
                self.follow_groups().await;
                let topics: Vec<Topic> = self.cursors.keys().cloned().collect();
                for topic in topics {
                    self.check(&topic).await;
                }
            }
        }
    }

    async fn on_publication(&mut self, topic: Topic, p: Publication) {
        let Some(cursor) = self.cursors.get_mut(&topic) else {
            return; // a topic this node no longer follows
        };
        match cursor.see(p.position) {
            Seen::Old => bump(&self.link.counters.duplicates, 1),
            Seen::Next => {
                cursor.advance(p.position);
                self.deliver(&topic, &p, false);
            }
            Seen::Gap => {
                self.check(&topic).await;
                let Some(cursor) = self.cursors.get_mut(&topic) else {
                    return;
                };
                if cursor.see(p.position) == Seen::Next {
                    cursor.advance(p.position);
                    self.deliver(&topic, &p, false);
                }
            }
        }
    }

    /// Compares a topic's cursor with its history: fills what is missing, or closes the
    /// connections that missed what the history no longer holds.
    async fn check(&mut self, topic: &Topic) {
        let Some(cursor) = self.cursors.get(topic) else {
            return;
        };
        let after = cursor.at().seq;
        let history = match self
            .link
            .backplane
            .history(topic, after, HISTORY_BATCH)
            .await
        {
            Ok(h) => h,
            Err(e) => {
                // Not advanced: the next publication or link-up checks again.
                tracing::warn!(error = %e, topic = %topic.name(), "history unavailable");
                return;
            }
        };
        let Some(cursor) = self.cursors.get_mut(topic) else {
            return;
        };
        match cursor.fill(history) {
            Filled::Recovered(entries) => {
                for p in &entries {
                    self.deliver(topic, p, true);
                }
            }
            Filled::Lost => self.lost(topic),
        }
    }

    fn deliver(&self, topic: &Topic, p: &Publication, recovered: bool) {
        if p.origin == self.link.node() {
            return; // delivered locally when it was made
        }
        let Some(frames) = protocol::decode::<Vec<Frame>>(&p.payload) else {
            tracing::warn!(origin = %p.origin, "unreadable publication skipped");
            return;
        };
        let n = frames.len() as u64;
        bump(&self.link.counters.received, n);
        if recovered {
            bump(&self.link.counters.recovered, n);
        }
        let audience = self.audience(topic);
        for frame in frames {
            match frame {
                Frame::Push(data) => {
                    for (id, link) in &audience {
                        let _ = crate::delivery::push_via(&self.shared, *id, link, data.clone());
                    }
                }
                Frame::Action(action) => {
                    // Built once and shared by every connection's queue.
                    let shared = Arc::new(cypherwire_wire::Message::from(action));
                    for (id, link) in &audience {
                        let out = crate::outgoing::Outgoing::Shared(shared.clone());
                        let _ = crate::delivery::deliver_via(&self.shared, *id, link, out);
                    }
                }
            }
        }
    }

    /// The connections of this node a topic reaches, with their links.
    fn audience(&self, topic: &Topic) -> Vec<(ConnectionId, Link)> {
        match topic {
            Topic::All => self.shared.registry.links(),
            Topic::Group(g) => self
                .shared
                .state
                .members(g)
                .into_iter()
                .filter_map(|id| self.shared.registry.link(id).map(|l| (id, l)))
                .collect(),
        }
    }

    /// Pushes to these connections were lost: close them and drop their sessions, so that
    /// resuming says so instead of continuing with a hole.
    fn lost(&self, topic: &Topic) {
        bump(&self.link.counters.lossy_gaps, 1);
        let audience = self.audience(topic);
        tracing::warn!(topic = %topic.name(), connections = audience.len(), "publications lost: closing their connections");
        for (_, link) in audience {
            link.stop.send_replace(Some(DisconnectReason::PushesLost));
            bump(&self.link.counters.closed_for_loss, 1);
        }
    }

    /// Follows the topics of the groups that have a local member, and only those.
    async fn follow_groups(&mut self) {
        let wanted: Vec<Topic> = self
            .shared
            .state
            .groups()
            .into_iter()
            .map(Topic::Group)
            .collect();
        let stale: Vec<Topic> = self
            .cursors
            .keys()
            .filter(|t| **t != Topic::All && !wanted.contains(t))
            .cloned()
            .collect();
        for topic in stale {
            self.cursors.remove(&topic);
            if let Err(e) = self.link.backplane.unsubscribe(&topic).await {
                tracing::warn!(error = %e, topic = %topic.name(), "unsubscribe failed");
            }
        }
        for topic in wanted {
            if self.cursors.contains_key(&topic) {
                continue;
            }
            match self.link.backplane.subscribe(&topic).await {
                Ok(at) => {
                    self.cursors.insert(topic, Cursor::new(at));
                }
                Err(e) => {
                    tracing::warn!(error = %e, topic = %topic.name(), "subscribe failed");
                }
            }
        }
    }
}

/// Waits for the server's shutdown signal.
async fn down(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|down| *down).await;
}
