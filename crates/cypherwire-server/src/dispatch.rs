//! One request's run: its handler (panics contained, the deadline enforced), exactly one
//! answer recorded in the session, and the guard that tells the connection's reader the
//! request is done, however its work ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use cypherwire_wire::{Request, Response, StatusCode};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::core::Ticket;
use crate::handle::ServerHandle;
use crate::handler::{Ctx, HandlerError, Reply};
use crate::outgoing::{Outgoing, Session};
use crate::router::Router;
use crate::shared::Shared;
use crate::unwind::{CatchUnwind, Panicked};

/// A request's end: its id and the ticket it was started with.
pub(crate) type Report = (u64, Ticket);

/// Tells the connection's reader that a request is done when dropped, however its work ends
/// (answered, failed, past its deadline, cancelled, aborted).
pub(crate) struct Done {
    /// `None` once the reader was told directly (the work finished in its first poll).
    tx: Option<mpsc::Sender<Report>>,
    id: u64,
    ticket: Ticket,
}

impl Done {
    /// A guard for request `id`, started with `ticket`, reporting to `tx`.
    pub(crate) fn new(tx: mpsc::Sender<Report>, id: u64, ticket: Ticket) -> Self {
        Self {
            tx: Some(tx),
            id,
            ticket,
        }
    }

    /// The work ended where the reader can see it: the reader counts it itself, nothing is
    /// sent. Returns what to count.
    pub(crate) fn settle(mut self) -> (u64, Ticket) {
        self.tx = None;
        (self.id, self.ticket)
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        // Never full: a request starts only while fewer than the channel's capacity are in
        // flight, and each counts until its report is received, so reports queued plus
        // requests running never exceed it. The reader may be gone (the connection ended
        // first): nothing is left to count then.
        if let Some(tx) = self.tx.take() {
            let _ = tx.try_send((self.id, self.ticket));
        }
    }
}

/// Where a dispatched request's work is.
pub(crate) enum Dispatched {
    /// It finished in its first poll; its guard is handed back to be settled.
    Finished(Done),
    /// It runs on a task of its own that a `Cancel` may abort.
    Running(AbortHandle),
    /// It runs on a task that only answers (no route, deadline already passed).
    Answering,
}

/// Records the answer in the session and sends it to whichever connection the session is
/// attached to now.
async fn answer(session: &Session, resp: Response) {
    if let Some(waiting) = answer_now(session, resp) {
        waiting.await;
    }
}

/// Runs one request: the handler (with panics contained and the deadline enforced), then
/// exactly one response. The work is polled once right here: a handler that finishes without
/// waiting (the common case: no I/O) is answered without a task of its own; otherwise the rest
/// runs in its own task, which `Cancel` aborts through the returned handle.
pub(crate) async fn dispatch(
    shared: &Arc<Shared>,
    router: &Router,
    ctx: &Ctx,
    req: Request,
    session: Arc<Session>,
    done: Done,
) -> Dispatched {
    let id = req.id;
    let deadline = req.deadline;
    let started = crate::clock::monotonic();
    let Some(route) = router.lookup(&req.path, &req.operation) else {
        router
            .unmatched
            .record(StatusCode::NOT_FOUND, started.elapsed());
        let text = format!("no handler for {} {}", req.path, req.operation);
        tokio::spawn(async move {
            let _done = done;
            answer(&session, Response::error(id, StatusCode::NOT_FOUND, text)).await;
        });
        return Dispatched::Answering;
    };
    if deadline.is_some_and(|d| d.is_zero()) {
        route
            .metrics
            .record(StatusCode::DEADLINE_EXCEEDED, started.elapsed());
        tokio::spawn(async move {
            let _done = done;
            let resp = Response::error(id, StatusCode::DEADLINE_EXCEEDED, "deadline exceeded");
            answer(&session, resp).await;
        });
        return Dispatched::Answering;
    }
    let mut ctx = ctx.clone();
    ctx.request_id = Some(id);
    ctx.deadline = deadline;
    ctx.session = Some(session.id());
    let connection = ctx.connection;
    let span = tracing::debug_span!("request", id, path = %req.path, operation = %req.operation);
    let mut work = tracing::Instrument::instrument(CatchUnwind(route.handler.call(req, ctx)), span);
    let metrics = route.metrics.clone();
    let kick = move |shared: Arc<Shared>| {
        // The answer is queued ahead of the Close that kicking sends.
        let _ = ServerHandle::from_shared(shared).kick(connection);
    };
    // The work (a boxed future, so `Unpin`) is polled once right here. Finished, it is
    // answered here too, and only an answer that finds the outbox full moves to a task.
    let first = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut work).poll(cx))).await;
    if let Poll::Ready(outcome) = first {
        let (resp, close_after) = response(id, Some(outcome));
        metrics.record(resp.status.code, started.elapsed());
        let Some(waiting) = answer_now(&session, resp) else {
            if close_after {
                kick(shared.clone());
            }
            return Dispatched::Finished(done);
        };
        let shared = shared.clone();
        let task = async move {
            let _done = done;
            waiting.await;
            if close_after {
                kick(shared);
            }
        };
        return Dispatched::Running(tokio::spawn(task).abort_handle());
    }
    let shared = shared.clone();
    let task = async move {
        let _done = done;
        let outcome = match deadline {
            // Past the deadline the work is dropped, not left running.
            Some(d) => tokio::time::timeout(d, work).await.ok(),
            None => Some(work.await),
        };
        let (resp, close_after) = response(id, outcome);
        metrics.record(resp.status.code, started.elapsed());
        answer(&session, resp).await;
        if close_after {
            kick(shared);
        }
    };
    Dispatched::Running(tokio::spawn(task).abort_handle())
}

/// What a request handler's future gives.
type HandlerOutput = Result<Reply, HandlerError>;

/// The answer to request `id` from its work's outcome (`None`: past its deadline), and
/// whether the handler asked for the connection to be closed after it.
fn response(id: u64, outcome: Option<Result<HandlerOutput, Panicked>>) -> (Response, bool) {
    match outcome {
        None => (
            Response::error(id, StatusCode::DEADLINE_EXCEEDED, "deadline exceeded"),
            false,
        ),
        Some(Ok(Ok(reply))) => (
            Response::ok(id, reply.data).with_metadata(reply.metadata),
            reply.close_after,
        ),
        Some(Ok(Err(e))) => (Response::error(id, e.code, e.message), false),
        Some(Err(Panicked)) => {
            tracing::error!(request = id, "handler panicked");
            (
                Response::error(id, StatusCode::INTERNAL, "internal error"),
                false,
            )
        }
    }
}

/// Records the answer in the session and queues it without waiting. If the outbox is full,
/// what is left to do (wait for room) is returned.
fn answer_now(session: &Session, resp: Response) -> Option<impl Future<Output = ()> + use<>> {
    let (msg, tx) = session.complete(resp);
    let tx = tx?;
    let out = tx.try_send_back(Outgoing::Shared(msg))?;
    Some(async move {
        tx.send(out).await;
    })
}
