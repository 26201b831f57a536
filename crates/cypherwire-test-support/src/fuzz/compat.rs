//! Target `compat_listener`: byte streams against the real compat listener (its NUL-delimited
//! reader, the replay cache, the routing of CYPHER_PROTOCOL requests) over loopback TCP.

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cypherwire_server::{Ctx, CypherCompat, HandlerError, Server};
use cypherwire_session::Psk;
use cypherwire_session::compat::{self, CompatMessage, CypherKeys, NulFramer};
use cypherwire_wire::{Request, StatusCode, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpSocket;
use tokio::runtime::Runtime;

use super::COMPAT_FUZZ_KEY;

/// The listener's request limit here: small, so inputs reach it.
const MAX_TOKEN: usize = 512;

struct Fixture {
    rt: Runtime,
    keys: CypherKeys,
    addr: SocketAddr,
    _server: Server,
}

static FIX: LazyLock<Fixture> = LazyLock::new(|| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let keys = CypherKeys::same(COMPAT_FUZZ_KEY).unwrap_or_else(|e| panic!("{e}"));
    let mut cfg = CypherCompat::new("127.0.0.1:0", keys.clone());
    cfg.max_message_len = MAX_TOKEN;
    let server = rt.block_on(
        Server::builder(Psk::from_bytes([0x61; 32]))
            .cypher_compat(cfg)
            .route("/ECHO", "PUT", |req: Request, _ctx: Ctx| async move {
                Ok::<_, HandlerError>(req.data)
            })
            .bind("127.0.0.1:0"),
    );
    let server = server.unwrap_or_else(|e| panic!("server: {e}"));
    let addr = server
        .compat_addr()
        .unwrap_or_else(|| panic!("no compat address"));
    Fixture {
        rt,
        keys,
        addr,
        _server: server,
    }
});

static NEXT_SOURCE: AtomicU32 = AtomicU32::new(0);

/// What one input sends, and what each complete token it holds is.
struct Plan {
    /// The writes, in order.
    writes: Vec<Vec<u8>>,
    /// For each genuine token sent: the request it carries.
    genuine: Vec<(Vec<u8>, CompatMessage)>,
}

/// Builds the byte stream. Each operation byte (low two bits): 0 a genuine request token
/// (`/ECHO PUT` with the next byte as data, or `/NONE GET` when bit 2 is set; split over two
/// writes when bit 3 is), 1 raw bytes (the next byte says how many; NULs in them end tokens),
/// 2 the last genuine token again, 3 end the current write (so the listener reads the stream
/// in pieces).
fn plan(data: &[u8], keys: &CypherKeys) -> Plan {
    let mut p = Plan {
        writes: vec![Vec::new()],
        genuine: Vec::new(),
    };
    let mut last: Option<Vec<u8>> = None;
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let current = p.writes.last_mut().unwrap_or_else(|| unreachable!());
        match op & 3 {
            0 => {
                let (&arg, tail) = rest.split_first().unwrap_or((&0, &[]));
                rest = tail;
                let (path, operation) = if op & 4 == 0 {
                    ("/ECHO", "PUT")
                } else {
                    ("/NONE", "GET")
                };
                let msg = CompatMessage {
                    path: path.into(),
                    operation: operation.into(),
                    data: Value::from(arg),
                    metadata: Value::map([("n", Value::from(u64::from(op)))]),
                };
                let token = compat::encode(&msg, &keys.encryption, 1_700_000_000)
                    .unwrap_or_else(|e| panic!("encode: {e}"));
                if op & 8 == 0 {
                    current.extend_from_slice(&token);
                } else {
                    // Split across two writes, so the reader must join its halves.
                    let (head, tail) = token.split_at(token.len() / 2);
                    current.extend_from_slice(head);
                    p.writes.push(tail.to_vec());
                }
                p.genuine.push((token[..token.len() - 1].to_vec(), msg));
                last = Some(token);
            }
            1 => {
                let (&len, tail) = rest.split_first().unwrap_or((&0, &[]));
                let n = usize::from(len).min(tail.len());
                current.extend_from_slice(&tail[..n]);
                rest = &tail[n..];
            }
            2 => {
                if let Some(token) = &last {
                    current.extend_from_slice(token);
                }
            }
            _ => p.writes.push(Vec::new()),
        }
    }
    p
}

/// Target `compat_listener`. The stream is cut into complete tokens the way the spec says (a
/// NUL ends each; more than the limit before a NUL ends the connection); the listener must
/// answer each genuine request token in order (the same bytes again for a resent token) with a
/// token that opens under the key and names the request's path and operation, echoing `/ECHO`'s
/// data and answering `/NONE` with a `NOT_FOUND` error; it stops at the first token that is not a
/// request, or at an oversize one. Answers that arrive must be exactly those; when no token
/// fails, all of them arrive and the connection then ends cleanly. Anything else, or no end
/// within 5 s, is a finding.
pub fn compat_listener(data: &[u8]) {
    let fix = &*FIX;
    let p = plan(data, &fix.keys);
    // The tokens the listener sees, and whether the stream breaks off (a token that is not a
    // genuine request, or an oversize one).
    let mut framer = NulFramer::new(MAX_TOKEN);
    framer.push(&p.writes.concat());
    let mut expected = Vec::new();
    let mut fails = false;
    loop {
        match framer.next_message() {
            Ok(Some(token)) => match p.genuine.iter().find(|(t, _)| t[..] == token[..]) {
                Some((t, msg)) => expected.push((t.clone(), msg.clone())),
                None => {
                    fails = true;
                    break;
                }
            },
            Ok(None) => break,
            Err(_) => {
                fails = true;
                break;
            }
        }
    }
    let n = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed);
    let [_, a, b, c] = n.to_be_bytes();
    // A fresh loopback source address per input: no port is reused while in TIME_WAIT.
    let source = SocketAddr::from(([127, a.max(1), b, c.max(2)], 0));
    fix.rt.block_on(async {
        let run = exchange(fix, source, &p.writes, &expected, fails);
        if tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .is_err()
        {
            panic!("the compat listener did not end the exchange within 5 s");
        }
    });
}

async fn exchange(
    fix: &Fixture,
    source: SocketAddr,
    writes: &[Vec<u8>],
    expected: &[(Vec<u8>, CompatMessage)],
    fails: bool,
) {
    let socket = TcpSocket::new_v4().unwrap_or_else(|e| panic!("socket: {e}"));
    socket
        .bind(source)
        .unwrap_or_else(|e| panic!("bind {source}: {e}"));
    let mut stream = socket
        .connect(fix.addr)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let (mut rd, mut wr) = stream.split();
    let send = async {
        for w in writes {
            // The listener may close before reading everything.
            if wr.write_all(w).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    };
    let mut received = Vec::new();
    let receive = async {
        // A reset after the listener closed is an end too.
        let _ = rd.read_to_end(&mut received).await;
    };
    tokio::join!(send, receive);
    let mut answers = NulFramer::new(1 << 20);
    answers.push(&received);
    let mut got = 0;
    let mut firsts: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    while let Some(token) = answers
        .next_message()
        .unwrap_or_else(|e| panic!("an answer is not a compat token: {e}"))
    {
        let (request, want) = expected
            .get(got)
            .unwrap_or_else(|| panic!("an answer beyond the {} requests", expected.len()));
        let answer = compat::decode(&token, &fix.keys.decryption)
            .unwrap_or_else(|e| panic!("an answer does not open: {e}"));
        assert_eq!(
            (&answer.path, &answer.operation),
            (&want.path, &want.operation),
            "answer {got} is for another request"
        );
        if want.path == "/ECHO" {
            assert_eq!(answer.data, want.data, "/ECHO changed the data");
            assert_eq!(answer.metadata, want.metadata, "the metadata is not echoed");
        } else {
            let code = answer.metadata.get("ERROR").and_then(|e| e.get("code"));
            assert_eq!(
                code,
                Some(&Value::from(StatusCode::NOT_FOUND.0)),
                "/NONE: {answer:?}"
            );
        }
        // A resent token is answered from the replay cache: the same bytes.
        match firsts.iter().find(|(r, _)| r == request) {
            Some((_, first)) => assert_eq!(first[..], token[..], "a resent token answered anew"),
            None => firsts.push((request.clone(), token.to_vec())),
        }
        got += 1;
    }
    if !fails {
        assert_eq!(got, expected.len(), "requests left unanswered");
    }
}
