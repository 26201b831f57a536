//! The driver: owns the connection, reconnects, resumes, resends, delivers. One future,
//! polled by whichever caller or task is at hand (`crate::engine`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use cypherwire_session::{
    Error as SessionError, HeartbeatPolicy, SecureReader, SecureWriter, connect,
};
use cypherwire_wire::{Action, Cancel, Close, CloseCode, Message, Request};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::backoff::Jitter;
use crate::connect::{BoxIo, DynConnect};
use crate::core::{ClientConnection, Received, SessionMemo};
use crate::error::Error;
use crate::pending::{Entry, PendingTable};
use crate::shared::{Command, Config, Incoming, Observed, OfflineReason, Status};

type Reply = oneshot::Sender<Result<cypherwire_wire::Response, Error>>;

/// Where pushes and actions go: the application's stream once it took it, nowhere before (or
/// after it dropped it), so an unread buffer never stalls the connection.
pub(crate) struct IncomingSink {
    tx: mpsc::Sender<Incoming>,
    taken: Arc<std::sync::atomic::AtomicBool>,
    /// Actions with a handler of their own ([`crate::ClientBuilder::on_action`]) go here.
    handled: Option<crate::actions::Runner>,
}

impl IncomingSink {
    pub(crate) fn new(
        tx: mpsc::Sender<Incoming>,
        taken: Arc<std::sync::atomic::AtomicBool>,
        handled: Option<crate::actions::Runner>,
    ) -> Self {
        Self { tx, taken, handled }
    }

    /// Hands `item` to its action handler or to the application, waiting while the buffer
    /// is full (backpressure), or discards it when nobody listens.
    async fn deliver(&self, item: Incoming) {
        use std::sync::atomic::Ordering;
        let item = match (item, &self.handled) {
            (Incoming::Action(a), Some(runner)) => match runner.take(a).await {
                Some(a) => Incoming::Action(a),
                None => return,
            },
            (item, _) => item,
        };
        if !self.taken.load(Ordering::Acquire) {
            return;
        }
        if self.tx.send(item).await.is_err() {
            // The stream was dropped: discard from now on.
            self.taken.store(false, Ordering::Release);
        }
    }
}

/// The time as the sans-IO types want it: tokio's clock, so paused test time applies.
fn monotonic() -> std::time::Instant {
    Instant::now().into_std()
}

struct State {
    config: Arc<Config>,
    connector: Arc<dyn DynConnect>,
    status: watch::Sender<Status>,
    events: broadcast::Sender<Status>,
    incoming: IncomingSink,
    observed: Arc<Observed>,
    pending: PendingTable<Reply>,
    actions: VecDeque<Action>,
    session: SessionMemo,
    closing: Option<(Instant, oneshot::Sender<()>)>,
}

impl State {
    fn set_status(&self, s: Status) {
        if *self.status.borrow() != s {
            tracing::info!(peer = %self.connector.describe(), status = ?s, "client status");
            self.status.send_replace(s.clone());
            let _ = self.events.send(s);
        }
    }

    /// Refuses a request that could never be sent: larger than the whole request buffer (by
    /// the buffer's estimate, `bytes`) or than the session's message limit (its encoding).
    fn fits(&self, request: Request, bytes: usize) -> Result<Request, Error> {
        let buffer = self.config.max_pending_bytes;
        if bytes > buffer {
            return Err(Error::MessageTooLarge {
                len: bytes,
                max: buffer,
            });
        }
        let session = &self.config.session;
        let msg = Message::Request(request);
        if let Some(len) = session.oversize(&msg) {
            let max = session.max_message_len();
            return Err(Error::MessageTooLarge { len, max });
        }
        match msg {
            Message::Request(r) => Ok(r),
            _ => unreachable!("built as a request"),
        }
    }

    /// Handles a command from a handle. Returns false when the client must stop now.
    fn command(&mut self, cmd: Command, out: &mut Vec<Message>) {
        match cmd {
            Command::Request { request, reply } => {
                if self.closing.is_some() {
                    let _ = reply.send(Err(Error::Closed));
                    return;
                }
                let bytes = request.approx_size();
                // One that could never be sent fails now, before it waits in the table.
                let request = match self.fits(request, bytes) {
                    Ok(request) => request,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                };
                let expires = request.deadline.map(|d| Instant::now() + d);
                let entry = Entry::new(request, bytes, expires.map(Instant::into_std), reply);
                if let Err((full, entry)) = self.pending.insert(entry) {
                    let _ = entry.reply.send(Err(Error::BufferFull {
                        pending: full.pending,
                        bytes: full.bytes,
                    }));
                }
                // Sent by the connection loop (with every other request that arrived meanwhile);
                // while offline it waits in the table.
            }
            Command::Cancel(id) => {
                if self.pending.remove(id).is_some() {
                    out.push(Cancel::new(id).into());
                }
            }
            Command::Emit { action, reply } => {
                if self.closing.is_some() {
                    let _ = reply.send(Err(Error::Closed));
                } else if self.actions.len() >= self.config.max_pending {
                    let _ = reply.send(Err(Error::BufferFull {
                        pending: self.actions.len(),
                        bytes: 0,
                    }));
                } else {
                    self.actions.push_back(action);
                    let _ = reply.send(Ok(()));
                }
            }
            Command::Close { drain, done } => {
                self.closing = Some((Instant::now() + drain, done));
            }
        }
    }

    /// Fails every waiting request with `err`.
    fn fail_all(&mut self, err: &Error) {
        for e in self.pending.drain() {
            let _ = e.reply.send(Err(err.clone()));
        }
    }

    fn expire(&mut self, out: &mut Vec<Message>) {
        let now = monotonic();
        for id in self.pending.expired(now) {
            if let Some(e) = self.pending.remove(id) {
                let _ = e.reply.send(Err(Error::DeadlineExceeded));
                out.push(Cancel::new(id).into());
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.pending.next_deadline().map(Instant::from_std)
    }
}

type Reader = SecureReader<ReadHalf<BoxIo>>;
type Writer = SecureWriter<WriteHalf<BoxIo>>;

pub(crate) async fn run(
    config: Arc<Config>,
    connector: Arc<dyn DynConnect>,
    mut rx: crate::queue::Receiver<Command>,
    status: watch::Sender<Status>,
    events: broadcast::Sender<Status>,
    incoming: IncomingSink,
    observed: Arc<Observed>,
) {
    let mut st = State {
        observed,
        pending: PendingTable::new(config.max_pending, config.max_pending_bytes),
        config,
        connector,
        status,
        events,
        incoming,
        actions: VecDeque::new(),
        session: SessionMemo::default(),
        closing: None,
    };
    let mut jitter = Jitter::new();
    // Attempts that failed in this outage, and when it began.
    let mut failed: u32 = 0;
    let mut offline_since = Instant::now();
    // Whether this outage's Offline was reported (once per outage).
    let mut told_offline = false;
    let mut ever_online = false;
    loop {
        if closing_done(&mut st) {
            return;
        }
        st.set_status(if ever_online || failed > 0 {
            Status::Reconnecting {
                attempt: if ever_online { failed + 1 } else { failed },
            }
        } else {
            Status::Connecting
        });
        // Connect, while still taking commands (requests queue up while offline).
        let attempt = tokio::time::timeout(
            st.config.connect_timeout,
            dial(st.config.clone(), st.connector.clone()),
        );
        let Some(conn) = offline_until(&mut st, &mut rx, attempt).await else {
            return;
        };
        let conn = match conn {
            Ok(Ok(halves)) => Ok(halves),
            Ok(Err(e)) => Err(OfflineReason::from_attempt(&e)),
            Err(_) => Err(OfflineReason::TimedOut),
        };
        let why = match conn {
            Ok((reader, writer)) => {
                let mut reached = false;
                let end = online(&mut st, &mut rx, reader, writer, &mut reached).await;
                ever_online |= reached;
                match end {
                    End::Stop => return,
                    End::Kicked(reason) if !st.config.reconnect_after_kick => {
                        let err = Error::Kicked {
                            reason: reason.clone(),
                        };
                        st.observed.set_stopped(&err);
                        st.set_status(Status::Kicked { reason });
                        st.fail_all(&err);
                        give_up(&mut st, rx, err).await;
                        return;
                    }
                    End::Kicked(reason) => {
                        // The session is gone at the server: the next connection starts a new
                        // one.
                        st.session = SessionMemo::default();
                        failed = 0;
                        offline_since = Instant::now();
                        st.pending.mark_all_unsent();
                        told_offline = true;
                        st.set_status(Status::Offline {
                            reason: OfflineReason::ServerClosed {
                                code: CloseCode::KICKED,
                                reason,
                            },
                        });
                        continue;
                    }
                    End::Lost(reason)
                        if !st.config.retry_rejected
                            && let Some(err) = reason.rejection_error() =>
                    {
                        // Banned while connected: reconnecting would only be refused.
                        st.observed.set_stopped(&err);
                        st.set_status(Status::Offline { reason });
                        st.set_status(Status::GaveUp);
                        st.fail_all(&err);
                        give_up(&mut st, rx, err).await;
                        return;
                    }
                    End::Lost(reason) if reached => {
                        // A new outage. Reconnect at once the first time, then back off.
                        failed = 0;
                        offline_since = Instant::now();
                        st.pending.mark_all_unsent();
                        told_offline = true;
                        st.set_status(Status::Offline { reason });
                        continue;
                    }
                    End::Lost(reason) => {
                        // Lost before it came online (e.g. a server that is shutting down
                        // accepted it): one more failed attempt of the same outage.
                        st.pending.mark_all_unsent();
                        reason
                    }
                }
            }
            Err(why) => why,
        };
        failed += 1;
        tracing::debug!(peer = %st.connector.describe(), reason = %why, "connection attempt failed");
        // A key that worked before and fails now is a server change or a damaged handshake,
        // not a typo: that one is retried like a network fault.
        let proven = ever_online && why == OfflineReason::AuthenticationFailed;
        if let Some(err) = why.rejection_error()
            && !st.config.retry_rejected
            && !proven
        {
            // Retrying would cost the server (and the ban budget) an attempt each time for the
            // same answer: report it at once.
            st.observed.set_stopped(&err);
            st.set_status(Status::Offline { reason: why });
            st.set_status(Status::GaveUp);
            st.fail_all(&err);
            give_up(&mut st, rx, err).await;
            return;
        }
        if st.config.backoff.gives_up(failed, offline_since.elapsed()) {
            if !told_offline {
                st.set_status(Status::Offline { reason: why });
            }
            let err = Error::GaveUp { attempts: failed };
            st.observed.set_stopped(&err);
            st.set_status(Status::GaveUp);
            st.fail_all(&err);
            give_up(&mut st, rx, err).await;
            return;
        }
        let delay = st.config.backoff.delay(failed - 1, jitter.next());
        let delay = why.retry_after().map_or(delay, |asked| delay.max(asked));
        if !told_offline {
            told_offline = true;
            st.set_status(Status::Offline { reason: why });
        }
        if !wait(&mut st, &mut rx, delay).await {
            return;
        }
    }
}

async fn dial(
    config: Arc<Config>,
    connector: Arc<dyn DynConnect>,
) -> Result<(Reader, Writer), SessionError> {
    let io = connector.connect().await?;
    let s = connect(io, &config.auth, &config.session).await?;
    Ok(s.into_split())
}

fn closing_now(st: &State) -> bool {
    st.closing
        .as_ref()
        .is_some_and(|(until, _)| st.pending.len() == 0 || Instant::now() >= *until)
}

fn closing_done(st: &mut State) -> bool {
    if closing_now(st) {
        finish(st);
        true
    } else {
        false
    }
}

fn finish(st: &mut State) {
    st.fail_all(&Error::Closed);
    st.set_status(Status::Closed);
    if let Some((_, done)) = st.closing.take() {
        let _ = done.send(());
    }
}

/// Waits out a backoff delay while taking commands; false if the client must stop.
async fn wait(st: &mut State, rx: &mut crate::queue::Receiver<Command>, delay: Duration) -> bool {
    offline_until(st, rx, tokio::time::sleep(delay))
        .await
        .is_some()
}

/// Runs `fut` (a connection attempt or a backoff delay) while offline: requests keep queueing
/// (bounded), deadlines keep expiring. `None` if the client must stop (closed, or every handle
/// is gone).
async fn offline_until<F: Future>(
    st: &mut State,
    rx: &mut crate::queue::Receiver<Command>,
    fut: F,
) -> Option<F::Output> {
    tokio::pin!(fut);
    // One timer, moved when the earliest deadline changes (as in the connection loop).
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(timer);
    loop {
        let deadline = st.next_deadline();
        aim(timer.as_mut(), deadline);
        tokio::select! {
            out = &mut fut => return Some(out),
            () = &mut timer, if deadline.is_some() => {
                let mut ignored = Vec::new();
                st.expire(&mut ignored);
            }
            cmd = rx.recv() => {
                let cmd = cmd?;
                let mut ignored = Vec::new();
                st.command(cmd, &mut ignored);
                if closing_now(st) {
                    finish(st);
                    return None;
                }
            }
        }
    }
}

/// Moves `timer` to `deadline` if it is set elsewhere (a timer kept for a loop's life instead
/// of one made per turn; with no deadline the caller does not poll it).
fn aim(timer: std::pin::Pin<&mut tokio::time::Sleep>, deadline: Option<Instant>) {
    if let Some(d) = deadline
        && timer.deadline() != d
    {
        timer.reset(d);
    }
}

/// After stopping for good: answer every new request with `err` until the handles are gone.
async fn give_up(st: &mut State, mut rx: crate::queue::Receiver<Command>, err: Error) {
    st.observed.set_stopped(&err);
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Command::Request { reply, .. } => {
                let _ = reply.send(Err(err.clone()));
            }
            Command::Close { done, .. } => {
                st.set_status(Status::Closed);
                let _ = done.send(());
                return;
            }
            Command::Emit { reply, .. } => {
                let _ = reply.send(Err(err.clone()));
            }
            Command::Cancel(_) => {}
        }
    }
}

enum End {
    Stop,
    Lost(OfflineReason),
    Kicked(String),
}

/// How many queued commands one turn of the connection loop takes before writing.
const COMMAND_BATCH: usize = 256;

/// One connection's life: resume, resend, then serve commands and messages until it ends.
/// `reached` is set once the server welcomes it (it is online).
async fn online(
    st: &mut State,
    rx: &mut crate::queue::Receiver<Command>,
    mut reader: Reader,
    mut writer: Writer,
    reached: &mut bool,
) -> End {
    let mut out: Vec<Message> = Vec::new();
    // Resume first, then everything unanswered, oldest first: the server answers resends of
    // completed requests from its cache.
    let heartbeat = HeartbeatPolicy::new(st.config.heartbeat_interval, st.config.heartbeat_missed);
    let (mut conn, resume) = ClientConnection::open(&st.session, heartbeat, monotonic());
    if let Some(r) = resume {
        out.push(r.into());
    }

    let interval = st.config.heartbeat_interval;
    let mut heartbeat = tokio::time::interval_at(Instant::now() + interval, interval);
    // One timer for the connection's life, moved when the earliest deadline changes: a timer
    // made per turn of the loop would be registered and removed on every message.
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(timer);
    loop {
        // Control messages first (Resume, Cancel, Ping, Pong), then the unsent requests, oldest
        // first, encoded straight from the pending table, then actions.
        let have_work = !out.is_empty() || st.pending.has_unsent() || !st.actions.is_empty();
        if have_work && conn.may_send() {
            let mut queued = out.drain(..).try_for_each(|m| writer.queue_message(&m));
            queued = queued.and_then(|()| st.pending.send_unsent(|m| writer.queue_message(m)));
            queued = queued.and_then(|()| {
                st.actions
                    .drain(..)
                    .try_for_each(|a| writer.queue_message(&Message::from(a)))
            });
            if queued.is_err() {
                return End::Lost(OfflineReason::ConnectionLost(
                    "cannot encode a message".into(),
                ));
            }
            if let Err(e) = writer.flush().await {
                return End::Lost(OfflineReason::ConnectionLost(format!("write failed: {e}")));
            }
        }
        if st.closing.is_some() && closing_now(st) {
            let _ = writer.queue_message(&Close::new(CloseCode::NORMAL, "client closing").into());
            let _ = writer.close().await;
            finish(st);
            return End::Stop;
        }
        let closing_until = st.closing.as_ref().map(|(until, _)| *until);
        let deadline = match (st.next_deadline(), closing_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        aim(timer.as_mut(), deadline);
        // In this order, without a random draw per poll: answers first (they free room in the
        // pending table), then commands. Reading cannot starve the rest: the socket counts
        // against tokio's cooperative budget and reports pending when it runs out.
        tokio::select! {
            biased;
            msg = reader.recv_message() => {
                let msg = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) => {
                        return End::Lost(OfflineReason::ConnectionLost(
                            "the server closed the session".into(),
                        ));
                    }
                    // The responder's refusal of the handshake's last message (identity mode
                    // checks the client's key only then) arrives as the first frame.
                    Err(e @ (SessionError::AuthenticationFailed | SessionError::Refused(_))) => {
                        return End::Lost(OfflineReason::from_attempt(&e));
                    }
                    Err(e) => return End::Lost(OfflineReason::ConnectionLost(e.to_string())),
                };
                match conn.receive(&mut st.session, msg, monotonic) {
                    Received::Response(resp) => {
                        if let Some(e) = st.pending.remove(resp.id) {
                            let _ = e.reply.send(Ok(resp));
                        }
                    }
                    Received::Push(p) => st.incoming.deliver(Incoming::Push(p)).await,
                    Received::Action(a) => st.incoming.deliver(Incoming::Action(a)).await,
                    Received::Online { resumed } => {
                        *reached = true;
                        st.set_status(Status::Online { resumed });
                    }
                    Received::Reply(m) => out.push(m),
                    Received::RoundTrip(d) => {
                        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX - 1);
                        st.observed.rtt.store(micros, std::sync::atomic::Ordering::Relaxed);
                    }
                    Received::Nothing => {}
                    Received::Lost(why) => return End::Lost(why),
                    Received::Kicked(why) => return End::Kicked(why),
                }
            }
            cmd = rx.recv() => match cmd {
                Some(cmd) => {
                    st.command(cmd, &mut out);
                    // Take whatever else is already queued, so that one write carries a burst
                    // of requests (bounded, so answers keep being read).
                    for _ in 0..COMMAND_BATCH {
                        match rx.try_recv() {
                            Some(cmd) => st.command(cmd, &mut out),
                            None => break,
                        }
                    }
                }
                None => return End::Stop,
            },
            _ = heartbeat.tick() => match conn.heartbeat_due(monotonic()) {
                Ok(ping) => out.push(ping.into()),
                Err(why) => return End::Lost(why),
            },
            () = &mut timer, if deadline.is_some() => {
                // Everything due is expired here, so the next deadline (if any) is later.
                st.expire(&mut out);
            }
        }
    }
}
