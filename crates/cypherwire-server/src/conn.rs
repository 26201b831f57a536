//! One connection's driver: handshake, then a reader loop (this task) and a writer task
//! joined by a bounded outbox. Requests and pushes belong to the connection's session, which
//! may outlive it (resumption, `docs/protocol.md` §3.7).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cypherwire_session::{
    Error as SessionError, SecureReader, SecureWriter, SessionToken, accept_guarded,
};
use cypherwire_wire::{Close, CloseCode, Message};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tokio::task::AbortHandle;

use crate::core::{ServerConnection, Step, Ticket};
use crate::dispatch::{Dispatched, Done, Report, dispatch};
use crate::events::{DisconnectReason, EventKind};
use crate::handle::ServerHandle;
use crate::handler::Ctx;
use crate::outgoing::{Outbox, Outgoing};
use crate::registry::{Counters, Entry, Link};
use crate::router::Router;
use crate::sessions::{Begin, Origin, welcome};
use crate::shared::Shared;
use crate::signals::{Signal, Signals};

/// Most outgoing messages sealed into one write.
const WRITE_BATCH: usize = 64;

/// Aborts a task when dropped: if the connection's own task is aborted (immediate stop), its
/// writer goes with it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A connection's core with the abort handles of its handler tasks. Dropped without
/// [`disarm`](Self::disarm) (the connection task was aborted), it aborts them; on a normal end
/// they keep running so that a resumed session still gets their answers.
struct Running {
    core: ServerConnection<AbortHandle>,
    /// Where the requests' [`Done`] guards report to, made at the first request (an idle
    /// connection holds no channel); bounded by the in-flight bound.
    reports: Option<(mpsc::Sender<Report>, mpsc::Receiver<Report>)>,
    armed: bool,
}

impl Running {
    fn new(core: ServerConnection<AbortHandle>) -> Self {
        Self {
            core,
            reports: None,
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }

    /// Counts request `id` as in flight until the returned guard is dropped.
    fn start(&mut self, id: u64) -> (Ticket, Done) {
        let ticket = self.core.start();
        let capacity = self.core.max_in_flight();
        let (tx, _) = self.reports.get_or_insert_with(|| mpsc::channel(capacity));
        let done = Done::new(tx.clone(), id, ticket);
        (ticket, done)
    }

    /// Takes in the ends reported so far (a `Cancel` meanwhile of a request that has ended
    /// only aborts a finished task and abandons an answered request: both no-ops).
    fn collect(&mut self) {
        if let Some((_, rx)) = &mut self.reports {
            while let Ok((id, ticket)) = rx.try_recv() {
                self.core.finished(id, ticket);
            }
        }
    }

    /// Waits for the next request to end; false if none is in flight to wait for.
    async fn wait_one(&mut self) -> bool {
        let Some((_, rx)) = &mut self.reports else {
            return false;
        };
        match rx.recv().await {
            Some((id, ticket)) => {
                self.core.finished(id, ticket);
                true
            }
            None => false,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.armed {
            for h in self.core.take_running() {
                h.abort();
            }
        }
    }
}

/// Releases the per-address slot when the connection ends, however it ends.
struct IpSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        self.shared.registry.release_ip(self.ip);
    }
}

pub(crate) async fn run<IO>(
    shared: Arc<Shared>,
    router: Arc<Router>,
    stream: IO,
    peer: SocketAddr,
    handshake: OwnedSemaphorePermit,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _slot = IpSlot {
        shared: shared.clone(),
        ip: peer.ip(),
    };
    shared.emit(EventKind::Accepted { peer });
    let ip = peer.ip();
    let source = shared.source(ip);
    let result = if shared.is_exempt(ip) {
        cypherwire_session::accept(stream, &shared.auth, &shared.session).await
    } else {
        accept_guarded(
            stream,
            &shared.auth,
            &shared.session,
            shared.state.attempts(),
            &source,
        )
        .await
    };
    drop(handshake);
    let session = match result {
        Ok(s) => s,
        Err(SessionError::Banned) => {
            // The session layer told the peer until when.
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            shared
                .refusals
                .record(peer, crate::Refusal::Banned, crate::clock::monotonic());
            shared.emit(EventKind::Refused {
                peer,
                reason: crate::Refusal::Banned,
            });
            return;
        }
        Err(e) => {
            shared
                .stats
                .handshakes_failed
                .fetch_add(1, Ordering::Relaxed);
            shared.emit(EventKind::AuthenticationFailed {
                peer,
                reason: e.to_string(),
            });
            if let Some(cluster) = &shared.cluster
                && matches!(
                    e,
                    SessionError::AuthenticationFailed | SessionError::Handshake(_)
                )
            {
                cluster.failure(source);
            }
            if shared.is_banned(ip) {
                shared.emit(EventKind::Banned { peer });
            }
            return;
        }
    };
    shared.stats.handshakes_ok.fetch_add(1, Ordering::Relaxed);
    let info = *session.info();
    let id = shared.next_id();
    let (reader, writer) = session.into_split();
    let (tx, rx) = Outbox::new(shared.limits.outbox_capacity);
    let (stop_tx, stop_rx) = watch::channel(None);
    let counters = Arc::new(Counters::default());

    // Every connection starts a session; a Resume as its first message may swap it for an
    // earlier one.
    let origin = Origin {
        source: shared.source(ip),
        identity: info.peer_identity,
    };
    let Some((sid, state, token)) = shared.state.create_session(&origin) else {
        shared.emit(EventKind::Refused {
            peer,
            reason: crate::Refusal::TooManyConnections,
        });
        return;
    };
    shared.state.attach(&state, id, tx.clone());
    let (queue_tx, queue) = match shared.connection_queue {
        Some(cap) => {
            let (qtx, qrx) = mpsc::channel(cap);
            (Some(qtx), Some(Arc::new(tokio::sync::Mutex::new(qrx))))
        }
        None => (None, None),
    };
    let link = Link {
        outbox: tx.clone(),
        counters: counters.clone(),
        stop: Arc::new(stop_tx),
        queue,
        session: Arc::new(Mutex::new(state)),
    };
    let ttl = shared.state.resume_policy().ttl;
    // The first thing the peer reads is its session token. The outbox is empty: this cannot
    // block.
    let _ = tx.try_send(Outgoing::Message(welcome(&token, ttl, false)));
    shared.registry.insert(
        id,
        Entry {
            peer,
            session: info,
            connected_at: crate::clock::wall_clock(),
            link: link.clone(),
        },
    );
    tracing::info!(connection = id.0, suite = ?info.suite, codec = ?info.codec, "authenticated");
    shared.emit(EventKind::Authenticated {
        id,
        peer,
        identity: info.peer_identity,
    });

    let mut writer_task = AbortOnDrop(tokio::spawn(write_loop(writer, rx, counters.clone())));
    let handle = ServerHandle::from_shared(shared.clone());
    let ctx = Ctx {
        connection: id,
        peer,
        identity: info.peer_identity,
        request_id: None,
        deadline: None,
        server: handle,
        session: Some(sid),
    };
    let provisional = Provisional { sid, token, origin };
    let unhandled = queue_tx.as_ref().or(shared.inbox.as_ref()).cloned();
    let env = Env {
        shared: shared.clone(),
        router,
        link: link.clone(),
        ctx,
        unhandled,
    };
    let reason = read_loop(&env, reader, stop_rx, provisional).await;
    drop(env);

    // No new pushes from now on; the session stays resumable for its time to live.
    shared.registry.remove(id);
    shared
        .stats
        .bytes_in_closed
        .fetch_add(counters.bytes_in.load(Ordering::Relaxed), Ordering::Relaxed);
    if shared.state.leave_all(id)
        && let Some(cluster) = &shared.cluster
    {
        cluster.interest_changed();
    }
    if matches!(
        reason,
        DisconnectReason::PushesLost | DisconnectReason::Kicked | DisconnectReason::Banned
    ) {
        // Its token must not bring it back: a kick or ban that a resume undid would not stick.
        shared.state.discard(link.session().id());
    } else {
        shared
            .state
            .detach(&link.session(), id, crate::clock::monotonic());
    }
    let close = match &reason {
        DisconnectReason::Closed | DisconnectReason::Truncated => None,
        DisconnectReason::Kicked => Some((CloseCode::KICKED, "kicked by the operator")),
        DisconnectReason::Banned => Some((CloseCode::BANNED, "banned by the operator")),
        DisconnectReason::Replaced => Some((CloseCode::GOING_AWAY, "session resumed elsewhere")),
        DisconnectReason::PushesLost => Some((CloseCode::PUSHES_LOST, "pushes were lost")),
        DisconnectReason::InstanceLost => Some((CloseCode::GOING_AWAY, "an instance went away")),
        DisconnectReason::SlowConsumer => Some((CloseCode::SLOW_CONSUMER, "slow consumer")),
        DisconnectReason::IdleTimeout => Some((CloseCode::TIMEOUT, "idle timeout")),
        DisconnectReason::Shutdown => Some((CloseCode::GOING_AWAY, "server shutting down")),
        DisconnectReason::ProtocolError(_) => Some((CloseCode::PROTOCOL_ERROR, "protocol error")),
        DisconnectReason::Unsupported(_) => Some((CloseCode::UNSUPPORTED, "unsupported envelope")),
        DisconnectReason::TooLarge(_) => Some((CloseCode::FRAME_TOO_LARGE, "too large")),
        DisconnectReason::Io(_) => None,
    };
    if let Some((code, text)) = close {
        // A full outbox (slow consumer) cannot take the Close: the writer is stopped instead.
        if tx.try_send(Outgoing::Close(code, text)).is_err() {
            writer_task.0.abort();
        }
    }
    drop(tx);
    drop(link);
    let _ = tokio::time::timeout(Duration::from_secs(5), &mut writer_task.0).await;
    shared.stats.bytes_out_closed.fetch_add(
        counters.bytes_out.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    tracing::info!(connection = id.0, ?reason, "disconnected");
    shared.emit(EventKind::Disconnected { id, peer, reason });
}

/// Why a read that failed ends the connection: the spec names the close code for each failure
/// (`docs/protocol.md` §2.2, §3.4, §4.1), and the session error knows it.
fn read_failure(e: &SessionError) -> DisconnectReason {
    match e.close_code() {
        CloseCode::UNSUPPORTED => DisconnectReason::Unsupported(e.to_string()),
        CloseCode::FRAME_TOO_LARGE => DisconnectReason::TooLarge(e.to_string()),
        _ => DisconnectReason::ProtocolError(e.to_string()),
    }
}

/// The session created for this connection, until a resume replaces it.
struct Provisional {
    sid: crate::sessions::SessionId,
    token: SessionToken,
    /// Who opened this connection: a resume must be of a session of the same principal.
    origin: Origin,
}

async fn write_loop(
    mut writer: SecureWriter<WriteHalf<impl AsyncWrite>>,
    mut rx: mpsc::Receiver<Outgoing>,
    counters: Arc<Counters>,
) {
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut batch = 0;
        while let Some(out) = next.take() {
            let queued = match &out {
                Outgoing::Message(m) => writer.queue_message(m),
                Outgoing::Shared(m) => writer.queue_message(m),
                Outgoing::Close(code, reason) => {
                    let _ = writer.queue_message(&Close::new(*code, *reason).into());
                    let _ = writer.close().await;
                    return;
                }
            };
            if queued.is_err() {
                return;
            }
            counters.messages_out.fetch_add(1, Ordering::Relaxed);
            batch += 1;
            if batch < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        // Counted when queued, before the write: a peer that has read a message always sees it
        // counted.
        counters
            .bytes_out
            .store(writer.bytes_sent(), Ordering::Relaxed);
        if writer.flush().await.is_err() {
            return;
        }
    }
    // Every sender is gone: end our direction cleanly.
    let _ = writer.close().await;
}

/// What one connection's reader works with.
struct Env {
    shared: Arc<Shared>,
    router: Arc<Router>,
    link: Link,
    /// The context handlers get (without a request id or deadline).
    ctx: Ctx,
    /// Where messages no handler takes go (the connection's queue or the server's inbox).
    unhandled: Option<mpsc::Sender<crate::InboxItem>>,
}

async fn read_loop(
    env: &Env,
    mut reader: SecureReader<ReadHalf<impl AsyncRead + Unpin>>,
    stop: watch::Receiver<Option<DisconnectReason>>,
    provisional: Provisional,
) -> DisconnectReason {
    let limits = &env.shared.limits;
    let core = ServerConnection::new(
        limits.idle_timeout,
        limits.max_in_flight,
        crate::clock::monotonic(),
    );
    let mut running = Running::new(core);
    let reason = read_messages(env, &mut reader, stop, provisional, &mut running).await;
    running.disarm();
    reason
}

async fn read_messages(
    env: &Env,
    reader: &mut SecureReader<ReadHalf<impl AsyncRead + Unpin>>,
    stop: watch::Receiver<Option<DisconnectReason>>,
    provisional: Provisional,
    running: &mut Running,
) -> DisconnectReason {
    let Env {
        shared,
        router,
        link,
        ctx,
        unhandled,
    } = env;
    let started = tokio::time::Instant::now();
    let mut provisional = Some(provisional);
    // One idle timer for the whole connection, moved forward only when it fires early (a
    // timer per message would be registered and removed on every read).
    let idle_timer =
        tokio::time::sleep_until(tokio::time::Instant::from_std(running.core.idle_deadline()));
    tokio::pin!(idle_timer);
    // The two signals are waited for once for the connection's life, and looked at again
    // only when their channels change (crate::signals).
    let mut signals = Signals::new(shared.shutdown_rx(), stop.clone());
    loop {
        let msg = tokio::select! {
            biased;
            signal = std::future::poll_fn(|cx| signals.poll(cx)) => match signal {
                Signal::Shutdown => None,
                Signal::Stop => return stop.borrow().clone().unwrap_or(DisconnectReason::Kicked),
            },
            r = reader.recv_message() => Some(r),
            () = &mut idle_timer => {
                if running.core.is_idle(crate::clock::monotonic()) {
                    return DisconnectReason::IdleTimeout;
                }
                let due = running.core.idle_deadline();
                idle_timer.as_mut().reset(tokio::time::Instant::from_std(due));
                continue;
            }
        };
        let Some(msg) = msg else {
            drain(shared, running).await;
            return DisconnectReason::Shutdown;
        };
        let msg = match msg {
            Ok(Some(m)) => m,
            Ok(None) => return DisconnectReason::Closed,
            Err(SessionError::Truncated) => return DisconnectReason::Truncated,
            Err(SessionError::Io(e)) => return DisconnectReason::Io(e.to_string()),
            Err(e) => return read_failure(&e),
        };
        let now = tokio::time::Instant::now();
        let c = &link.counters;
        c.messages_in.fetch_add(1, Ordering::Relaxed);
        c.bytes_in.store(reader.bytes_received(), Ordering::Relaxed);
        let ms = u64::try_from((now - started).as_millis()).unwrap_or(u64::MAX);
        c.last_activity_ms.store(ms, Ordering::Relaxed);
        shared.stats.messages_in.fetch_add(1, Ordering::Relaxed);
        match running.core.receive(msg, now.into_std()) {
            Step::Resume(resume) => {
                if let Some(p) = provisional.take()
                    && !resume_session(shared, link, ctx, &resume, p).await
                {
                    return DisconnectReason::Io("writer stopped".into());
                }
            }
            Step::Request(req) => {
                shared.stats.requests.fetch_add(1, Ordering::Relaxed);
                if let Some(inbox) = unhandled
                    && router.lookup(&req.path, &req.operation).is_none()
                {
                    // The application answers from the inbox (backpressure when it is full).
                    if !to_inbox(inbox, ctx, req.into()).await {
                        return DisconnectReason::Shutdown;
                    }
                    continue;
                }
                let session = link.session();
                match session.begin(req.id) {
                    Begin::Cached(resp) => {
                        // A resent request that already ran: the stored answer, not a second run.
                        if !link.outbox.send(Outgoing::Shared(resp)).await {
                            return DisconnectReason::Io("writer stopped".into());
                        }
                        continue;
                    }
                    Begin::InProgress => continue,
                    Begin::Run => {}
                }
                // Bounded work per connection: wait for a request to finish before reading
                // further. Ends reported since the last request are taken in here, where the
                // count matters, not on every message.
                running.collect();
                while running.core.at_capacity() {
                    if !running.wait_one().await {
                        return DisconnectReason::Shutdown;
                    }
                }
                let id = req.id;
                let (ticket, done) = running.start(id);
                match dispatch(shared, router, ctx, req, session, done).await {
                    Dispatched::Finished(done) => {
                        let (id, ticket) = done.settle();
                        running.core.finished(id, ticket);
                    }
                    Dispatched::Running(abort) => running.core.track(id, ticket, abort),
                    Dispatched::Answering => {}
                }
            }
            Step::Action(action) => match router.action_handler(&action.name) {
                Some(h) => {
                    let mut ctx = ctx.clone();
                    ctx.session = Some(link.session().id());
                    let fut = h.call(action, ctx);
                    tokio::spawn(fut);
                }
                None => match unhandled {
                    Some(inbox) => {
                        if !to_inbox(inbox, ctx, action.into()).await {
                            return DisconnectReason::Shutdown;
                        }
                    }
                    None => shared.emit(EventKind::UnknownAction {
                        id: ctx.connection,
                        name: action.name,
                    }),
                },
            },
            Step::Abort(id, handle) => {
                handle.abort();
                // Cancelled: no answer. A no-op if the request completed meanwhile.
                link.session().abandon(id);
            }
            Step::Reply(reply) => {
                if !link.outbox.send(Outgoing::Message(reply)).await {
                    return DisconnectReason::Io("writer stopped".into());
                }
            }
            Step::Nothing => {}
            Step::End(reason) => return reason,
        }
    }
}

/// Handles a Resume: attaches this connection to the earlier session if its token is valid and
/// no push it may have missed is lost; otherwise keeps the fresh session. Either way the peer
/// gets a Welcome saying which. Returns false if the writer is gone.
async fn resume_session(
    shared: &Arc<Shared>,
    link: &Link,
    ctx: &Ctx,
    resume: &cypherwire_wire::Resume,
    provisional: Provisional,
) -> bool {
    let now = crate::clock::monotonic();
    let ttl = shared.state.resume_policy().ttl;
    let token = SessionToken::from_bytes(resume.token.0);
    let mut resumed = shared
        .state
        .resume_session(&token, &provisional.origin, now)
        .map(|(_, old, fresh)| (old, fresh));
    if resumed.is_none()
        && let Some(cluster) = &shared.cluster
    {
        // A session another instance holds: it hands it over.
        resumed = crate::cluster::handoff::take_over(
            shared,
            cluster,
            &token,
            resume.last_push_seq,
            &provisional.origin,
        )
        .await;
    }
    let resumed = resumed.and_then(|(old, fresh)| {
        old.replay_after(resume.last_push_seq)
            .map(|p| (old, fresh, p))
    });
    let Some((old, fresh, pushes)) = resumed else {
        // Unknown, used or expired token, or lost pushes: the peer continues on the fresh
        // session it was welcomed to (and resends what it must, per the delivery contract).
        shared.stats.resumes_refused.fetch_add(1, Ordering::Relaxed);
        return link
            .outbox
            .send(Outgoing::Message(welcome(&provisional.token, ttl, false)))
            .await;
    };
    shared.stats.resumes_ok.fetch_add(1, Ordering::Relaxed);
    if let Some(previous) = shared
        .state
        .attach(&old, ctx.connection, link.outbox.clone())
        && let Some(prev) = shared.registry.link(previous)
    {
        // A half-open predecessor still held the session: it is replaced.
        prev.stop.send_replace(Some(DisconnectReason::Replaced));
    }
    let fresh_session = link.session();
    shared.state.discard(provisional.sid);
    drop(fresh_session);
    *link
        .session
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = old;
    if !link
        .outbox
        .send(Outgoing::Message(welcome(&fresh, ttl, true)))
        .await
    {
        return false;
    }
    for p in pushes {
        if !link.outbox.send(Outgoing::Shared(p)).await {
            return false;
        }
    }
    true
}

/// Queues a message for the application; false if the inbox is gone (server stopping).
async fn to_inbox(inbox: &mpsc::Sender<crate::InboxItem>, ctx: &Ctx, message: Message) -> bool {
    let item = crate::InboxItem {
        connection: ctx.connection,
        peer: ctx.peer,
        received_at: crate::clock::wall_clock(),
        message,
    };
    inbox.send(item).await.is_ok()
}

/// Graceful shutdown: lets requests in flight finish (their answers are queued before the
/// Close), for at most the grace period.
async fn drain(shared: &Shared, running: &mut Running) {
    let all_done = async {
        while running.core.in_flight() > 0 {
            if !running.wait_one().await {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(shared.grace(), all_done).await;
}
