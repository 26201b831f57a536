//! The body of the `client_resume` fuzz target (feature `test-util`; not a stable API): a
//! server's messages, connection after connection, against the client's sans-IO connection
//! core and the session memo it keeps across them.

use std::time::{Duration, Instant};

use cypherwire_session::HeartbeatPolicy;
use cypherwire_wire::{Action, CloseCode, Message, Ping, Pong, Push, Response, Value, Welcome};

use crate::core::{ClientConnection, Received, SessionMemo};
use crate::shared::OfflineReason;

const INTERVAL: Duration = Duration::from_secs(1);
const MISSED: u32 = 3;

/// One open connection and what the target knows it must do.
struct Open {
    conn: ClientConnection,
    /// Welcomes before the connection is online: its own, and the answer to its `Resume`.
    due: usize,
    seen: usize,
    /// When the connection opened.
    opened: Instant,
    /// When the last heartbeat check ran (or the connection opened).
    last_check: Instant,
    /// A message arrived since that check.
    heard: bool,
    /// Nothing at all has arrived on this connection yet.
    silent: bool,
    /// The nonce of the heartbeat sent last, if it has not been answered.
    ping: Option<u64>,
    /// The highest push delivered before the connection was online (the fresh session's).
    provisional: u64,
}

/// Target `client_resume`. Each input byte is an operation (low three bits), most with an
/// argument in the next byte: open a new connection (the old one is gone), the server's
/// `Welcome` (token, resumed), a `Push` (sequence number), a `Response`, a `Ping`, a
/// heartbeat check, the time passing, a `Close` (code) or a kind a server never sends.
///
/// What must hold, whatever the order:
/// - a connection resumes exactly when the client holds a token, with the highest push
///   sequence number it delivered; it holds requests until a Welcome when it has none;
/// - the token changes only when a connection is online (its last due Welcome), to that
///   Welcome's token, and `Online{resumed}` repeats the Welcome's flag;
/// - once online, a push is delivered only if its sequence number is above every one
///   delivered on the session before, so none is delivered twice;
/// - a `Ping` is answered with its nonce; a `Pong` is a round trip only for the outstanding
///   heartbeat; `KICKED`, `BANNED` and other codes end the connection as themselves;
/// - a connection that heard from the server since the last check, made within the timeout,
///   is not declared lost, and one that heard nothing for longer than the timeout is.
pub fn client_resume(data: &[u8]) {
    #[expect(clippy::disallowed_methods, reason = "a fixed origin for virtual time")]
    let mut now = Instant::now();
    let policy = HeartbeatPolicy::new(INTERVAL, MISSED);
    let mut memo = SessionMemo::default();
    let mut open: Option<Open> = None;
    // The highest sequence number delivered on the session since it was online.
    let mut session_max: Option<u64> = None;
    let mut bytes = data.iter().copied();
    while let Some(op) = bytes.next() {
        let arg = bytes.next().unwrap_or(0);
        // Opening and time passing need no connection; everything else is ignored without one.
        match op & 7 {
            0 => {
                open = Some(connect(&memo, policy, now));
                continue;
            }
            6 => {
                now += Duration::from_millis(u64::from(arg) * 50);
                continue;
            }
            _ => {}
        }
        let Some(o) = open.as_mut() else {
            continue;
        };
        let msg = match op & 7 {
            1 => Message::Welcome(Welcome::new([arg; 16], 60_000, op & 8 != 0)),
            2 => Message::Push(Push::new(u64::from(arg), u64::from(op))),
            3 if op & 8 == 0 => Message::Response(Response::ok(u64::from(arg), Value::Nil)),
            3 => Message::Action(Action::new("a", Value::Nil, 0)),
            4 if op & 8 == 0 => Message::Ping(Ping::new(u64::from(arg))),
            4 => Message::Pong(Pong::new(u64::from(arg) % 4)),
            5 => {
                if !heartbeat(o, now) {
                    open = None;
                }
                continue;
            }
            _ if op & 8 == 0 => Message::Close(cypherwire_wire::Close::new(
                CloseCode(u16::from(arg) % 13),
                "fuzz",
            )),
            // A client's kind: a server never sends it.
            _ => Message::Cancel(cypherwire_wire::Cancel::new(1)),
        };
        if !receive(o, &mut memo, &mut session_max, msg, now) {
            open = None;
        }
    }
}

/// A new connection for `memo`, checked against the resume rule.
fn connect(memo: &SessionMemo, policy: HeartbeatPolicy, now: Instant) -> Open {
    let (conn, resume) = ClientConnection::open(memo, policy, now);
    match (&memo.token, &resume) {
        (Some(t), Some(r)) => {
            assert_eq!(r.token, *t, "resumed with another token");
            assert_eq!(
                r.last_push_seq, memo.last_push_seq,
                "resumed from another push"
            );
        }
        (None, None) => {}
        _ => panic!(
            "a Resume sent iff a token is held: {:?} / {resume:?}",
            memo.token
        ),
    }
    assert_eq!(
        conn.may_send(),
        resume.is_some(),
        "requests held iff no token is known"
    );
    Open {
        conn,
        due: 1 + usize::from(resume.is_some()),
        seen: 0,
        opened: now,
        last_check: now,
        heard: false,
        silent: true,
        ping: None,
        provisional: 0,
    }
}

/// Feeds one message; false if the connection ended.
fn receive(
    o: &mut Open,
    memo: &mut SessionMemo,
    session_max: &mut Option<u64>,
    msg: Message,
    now: Instant,
) -> bool {
    o.heard = true;
    o.silent = false;
    let token_before = memo.token.clone();
    let last_before = memo.last_push_seq;
    let online = o.seen >= o.due;
    let welcome = matches!(msg, Message::Welcome(_));
    let got = o.conn.receive(memo, msg.clone(), || now);
    match (msg, got) {
        (Message::Welcome(w), got) => {
            o.seen += 1;
            if o.seen < o.due {
                assert!(matches!(got, Received::Nothing), "early Welcome: {got:?}");
                assert_eq!(memo.token, token_before, "token changed before online");
            } else {
                assert!(
                    matches!(got, Received::Online { resumed } if resumed == w.resumed),
                    "{w:?} gave {got:?}"
                );
                assert_eq!(memo.token, Some(w.token), "the Welcome's token not kept");
                if !w.resumed {
                    // A fresh session: numbered from the pushes it already delivered.
                    assert_eq!(
                        memo.last_push_seq, o.provisional,
                        "a fresh session does not start after its own pushes"
                    );
                    *session_max = Some(o.provisional);
                }
            }
            assert!(o.conn.may_send(), "still holding after a Welcome");
        }
        (Message::Push(p), got) => {
            let delivered = matches!(got, Received::Push(ref q) if q.seq == p.seq);
            assert!(
                delivered || matches!(got, Received::Nothing),
                "a push gave {got:?}"
            );
            if online {
                assert_eq!(
                    delivered,
                    p.seq > last_before,
                    "push {} after {last_before}",
                    p.seq
                );
                if delivered {
                    if let Some(max) = *session_max {
                        assert!(p.seq > max, "push {} delivered twice on a session", p.seq);
                    }
                    *session_max = Some(p.seq);
                }
            } else {
                assert!(delivered, "a push of the fresh session was dropped");
                o.provisional = o.provisional.max(p.seq);
            }
        }
        (Message::Response(r), got) => {
            assert!(
                matches!(got, Received::Response(ref q) if q.id == r.id),
                "{got:?}"
            );
        }
        (Message::Action(_), got) => assert!(matches!(got, Received::Action(_)), "{got:?}"),
        (Message::Ping(p), got) => assert!(
            matches!(got, Received::Reply(Message::Pong(ref q)) if q.nonce == p.nonce),
            "{got:?}"
        ),
        (Message::Pong(p), got) => {
            let answer = o.ping.take_if(|n| *n == p.nonce).is_some();
            if answer {
                assert!(matches!(got, Received::RoundTrip(_)), "{got:?}");
            } else {
                assert!(matches!(got, Received::Nothing), "stale Pong gave {got:?}");
            }
        }
        (Message::Close(c), got) => {
            match (c.code, &got) {
                (CloseCode::KICKED, Received::Kicked(_))
                | (CloseCode::BANNED, Received::Lost(OfflineReason::Banned { .. })) => {}
                (code, Received::Lost(OfflineReason::ServerClosed { code: said, .. }))
                    if code == *said && code != CloseCode::KICKED && code != CloseCode::BANNED => {}
                _ => panic!("{c:?} gave {got:?}"),
            }
            return false;
        }
        (other, got) => {
            assert!(
                matches!(got, Received::Lost(OfflineReason::ConnectionLost(_))),
                "{other:?} gave {got:?}"
            );
            return false;
        }
    }
    if !welcome {
        assert_eq!(
            memo.token, token_before,
            "the token changed without a Welcome"
        );
    }
    true
}

/// A heartbeat check at `now`; false if the connection was declared lost.
fn heartbeat(o: &mut Open, now: Instant) -> bool {
    let since_check = now.saturating_duration_since(o.last_check);
    let heard = std::mem::take(&mut o.heard);
    o.last_check = now;
    match o.conn.heartbeat_due(now) {
        Ok(ping) => {
            o.ping = Some(ping.nonce);
            assert!(
                !(o.silent && now.saturating_duration_since(o.opened) > INTERVAL * MISSED),
                "a server silent for longer than the timeout was not declared lost"
            );
            true
        }
        Err(reason) => {
            assert!(
                !(heard && since_check <= INTERVAL * MISSED),
                "declared lost ({reason:?}) though it heard the server within the timeout"
            );
            false
        }
    }
}
