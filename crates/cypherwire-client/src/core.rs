//! One connection's protocol rules, without I/O or a runtime: what a connection sends first
//! (a `Resume` for the session the client holds), when it may send requests, which Welcome
//! makes it online and with which token, which pushes are new, and the heartbeat. The driver
//! (`driver.rs`) owns the stream, the pending table and the timers, and feeds this core the
//! messages and the time; every rule here is tested in virtual time.

use std::time::{Duration, Instant};

use cypherwire_session::{HeartbeatPolicy, LinkChange, LinkMonitor};
use cypherwire_wire::{CloseCode, Message, Ping, Pong, Push, Response, Resume, TokenBytes};

use crate::shared::OfflineReason;

/// What the client remembers of its session across connections.
#[derive(Debug, Default)]
pub(crate) struct SessionMemo {
    /// The token to resume with, once a Welcome brought one.
    pub(crate) token: Option<TokenBytes>,
    /// The highest push sequence number delivered on this session.
    pub(crate) last_push_seq: u64,
}

/// What the driver does with a received message.
#[derive(Debug)]
pub(crate) enum Received {
    /// The answer to a request.
    Response(Response),
    /// A push to deliver to the application (new on this session).
    Push(Push),
    /// An action to deliver to the application.
    Action(cypherwire_wire::Action),
    /// The session is established: the connection is online (`resumed`: the earlier session
    /// continues).
    Online {
        /// Whether the server continued the session the client presented.
        resumed: bool,
    },
    /// Send this right away (the `Pong` to a server's `Ping`).
    Reply(Message),
    /// The server answered our heartbeat after this long.
    RoundTrip(Duration),
    /// Nothing to do (a replayed push already delivered, the first of two Welcomes, a stale
    /// `Pong`).
    Nothing,
    /// The connection is lost for this reason.
    Lost(OfflineReason),
    /// An operator kicked the client (the server's words): its session is gone.
    Kicked(String),
}

/// The sans-IO state of one client connection after its handshake.
#[derive(Debug)]
pub(crate) struct ClientConnection {
    /// Welcomes still expected: one for the connection, one more answering a Resume.
    welcomes_due: u8,
    /// Nothing but the Resume may be sent yet (no session token is known).
    hold: bool,
    /// The highest push sequence number of the fresh session the connection was welcomed to,
    /// while a Resume is unanswered.
    provisional_max_seq: u64,
    /// Whether the server still answers (any message counts).
    link: LinkMonitor,
    heartbeat: HeartbeatPolicy,
    /// The last heartbeat sent: its nonce and when.
    ping_sent: Option<(u64, Instant)>,
    nonce: u64,
}

impl ClientConnection {
    /// A connection authenticated at `now` for the session in `memo`, and the `Resume` to send
    /// first if the client holds a session to continue.
    pub(crate) fn open(
        memo: &SessionMemo,
        heartbeat: HeartbeatPolicy,
        now: Instant,
    ) -> (Self, Option<Resume>) {
        let resume = memo
            .token
            .as_ref()
            .map(|t| Resume::new(t.0, memo.last_push_seq));
        let conn = Self {
            welcomes_due: if resume.is_some() { 2 } else { 1 },
            // Without a token to resume, nothing is sent until the connection's Welcome brings
            // one: a request that ran on a session whose token we never learnt could not be
            // resumed, and would run again after a cut.
            hold: resume.is_none(),
            provisional_max_seq: 0,
            link: LinkMonitor::new(heartbeat, now),
            heartbeat,
            ping_sent: None,
            nonce: 0,
        };
        (conn, resume)
    }

    /// True if requests and actions may be sent now (the Resume and control messages always
    /// may).
    pub(crate) fn may_send(&self) -> bool {
        !self.hold
    }

    /// What `msg` means; updates the session memo. `clock` is read only for what needs the
    /// time (a heartbeat's answer).
    pub(crate) fn receive(
        &mut self,
        memo: &mut SessionMemo,
        msg: Message,
        clock: impl FnOnce() -> Instant,
    ) -> Received {
        self.link.heard();
        match msg {
            Message::Response(resp) => Received::Response(resp),
            Message::Push(p) => {
                if self.welcomes_due > 0 {
                    // Between the connection's Welcome and the Resume answer: the fresh
                    // session's pushes.
                    self.provisional_max_seq = self.provisional_max_seq.max(p.seq);
                    Received::Push(p)
                } else if p.seq > memo.last_push_seq {
                    memo.last_push_seq = p.seq;
                    Received::Push(p)
                } else {
                    Received::Nothing
                }
            }
            Message::Action(a) => Received::Action(a),
            Message::Welcome(w) => {
                self.welcomes_due = self.welcomes_due.saturating_sub(1);
                self.hold = false;
                if self.welcomes_due > 0 {
                    // While a Resume is unanswered, keep the token it presented: if this
                    // connection dies before the answer, the next one must resume the same
                    // session, not the fresh one this first Welcome announces.
                    return Received::Nothing;
                }
                memo.token = Some(w.token);
                if !w.resumed {
                    // A new session: its numbering starts over (pushes it already sent us were
                    // delivered).
                    memo.last_push_seq = self.provisional_max_seq;
                }
                Received::Online { resumed: w.resumed }
            }
            Message::Ping(p) => Received::Reply(Pong::new(p.nonce).into()),
            // A stale or foreign Pong leaves the outstanding heartbeat waiting for its own.
            Message::Pong(p) => match self.ping_sent.take_if(|(n, _)| *n == p.nonce) {
                Some((_, at)) => Received::RoundTrip(clock().saturating_duration_since(at)),
                None => Received::Nothing,
            },
            Message::Close(c) => match c.code {
                CloseCode::KICKED => Received::Kicked(c.reason),
                CloseCode::BANNED => Received::Lost(OfflineReason::Banned { retry_after: None }),
                code => Received::Lost(OfflineReason::ServerClosed {
                    code,
                    reason: c.reason,
                }),
            },
            other => Received::Lost(OfflineReason::ConnectionLost(format!(
                "unexpected message kind 0x{:02x}",
                other.kind()
            ))),
        }
    }

    /// A heartbeat interval has passed at `now`: the `Ping` to send, or the connection is lost
    /// because the server sent nothing for the policy's whole timeout (its last `missed`
    /// heartbeats went unanswered).
    pub(crate) fn heartbeat_due(&mut self, now: Instant) -> Result<Ping, OfflineReason> {
        if self.link.check(now) == Some(LinkChange::Lost) || self.link.is_lost() {
            return Err(OfflineReason::ConnectionLost(format!(
                "{} heartbeats unanswered",
                self.heartbeat.missed
            )));
        }
        self.nonce += 1;
        self.ping_sent = Some((self.nonce, now));
        Ok(Ping::new(self.nonce))
    }
}

#[cfg(test)]
mod tests {
    use cypherwire_wire::{Close, Welcome};

    use super::*;

    #[expect(clippy::disallowed_methods, reason = "a fixed origin for virtual time")]
    fn origin() -> Instant {
        Instant::now()
    }

    /// A connection opened at `t0`, with heartbeats every second and `missed` allowed.
    fn open_at(memo: &SessionMemo, missed: u32, t0: Instant) -> (ClientConnection, Option<Resume>) {
        ClientConnection::open(
            memo,
            HeartbeatPolicy::new(Duration::from_secs(1), missed),
            t0,
        )
    }

    fn open(memo: &SessionMemo, missed: u32) -> (ClientConnection, Option<Resume>) {
        open_at(memo, missed, origin())
    }

    fn welcome(token: u8, resumed: bool) -> Message {
        Welcome::new([token; 16], 60_000, resumed).into()
    }

    fn push(seq: u64) -> Message {
        Push::new(seq, seq).into()
    }

    /// Feeds `msgs` and returns the sequence numbers of the pushes delivered.
    fn delivered(c: &mut ClientConnection, memo: &mut SessionMemo, msgs: Vec<Message>) -> Vec<u64> {
        let t = origin();
        msgs.into_iter()
            .filter_map(|m| match c.receive(memo, m, || t) {
                Received::Push(p) => Some(p.seq),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_first_connection_holds_requests_until_its_welcome_brings_a_token() {
        let mut memo = SessionMemo::default();
        let (mut c, resume) = open(&memo, 3);
        assert!(resume.is_none());
        assert!(!c.may_send());
        match c.receive(&mut memo, welcome(1, false), origin) {
            Received::Online { resumed: false } => {}
            other => panic!("expected Online, got {other:?}"),
        }
        assert!(c.may_send());
        assert_eq!(memo.token.as_ref().map(|t| t.0), Some([1; 16]));
    }

    #[test]
    fn a_reconnect_resumes_first_and_keeps_the_old_token_until_the_answer() {
        let mut memo = SessionMemo {
            token: Some(TokenBytes([1; 16])),
            last_push_seq: 5,
        };
        let (mut c, resume) = open(&memo, 3);
        let resume = resume.expect("a held session is resumed");
        assert_eq!((resume.token.0, resume.last_push_seq), ([1; 16], 5));
        // Requests go right behind the Resume: the server answers resends from its cache.
        assert!(c.may_send());
        // The connection's own Welcome (a fresh session) is not the answer.
        assert!(matches!(
            c.receive(&mut memo, welcome(2, false), origin),
            Received::Nothing
        ));
        assert_eq!(memo.token.as_ref().map(|t| t.0), Some([1; 16]));
        match c.receive(&mut memo, welcome(3, true), origin) {
            Received::Online { resumed: true } => {}
            other => panic!("expected Online resumed, got {other:?}"),
        }
        assert_eq!(memo.token.as_ref().map(|t| t.0), Some([3; 16]));
        assert_eq!(memo.last_push_seq, 5);
    }

    #[test]
    fn replayed_pushes_are_delivered_once() {
        let mut memo = SessionMemo {
            token: Some(TokenBytes([1; 16])),
            last_push_seq: 0,
        };
        let (mut c, _) = open(&memo, 3);
        let msgs = vec![welcome(2, false), welcome(3, true), push(1), push(2)];
        assert_eq!(delivered(&mut c, &mut memo, msgs), [1, 2]);
        // The next connection presents seq 2; the server replays from there, with overlap.
        let (mut c, resume) = open(&memo, 3);
        assert_eq!(resume.map(|r| r.last_push_seq), Some(2));
        let msgs = vec![
            welcome(4, false),
            welcome(5, true),
            push(2),
            push(3),
            push(3),
            push(4),
        ];
        assert_eq!(delivered(&mut c, &mut memo, msgs), [3, 4]);
        assert_eq!(memo.last_push_seq, 4);
    }

    #[test]
    fn a_refused_resume_starts_the_numbering_over_from_the_fresh_sessions_pushes() {
        let mut memo = SessionMemo {
            token: Some(TokenBytes([1; 16])),
            last_push_seq: 40,
        };
        let (mut c, _) = open(&memo, 3);
        // Pushes of the fresh session arrive between the two Welcomes and are delivered.
        let msgs = vec![
            welcome(2, false),
            push(1),
            push(2),
            welcome(2, false),
            push(3),
        ];
        assert_eq!(delivered(&mut c, &mut memo, msgs), [1, 2, 3]);
        assert_eq!(memo.last_push_seq, 3);
        assert_eq!(memo.token.as_ref().map(|t| t.0), Some([2; 16]));
    }

    #[test]
    fn heartbeats_unanswered_lose_the_connection_and_any_message_answers() {
        // The driver's ticks come every interval after the connection opened.
        let memo = SessionMemo::default();
        let t0 = origin();
        let second = Duration::from_secs(1);
        let (mut c, _) = open_at(&memo, 2, t0);
        assert_eq!(c.heartbeat_due(t0 + second).map(|p| p.nonce), Ok(1));
        assert_eq!(c.heartbeat_due(t0 + second * 2).map(|p| p.nonce), Ok(2));
        assert_eq!(
            c.heartbeat_due(t0 + second * 3),
            Err(OfflineReason::ConnectionLost(
                "2 heartbeats unanswered".to_owned()
            ))
        );

        let mut memo = SessionMemo::default();
        let (mut c, _) = open_at(&memo, 2, t0);
        for i in 1..10 {
            let now = t0 + second * i;
            assert!(c.heartbeat_due(now).is_ok(), "beat {i}");
            // A push (not only the Pong) shows the server is there.
            c.receive(&mut memo, push(i.into()), || now);
        }
    }

    #[test]
    fn the_matching_pong_gives_the_round_trip_and_a_stale_one_nothing() {
        let mut memo = SessionMemo::default();
        let t0 = origin();
        let (mut c, _) = open_at(&memo, 3, t0);
        let ping = c.heartbeat_due(t0).unwrap();
        let ms = Duration::from_millis(7);
        assert!(matches!(
            c.receive(&mut memo, Pong::new(ping.nonce + 1).into(), || t0 + ms),
            Received::Nothing
        ));
        // The stale Pong did not use up the outstanding heartbeat (found by client_resume).
        match c.receive(&mut memo, Pong::new(ping.nonce).into(), || t0 + ms * 2) {
            Received::RoundTrip(d) => assert_eq!(d, ms * 2),
            other => panic!("expected RoundTrip, got {other:?}"),
        }
        let ping = c.heartbeat_due(t0 + ms).unwrap();
        match c.receive(&mut memo, Pong::new(ping.nonce).into(), || t0 + ms * 3) {
            Received::RoundTrip(d) => assert_eq!(d, ms * 2),
            other => panic!("expected RoundTrip, got {other:?}"),
        }
    }

    #[test]
    fn pings_are_answered_and_close_kick_ban_or_a_request_end_the_connection() {
        let mut memo = SessionMemo::default();
        let (mut c, _) = open(&memo, 3);
        match c.receive(&mut memo, Ping::new(9).into(), origin) {
            Received::Reply(Message::Pong(p)) => assert_eq!(p.nonce, 9),
            other => panic!("expected a Pong, got {other:?}"),
        }
        match c.receive(
            &mut memo,
            Close::new(CloseCode::KICKED, "kicked by the operator").into(),
            origin,
        ) {
            Received::Kicked(text) => assert_eq!(text, "kicked by the operator"),
            other => panic!("expected Kicked, got {other:?}"),
        }
        match c.receive(
            &mut memo,
            Close::new(CloseCode::BANNED, "banned").into(),
            origin,
        ) {
            Received::Lost(OfflineReason::Banned { retry_after: None }) => {}
            other => panic!("expected Banned, got {other:?}"),
        }
        match c.receive(
            &mut memo,
            Close::new(CloseCode::GOING_AWAY, "server shutting down").into(),
            origin,
        ) {
            Received::Lost(OfflineReason::ServerClosed { code, reason }) => {
                assert_eq!(
                    (code, reason.as_str()),
                    (CloseCode::GOING_AWAY, "server shutting down")
                );
            }
            other => panic!("expected ServerClosed, got {other:?}"),
        }
        let req = cypherwire_wire::Request::new(1, "/A", "B");
        match c.receive(&mut memo, req.into(), origin) {
            Received::Lost(OfflineReason::ConnectionLost(text)) => {
                assert_eq!(text, "unexpected message kind 0x01");
            }
            other => panic!("expected Lost, got {other:?}"),
        }
    }
}
