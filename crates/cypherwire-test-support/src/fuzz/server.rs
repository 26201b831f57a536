//! Target `server_connection`: envelope sequences against a real server's connection driver
//! and its sans-IO core (routing, handlers that finish at once or later, the in-flight bound,
//! cancels, resume, heartbeats, close codes), over in-memory pipes, after a genuine handshake.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cypherwire_server::{Accept, Ctx, HandlerError, ResumePolicy, Server, ServerLimits};
use cypherwire_session::{ClientAuth, Psk, SecureStream, SessionConfig, connect};
use cypherwire_wire::{Action, CloseCode, Codec, CodecId, Message, Ping, Request, Value};
use tokio::io::DuplexStream;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

use super::messages;

/// Hands the server the far ends of in-memory pipes, each with its own source address (so no
/// per-address limit or ban carries from one input to the next).
struct Pipes(mpsc::Receiver<(DuplexStream, SocketAddr)>);

impl Accept for Pipes {
    type Io = DuplexStream;

    async fn accept(&mut self) -> std::io::Result<(DuplexStream, SocketAddr)> {
        self.0
            .recv()
            .await
            .ok_or_else(|| std::io::ErrorKind::BrokenPipe.into())
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(SocketAddr::from(([10, 0, 0, 1], 1)))
    }
}

struct Fixture {
    rt: Runtime,
    pipes: mpsc::Sender<(DuplexStream, SocketAddr)>,
    psk: Psk,
    config: SessionConfig,
    /// Keeps the server running for the life of the process.
    _server: Server,
}

/// At most this many requests in flight per connection: small, so inputs reach the bound.
const MAX_IN_FLIGHT: usize = 4;

/// The longest a fuzzed connection may take to answer everything (a hang is a finding).
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

static FIX: LazyLock<Fixture> = LazyLock::new(|| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let psk = Psk::from_bytes([0x5e; 32]);
    let config = SessionConfig::builder()
        .codecs([CodecId::MsgPack])
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let (pipes, incoming) = mpsc::channel(4);
    let mut limits = ServerLimits::default();
    limits.max_in_flight = MAX_IN_FLIGHT;
    let mut resume = ResumePolicy::default();
    // Every input leaves a resumable session behind: keep the table small.
    resume.max_sessions = 256;
    let server = rt.block_on(
        Server::builder(psk.clone())
            .session_config(config.clone())
            .limits(limits)
            .resume_policy(resume)
            .route("/ECHO", "PUT", |req: Request, _ctx: Ctx| async move {
                Ok::<_, HandlerError>(req.data)
            })
            // Pending at first poll: runs as its own task, so a Cancel can stop it.
            .route("/YIELD", "GET", |req: Request, _ctx: Ctx| async move {
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                Ok::<_, HandlerError>(req.data)
            })
            .route("/FAIL", "GET", |_req: Request, _ctx: Ctx| async move {
                Err::<Value, _>(HandlerError::bad_request("refused by the fixture"))
            })
            .action("note", |_a: Action, _ctx: Ctx| async move {})
            .serve_on(Pipes(incoming)),
    );
    let server = server.unwrap_or_else(|e| panic!("server: {e}"));
    Fixture {
        rt,
        pipes,
        psk,
        config,
        _server: server,
    }
});

static NEXT_SOURCE: AtomicU32 = AtomicU32::new(0);

/// What the server must do with the fuzzed messages, read from them as the spec says.
#[derive(Debug, Default)]
struct Expected {
    /// Ids of requests sent while the connection was open: each gets at least one response,
    /// unless it was also cancelled.
    answered: HashSet<u64>,
    /// Ids that were cancelled (answered or not, both are right).
    cancelled: HashSet<u64>,
    /// Every request id sent (a response for any other id is a finding).
    sent: HashSet<u64>,
    /// Ping nonces that need their Pong.
    pongs: HashSet<u64>,
    /// Welcomes due after the connection's own (one per `Resume` as first message).
    extra_welcomes: usize,
    /// How the connection ends: with this close code, or `None` when the client closes.
    end: Option<Option<CloseCode>>,
}

impl Expected {
    fn of(bodies: &[&[u8]], config: &SessionConfig) -> Self {
        let mut e = Self::default();
        let limits = config.limits();
        for (i, body) in bodies.iter().enumerate() {
            let msg = match Message::decode(&Codec::MsgPack, body, &limits) {
                Ok(m) => m,
                Err(err) => {
                    // spec: §4.1, §6: an envelope the server cannot read ends the connection
                    // with the code its error names.
                    e.end = Some(Some(err.close_code()));
                    return e;
                }
            };
            match msg {
                Message::Request(r) => {
                    e.sent.insert(r.id);
                    e.answered.insert(r.id);
                }
                Message::Cancel(c) => {
                    e.cancelled.insert(c.id);
                }
                Message::Ping(p) => {
                    e.pongs.insert(p.nonce);
                }
                Message::Action(_) | Message::Pong(_) => {}
                Message::Resume(_) if i == 0 => e.extra_welcomes += 1,
                Message::Close(_) => {
                    e.end = Some(None);
                    return e;
                }
                // A server's kind, or a Resume after the first message (§4.1 rule 3).
                _ => {
                    e.end = Some(Some(CloseCode::PROTOCOL_ERROR));
                    return e;
                }
            }
        }
        e.answered.retain(|id| !e.cancelled.contains(id));
        e
    }
}

/// The nonce of the fixture's own closing Ping (a fuzzed Ping with it just merges in).
const FINAL_PING: u64 = 0x5a5a_5a5a;

/// Target `server_connection`: the input is a list of envelope bodies (one length byte each,
/// at most 64), sent as records on one authenticated connection. What the server must do
/// follows from the spec: every request answered (at least once: a resent id may be answered
/// from the session's cache) unless cancelled, no response for an id never sent, every Ping's
/// Pong, one more Welcome for a `Resume` sent first, and the connection ended with the close
/// code the first unreadable or illegal envelope names, or without a `Close` of its own after
/// the client's `Close`. Anything else, or no answer within 5 s, is a finding.
pub fn server_connection(data: &[u8]) {
    let fix = &*FIX;
    let bodies: Vec<&[u8]> = messages(data).into_iter().take(64).collect();
    let mut expected = Expected::of(&bodies, &fix.config);
    let n = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed);
    let [_, a, b, c] = n.to_be_bytes();
    let source = SocketAddr::from(([10, a, b, c.max(2)], 40_000));
    fix.rt.block_on(async {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        fix.pipes
            .send((theirs, source))
            .await
            .unwrap_or_else(|_| panic!("the server stopped accepting"));
        let mut s = connect(ours, &ClientAuth::Psk(fix.psk.clone()), &fix.config)
            .await
            .unwrap_or_else(|e| panic!("genuine handshake failed: {e}"));
        let outcome = tokio::time::timeout(ANSWER_WITHIN, exchange(&mut s, &bodies, &mut expected));
        if let Err(_elapsed) = outcome.await {
            panic!("the server did not finish answering {bodies:02x?} within 5 s: {expected:?} still due");
        }
    });
}

async fn exchange(s: &mut SecureStream<DuplexStream>, bodies: &[&[u8]], e: &mut Expected) {
    for body in bodies {
        // The server may close before reading everything: later sends may fail.
        if s.send(body).await.is_err() {
            break;
        }
    }
    if e.end.is_none() {
        e.pongs.insert(FINAL_PING);
        s.send_message(&Ping::new(FINAL_PING).into())
            .await
            .unwrap_or_else(|err| panic!("the server went away on valid input: {err}"));
    }
    let mut welcomes = 0usize;
    loop {
        let done = e.end.is_none() && e.answered.is_empty() && e.pongs.is_empty();
        if done && welcomes > e.extra_welcomes {
            return;
        }
        let Ok(Some(msg)) = s.recv_message().await else {
            // The stream ended: right only after the client's own Close.
            assert_eq!(
                e.end,
                Some(None),
                "the connection ended without a Close on {bodies:02x?}"
            );
            assert!(welcomes >= 1, "ended before its Welcome");
            return;
        };
        match msg {
            Message::Welcome(_) => welcomes += 1,
            Message::Response(r) => {
                assert!(e.sent.contains(&r.id), "a response for unsent id {}", r.id);
                e.answered.remove(&r.id);
            }
            Message::Pong(p) => {
                e.pongs.remove(&p.nonce);
            }
            Message::Close(c) => {
                assert_eq!(
                    e.end,
                    Some(Some(c.code)),
                    "closed with {:?} ({}) on {bodies:02x?}",
                    c.code,
                    c.reason
                );
                // The connection's own Welcome comes first, whatever follows.
                assert!(welcomes >= 1, "closed before its Welcome");
                return;
            }
            other => panic!("the server sent {other:?}"),
        }
    }
}
