//! The reconnecting client against the real server over loopback TCP (through a fault proxy
//! where the network misbehaves).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use cypherwire_client::{Backoff, Client, Error, Incoming, Status};
use cypherwire_server::{Ctx, HandlerError, Server, ServerHandle};
use cypherwire_session::{Psk, SessionConfig};
use cypherwire_test_support::proxy::FaultProxy;
use cypherwire_wire::{CodecId, Request, StatusCode, Value};

static PSK: LazyLock<Psk> = LazyLock::new(|| Psk::from_bytes([0x31; 32]));

/// How many times each request id ran on the server.
type Runs = Arc<Mutex<HashMap<(u64, u64), u32>>>;

/// A server on `addr` with `/ADD ONE` (returns data + 1, records its runs per (client, id)),
/// `/SLOW WAIT` and `/FAIL NOW`.
async fn server(addr: &str, runs: Runs) -> ServerHandle {
    let slow_done = runs.clone();
    let server = Server::builder(PSK.clone())
        .route("/ADD", "ONE", move |req: Request, ctx: Ctx| {
            let runs = runs.clone();
            async move {
                let who = req.metadata.as_u64().unwrap_or(0);
                *runs.lock().unwrap().entry((who, req.id)).or_insert(0) += 1;
                let _ = ctx;
                tokio::time::sleep(Duration::from_millis(req.id % 3)).await;
                Ok::<_, HandlerError>(Value::from(req.data.as_i64().unwrap_or(0) + 1))
            }
        })
        .route("/SLOW", "WAIT", move |req: Request, _ctx: Ctx| {
            let done = slow_done.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(req.data.as_u64().unwrap_or(100))).await;
                *done.lock().unwrap().entry((0, u64::MAX)).or_insert(0) += 1;
                Ok::<_, HandlerError>(Value::from("done"))
            }
        })
        .route("/FAIL", "NOW", |_req: Request, _ctx: Ctx| async move {
            Err::<Value, _>(HandlerError::new(StatusCode(1500), "no"))
        })
        .bind(addr)
        .await
        .unwrap();
    server.handle()
}

fn fast_backoff() -> Backoff {
    let mut b = Backoff::default();
    b.initial = Duration::from_millis(20);
    b.max = Duration::from_millis(200);
    b
}

fn client(addr: SocketAddr) -> Client {
    client_with(addr, CodecId::MsgPack)
}

fn client_with(addr: SocketAddr, codec: CodecId) -> Client {
    Client::builder(PSK.clone())
        .backoff(fast_backoff())
        .session_config(SessionConfig::builder().codecs([codec]).build().unwrap())
        .connect(addr.to_string())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_answers_and_errors() {
    for codec in [CodecId::MsgPack, CodecId::Json] {
        requests_answers_and_errors_with(codec).await;
    }
}

async fn requests_answers_and_errors_with(codec: CodecId) {
    let runs = Runs::default();
    let h = server("127.0.0.1:0", runs.clone()).await;
    let c = Client::builder(PSK.clone())
        .session_config(SessionConfig::builder().codecs([codec]).build().unwrap())
        .connect(h.local_addr().to_string())
        .unwrap();
    c.wait_online().await.unwrap();
    assert_eq!(*c.status().borrow(), Status::Online { resumed: false });
    let n: i64 = c
        .request("/ADD", "ONE")
        .data(41)
        .send()
        .await
        .unwrap()
        .data()
        .unwrap();
    assert_eq!(n, 42);
    let err = c.request("/FAIL", "NOW").send().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Status {
                code: StatusCode(1500),
                ..
            }
        ),
        "{err:?}"
    );
    let err = c.request("/NOWHERE", "X").send().await.unwrap_err();
    assert!(matches!(
        err,
        Error::Status {
            code: StatusCode::NOT_FOUND,
            ..
        }
    ));
    let err = c
        .request("/ADD", "ONE")
        .data(1)
        .send()
        .await
        .unwrap()
        .data::<String>()
        .unwrap_err();
    let Error::Data(data) = &err else {
        panic!("expected Error::Data, got {err:?}")
    };
    // The decoder's error is kept as the source, and the line says it once.
    let source = std::error::Error::source(&err).expect("Data keeps its source");
    assert_eq!(source.to_string(), data.get_ref().to_string());
    assert_eq!(
        err.to_string(),
        format!("unexpected response data: {source}")
    );
    // Many in flight at once, answered in any order.
    let futs: Vec<_> = (0..50)
        .map(|i| c.request("/ADD", "ONE").data(i).send())
        .collect();
    for (i, f) in futs.into_iter().enumerate() {
        assert_eq!(f.await.unwrap().data::<i64>().unwrap(), i as i64 + 1);
    }
    c.close_within(Duration::from_secs(1)).await;
    assert_eq!(*c.status().borrow(), Status::Closed);
    assert!(
        c.request("/ADD", "ONE")
            .send()
            .await
            .unwrap_err()
            .is_closed()
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_requests_queue_within_bounds_and_complete_when_the_server_appears() {
    // Find a free port, then start the client before any server listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let c = Client::builder(PSK.clone())
        .backoff(fast_backoff())
        .max_pending(4, 1 << 20)
        .connect(addr.to_string())
        .unwrap();
    let queued: Vec<_> = (0..4)
        .map(|i| tokio::spawn(c.request("/ADD", "ONE").data(i).send()))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The buffer holds 4: the next ones fail at once.
    for _ in 0..4 {
        let err = c.request("/ADD", "ONE").send().await.unwrap_err();
        assert!(
            matches!(err, Error::BufferFull { pending: 4, .. }),
            "{err:?}"
        );
        assert!(err.is_transient());
    }
    let h = server(&addr.to_string(), Runs::default()).await;
    for (i, q) in queued.into_iter().enumerate() {
        assert_eq!(
            q.await.unwrap().unwrap().data::<i64>().unwrap(),
            i as i64 + 1
        );
    }
    h.shutdown().await;
}

/// While the client is offline (here: one connection attempt that hangs in the handshake, a
/// listener that never answers), queued requests still fail at their deadlines, an earlier
/// deadline before a later one that was queued first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_expire_while_offline_earliest_first() {
    // Connections complete in the backlog; no handshake ever answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let c = Client::builder(PSK.clone())
        .backoff(fast_backoff())
        .connect_timeout(Duration::from_secs(30))
        .connect(silent.local_addr().unwrap().to_string())
        .unwrap();
    // Bounded below the session's 10 s handshake timeout (which ends the attempt, and with it
    // the offline wait).
    earlier_deadline_fires_first(&c, Duration::from_secs(5)).await;
    assert!(!c.status().borrow().is_online());
    c.close_within(Duration::from_millis(100)).await;
    drop(silent);
}

/// One client's share of a load: `n` requests to `/ADD ONE` with 8 in flight, each answer
/// checked; returns how many were answered.
async fn load(c: &Client, who: u64, n: u64) -> u64 {
    let mut ok = 0;
    let mut in_flight = tokio::task::JoinSet::new();
    for i in 0..n {
        if in_flight.len() >= 8 {
            let (i, r): (u64, Result<cypherwire_client::Reply, Error>) =
                in_flight.join_next().await.unwrap().unwrap();
            assert_eq!(r.unwrap().data::<u64>().unwrap(), i + 1, "wrong answer");
            ok += 1;
        }
        let f = c.request("/ADD", "ONE").data(i).metadata(who).send();
        in_flight.spawn(async move { (i, f.await) });
    }
    while let Some(r) = in_flight.join_next().await {
        let (i, r) = r.unwrap();
        assert_eq!(r.unwrap().data::<u64>().unwrap(), i + 1, "wrong answer");
        ok += 1;
    }
    ok
}

/// The main promise: connections cut under load lose nothing, answer nothing twice, and run
/// nothing twice while the server lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cuts_lose_nothing_and_run_nothing_twice() {
    for codec in [CodecId::MsgPack, CodecId::Json] {
        cuts_with(codec).await;
    }
}

async fn cuts_with(codec: CodecId) {
    let runs = Runs::default();
    let h = server("127.0.0.1:0", runs.clone()).await;
    let proxy = FaultProxy::start(h.local_addr()).await.unwrap();
    const CLIENTS: u64 = 100;
    const PER_CLIENT: u64 = 1_000;
    let mut tasks = tokio::task::JoinSet::new();
    for who in 1..=CLIENTS {
        let c = Client::builder(PSK.clone())
            .backoff(fast_backoff())
            .session_config(SessionConfig::builder().codecs([codec]).build().unwrap())
            .connect(proxy.addr().to_string())
            .unwrap();
        tasks.spawn(async move {
            let mut statuses = c.status_events();
            c.wait_online().await.unwrap();
            let ok = load(&c, who, PER_CLIENT).await;
            c.close_within(Duration::from_secs(1)).await;
            let mut resumed = 0;
            while let Some(s) = statuses.try_next() {
                resumed += u64::from(s == Status::Online { resumed: true });
            }
            (ok, resumed)
        });
    }
    // Cut every connection a few times while the load runs.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.cut_all();
    }
    let (mut answered, mut resumes) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let (ok, resumed) = r.unwrap();
        answered += ok;
        resumes += resumed;
    }
    assert_eq!(answered, CLIENTS * PER_CLIENT, "lost or failed requests");
    // The cuts really hit live sessions: every client resumed at least once.
    assert!(resumes >= CLIENTS, "only {resumes} resumptions");
    let (ran, twice) = {
        let runs = runs.lock().unwrap();
        (runs.len() as u64, runs.values().filter(|n| **n > 1).count())
    };
    assert_eq!(ran, CLIENTS * PER_CLIENT, "every request ran");
    assert_eq!(twice, 0, "executed twice: {twice}");
    assert_eq!(proxy.cuts(), 5);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_loses_no_request() {
    let runs = Runs::default();
    let h = server("127.0.0.1:0", runs.clone()).await;
    let addr = h.local_addr();
    let c = client(addr);
    c.wait_online().await.unwrap();
    let mut status = c.status_events();
    let slow = tokio::spawn(c.request("/SLOW", "WAIT").data(2_000).send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.shutdown_now().await;
    let queued: Vec<_> = (0..20)
        .map(|i| tokio::spawn(c.request("/ADD", "ONE").data(i).send()))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let h2 = server(&addr.to_string(), runs.clone()).await;
    for (i, q) in queued.into_iter().enumerate() {
        assert_eq!(
            q.await.unwrap().unwrap().data::<i64>().unwrap(),
            i as i64 + 1
        );
    }
    // The slow request was resent to the new server (the contract allows it to run again).
    assert_eq!(
        slow.await.unwrap().unwrap().data::<String>().unwrap(),
        "done"
    );
    // Status went offline and came back online on a fresh session.
    let mut seen = Vec::new();
    while let Some(s) = status.try_next() {
        seen.push(s);
    }
    assert!(
        seen.iter().any(|s| matches!(s, Status::Offline { .. })),
        "{seen:?}"
    );
    assert_eq!(
        seen.last(),
        Some(&Status::Online { resumed: false }),
        "{seen:?}"
    );
    c.close_within(Duration::from_secs(1)).await;
    h2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_links_are_detected_by_heartbeat() {
    for codec in [CodecId::MsgPack, CodecId::Json] {
        half_open_with(codec).await;
    }
}

async fn half_open_with(codec: CodecId) {
    let h = server("127.0.0.1:0", Runs::default()).await;
    let proxy = FaultProxy::start(h.local_addr()).await.unwrap();
    let interval = Duration::from_millis(200);
    let c = Client::builder(PSK.clone())
        .backoff(fast_backoff())
        .heartbeat(interval, 3)
        .session_config(SessionConfig::builder().codecs([codec]).build().unwrap())
        .connect(proxy.addr().to_string())
        .unwrap();
    c.wait_online().await.unwrap();
    tokio::time::sleep(3 * interval).await;
    let rtt = c.rtt().expect("heartbeats measure the round trip");
    assert!(rtt < interval, "{rtt:?}");
    proxy.set_stalled(true);
    let pending = tokio::spawn(c.request("/ADD", "ONE").data(1).send());
    let started = tokio::time::Instant::now();
    let mut st = c.status();
    st.wait_for(|s| !s.is_online()).await.unwrap();
    let took = started.elapsed();
    assert!(
        took <= 3 * interval + interval + Duration::from_secs(1),
        "offline after {took:?}"
    );
    proxy.set_stalled(false);
    assert_eq!(pending.await.unwrap().unwrap().data::<i64>().unwrap(), 2);
    assert!(c.status().borrow().is_online());
    c.close_within(Duration::from_secs(1)).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_and_dropped_futures() {
    let runs = Runs::default();
    let h = server("127.0.0.1:0", runs.clone()).await;
    let c = client(h.local_addr());
    c.wait_online().await.unwrap();
    let err = c
        .request("/SLOW", "WAIT")
        .data(1_000)
        .deadline(Duration::from_millis(100))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    // A dropped future cancels: the server stops the work, the client keeps working.
    let f = c.request("/SLOW", "WAIT").data(300).send();
    drop(tokio::time::timeout(Duration::from_millis(50), f).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let slow_completed = runs
        .lock()
        .unwrap()
        .get(&(0, u64::MAX))
        .copied()
        .unwrap_or(0);
    assert_eq!(
        slow_completed, 0,
        "neither the expired nor the dropped request completed"
    );
    let n: i64 = c
        .request("/ADD", "ONE")
        .data(1)
        .send()
        .await
        .unwrap()
        .data()
        .unwrap();
    assert_eq!(n, 2);
    c.close_within(Duration::from_millis(200)).await;
    h.shutdown().await;
}

/// With no answer possible, a request with a 200 ms deadline fails (within `bound`) while one
/// queued before it with a 20 s deadline is still waiting: the client's deadline timer moves to
/// the earlier deadline (a timer left at 20 s would miss the bound).
async fn earlier_deadline_fires_first(c: &Client, bound: Duration) {
    let long = tokio::spawn(
        c.request("/ADD", "ONE")
            .data(1)
            .deadline(Duration::from_secs(20))
            .send(),
    );
    // The long request is in the client's table first: its deadline arms the timer.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let short = c
        .request("/ADD", "ONE")
        .data(2)
        .deadline(Duration::from_millis(200))
        .send();
    let err = tokio::time::timeout(bound, short)
        .await
        .expect("the 200 ms deadline fires long before the 20 s one")
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(!long.is_finished(), "the 20 s request is still waiting");
    long.abort();
}

/// The client's own deadline timer moves to an earlier deadline: with the link stalled (no
/// answer can come), a request with a short deadline fails while a request sent before it with
/// a long deadline is still waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_deadline_fires_before_a_later_one() {
    let h = server("127.0.0.1:0", Runs::default()).await;
    let proxy = FaultProxy::start(h.local_addr()).await.unwrap();
    let c = client(proxy.addr());
    c.wait_online().await.unwrap();
    proxy.set_stalled(true);
    earlier_deadline_fires_first(&c, Duration::from_secs(10)).await;
    proxy.set_stalled(false);
    c.close_within(Duration::from_millis(200)).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_arrive_in_order_and_missed_ones_are_replayed_after_a_cut() {
    for codec in [CodecId::MsgPack, CodecId::Json] {
        pushes_with(codec).await;
    }
}

async fn pushes_with(codec: CodecId) {
    let h = server("127.0.0.1:0", Runs::default()).await;
    let proxy = FaultProxy::start(h.local_addr()).await.unwrap();
    let c = client_with(proxy.addr(), codec);
    let mut all_statuses = c.status_events();
    let mut incoming = c.take_incoming().unwrap();
    c.wait_online().await.unwrap();
    let id = h.connections()[0].id;
    for i in 1..=5 {
        h.send_to(id, Value::from(i)).unwrap();
    }
    for want in 1..=5u64 {
        let Some(Incoming::Push(p)) = incoming.next().await else {
            panic!()
        };
        assert_eq!((p.seq, p.data), (want, Value::from(want)));
    }
    // Cut. The status events are ordered, so a fast reconnect cannot be missed.
    let mut events = c.status_events();
    proxy.cut_all();
    let mut saw_offline = false;
    loop {
        let s = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap()
            .unwrap();
        saw_offline |= matches!(s, Status::Offline { .. });
        if s == (Status::Online { resumed: true }) {
            break;
        }
    }
    assert!(saw_offline);
    // The server counts it: one resume, none refused.
    let stats = h.stats();
    assert_eq!((stats.resumes_ok, stats.resumes_refused), (1, 0));
    // Wait until the server has let the old connection go.
    for _ in 0..200 {
        if h.count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let id = h.connections()[0].id;
    for i in 6..=8 {
        h.send_to(id, Value::from(i)).unwrap();
    }
    for want in 6..=8u64 {
        let Some(Incoming::Push(p)) = incoming.next().await else {
            panic!()
        };
        assert_eq!(p.seq, want, "in order, none twice, none lost");
    }
    c.close_within(Duration::from_secs(1)).await;
    // The whole story, in order: online, the cut, a reconnect, the resumed session, closed.
    let mut seen = Vec::new();
    while let Some(s) = all_statuses.try_next() {
        seen.push(s);
    }
    let kinds: Vec<&str> = seen
        .iter()
        .map(|s| match s {
            Status::Connecting => "connecting",
            Status::Online { resumed: false } => "online",
            Status::Online { resumed: true } => "resumed",
            Status::Offline { .. } => "offline",
            Status::Reconnecting { .. } => "reconnecting",
            Status::GaveUp => "gave up",
            Status::Closed => "closed",
            _ => "other",
        })
        .collect();
    // (The first "online" may precede the subscription; everything after it is ordered.)
    let after_first_online = kinds.strip_prefix(&["online"][..]).unwrap_or(&kinds);
    assert_eq!(
        after_first_online,
        ["offline", "reconnecting", "resumed", "closed"],
        "{seen:?}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_sequence_and_giving_up() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut b = fast_backoff();
    b.give_up_after_attempts = Some(3);
    let c = Client::builder(PSK.clone())
        .backoff(b)
        .connect(format!("127.0.0.1:{port}"))
        .unwrap();
    let mut events = c.status_events();
    let queued = tokio::spawn(c.request("/ADD", "ONE").send());
    let err = queued.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::GaveUp { attempts: 3 }), "{err:?}");
    assert!(err.is_closed());
    assert_eq!(*c.status().borrow(), Status::GaveUp);
    let mut seen = Vec::new();
    while let Some(s) = events.try_next() {
        seen.push(s);
    }
    assert_eq!(seen.last(), Some(&Status::GaveUp), "{seen:?}");
    assert!(matches!(
        c.request("/ADD", "ONE").send().await,
        Err(Error::GaveUp { .. })
    ));
    // Callbacks see changes too (CYPHER_PROTOCOL's signal processors). The callback sees
    // changes from its registration on, so the server starts only after it.
    let counter = Arc::new(AtomicU64::new(0));
    let k = counter.clone();
    let later: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let c2 = client(later);
    c2.on_status(move |s| {
        if s.is_online() {
            k.fetch_add(1, Ordering::SeqCst);
        }
    });
    let h = server(&later.to_string(), Runs::default()).await;
    c2.wait_online().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(counter.load(Ordering::SeqCst), 1);
    c2.close_within(Duration::from_secs(1)).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_go_out_and_come_back() {
    let server = Server::builder(PSK.clone())
        .action("chat", |a: cypherwire_wire::Action, ctx: Ctx| async move {
            ctx.server.broadcast_action(&a);
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let h = server.handle();
    let a = client(h.local_addr());
    let b = client(h.local_addr());
    let mut b_in = b.take_incoming().unwrap();
    a.wait_online().await.unwrap();
    b.wait_online().await.unwrap();
    a.emit("chat", "hello").await.unwrap();
    match b_in.next().await {
        Some(Incoming::Action(act)) => assert_eq!(act.data, Value::from("hello")),
        other => panic!("{other:?}"),
    }
    a.close_within(Duration::from_secs(1)).await;
    b.close_within(Duration::from_secs(1)).await;
    h.shutdown().await;
    let _ = SessionConfig::default();
}

/// Pushes and actions nobody takes (`take_incoming` never called, or the stream dropped) are
/// discarded instead of filling the buffer and stalling the connection; a client that holds
/// its stream gets every one, in order, with backpressure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untaken_pushes_do_not_stall_the_client() {
    // Each burst stays within the server's outbox (1,024): beyond it the server would cut even
    // a fast reader, by design.
    const FLOOD: u64 = 500;
    let server = Server::builder(PSK.clone())
        .route("/FLOOD", "GO", |_req: Request, ctx: Ctx| async move {
            for i in 0..FLOOD {
                ctx.server
                    .broadcast_action(&cypherwire_wire::Action::new("tick", i, 0));
            }
            Ok::<_, HandlerError>(Value::from("sent"))
        })
        .route("/PING", "GO", |_req: Request, _ctx: Ctx| async move {
            Ok::<_, HandlerError>(Value::from("pong"))
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let h = server.handle();
    // Small buffers, so the old behaviour (waiting for a reader that never comes) would stall.
    let quiet = Client::builder(PSK.clone())
        .backoff(fast_backoff())
        .incoming_capacity(16)
        .connect(h.local_addr().to_string())
        .unwrap();
    let listening = Client::builder(PSK.clone())
        .backoff(fast_backoff())
        .incoming_capacity(16)
        .connect(h.local_addr().to_string())
        .unwrap();
    let mut incoming = listening.take_incoming().unwrap();
    quiet.wait_online().await.unwrap();
    listening.wait_online().await.unwrap();
    let reader = tokio::spawn(async move {
        let mut next = 0;
        while next < FLOOD {
            match tokio::time::timeout(Duration::from_secs(10), incoming.next()).await {
                Ok(Some(Incoming::Action(a))) => {
                    assert_eq!(a.data, Value::from(next), "in order, none missing");
                    next += 1;
                }
                other => panic!("after {next}: {other:?}"),
            }
        }
    });
    for round in 0..3 {
        let sent = tokio::time::timeout(
            Duration::from_secs(10),
            quiet.request("/FLOOD", "GO").send(),
        )
        .await
        .unwrap_or_else(|_| panic!("round {round}: the quiet client stalled"))
        .unwrap();
        assert_eq!(sent.data, Value::from("sent"));
        // Both still get answers promptly, on the same connection: the quiet one never took
        // its stream, the listening one dropped its stream after the first flood.
        for c in [&quiet, &listening] {
            for _ in 0..10 {
                let r =
                    tokio::time::timeout(Duration::from_secs(5), c.request("/PING", "GO").send())
                        .await
                        .unwrap_or_else(|_| panic!("round {round}: a client stalled"))
                        .unwrap();
                assert_eq!(r.data, Value::from("pong"));
            }
        }
        if round == 0 {
            // The reader task ends (dropping the stream) once it has the whole first flood.
            reader_done(&reader).await;
        }
    }
    assert_eq!(
        h.stats().slow_consumers,
        0,
        "nobody was cut as a slow consumer"
    );
    quiet.close_within(Duration::from_secs(1)).await;
    listening.close_within(Duration::from_secs(1)).await;
    h.shutdown().await;
}

/// Waits (bounded) until the reading task has seen the whole first flood.
async fn reader_done(reader: &tokio::task::JoinHandle<()>) {
    for _ in 0..200 {
        if reader.is_finished() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the listening client did not receive the flood");
}

/// Server restarts under load: nothing is lost or answered wrongly; a request whose answer was
/// lost with the old process may run again (the contract), and the count is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_under_load_lose_nothing() {
    for codec in [CodecId::MsgPack, CodecId::Json] {
        restarts_with(codec).await;
    }
}

async fn restarts_with(codec: CodecId) {
    let runs = Runs::default();
    let h = server("127.0.0.1:0", runs.clone()).await;
    let addr = h.local_addr();
    const CLIENTS: u64 = 100;
    const PER_CLIENT: u64 = 1_000;
    let mut tasks = tokio::task::JoinSet::new();
    for who in 1..=CLIENTS {
        let c = client_with(addr, codec);
        tasks.spawn(async move {
            let ok = load(&c, who, PER_CLIENT).await;
            c.close_within(Duration::from_secs(1)).await;
            ok
        });
    }
    let mut current = h;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        current.shutdown_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        current = server(&addr.to_string(), runs.clone()).await;
    }
    let mut answered = 0;
    while let Some(r) = tasks.join_next().await {
        answered += r.unwrap();
    }
    let (ran, twice) = {
        let runs = runs.lock().unwrap();
        (runs.len() as u64, runs.values().filter(|n| **n > 1).count())
    };
    println!("restarts: {answered} answered, {ran} distinct requests ran, {twice} ran twice");
    assert_eq!(answered, CLIENTS * PER_CLIENT, "lost requests");
    assert_eq!(ran, CLIENTS * PER_CLIENT);
    // At most the requests in flight at each restart can run again: 3 restarts x 100 x 8.
    assert!(twice <= 3 * 100 * 8, "{twice}");
    current.shutdown().await;
}

#[tokio::test]
async fn invalid_configuration_is_refused() {
    let zero = Client::builder(PSK.clone())
        .max_pending(0, 1)
        .connect("127.0.0.1:1");
    assert!(matches!(zero, Err(Error::Config(_))));
    let zero = Client::builder(PSK.clone())
        .heartbeat(Duration::ZERO, 3)
        .connect("127.0.0.1:1");
    assert!(matches!(zero, Err(Error::Config(_))));
    let mut b = Backoff::default();
    b.max = Duration::from_millis(1);
    assert!(matches!(
        Client::builder(PSK.clone())
            .backoff(b)
            .connect("127.0.0.1:1"),
        Err(Error::Config(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn giving_up_after_a_duration() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut b = fast_backoff();
    b.give_up_after = Some(Duration::from_millis(300));
    let c = Client::builder(PSK.clone())
        .backoff(b)
        .connect(format!("127.0.0.1:{port}"))
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), c.request("/ADD", "ONE").send())
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::GaveUp { .. }), "{err:?}");
    assert_eq!(*c.status().borrow(), Status::GaveUp);
}

/// Seeded network faults on every frame (delays, bit flips, duplicates, swapped frames, resets,
/// closes mid-frame) under load: every request is answered once and correctly, none is lost,
/// none runs twice. The seed is printed so a failure replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_frame_faults_lose_nothing_and_run_nothing_twice() {
    use cypherwire_test_support::proxy::Faults;
    let seed = std::env::var("CYPHERWIRE_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0001_u64);
    println!("fault seed {seed} (set CYPHERWIRE_FAULT_SEED to replay)");
    let runs = Runs::default();
    // Transport faults make handshakes fail too; this test is about delivery, so the address
    // is not banned for them (bans have their own tests).
    let mut bans = cypherwire_session::BanPolicy::default();
    bans.max_attempts = 1_000_000;
    let h = {
        let runs = runs.clone();
        Server::builder(PSK.clone())
            .ban_policy(bans)
            .route("/ADD", "ONE", move |req: Request, _ctx: Ctx| {
                let runs = runs.clone();
                async move {
                    let who = req.metadata.as_u64().unwrap_or(0);
                    *runs.lock().unwrap().entry((who, req.id)).or_insert(0) += 1;
                    Ok::<_, HandlerError>(Value::from(req.data.as_i64().unwrap_or(0) + 1))
                }
            })
            .bind("127.0.0.1:0")
            .await
            .unwrap()
            .handle()
    };
    let mut faults = Faults::seeded(seed);
    faults.delay = 20;
    faults.flip = 2;
    faults.duplicate = 2;
    faults.reorder = 2;
    faults.reset = 1;
    faults.close_mid_frame = 1;
    let proxy = FaultProxy::start_with(h.local_addr(), faults)
        .await
        .unwrap();
    const CLIENTS: u64 = 20;
    const PER_CLIENT: u64 = 300;
    let mut tasks = tokio::task::JoinSet::new();
    for who in 1..=CLIENTS {
        let c = Client::builder(PSK.clone())
            .backoff(fast_backoff())
            .heartbeat(Duration::from_millis(500), 3)
            .connect(proxy.addr().to_string())
            .unwrap();
        tasks.spawn(async move {
            let (mut ok, mut lost, mut wrong) = (0u64, 0u64, 0u64);
            let mut in_flight = tokio::task::JoinSet::new();
            for i in 0..PER_CLIENT {
                if in_flight.len() >= 8 {
                    let (i, r): (u64, Result<cypherwire_client::Reply, Error>) =
                        in_flight.join_next().await.unwrap().unwrap();
                    match r.map(|r| r.data::<u64>()) {
                        Ok(Ok(v)) if v == i + 1 => ok += 1,
                        Ok(_) => wrong += 1,
                        Err(_) => lost += 1,
                    }
                }
                let f = c.request("/ADD", "ONE").data(i).metadata(who).send();
                in_flight.spawn(async move { (i, f.await) });
            }
            while let Some(r) = in_flight.join_next().await {
                let (i, r) = r.unwrap();
                match r.map(|r| r.data::<u64>()) {
                    Ok(Ok(v)) if v == i + 1 => ok += 1,
                    Ok(_) => wrong += 1,
                    Err(_) => lost += 1,
                }
            }
            c.close_within(Duration::from_secs(1)).await;
            (ok, lost, wrong)
        });
    }
    let (mut ok, mut lost, mut wrong) = (0, 0, 0);
    while let Some(r) = tasks.join_next().await {
        let (o, l, w) = r.unwrap();
        ok += o;
        lost += l;
        wrong += w;
    }
    let twice = runs.lock().unwrap().values().filter(|n| **n > 1).count();
    let counts = proxy.fault_counts();
    println!(
        "seed {seed}: {} requests: ok {ok}, lost {lost}, wrong {wrong}, executed twice {twice}; \
         faults injected: {} (delayed {}, flipped {}, duplicated {}, reordered {}, resets {}, \
         mid-frame closes {})",
        CLIENTS * PER_CLIENT,
        counts.total(),
        counts.delayed.load(Ordering::Relaxed),
        counts.flipped.load(Ordering::Relaxed),
        counts.duplicated.load(Ordering::Relaxed),
        counts.reordered.load(Ordering::Relaxed),
        counts.resets.load(Ordering::Relaxed),
        counts.mid_frame_closes.load(Ordering::Relaxed),
    );
    assert_eq!((lost, wrong), (0, 0), "seed {seed}");
    assert_eq!(ok, CLIENTS * PER_CLIENT, "seed {seed}");
    assert_eq!(twice, 0, "seed {seed}: executed twice");
    let destructive = counts.flipped.load(Ordering::Relaxed)
        + counts.duplicated.load(Ordering::Relaxed)
        + counts.reordered.load(Ordering::Relaxed)
        + counts.resets.load(Ordering::Relaxed)
        + counts.mid_frame_closes.load(Ordering::Relaxed);
    assert!(
        destructive >= 10,
        "seed {seed}: the faults must really happen ({destructive})"
    );
    h.shutdown().await;
}
