//! `cypherwire bench`: a quick subset of the performance suite, with progress bars, in one
//! process on 127.0.0.1. Each cypherwire figure comes with a plain-TCP baseline measured in the
//! same run and their ratio:
//!
//! - sequential 100-byte round trips (p50, p99) and 64 requests in flight, through the
//!   reconnecting `Client` and the server, against a length-prefixed TCP echo;
//! - bulk transfer in 64 KiB messages over one session (default cipher suite), against plain
//!   TCP;
//! - PSK handshakes + one round trip per second on fresh connections, against a TCP connect +
//!   one round trip.
//!
//! With `--connect` only the request figures of a running server are measured (and the output
//! says so). Progress bars are drawn on stderr when it is a terminal. The full suite,
//! with tokio-rustls, snow, tarpc and the Python package, interleaved and repeated, is
//! `scripts/bench-suite.py` (see docs/performance.md).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cypherwire::client::Client;
use cypherwire::session::{ClientAuth, Psk, ServerAuth, SessionConfig};
use cypherwire::wire::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::auth::ClientAuthArgs;
use super::service;

/// Payload of the request figures.
const PAYLOAD: usize = 100;
/// Message size of the bulk figures.
const BULK_MSG: usize = 64 * 1024;

/// Arguments of `cypherwire bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A running `cypherwire serve` to measure (default: start one in this process).
    #[arg(long)]
    connect: Option<String>,
    /// Its credentials (with --connect): --psk-file, --password-file, or --identity-key-file
    /// with --server-key-file.
    #[command(flatten)]
    auth: ClientAuthArgs,
    /// Requests per measurement.
    #[arg(long, default_value_t = 5_000)]
    requests: usize,
    /// MiB moved by each bulk measurement (0 skips them; not with --connect).
    #[arg(long, default_value_t = 256)]
    bulk_mib: usize,
    /// Handshakes per measurement (0 skips them; not with --connect).
    #[arg(long, default_value_t = 300)]
    handshakes: usize,
}

/// One figure of cypherwire and, in process mode, its baseline.
struct Row {
    what: &'static str,
    unit: &'static str,
    ours: f64,
    baseline: Option<f64>,
}

#[expect(
    clippy::disallowed_methods,
    reason = "a benchmark reports wall-clock figures"
)]
pub(crate) async fn run(args: &Args) -> anyhow::Result<()> {
    // In process: a fresh PSK for the server started here (and the baselines that need one).
    let (addr, auth, local) = match &args.connect {
        Some(addr) => (addr.clone(), args.auth.client_auth()?, None),
        None => {
            let psk = Psk::generate()?;
            let server =
                service::builder(psk.clone(), Arc::new(Mutex::new(service::State::default())))
                    .bind("127.0.0.1:0")
                    .await?;
            let auth = ClientAuth::Psk(psk.clone());
            (server.local_addr().to_string(), auth, Some((server, psk)))
        }
    };
    let n = args.requests.max(100);
    println!("cypherwire bench against {addr}: {n} requests of {PAYLOAD} bytes per measurement");
    let echo = match &local {
        Some(_) => Some(echo_server().await?),
        None => None,
    };

    let client = Client::builder(auth).connect(addr.clone())?;
    client.wait_online().await?;
    let payload = Value::bytes(vec![0xa5; PAYLOAD]);
    let mut lat = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        client
            .request("/ECHO", "PUT")
            .data(payload.clone())
            .send()
            .await?;
        lat.push(t.elapsed());
        progress("sequential", i + 1, n);
    }
    let seq_rate = n as f64 / started.elapsed().as_secs_f64();
    let (p50, p99) = percentiles(&mut lat);

    let started = Instant::now();
    let mut in_flight = tokio::task::JoinSet::new();
    for i in 0..n {
        if in_flight.len() == 64
            && let Some(r) = in_flight.join_next().await
        {
            r??;
        }
        in_flight.spawn(client.request("/ECHO", "PUT").data(payload.clone()).send());
        progress("64 in flight", i + 1, n);
    }
    while let Some(r) = in_flight.join_next().await {
        r??;
    }
    let pipe_rate = n as f64 / started.elapsed().as_secs_f64();
    let rtt = client.rtt();
    client.close_within(Duration::from_millis(200)).await;

    let mut rows = vec![
        Row {
            what: "sequential round trips",
            unit: "req/s",
            ours: seq_rate,
            baseline: None,
        },
        Row {
            what: "sequential p50 latency",
            unit: "µs",
            ours: us(p50),
            baseline: None,
        },
        Row {
            what: "sequential p99 latency",
            unit: "µs",
            ours: us(p99),
            baseline: None,
        },
        Row {
            what: "64 requests in flight",
            unit: "req/s",
            ours: pipe_rate,
            baseline: None,
        },
    ];
    if let (Some(echo), Some((_, psk))) = (echo, &local) {
        let (rate, p50, p99) = plain_sequential(echo, n).await?;
        rows[0].baseline = Some(rate);
        rows[1].baseline = Some(us(p50));
        rows[2].baseline = Some(us(p99));
        rows[3].baseline = Some(plain_pipelined(echo, n).await?);
        if args.bulk_mib > 0 {
            let total = args.bulk_mib * 1024 * 1024;
            let plain = bulk(None, total).await?;
            let ours = bulk(Some(psk), total).await?;
            rows.push(Row {
                what: "bulk, 64 KiB messages",
                unit: "GB/s",
                ours: total as f64 / ours / 1e9,
                baseline: Some(total as f64 / plain / 1e9),
            });
        }
        if args.handshakes > 0 {
            let k = args.handshakes;
            let plain = handshakes(None, k).await?;
            let ours = handshakes(Some(psk), k).await?;
            rows.push(Row {
                what: "PSK handshake + 1 round trip",
                unit: "per s",
                ours,
                baseline: Some(plain),
            });
        }
    }
    if progress_shown() {
        eprintln!();
    }
    println!();
    println!("| figure | cypherwire | plain TCP | ratio |");
    println!("| --- | --- | --- | --- |");
    for r in &rows {
        let (base, ratio) = match r.baseline {
            Some(b) => (fmt(b, r.unit), format!("{:.2}", r.ours / b)),
            None => ("—".to_owned(), "—".to_owned()),
        };
        println!(
            "| {} | {} | {base} | {ratio} |",
            r.what,
            fmt(r.ours, r.unit)
        );
    }
    if local.is_none() && (args.bulk_mib > 0 || args.handshakes > 0) {
        println!(
            "\nbulk and handshake figures are not measured with --connect: they need a sink for \
             bulk data and more handshakes per second than a server admits from one address; \
             run `cypherwire bench` without --connect for them"
        );
    }
    // The client's heartbeat measures the round trip only once a heartbeat has been answered
    // (the first is due after the heartbeat interval); a short run has none to show.
    if let Some(d) = rtt {
        println!("\nheartbeat RTT: {:.1} µs", us(d));
    }
    println!("one run each, not interleaved: the full suite is scripts/bench-suite.py");
    if let Some((server, _)) = local {
        server.handle().shutdown().await;
    }
    Ok(())
}

fn fmt(v: f64, unit: &str) -> String {
    match unit {
        "GB/s" => format!("{v:.2} {unit}"),
        "µs" => format!("{v:.1} {unit}"),
        _ => format!("{v:.0} {unit}"),
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn percentiles(lat: &mut [Duration]) -> (Duration, Duration) {
    lat.sort();
    let pick = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
    (pick(0.5), pick(0.99))
}

/// A length-prefixed echo server (4-byte big-endian length + body), batching whatever it has
/// read into one write: the baseline for the request figures.
async fn echo_server() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut have = 0;
                loop {
                    match s.read(&mut buf[have..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => have += k,
                    }
                    // Echo every whole frame received so far.
                    let mut end = 0;
                    while have - end >= 4 {
                        let len = u32::from_be_bytes([
                            buf[end],
                            buf[end + 1],
                            buf[end + 2],
                            buf[end + 3],
                        ]) as usize;
                        if len > buf.len() - 4 {
                            return;
                        }
                        if have - end < 4 + len {
                            break;
                        }
                        end += 4 + len;
                    }
                    if end > 0 {
                        if s.write_all(&buf[..end]).await.is_err() {
                            return;
                        }
                        buf.copy_within(end..have, 0);
                        have -= end;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// A plain connection whose reads go through a buffer (a burst of echoes is read with one
/// system call, as any framed client would; writes pass straight through).
async fn plain_conn(addr: SocketAddr) -> anyhow::Result<tokio::io::BufReader<TcpStream>> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(tokio::io::BufReader::with_capacity(64 * 1024, s))
}

fn frame() -> Vec<u8> {
    let mut f = (PAYLOAD as u32).to_be_bytes().to_vec();
    f.extend_from_slice(&[0xa5; PAYLOAD]);
    f
}

#[expect(clippy::disallowed_methods, reason = "wall-clock figures")]
async fn plain_sequential(addr: SocketAddr, n: usize) -> anyhow::Result<(f64, Duration, Duration)> {
    let mut s = plain_conn(addr).await?;
    let f = frame();
    let mut back = vec![0u8; f.len()];
    let mut lat = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        s.write_all(&f).await?;
        s.read_exact(&mut back).await?;
        lat.push(t.elapsed());
        progress("plain, seq.", i + 1, n);
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let (p50, p99) = percentiles(&mut lat);
    Ok((rate, p50, p99))
}

/// 64 requests in flight, refilled by halves, on one task.
#[expect(clippy::disallowed_methods, reason = "wall-clock figures")]
async fn plain_pipelined(addr: SocketAddr, n: usize) -> anyhow::Result<f64> {
    let mut s = plain_conn(addr).await?;
    let f = frame();
    let burst = |k: usize| f.repeat(k);
    let mut back = vec![0u8; f.len()];
    let started = Instant::now();
    let first = n.min(64);
    s.write_all(&burst(first)).await?;
    let mut sent = first;
    for answered in 1..=n {
        s.read_exact(&mut back).await?;
        if sent < n && answered % 32 == 0 {
            let more = (n - sent).min(32);
            s.write_all(&burst(more)).await?;
            sent += more;
        }
        progress("plain, 64", answered, n);
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Seconds to move `total` bytes in 64 KiB messages over one connection (a cypherwire
/// session with `psk`, or plain TCP), handshake excluded.
#[expect(clippy::disallowed_methods, reason = "wall-clock figures")]
async fn bulk(psk: Option<&Psk>, total: usize) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server_psk = psk.cloned();
    let receiver = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let mut got = 0usize;
        match server_psk {
            None => {
                let mut tcp = tcp;
                let mut buf = vec![0u8; 256 * 1024];
                while got < total {
                    match tcp.read(&mut buf).await? {
                        0 => anyhow::bail!("bulk sender hung up"),
                        k => got += k,
                    }
                }
                tcp.write_all(&[1]).await?;
            }
            Some(psk) => {
                let mut s = cypherwire::session::accept(
                    tcp,
                    &ServerAuth::Psk(psk),
                    &SessionConfig::default(),
                )
                .await?;
                while got < total {
                    match s.recv().await? {
                        Some(m) => got += m.len(),
                        None => anyhow::bail!("bulk sender hung up"),
                    }
                }
                s.send(&[1]).await?;
            }
        }
        Ok(())
    });
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let chunk = vec![0x5au8; BULK_MSG];
    let what = if psk.is_some() { "bulk" } else { "plain, bulk" };
    let steps = total.div_ceil(BULK_MSG);
    let secs = match psk {
        None => {
            let mut tcp = tcp;
            let started = Instant::now();
            for i in 0..steps {
                tcp.write_all(&chunk).await?;
                progress(what, i + 1, steps);
            }
            let mut ack = [0u8; 1];
            tcp.read_exact(&mut ack).await?;
            started.elapsed().as_secs_f64()
        }
        Some(psk) => {
            let mut s = cypherwire::session::connect(
                tcp,
                &ClientAuth::Psk(psk.clone()),
                &SessionConfig::default(),
            )
            .await?;
            let started = Instant::now();
            for i in 0..steps {
                s.send(&chunk).await?;
                progress(what, i + 1, steps);
            }
            let _ = s.recv().await?;
            started.elapsed().as_secs_f64()
        }
    };
    receiver.await??;
    Ok(secs)
}

/// Fresh connections per second, each with a PSK handshake (or none) and one 100-byte round
/// trip.
#[expect(clippy::disallowed_methods, reason = "wall-clock figures")]
async fn handshakes(psk: Option<&Psk>, n: usize) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server_psk = psk.cloned();
    let server = tokio::spawn(async move {
        for _ in 0..n {
            let (tcp, _) = listener.accept().await?;
            tcp.set_nodelay(true)?;
            match &server_psk {
                None => {
                    let mut tcp = tcp;
                    let mut b = [0u8; PAYLOAD];
                    tcp.read_exact(&mut b).await?;
                    tcp.write_all(&b).await?;
                }
                Some(psk) => {
                    let auth = ServerAuth::Psk(psk.clone());
                    let mut s =
                        cypherwire::session::accept(tcp, &auth, &SessionConfig::default()).await?;
                    if let Some(m) = s.recv().await? {
                        s.send(&m).await?;
                    }
                }
            }
        }
        Ok::<_, anyhow::Error>(())
    });
    let what = if psk.is_some() {
        "handshakes"
    } else {
        "plain, connect"
    };
    let payload = [7u8; PAYLOAD];
    let started = Instant::now();
    for i in 0..n {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        match psk {
            None => {
                let mut tcp = tcp;
                let mut b = [0u8; PAYLOAD];
                tcp.write_all(&payload).await?;
                tcp.read_exact(&mut b).await?;
            }
            Some(psk) => {
                let auth = ClientAuth::Psk(psk.clone());
                let mut s =
                    cypherwire::session::connect(tcp, &auth, &SessionConfig::default()).await?;
                s.send(&payload).await?;
                anyhow::ensure!(
                    s.recv().await?.as_deref() == Some(&payload[..]),
                    "handshake round trip answered wrongly"
                );
            }
        }
        progress(what, i + 1, n);
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    server.await??;
    Ok(rate)
}

/// Whether progress bars are drawn: only when stderr is a terminal (not a pipe or a file).
fn progress_shown() -> bool {
    use std::io::IsTerminal;
    static SHOWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SHOWN.get_or_init(|| std::io::stderr().is_terminal())
}

/// A one-line progress bar on stderr, redrawn every 2 %, when stderr is a terminal.
fn progress(what: &str, done: usize, total: usize) {
    if !progress_shown() {
        return;
    }
    let step = (total / 50).max(1);
    if done.is_multiple_of(step) || done == total {
        let filled = done * 30 / total;
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "\r{what:<14} [{}{}] {done}/{total}   ",
            "#".repeat(filled),
            ".".repeat(30 - filled)
        );
        let _ = err.flush();
    }
}
