//! CYPHER_PROTOCOL's own Python server and client against cypherwire, in one run (5 rounds,
//! interleaved; medians with min–max), on 127.0.0.1:
//! - sequential requests per second: Python client → Python server; Python client →
//!   cypherwire compat server; cypherwire native client → cypherwire server (the native and
//!   plain-TCP callers run in a task of the runtime, and once more on the thread that called
//!   `block_on`, which is not a worker: each answer then wakes that thread through the OS);
//! - 1 MiB echoes per second (MiB/s) for the same three pairs;
//! - the native pair once more on a current-thread runtime (everything on one thread);
//! - plain TCP (a length-prefixed echo, no encryption, no envelope) on the same multi-thread
//!   runtime as the native pair: the ceiling any protocol meets there.
//!
//! Writes `target/bench-compat.json`. `CYPHERWIRE_BENCH_PROFILE=1` runs only 500 native 1 MiB
//! echoes from the `block_on` thread, for a profiler (`CYPHERWIRE_BENCH_PROFILE=task`: from a
//! task of the runtime).
//!
//! Needs Python 3 and pip (the package is installed into `target/tmp/compat-venv`).
//! Run: `cargo bench -p cypherwire-tests --bench compat`.

#![allow(missing_docs, reason = "benchmark binary")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    clippy::cast_precision_loss,
    reason = "benchmark code: a failure should abort, wall-clock timing is the point"
)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use cypherwire::client::Client;

mod common;
use common::echo::{FrameClient, echo_server};
use cypherwire::server::{Ctx, CypherCompat, HandlerError, Reply, Server};
use cypherwire::session::Psk;
use cypherwire::session::compat::CypherKeys;
use cypherwire::wire::{Request, Value};

const KEY: &str = "2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U";
const ROUNDS: usize = 5;
const REQUESTS: usize = 2000;
/// 1 MiB echoes per figure for the Python pairs (≈ 0.8 s each at their speed).
const BIG: usize = 20;
/// 1 MiB echoes per figure for the native pairs: 20 of them take ≈ 40 ms, short enough for
/// one page-fault burst or scheduler hiccup to move the figure by a third; 200 take ≈ 0.4 s.
const NATIVE_BIG: usize = 200;

const PY_SERVER: &str = r#"
import sys
from CYPHER_PROTOCOL.CYPHER_SERVER.cypher_server import CYPHER_SERVER
KEY = "2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U"
def handler(data, ip_port):
    return {"PATH": data["PATH"], "OPERATION": data["OPERATION"], "DATA": data["DATA"], "METADATA": data["METADATA"]}
s = CYPHER_SERVER(int(sys.argv[1]), KEY, KEY, request_handler=handler, host="127.0.0.1", transmission_buffer=64 * 1024)
s.start_server()
print("READY", flush=True)
sys.stdin.readline()
s.stop_server()
s.destroy_all_connections()
"#;

const PY_CLIENT: &str = r#"
import sys, time
from CYPHER_PROTOCOL.CYPHER_CLIENT.cypher_client import CYPHER_CLIENT
KEY = "2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U"
port, n, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
got = []
c = CYPHER_CLIENT("127.0.0.1", port, KEY, KEY, got.append, timeout=30)
c.connect()
payload = "x" * size
c.make_request("/ECHO", "ANY", payload, {})
t = time.perf_counter()
for i in range(n):
    c.make_request("/ECHO", "ANY", payload, {})
el = time.perf_counter() - t
assert len(got) == n + 1 and got[-1]["DATA"] == payload
print(el, flush=True)
c.close_connection()
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn python_server(py: &Path) -> (Child, u16) {
    let port = free_port();
    let mut child = Command::new(py)
        .args(["-c", PY_SERVER, &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "READY");
    (child, port)
}

/// Seconds the Python client took for `n` requests of `size` bytes.
fn python_client(py: &Path, port: u16, n: usize, size: usize) -> f64 {
    let out = Command::new(py)
        .args([
            "-c",
            PY_CLIENT,
            &port.to_string(),
            &n.to_string(),
            &size.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

async fn native(client: &Client, n: usize, size: usize) -> f64 {
    let payload = Value::from("x".repeat(size));
    client
        .request("/ECHO", "ANY")
        .data(payload.clone())
        .send()
        .await
        .unwrap();
    // Checked as the Python client checks its run: every answer arrives, the last one is
    // compared in full (a full compare of every 1 MiB answer would be bench work inside the
    // timed loop that the Python side does not do).
    let t = Instant::now();
    let mut last = None;
    for _ in 0..n {
        let r = client
            .request("/ECHO", "ANY")
            .data(payload.clone())
            .send()
            .await
            .unwrap();
        last = Some(r.data);
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(last, (n > 0).then_some(payload));
    secs
}

/// The echo server (`/ECHO ANY`, with CYPHER_PROTOCOL's wire on a second port when `compat` is
/// given) and a native client connected to it, on the current runtime.
async fn echo_pair(compat: Option<CypherCompat>) -> (Server, Client) {
    let psk = Psk::from_bytes([9; 32]);
    let mut builder =
        Server::builder(psk.clone()).route("/ECHO", "ANY", |req: Request, _: Ctx| async move {
            Ok::<_, HandlerError>(Reply::new(req.data).with_metadata(req.metadata))
        });
    if let Some(compat) = compat {
        builder = builder.cypher_compat(compat);
    }
    let s = builder.bind("127.0.0.1:0").await.unwrap();
    let c = Client::builder(psk)
        .connect(s.local_addr().to_string())
        .unwrap();
    c.wait_online().await.unwrap();
    (s, c)
}

/// Sequential 100-byte round trips over plain TCP (length-prefixed echo): the ceiling for any
/// protocol on this runtime.
async fn plain(addr: std::net::SocketAddr, n: usize) -> f64 {
    let mut c = FrameClient::new(addr, false, 100).await;
    let t = Instant::now();
    for _ in 0..n {
        c.send(1).await;
        c.recv().await;
    }
    t.elapsed().as_secs_f64()
}

fn summary(name: &str, v: &[f64], unit: &str) -> (f64, f64, f64) {
    let (med, lo, hi) = cypherwire_tests::bench::median_min_max(v);
    println!("{name:<46} median {med:>10.1} {unit}  (min {lo:.1}, max {hi:.1})");
    (med, lo, hi)
}

fn main() {
    let Some(py) =
        cypherwire_test_support::python::cypher_protocol(Path::new(env!("CARGO_TARGET_TMPDIR")))
    else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (server, client) = rt.block_on(echo_pair(Some(CypherCompat::new(
        "127.0.0.1:0",
        CypherKeys::same(KEY).unwrap(),
    ))));
    // The same native pair on a current-thread runtime: client, server and every task on one
    // thread, as in the pinned row of the request/response bench (no cross-thread hand-offs,
    // which on these virtual machines cost more than the work itself). The runtime keeps
    // running on its own thread between measurements, so heartbeats are answered.
    type Job = (usize, usize, std::sync::mpsc::Sender<f64>);
    let (jobs, mut job_rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
    let one_thread = std::thread::spawn(move || {
        let rt1 = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt1.block_on(async move {
            let (s, c) = echo_pair(None).await;
            while let Some((n, size, reply)) = job_rx.recv().await {
                let _ = reply.send(native(&c, n, size).await);
            }
            s.handle().shutdown().await;
        });
    });
    let one_thread_secs = |n: usize, size: usize| {
        let (tx, rx) = std::sync::mpsc::channel();
        jobs.send((n, size, tx)).unwrap();
        rx.recv().unwrap()
    };
    if let Some(mode) = std::env::var_os("CYPHERWIRE_BENCH_PROFILE") {
        // For a profiler: 500 native 1 MiB echoes only, from the `block_on` thread (or from a
        // task of the runtime with `CYPHERWIRE_BENCH_PROFILE=task`).
        let secs = if mode == "task" {
            rt.block_on(async move {
                tokio::spawn(async move { native(&client, 500, 1024 * 1024).await })
                    .await
                    .unwrap()
            })
        } else {
            rt.block_on(native(&client, 500, 1024 * 1024))
        };
        println!("native 1 MiB echoes: {:.1} MiB/s", 500.0 / secs);
        return;
    }
    let compat_port = server.compat_addr().unwrap().port();
    let plain_addr = rt.block_on(echo_server(false));
    let (mut py_server, py_port) = python_server(&py);
    println!(
        "CYPHER_PROTOCOL 1.5.0 vs cypherwire on 127.0.0.1: {REQUESTS} sequential 100-byte requests and {BIG} (Python) / {NATIVE_BIG} (native) 1 MiB echoes per figure; {ROUNDS} rounds, interleaved"
    );
    let (mut pp, mut pc, mut nn, mut n1) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut bpp, mut bpc, mut bnn, mut bn1) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut pt, mut nb, mut pb, mut bnb) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // The callers run in a task of the runtime, as an application's code does; once more on
    // the thread that called `block_on` (the body of `#[tokio::main]`), which is not one of the
    // runtime's workers: every answer must then wake that thread through the OS.
    let in_task = |n: usize, size: usize| {
        let c = client.clone();
        rt.block_on(async move {
            tokio::spawn(async move { native(&c, n, size).await })
                .await
                .unwrap()
        })
    };
    let plain_in_task =
        || rt.block_on(async move { tokio::spawn(plain(plain_addr, REQUESTS)).await.unwrap() });
    let mib = (1024 * 1024) as f64;
    for _ in 0..ROUNDS {
        pp.push(REQUESTS as f64 / python_client(&py, py_port, REQUESTS, 100));
        pc.push(REQUESTS as f64 / python_client(&py, compat_port, REQUESTS, 100));
        nn.push(REQUESTS as f64 / in_task(REQUESTS, 100));
        nb.push(REQUESTS as f64 / rt.block_on(native(&client, REQUESTS, 100)));
        n1.push(REQUESTS as f64 / one_thread_secs(REQUESTS, 100));
        pt.push(REQUESTS as f64 / plain_in_task());
        pb.push(REQUESTS as f64 / rt.block_on(plain(plain_addr, REQUESTS)));
        let size = 1024 * 1024;
        bpp.push(BIG as f64 * size as f64 / mib / python_client(&py, py_port, BIG, size));
        bpc.push(BIG as f64 * size as f64 / mib / python_client(&py, compat_port, BIG, size));
        bnn.push(NATIVE_BIG as f64 * size as f64 / mib / in_task(NATIVE_BIG, size));
        bn1.push(NATIVE_BIG as f64 * size as f64 / mib / one_thread_secs(NATIVE_BIG, size));
        bnb.push(
            NATIVE_BIG as f64 * size as f64 / mib / rt.block_on(native(&client, NATIVE_BIG, size)),
        );
    }
    let rows = [
        ("Python client -> Python server", "req/s", pp),
        ("Python client -> cypherwire compat server", "req/s", pc),
        ("cypherwire client -> cypherwire server", "req/s", nn),
        ("cypherwire, one current-thread runtime", "req/s", n1),
        ("Python client -> Python server, 1 MiB", "MiB/s", bpp),
        ("Python client -> cypherwire compat, 1 MiB", "MiB/s", bpc),
        ("cypherwire client -> cypherwire, 1 MiB", "MiB/s", bnn),
        (
            "cypherwire, one current-thread runtime, 1 MiB",
            "MiB/s",
            bn1,
        ),
        ("plain TCP echo, same runtime (ceiling)", "req/s", pt),
        (
            "cypherwire client -> cypherwire server, caller on the block_on thread",
            "req/s",
            nb,
        ),
        ("plain TCP echo, caller on the block_on thread", "req/s", pb),
        (
            "cypherwire client -> cypherwire, 1 MiB, caller on the block_on thread",
            "MiB/s",
            bnb,
        ),
    ];
    let mut json = Vec::new();
    let mut medians = Vec::new();
    for (name, unit, v) in rows {
        let (med, lo, hi) = summary(name, &v, unit);
        // Ratios against the Python pair of the same workload (rows 0 and 4).
        let base = if unit == "req/s" { 0 } else { 4 };
        medians.push(med);
        let ratio = med / medians[base];
        json.push(format!(
            "{{\"pair\":\"{name}\",\"unit\":\"{unit}\",\"median\":{med:.1},\"min\":{lo:.1},\"max\":{hi:.1},\"ratio_to_python\":{ratio:.4}}}"
        ));
    }
    println!(
        "requests/s vs the Python pair: compat server {:.2}x, native {:.2}x, native on one thread {:.2}x",
        medians[1] / medians[0],
        medians[2] / medians[0],
        medians[3] / medians[0]
    );
    println!(
        "1 MiB MiB/s vs the Python pair: compat server {:.2}x, native {:.2}x, native on one thread {:.2}x",
        medians[5] / medians[4],
        medians[6] / medians[4],
        medians[7] / medians[4]
    );
    println!(
        "ceiling: plain TCP on the same multi-thread runtime does {:.2}x the Python pair's requests/s (the native client reaches {:.0} % of it)",
        medians[8] / medians[0],
        100.0 * medians[2] / medians[8]
    );
    println!(
        "callers on the block_on thread: native {:.2}x the Python pair, plain TCP {:.2}x; 1 MiB native {:.2}x",
        medians[9] / medians[0],
        medians[10] / medians[0],
        medians[11] / medians[4]
    );
    let out = cypherwire_tests::bench::write_json("compat", &json).unwrap();
    println!("written: {}", out.display());
    drop(jobs);
    one_thread.join().unwrap();
    drop(py_server.stdin.take());
    let _ = py_server.kill();
    let _ = py_server.wait();
}
