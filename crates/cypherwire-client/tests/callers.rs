//! Callers that poll the connection themselves (the client's engine, `src/engine.rs`): when a
//! request is queued, that no caller can hold the others up, that callers on any thread work,
//! and that many tasks sharing one client each get their own answer (that nothing runs twice
//! is `tests/client.rs`'s). Real server, loopback TCP.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use cypherwire_client::{Client, Incoming, Reply};
use cypherwire_server::{Ctx, HandlerError, Server, ServerHandle};
use cypherwire_session::Psk;
use cypherwire_wire::{Request, Value};

static PSK: LazyLock<Psk> = LazyLock::new(|| Psk::from_bytes([0x47; 32]));

/// What the `/MARK NOW` handler saw: how many started, how many were dropped unfinished
/// (aborted by a cancel).
#[derive(Default)]
struct Marks {
    started: AtomicUsize,
    aborted: AtomicUsize,
}

struct AbortedUnlessDone<'a> {
    marks: &'a Marks,
    done: bool,
}

impl Drop for AbortedUnlessDone<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.marks.aborted.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// `/ECHO PUT` returns its data; `/MARK NOW` counts its start and waits `data` ms (its abort is
/// counted too); `/HOLD WAIT` waits `data` ms.
async fn server(marks: Arc<Marks>) -> ServerHandle {
    let server = Server::builder(PSK.clone())
        .route("/ECHO", "PUT", |req: Request, _ctx: Ctx| async move {
            Ok::<_, HandlerError>(req.data)
        })
        .route("/MARK", "NOW", move |req: Request, _ctx: Ctx| {
            let marks = marks.clone();
            async move {
                marks.started.fetch_add(1, Ordering::SeqCst);
                let mut guard = AbortedUnlessDone {
                    marks: &marks,
                    done: false,
                };
                tokio::time::sleep(Duration::from_millis(req.data.as_u64().unwrap_or(0))).await;
                guard.done = true;
                Ok::<_, HandlerError>(Value::from("marked"))
            }
        })
        .route("/HOLD", "WAIT", |req: Request, _ctx: Ctx| async move {
            tokio::time::sleep(Duration::from_millis(req.data.as_u64().unwrap_or(0))).await;
            Ok::<_, HandlerError>(Value::from("held"))
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    server.handle()
}

async fn online_client(h: &ServerHandle) -> Client {
    let c = Client::builder(PSK.clone())
        .connect(h.local_addr().to_string())
        .unwrap();
    c.wait_online().await.unwrap();
    c
}

/// A fresh server (`server`) and a client online with it.
async fn setup() -> (Arc<Marks>, ServerHandle, Client) {
    let marks = Arc::new(Marks::default());
    let h = server(marks.clone()).await;
    let c = online_client(&h).await;
    (marks, h, c)
}

/// A server with `/ECHO PUT` only, on `addr` (the address a killed server listened on).
async fn echo_server_on(addr: std::net::SocketAddr) -> Server {
    Server::builder(PSK.clone())
        .route("/ECHO", "PUT", |req: Request, _ctx: Ctx| async move {
            Ok::<_, HandlerError>(req.data)
        })
        .bind(&addr.to_string())
        .await
        .unwrap()
}

/// Waits (bounded) until `f` holds.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within 5 s: {what}");
}

/// `fut`'s output, or a failed test after `secs` seconds.
async fn within<F: Future>(secs: u64, fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("not answered within {secs} s"))
}

async fn echo(c: &Client, v: u64) -> u64 {
    let reply = within(10, c.request("/ECHO", "PUT").data(v).send())
        .await
        .unwrap();
    reply.data::<u64>().unwrap()
}

/// Each spawned `/ECHO` call, in order, answers its index (within `secs` seconds each).
async fn answers_in_order(
    calls: Vec<tokio::task::JoinHandle<Result<Reply, cypherwire_client::Error>>>,
    secs: u64,
) {
    for (i, call) in calls.into_iter().enumerate() {
        let reply = within(secs, call).await.unwrap().unwrap();
        assert_eq!(reply.data::<u64>().unwrap(), i as u64);
    }
}

/// With another request waiting, `send` queues at once: the server runs it before its future is
/// ever polled, and dropping that never-polled future cancels it there. With nobody waiting the
/// request is queued only when its future is first polled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_queues_at_once_when_others_wait_and_a_dropped_future_cancels() {
    let (marks, h, c) = setup().await;

    let waiting = tokio::spawn(c.request("/HOLD", "WAIT").data(1_500).send());
    // The waiting request has reached the server (so it is registered as waiting).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let unpolled = c.request("/MARK", "NOW").data(60_000).send();
    eventually("the never-polled request ran on the server", || {
        marks.started.load(Ordering::SeqCst) == 1
    })
    .await;
    drop(unpolled);
    eventually("dropping it cancelled it on the server", || {
        marks.aborted.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(
        waiting.await.unwrap().unwrap().data::<String>().unwrap(),
        "held"
    );

    // Nobody waits now: nothing is sent until the future is polled.
    let lazy = c.request("/MARK", "NOW").data(0).send();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        marks.started.load(Ordering::SeqCst),
        1,
        "not sent before its first poll"
    );
    let reply = lazy.await.unwrap();
    assert_eq!(reply.data::<String>().unwrap(), "marked");
    assert_eq!(marks.started.load(Ordering::SeqCst), 2);
    c.close_within(Duration::from_millis(200)).await;
    h.shutdown().await;
}

/// A request future polled once and then kept without being polled (as in a disabled `select!`
/// branch) may be the caller handed the next wake of the connection; it must not hold up the
/// other requests of the client for longer than the engine's watchdog (20 ms), let alone
/// forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neglected_request_future_does_not_hold_up_the_others() {
    let (_marks, h, c) = setup().await;
    let (polled_tx, polled) = tokio::sync::oneshot::channel();
    let neglecter = {
        let c = c.clone();
        tokio::spawn(async move {
            let mut f = Box::pin(c.request("/HOLD", "WAIT").data(0).send());
            std::future::poll_fn(|cx| {
                let _ = f.as_mut().poll(cx);
                Poll::Ready(())
            })
            .await;
            polled_tx.send(()).unwrap();
            // Woken for the connection, this task sleeps instead of polling `f`.
            tokio::time::sleep(Duration::from_secs(3)).await;
            drop(f);
        })
    };
    polled.await.unwrap();
    for i in 0..50 {
        assert_eq!(echo(&c, i).await, i);
    }
    // And the same with requests in flight at once.
    let burst: Vec<_> = (0..32u64)
        .map(|i| tokio::spawn(c.request("/ECHO", "PUT").data(i).send()))
        .collect();
    answers_in_order(burst, 10).await;
    neglecter.await.unwrap();
    c.close_within(Duration::from_millis(200)).await;
    h.shutdown().await;
}

/// A minimal executor for a plain thread (no tokio context): polls `f`, parking the thread
/// until its waker is called.
fn block_on_plain_thread<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

/// Requests awaited on threads that are not the runtime's, by an executor that is not tokio's,
/// are answered: whoever polls the connection does it inside the client's runtime. Between two
/// phases the server is killed and restarted, so those threads are the callers while the
/// connection is made again (sockets and timers created as they poll).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_on_threads_outside_the_runtime_are_answered() {
    let (_marks, h, c) = setup().await;
    let addr = h.local_addr();
    let (phase_done, phases) = std::sync::mpsc::channel::<()>();
    let mut go = Vec::new();
    let threads: Vec<_> = (0..3u64)
        .map(|t| {
            let c = c.clone();
            let phase_done = phase_done.clone();
            let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
            go.push(go_tx);
            std::thread::spawn(move || {
                for phase in 0..2u64 {
                    for i in 0..100u64 {
                        let v = t * 1_000 + phase * 100 + i;
                        let reply = block_on_plain_thread(c.request("/ECHO", "PUT").data(v).send());
                        assert_eq!(reply.unwrap().data::<u64>().unwrap(), v);
                    }
                    if phase == 0 {
                        phase_done.send(()).unwrap();
                        go_rx.recv().unwrap();
                    }
                }
            })
        })
        .collect();
    for _ in 0..3 {
        let phases = &phases;
        tokio::task::block_in_place(|| phases.recv_timeout(Duration::from_secs(10)).unwrap());
    }
    h.shutdown_now().await;
    let mut status = c.status();
    within(5, status.wait_for(|s| !s.is_online()))
        .await
        .unwrap();
    let _h2 = echo_server_on(addr).await;
    for g in go {
        g.send(()).unwrap();
    }
    for t in threads {
        tokio::task::spawn_blocking(move || t.join().unwrap())
            .await
            .unwrap();
    }
    assert_eq!(echo(&c, 7).await, 7);
    c.close_within(Duration::from_millis(200)).await;
}

/// Many tasks on both workers share one client, each with several requests in flight: every
/// request gets its own answer, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_sharing_one_client_each_get_their_own_answers() {
    let (_marks, h, c) = setup().await;
    let tasks: Vec<_> = (0..32u64)
        .map(|t| {
            let c = c.clone();
            tokio::spawn(async move {
                for round in 0..25u64 {
                    let calls: Vec<_> = (0..4u64)
                        .map(|k| {
                            let v = (t << 32) | (round << 8) | k;
                            (v, c.request("/ECHO", "PUT").data(v).send())
                        })
                        .collect();
                    for (v, call) in calls {
                        let reply = within(10, call).await.unwrap();
                        assert_eq!(reply.data::<u64>().unwrap(), v);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    c.close_within(Duration::from_millis(200)).await;
    h.shutdown().await;
}

/// Large requests (300 KiB: several records each way, sealed and opened by whichever caller
/// polls the connection) and small ones mixed, from several tasks, across a server restart:
/// every answer arrives, intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_and_small_requests_mixed_across_a_restart() {
    let (_marks, h, c) = setup().await;
    let addr = h.local_addr();
    let big = |seed: u8| -> Vec<u8> { (0..300 * 1024).map(|i| (i as u8) ^ seed).collect() };
    // Alone: nobody else waits.
    let reply = c
        .request("/ECHO", "PUT")
        .data(Value::bytes(big(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.data, Value::bytes(big(1)));
    let tasks: Vec<_> = (0..6u8)
        .map(|t| {
            let c = c.clone();
            tokio::spawn(async move {
                for i in 0..20u8 {
                    let data = if (t + i) % 3 == 0 {
                        Value::bytes(big(t ^ i))
                    } else {
                        Value::from(u64::from(t) * 100 + u64::from(i))
                    };
                    let reply = within(20, c.request("/ECHO", "PUT").data(data.clone()).send())
                        .await
                        .unwrap();
                    assert_eq!(reply.data, data);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    h.shutdown_now().await;
    let _h2 = echo_server_on(addr).await;
    for t in tasks {
        t.await.unwrap();
    }
    c.close_within(Duration::from_millis(200)).await;
}

/// Callers on another tokio runtime (a current-thread one on its own thread) are answered,
/// across a server restart, and the client keeps working after that runtime is gone: the
/// connection the callers polled belongs to the client's runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_on_another_runtime_are_answered_and_leave_nothing_behind() {
    let (_marks, h, c) = setup().await;
    let addr = h.local_addr();
    let (half_tx, half_rx) = std::sync::mpsc::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let other = {
        let c = c.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                for i in 0..200u64 {
                    if i == 100 {
                        half_tx.send(()).unwrap();
                        go_rx.recv().unwrap();
                    }
                    assert_eq!(echo(&c, i).await, i);
                }
            });
            drop(rt);
        })
    };
    tokio::task::block_in_place(|| half_rx.recv_timeout(Duration::from_secs(10)).unwrap());
    h.shutdown_now().await;
    let _h2 = echo_server_on(addr).await;
    go_tx.send(()).unwrap();
    tokio::task::spawn_blocking(move || other.join().unwrap())
        .await
        .unwrap();
    // The other runtime is gone; the connection it may have remade lives on here.
    for i in 0..20 {
        assert_eq!(echo(&c, i).await, i);
    }
    c.close_within(Duration::from_millis(200)).await;
}

/// More requests than the command queue holds (1,024), while the driver cannot take commands
/// (it waits for the application to read its pushes and actions: backpressure): the callers
/// beyond the queue wait for room, nothing is answered meanwhile, and once the application
/// reads, every request is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_command_queue_makes_callers_wait_and_loses_nothing() {
    const REQUESTS: u64 = 1_100;
    let server = Server::builder(PSK.clone())
        .route("/ECHO", "PUT", |req: Request, _ctx: Ctx| async move {
            Ok::<_, HandlerError>(req.data)
        })
        .route("/TICK", "GO", |_req: Request, ctx: Ctx| async move {
            for i in 0..4u64 {
                ctx.server
                    .broadcast_action(&cypherwire_wire::Action::new("tick", i, 0));
            }
            Ok::<_, HandlerError>(Value::from("ticked"))
        })
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let h = server.handle();
    let c = Client::builder(PSK.clone())
        .incoming_capacity(1)
        .max_pending(4 * 1024, 64 * 1024 * 1024)
        .connect(h.local_addr().to_string())
        .unwrap();
    c.wait_online().await.unwrap();
    let mut incoming = c.take_incoming().unwrap();
    // The actions come before the answer: the driver delivers one, then waits for room.
    let tick = tokio::spawn(c.request("/TICK", "GO").send());
    // Until a probe goes unanswered, the driver may still be taking commands.
    let mut blocked = false;
    for _ in 0..100 {
        let probe = c.request("/ECHO", "PUT").data(u64::MAX).send();
        if tokio::time::timeout(Duration::from_millis(100), probe)
            .await
            .is_err()
        {
            blocked = true;
            break;
        }
    }
    assert!(blocked, "the driver waits for the application to read");
    let calls: Vec<_> = (0..REQUESTS)
        .map(|i| tokio::spawn(c.request("/ECHO", "PUT").data(i).send()))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        calls.iter().all(|t| !t.is_finished()) && !tick.is_finished(),
        "nothing is answered while the driver waits for the application"
    );
    for i in 0..4u64 {
        match within(10, incoming.next()).await {
            Some(Incoming::Action(a)) => assert_eq!(a.data, Value::from(i)),
            other => panic!("action {i}: {other:?}"),
        }
    }
    let ticked = within(10, tick).await.unwrap().unwrap();
    assert_eq!(ticked.data::<String>().unwrap(), "ticked");
    answers_in_order(calls, 20).await;
    c.close_within(Duration::from_millis(200)).await;
    h.shutdown().await;
}
