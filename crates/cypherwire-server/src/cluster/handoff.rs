//! Resuming on another instance: the node a resume lands on asks the session's owner (named
//! by the token) to hand it over, continues it, and receives the answers of requests that were
//! still running at the owner when they finish.

use std::sync::{Arc, Weak};
use std::time::Duration;

use cypherwire_session::SessionToken;
use cypherwire_wire::Message;

use super::link::ClusterLink;
use super::protocol::{NodeReply, NodeRequest};
use crate::id::{ConnectionId, NodeId};
use crate::outgoing::{Outbox, Outgoing, Session, SessionTable};
use crate::sessions::{Attachment as _, Origin, Snapshot};
use crate::shared::Shared;

/// How long the resuming node waits for the owner's answer.
const HANDOFF_DEADLINE: Duration = Duration::from_secs(2);
/// How often a session with requests still running at its old owner checks that the owner
/// lives (if not, those requests are given up: a resend runs them here).
const OWNER_CHECK: Duration = Duration::from_secs(1);

/// The resuming side: asks the node `token` names for the session. `None` if the token names
/// no other node, the owner is gone or refuses, or the session cannot be installed here.
pub(crate) async fn take_over(
    shared: &Arc<Shared>,
    link: &Arc<ClusterLink>,
    token: &SessionToken,
    last_push_seq: u64,
    origin: &Origin,
) -> Option<(Arc<Session>, SessionToken)> {
    let owner = NodeId::new(SessionTable::token_node(token))?;
    if owner == link.node() {
        return None;
    }
    let forward = random_id();
    let request = NodeRequest::Handoff {
        token: *token.as_bytes(),
        last_push_seq,
        source: origin.source.to_string(),
        identity: origin.identity.map(|k| *k.as_bytes()),
        forward,
    };
    let reply = link.ask(owner, &request, HANDOFF_DEADLINE).await;
    let NodeReply::HandedOver {
        push_seq,
        replay,
        responses,
        running,
    } = reply.ok()?
    else {
        return None;
    };
    let still_running = !running.is_empty();
    let snapshot = Snapshot {
        push_seq,
        replay: replay.into_iter().map(|(s, m)| (s, Arc::new(m))).collect(),
        responses: responses
            .into_iter()
            .map(|(id, m)| (id, Arc::new(m)))
            .collect(),
        running,
    };
    let (_, session, fresh) = shared.state.import_session(origin, snapshot)?;
    if still_running {
        link.adopted()
            .table()
            .insert(forward, Arc::downgrade(&session));
        tokio::spawn(watch_owner(
            shared.clone(),
            link.clone(),
            forward,
            owner,
            Arc::downgrade(&session),
        ));
    }
    Some((session, fresh))
}

/// Until the adopted session's last request from its old owner is answered: if the owner
/// leaves the cluster first, its requests are given up here and the session's connection is
/// closed (`GOING_AWAY`), so that the client resumes and resends them, and they run here, as
/// after a restart.
async fn watch_owner(
    shared: Arc<Shared>,
    link: Arc<ClusterLink>,
    forward: u64,
    owner: NodeId,
    session: Weak<Session>,
) {
    loop {
        tokio::time::sleep(OWNER_CHECK).await;
        let Some(s) = session.upgrade() else { break };
        if !s.has_running() {
            break;
        }
        if let Ok(nodes) = link.backplane().nodes().await
            && !nodes.contains(&owner)
        {
            s.abandon_all();
            if let Some(conn) = s.attached().and_then(|c| shared.registry.link(c)) {
                conn.stop
                    .send_replace(Some(crate::events::DisconnectReason::InstanceLost));
            }
            break;
        }
    }
    link.adopted().table().remove(&forward);
}

/// The resuming side: an answer the old owner forwarded.
pub(crate) fn completed(link: &ClusterLink, forward: u64, response: Message) -> NodeReply {
    let Message::Response(response) = response else {
        return NodeReply::BadRequest;
    };
    let session = link.adopted().table().get(&forward).and_then(Weak::upgrade);
    let Some(session) = session else {
        return NodeReply::UnknownConnection;
    };
    let (msg, attached) = session.complete(response);
    if let Some(outbox) = attached {
        let _ = outbox.offer(msg);
    }
    NodeReply::Done
}

/// The owner's side: hands the session over to node `to`, keeping a forwarder for requests
/// still running here.
pub(crate) fn hand_over(
    shared: &Arc<Shared>,
    link: &Arc<ClusterLink>,
    to: NodeId,
    request: &NodeRequest,
) -> NodeReply {
    let NodeRequest::Handoff {
        token,
        last_push_seq,
        source,
        identity,
        forward,
    } = request
    else {
        return NodeReply::BadRequest;
    };
    let Ok(source) = source.parse::<cypherwire_session::SourceKey>() else {
        return NodeReply::BadRequest;
    };
    let origin = Origin {
        source,
        identity: identity.map(cypherwire_session::PublicKey::from_bytes),
    };
    let (outbox, answers) = Outbox::new(shared.limits.outbox_capacity);
    // Connection number 0 is never a real connection's: it stands for "handed over".
    let forwarder = ConnectionId::on(shared.node, 0);
    let token = SessionToken::from_bytes(*token);
    let now = crate::clock::monotonic();
    let Some((sid, session, snapshot, previous)) =
        shared
            .state
            .hand_over(&token, &origin, now, *last_push_seq, forwarder, outbox)
    else {
        return NodeReply::Refused;
    };
    if let Some(prev) = previous.and_then(|p| shared.registry.link(p)) {
        prev.stop
            .send_replace(Some(crate::events::DisconnectReason::Replaced));
    }
    let reply = NodeReply::HandedOver {
        push_seq: snapshot.push_seq,
        replay: unshare(snapshot.replay),
        responses: unshare(snapshot.responses),
        running: snapshot.running.clone(),
    };
    if snapshot.running.is_empty() {
        shared.state.discard(sid);
    } else {
        tokio::spawn(forward_answers(
            shared.clone(),
            link.clone(),
            to,
            *forward,
            session,
            sid,
            answers,
        ));
    }
    reply
}

fn unshare(v: Vec<(u64, Arc<Message>)>) -> Vec<(u64, Message)> {
    v.into_iter()
        .map(|(k, m)| (k, Arc::unwrap_or_clone(m)))
        .collect()
}

/// Sends the answers of the handed-over session's running requests to its new node, then
/// drops the session here.
async fn forward_answers(
    shared: Arc<Shared>,
    link: Arc<ClusterLink>,
    to: NodeId,
    forward: u64,
    session: Arc<Session>,
    sid: crate::sessions::SessionId,
    mut answers: tokio::sync::mpsc::Receiver<Outgoing>,
) {
    let mut shutdown = shared.shutdown_rx();
    while session.has_running() && !*shutdown.borrow() {
        // A request given up here (cancelled) sends nothing: look again every second. A
        // shutdown ends the forwarding (the new node then gives those requests up).
        let out = tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(1), answers.recv()) => match r {
                Ok(Some(out)) => out,
                Ok(None) => break,
                Err(_) => continue,
            },
            _ = shutdown.changed() => break,
        };
        let msg = match out {
            Outgoing::Message(m) => m,
            Outgoing::Shared(m) => Arc::unwrap_or_clone(m),
            _ => continue,
        };
        if !matches!(msg, Message::Response(_)) {
            continue;
        }
        let request = NodeRequest::Completed {
            forward,
            response: msg,
        };
        if let Err(e) = link.ask(to, &request, HANDOFF_DEADLINE).await {
            tracing::warn!(error = %e, "forwarding an answer to the session's new node failed");
        }
    }
    shared.state.discard(sid);
}

fn random_id() -> u64 {
    let mut b = [0u8; 8];
    // Without a random source the id is 0: still unique enough to pair one answer with its
    // session, as handoffs are also keyed by node.
    let _ = getrandom::fill(&mut b);
    u64::from_be_bytes(b)
}
