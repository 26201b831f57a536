//! CYPHER_PROTOCOL compat mode against the real Python package (PyPI
//! `cypher-protocol-p-y-r-o-b-o-t` 1.5.0), installed on first use into a virtualenv cached
//! under `target/tmp/compat-venv`. The tests skip (with the reason printed) only when pip
//! itself cannot reach the index; any other failure fails them.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cypherwire::client::compat::CompatClient;
use cypherwire::server::{Ctx, CypherCompat, HandlerError, Reply, Server, ServerHandle};
use cypherwire::session::Psk;
use cypherwire::session::compat::CypherKeys;
use cypherwire::wire::{Request, Value};

const KEY: &str = "2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U";
fn python() -> Option<PathBuf> {
    cypherwire_test_support::python::cypher_protocol(std::path::Path::new(env!(
        "CARGO_TARGET_TMPDIR"
    )))
}

/// A child's stdout lines, read on a thread (waits time out instead of hanging).
fn lines(child: &mut Child) -> Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { return };
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    rx
}

fn expect(rx: &Receiver<String>, prefix: &str) -> String {
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) if l.starts_with(prefix) => return l,
            Ok(l) => seen.push(l),
            Err(e) => panic!("waiting for {prefix:?}: {e}; saw {seen:?}"),
        }
    }
}

/// CYPHER_PROTOCOL's README routes, on shared state that outlives server restarts.
#[derive(Default)]
struct State {
    sequence: Vec<Value>,
    number: Value,
}

async fn start_server(state: Arc<Mutex<State>>, compat_addr: &str) -> (ServerHandle, u16) {
    let (s1, s2, s3, s4) = (state.clone(), state.clone(), state.clone(), state);
    let server = Server::builder(Psk::from_bytes([7; 32]))
        .route("/SEQUENCE", "UPDATE", move |req: Request, _: Ctx| {
            let s = s1.clone();
            async move {
                let mut st = s.lock().unwrap();
                st.sequence.push(req.data);
                if st.sequence.len() > 10 {
                    st.sequence.remove(0);
                }
                Ok::<_, HandlerError>(Reply::new("UPDATED"))
            }
        })
        .route("/SEQUENCE", "READ", move |_: Request, _: Ctx| {
            let s = s2.clone();
            async move {
                Ok::<_, HandlerError>(Reply::new(Value::Array(s.lock().unwrap().sequence.clone())))
            }
        })
        .route("/NUMBER", "UPDATE", move |req: Request, _: Ctx| {
            let s = s3.clone();
            async move {
                s.lock().unwrap().number = req.data;
                Ok::<_, HandlerError>(Reply::new("UPDATED"))
            }
        })
        .route("/NUMBER", "READ", move |_: Request, _: Ctx| {
            let s = s4.clone();
            async move { Ok::<_, HandlerError>(Reply::new(s.lock().unwrap().number.clone())) }
        })
        .route("/FAIL", "ANY", |_: Request, _: Ctx| async move {
            Err::<Reply, _>(HandlerError::bad_request("no such thing"))
        })
        .cypher_compat(CypherCompat::new(
            compat_addr,
            CypherKeys::same(KEY).unwrap(),
        ))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let port = server.compat_addr().unwrap().port();
    (server.handle(), port)
}

const CLIENT_SCRIPT: &str = r#"
import sys, json
from CYPHER_PROTOCOL.CYPHER_CLIENT.cypher_client import CYPHER_CLIENT
KEY = "2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U"
port, n = int(sys.argv[1]), int(sys.argv[2])
got = []
events = {"online": 0, "offline": 0}
def on_online(): events["online"] += 1
def on_offline(): events["offline"] += 1
c = CYPHER_CLIENT("127.0.0.1", port, KEY, KEY, got.append,
                  offline_signal_processor=on_offline, online_signal_processor=on_online, timeout=10)
c.connect()
def ask(path, op, data={}, meta={}):
    before = len(got)
    c.make_request(path=path, operation=op, data=data, metadata=meta)
    assert len(got) == before + 1, "no answer"
    return got[-1]
def batch(start, count):
    wrong = 0
    for i in range(start, start + count):
        r = ask("/NUMBER", "UPDATE", i, {"i": i})
        wrong += r["DATA"] != "UPDATED" or r["METADATA"] != {"i": i}
        r = ask("/NUMBER", "READ", meta={"i": i})
        wrong += r["DATA"] != i or r["PATH"] != "/NUMBER"
    return wrong
# The README interaction.
assert ask("/SEQUENCE", "UPDATE", 5)["DATA"] == "UPDATED"
assert ask("/SEQUENCE", "UPDATE", "h\u00e9llo")["DATA"] == "UPDATED"
assert ask("/SEQUENCE", "READ")["DATA"] == [5, "h\u00e9llo"]
err = ask("/FAIL", "ANY")
assert err["METADATA"]["ERROR"]["code"] == 1, err
wrong = batch(0, n)
print("FIRST", n, wrong, flush=True)
sys.stdin.readline()  # the server restarts meanwhile
wrong = batch(n, 100)
print("SECOND", 100, wrong, events["online"], events["offline"], flush=True)
c.close_connection()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_against_the_compat_server_across_a_restart() {
    let Some(py) = python() else { return };
    let state = Arc::new(Mutex::new(State::default()));
    let (handle, port) = start_server(state.clone(), "127.0.0.1:0").await;
    let mut child = Command::new(&py)
        .args(["-c", CLIENT_SCRIPT, &port.to_string(), "500"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines(&mut child);
    let mut stdin: ChildStdin = child.stdin.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        let l = expect(&out, "FIRST");
        (l, out)
    })
    .await
    .unwrap();
    let (line, out) = first;
    // 500 updates and 500 reads: 1,000 requests, every answer correct.
    assert_eq!(line, "FIRST 500 0");
    // The server counted the Python connection and its requests per route.
    assert!(handle.stats().compat_connections >= 1);
    let number: Vec<(String, u64)> = handle
        .route_stats()
        .into_iter()
        .filter(|r| r.path == "/NUMBER")
        .map(|r| (r.operation.clone(), r.total()))
        .collect();
    assert_eq!(number, [("READ".into(), 500), ("UPDATE".into(), 500)]);
    // Restart the server on the same port; the Python client reconnects by itself.
    handle.shutdown().await;
    // `shutdown` returns once the compat listener's port is free too.
    let (handle, again) = start_server(state, &format!("127.0.0.1:{port}")).await;
    assert_eq!(again, port);
    writeln!(stdin, "go").unwrap();
    let line = tokio::task::spawn_blocking(move || expect(&out, "SECOND"))
        .await
        .unwrap();
    let parts: Vec<&str> = line.split(' ').collect();
    assert_eq!(&parts[..3], ["SECOND", "100", "0"], "{line}");
    let (online, offline): (u32, u32) = (parts[3].parse().unwrap(), parts[4].parse().unwrap());
    assert!(
        online >= 2 && offline >= 1,
        "reconnect seen by the client: {line}"
    );
    assert!(child.wait().unwrap().success());
    handle.shutdown().await;
}

const SERVER_SCRIPT: &str = r#"
import sys
from CYPHER_PROTOCOL.CYPHER_SERVER.cypher_server import CYPHER_SERVER
KEY = "2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U"
SEQUENCE = []
NUMBER = [0]
def handler(data, ip_port):
    r = {"PATH": data["PATH"], "OPERATION": data["OPERATION"], "METADATA": data["METADATA"]}
    if data["PATH"] == "/SEQUENCE":
        if data["OPERATION"] == "UPDATE":
            SEQUENCE.append(data["DATA"]); r["DATA"] = "UPDATED"
        else:
            r["DATA"] = SEQUENCE
    elif data["PATH"] == "/NUMBER":
        if data["OPERATION"] == "UPDATE":
            NUMBER[0] = data["DATA"]; r["DATA"] = "UPDATED"
        else:
            r["DATA"] = NUMBER[0]
    else:
        r["DATA"] = data["DATA"]
    return r
# 64 KiB sends: the package's send() (not sendall) drops bytes on multi-MiB single sends.
s = CYPHER_SERVER(int(sys.argv[1]), KEY, KEY, request_handler=handler, host="127.0.0.1",
                  transmission_buffer=64 * 1024, timeout=30)
s.start_server()
print("READY", flush=True)
sys.stdin.readline()
s.stop_server()
s.destroy_all_connections()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compat_client_against_the_python_server() {
    let Some(py) = python() else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(&py)
        .args(["-c", SERVER_SCRIPT, &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines(&mut child);
    tokio::task::spawn_blocking(move || expect(&out, "READY"))
        .await
        .unwrap();
    let client = CompatClient::builder(CypherKeys::same(KEY).unwrap())
        .timeout(Duration::from_secs(20))
        .connect(format!("127.0.0.1:{port}"))
        .unwrap();
    // The README interaction.
    let meta = Value::map([("k", Value::from("v"))]);
    let r = client
        .request("/NUMBER", "UPDATE", 42, meta.clone())
        .await
        .unwrap();
    assert_eq!((r.data, r.metadata), (Value::from("UPDATED"), meta));
    assert_eq!(
        client
            .request("/NUMBER", "READ", Value::Nil, Value::Map(vec![]))
            .await
            .unwrap()
            .data,
        Value::from(42)
    );
    client
        .request("/SEQUENCE", "UPDATE", "a", Value::Nil)
        .await
        .unwrap();
    client
        .request("/SEQUENCE", "UPDATE", 7, Value::Nil)
        .await
        .unwrap();
    let seq = client
        .request("/SEQUENCE", "READ", Value::Nil, Value::Nil)
        .await
        .unwrap();
    assert_eq!(
        seq.data,
        Value::Array(vec![Value::from("a"), Value::from(7)])
    );
    // Every JSON type, non-ASCII text included, round-trips through the Python server.
    let all = Value::map([
        ("null", Value::Nil),
        ("bool", Value::from(true)),
        ("int", Value::from(-123_456_789_012_i64)),
        ("big", Value::from(u64::MAX)),
        ("float", Value::from(2.5)),
        ("text", Value::from("héllo wörld 🦀")),
        (
            "list",
            Value::Array(vec![Value::from(1), Value::from("two"), Value::Nil]),
        ),
        (
            "map",
            Value::map([("nested", Value::map([("deep", Value::from(false))]))]),
        ),
    ]);
    let r = client
        .request("/ECHO", "ANY", all.clone(), Value::Nil)
        .await
        .unwrap();
    assert_eq!(r.data, all);
    // A 1 MiB payload.
    let big = Value::from("x".repeat(1024 * 1024));
    let r = client
        .request("/ECHO", "ANY", big.clone(), Value::Nil)
        .await
        .unwrap();
    assert_eq!(r.data, big);
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "stop").unwrap();
    let _ = child.kill();
    let _ = child.wait();
}
