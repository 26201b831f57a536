//! One connection's protocol rules, without I/O or a runtime: which messages a client may send
//! and when, the idle rule, and the bound on requests in flight. The driver (`conn.rs`) reads
//! and writes the stream, runs handlers and owns the timers; it asks this core what each
//! message means and feeds it the time, so every rule here is tested in virtual time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cypherwire_session::fasthash::FastState;
use cypherwire_wire::{Action, Message, Pong, Request, Resume};

use crate::events::DisconnectReason;

/// Identifies one started request among those of its connection, so that a late completion
/// of a cancelled request does not end the tracking of a later one with the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket(u64);

/// What the driver does next with a received message.
#[derive(Debug)]
pub(crate) enum Step<T> {
    /// The connection's first message asks to continue an earlier session.
    Resume(Resume),
    /// A request, to run (or answer from the session) under the in-flight bound.
    Request(Request),
    /// A named action.
    Action(Action),
    /// A `Cancel` for a request still running: stop its work (the handle it was tracked with)
    /// and drop its answer.
    Abort(u64, T),
    /// Send this answer right away (the `Pong` to a `Ping`).
    Reply(Message),
    /// Nothing to do (a `Pong`; a `Cancel` for nothing running).
    Nothing,
    /// The connection ends for this reason.
    End(DisconnectReason),
}

/// The sans-IO state of one server connection after its handshake. `T` is whatever the driver
/// stops a running request with (an abort handle; `()` in tests).
#[derive(Debug)]
pub(crate) struct ServerConnection<T> {
    /// No message has been received yet: only now is a `Resume` legal.
    first: bool,
    idle_timeout: Duration,
    last_activity: Instant,
    max_in_flight: usize,
    /// Started requests not yet finished (including those answered without a task).
    in_flight: usize,
    next_ticket: u64,
    /// Requests whose work runs on its own and can be stopped by a `Cancel`.
    running: HashMap<u64, (Ticket, T), FastState>,
}

impl<T> ServerConnection<T> {
    /// A connection authenticated at `now`, with its idle timeout and in-flight bound (both
    /// non-zero: [`ServerLimits`](crate::ServerLimits) validates them).
    pub(crate) fn new(idle_timeout: Duration, max_in_flight: usize, now: Instant) -> Self {
        Self {
            first: true,
            idle_timeout,
            last_activity: now,
            max_in_flight,
            in_flight: 0,
            next_ticket: 0,
            running: HashMap::default(),
        }
    }

    /// What `msg`, received at `now`, means.
    pub(crate) fn receive(&mut self, msg: Message, now: Instant) -> Step<T> {
        self.last_activity = now;
        let first = std::mem::replace(&mut self.first, false);
        match msg {
            Message::Resume(resume) if first => Step::Resume(resume),
            Message::Request(req) => Step::Request(req),
            Message::Action(action) => Step::Action(action),
            Message::Cancel(cancel) => match self.running.remove(&cancel.id) {
                Some((_, handle)) => Step::Abort(cancel.id, handle),
                None => Step::Nothing,
            },
            Message::Ping(ping) => Step::Reply(Pong::new(ping.nonce).into()),
            Message::Pong(_) => Step::Nothing,
            Message::Close(_) => Step::End(DisconnectReason::Closed),
            other => Step::End(DisconnectReason::ProtocolError(format!(
                "a client may not send kind 0x{:02x} here",
                other.kind()
            ))),
        }
    }

    /// True when as many requests are in flight as the bound allows: the driver starts no
    /// further request (and reads nothing more) until one finishes.
    pub(crate) fn at_capacity(&self) -> bool {
        self.in_flight >= self.max_in_flight
    }

    /// The most requests in flight at once.
    pub(crate) fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Requests started and not yet finished.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Counts a request as in flight until [`finished`](Self::finished) is called with the
    /// ticket returned here.
    pub(crate) fn start(&mut self) -> Ticket {
        debug_assert!(
            !self.at_capacity(),
            "the driver starts requests only below the bound"
        );
        self.in_flight += 1;
        self.next_ticket += 1;
        Ticket(self.next_ticket)
    }

    /// Remembers how to stop request `id` (started with `ticket`), whose work runs on its own.
    pub(crate) fn track(&mut self, id: u64, ticket: Ticket, handle: T) {
        self.running.insert(id, (ticket, handle));
    }

    /// Request `id`, started with `ticket`, is done (answered, failed, cancelled or stopped).
    pub(crate) fn finished(&mut self, id: u64, ticket: Ticket) {
        self.in_flight = self.in_flight.saturating_sub(1);
        // Most requests finish without a task of their own and were never tracked.
        if !self.running.is_empty() && self.running.get(&id).is_some_and(|(t, _)| *t == ticket) {
            self.running.remove(&id);
        }
    }

    /// When the connection is idle if no message arrives before (requests still running do
    /// not count: idle means the peer sent nothing).
    pub(crate) fn idle_deadline(&self) -> Instant {
        self.last_activity + self.idle_timeout
    }

    /// True if at `now` the connection has been idle for its whole timeout.
    pub(crate) fn is_idle(&self, now: Instant) -> bool {
        now >= self.idle_deadline()
    }

    /// The handles of every request still running (the connection is going away).
    pub(crate) fn take_running(&mut self) -> impl Iterator<Item = T> + '_ {
        self.running.drain().map(|(_, (_, handle))| handle)
    }
}

#[cfg(test)]
mod tests {
    use cypherwire_wire::{Cancel, Close, CloseCode, Ping, Push, Response, Welcome};

    use super::*;

    const IDLE: Duration = Duration::from_secs(300);

    #[expect(clippy::disallowed_methods, reason = "a fixed origin for virtual time")]
    fn origin() -> Instant {
        Instant::now()
    }

    fn conn(max_in_flight: usize) -> (ServerConnection<&'static str>, Instant) {
        let t0 = origin();
        (ServerConnection::new(IDLE, max_in_flight, t0), t0)
    }

    fn protocol_error(step: Step<&str>) -> String {
        match step {
            Step::End(DisconnectReason::ProtocolError(text)) => text,
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    #[test]
    fn a_resume_is_legal_only_as_the_first_message() {
        let (mut c, t0) = conn(4);
        let resume = Resume::new([7; 16], 3);
        match c.receive(resume.clone().into(), t0) {
            Step::Resume(r) => assert_eq!(r.last_push_seq, 3),
            other => panic!("expected Resume, got {other:?}"),
        }
        let text = protocol_error(c.receive(resume.into(), t0));
        assert_eq!(text, "a client may not send kind 0x41 here");

        let (mut c, t0) = conn(4);
        assert!(matches!(c.receive(Ping::new(1).into(), t0), Step::Reply(_)));
        let text = protocol_error(c.receive(Resume::new([7; 16], 0).into(), t0));
        assert_eq!(text, "a client may not send kind 0x41 here");
    }

    #[test]
    fn kinds_only_a_server_sends_end_the_connection() {
        let server_kinds: [(Message, u8); 3] = [
            (Response::ok(1, 2).into(), 0x02),
            (Push::new(1, 2).into(), 0x04),
            (Welcome::new([0; 16], 1_000, false).into(), 0x40),
        ];
        for (msg, kind) in server_kinds {
            let (mut c, t0) = conn(4);
            let text = protocol_error(c.receive(msg, t0));
            assert_eq!(
                text,
                format!("a client may not send kind 0x{kind:02x} here")
            );
        }
    }

    #[test]
    fn ping_is_answered_with_its_nonce_pong_and_close_end_or_do_nothing() {
        let (mut c, t0) = conn(4);
        match c.receive(Ping::new(99).into(), t0) {
            Step::Reply(Message::Pong(p)) => assert_eq!(p.nonce, 99),
            other => panic!("expected a Pong, got {other:?}"),
        }
        assert!(matches!(c.receive(Pong::new(5).into(), t0), Step::Nothing));
        assert!(matches!(
            c.receive(Close::new(CloseCode::NORMAL, "bye").into(), t0),
            Step::End(DisconnectReason::Closed)
        ));
    }

    #[test]
    fn idle_exactly_at_the_deadline_and_each_message_moves_it() {
        let (mut c, t0) = conn(4);
        assert_eq!(c.idle_deadline(), t0 + IDLE);
        assert!(!c.is_idle(t0 + IDLE - Duration::from_nanos(1)));
        assert!(c.is_idle(t0 + IDLE));

        let t1 = t0 + Duration::from_secs(200);
        c.receive(Pong::new(1).into(), t1);
        assert!(!c.is_idle(t0 + IDLE));
        assert_eq!(c.idle_deadline(), t1 + IDLE);
        assert!(c.is_idle(t1 + IDLE));
    }

    #[test]
    fn the_in_flight_bound_counts_started_requests_until_they_finish() {
        let (mut c, t0) = conn(2);
        let a = c.start();
        assert!(!c.at_capacity());
        let b = c.start();
        assert!(c.at_capacity());
        assert_eq!(c.in_flight(), 2);
        // Running handlers are not activity: a peer that sends nothing is idle.
        assert!(c.is_idle(t0 + IDLE));

        c.finished(1, a);
        assert!(!c.at_capacity());
        assert_eq!(c.in_flight(), 1);
        // A second end for the same request (or an unknown one) never underflows.
        c.finished(2, b);
        c.finished(2, b);
        assert_eq!(c.in_flight(), 0);
        assert!(!c.at_capacity());
    }

    #[test]
    fn cancel_aborts_a_running_request_once_and_nothing_else() {
        let (mut c, t0) = conn(4);
        let t = c.start();
        c.track(7, t, "handle of 7");
        assert!(matches!(
            c.receive(Cancel::new(8).into(), t0),
            Step::Nothing
        ));
        match c.receive(Cancel::new(7).into(), t0) {
            Step::Abort(7, h) => assert_eq!(h, "handle of 7"),
            other => panic!("expected Abort(7), got {other:?}"),
        }
        assert!(matches!(
            c.receive(Cancel::new(7).into(), t0),
            Step::Nothing
        ));
        // The aborted work still reports its end, which frees its slot.
        assert_eq!(c.in_flight(), 1);
        c.finished(7, t);
        assert_eq!(c.in_flight(), 0);
    }

    #[test]
    fn a_late_end_of_an_earlier_run_keeps_a_later_run_with_the_same_id_cancellable() {
        let (mut c, t0) = conn(4);
        let old = c.start();
        c.track(7, old, "old");
        let Step::Abort(7, _) = c.receive(Cancel::new(7).into(), t0) else {
            panic!("expected Abort(7)");
        };
        let new = c.start();
        c.track(7, new, "new");
        c.finished(7, old);
        match c.receive(Cancel::new(7).into(), t0) {
            Step::Abort(7, h) => assert_eq!(h, "new"),
            other => panic!("expected Abort(7) of the later run, got {other:?}"),
        }
        c.finished(7, new);
        assert_eq!(c.in_flight(), 0);
    }

    #[test]
    fn finishing_removes_the_handle_and_take_running_returns_the_rest() {
        let (mut c, t0) = conn(4);
        let a = c.start();
        c.track(1, a, "one");
        let b = c.start();
        c.track(2, b, "two");
        c.finished(1, a);
        assert!(matches!(
            c.receive(Cancel::new(1).into(), t0),
            Step::Nothing
        ));
        let rest: Vec<_> = c.take_running().collect();
        assert_eq!(rest, ["two"]);
    }
}
