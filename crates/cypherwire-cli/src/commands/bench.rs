//! `cypherwire bench`: quick loopback figures — sequential round trips (p50, p99) and requests
//! with 64 in flight — against an in-process demo server, or a running one with `--connect`.
//! The full suite is `cargo bench` (see docs/performance.md).

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cypherwire::client::Client;
use cypherwire::session::Psk;
use cypherwire::wire::Value;

use super::keys::read_psk;
use super::service;

/// Arguments of `cypherwire bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A running `cypherwire serve` to measure (default: start one in this process).
    #[arg(long)]
    connect: Option<String>,
    /// Its PSK file (required with --connect).
    #[arg(long, requires = "connect")]
    psk_file: Option<PathBuf>,
    /// Requests per measurement.
    #[arg(long, default_value_t = 5_000)]
    requests: usize,
}

#[expect(
    clippy::disallowed_methods,
    reason = "a benchmark reports wall-clock figures"
)]
pub(crate) async fn run(args: &Args) -> anyhow::Result<()> {
    let (addr, psk, local) = match (&args.connect, &args.psk_file) {
        (Some(addr), Some(file)) => (addr.clone(), read_psk(file)?, None),
        (Some(_), None) => anyhow::bail!("--connect needs --psk-file"),
        _ => {
            let psk = Psk::generate()?;
            let server =
                service::builder(psk.clone(), Arc::new(Mutex::new(service::State::default())))
                    .bind("127.0.0.1:0")
                    .await?;
            (server.local_addr().to_string(), psk, Some(server))
        }
    };
    let client = Client::builder(psk).connect(addr.clone())?;
    client.wait_online().await?;
    let n = args.requests.max(100);
    println!("cypherwire bench against {addr}: {n} requests of 100 bytes per measurement");

    let payload = Value::bytes(vec![0xa5; 100]);
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
    lat.sort();
    let pick = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
    println!();

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
    println!("\n");
    println!(
        "sequential:   {seq_rate:>9.0} req/s   p50 {:>6.1} µs   p99 {:>6.1} µs",
        us(pick(0.5)),
        us(pick(0.99))
    );
    println!("64 in flight: {pipe_rate:>9.0} req/s");
    println!(
        "heartbeat RTT: {}",
        client
            .rtt()
            .map_or_else(|| "not measured yet".into(), |d| format!("{:.1} µs", us(d)))
    );
    client.close(Duration::from_millis(200)).await;
    if let Some(s) = local {
        s.handle().shutdown().await;
    }
    Ok(())
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A one-line progress bar on stderr, redrawn every 2 %.
fn progress(what: &str, done: usize, total: usize) {
    let step = (total / 50).max(1);
    if done.is_multiple_of(step) || done == total {
        let filled = done * 30 / total;
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "\r{what:<13} [{}{}] {done}/{total}",
            "#".repeat(filled),
            ".".repeat(30 - filled)
        );
        let _ = err.flush();
    }
}
