//! `serve --metrics ADDR`: Prometheus text on `/metrics`, liveness on `/healthz`, readiness on
//! `/readyz`, over a deliberately small HTTP/1.1 responder (one request per connection,
//! requests bounded in size and time).

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cypherwire::server::{LatencyHistogram, ServerHandle, StatsSnapshot};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Longest request head read, and how long a client gets to send it.
const MAX_REQUEST: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes answered at once; more wait for a slot.
const MAX_SCRAPES: usize = 16;

/// What the endpoint reports on.
pub(crate) struct Exporter {
    pub(crate) server: ServerHandle,
    /// The auth mode, as a label (`psk`, `password`, `identity`).
    pub(crate) mode: &'static str,
    /// Ready: listening and not shutting down.
    pub(crate) ready: Arc<AtomicBool>,
}

/// Serves `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, exporter: Exporter) {
    let exporter = Arc::new(exporter);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let exporter = exporter.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &exporter)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, exporter: &Exporter) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_REQUEST {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, target) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render(&exporter.server, exporter.mode),
        ),
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_owned()),
        ("GET", "/readyz") if exporter.ready.load(Ordering::Acquire) => {
            ("200 OK", "text/plain", "ready\n".to_owned())
        }
        ("GET", "/readyz") => (
            "503 Service Unavailable",
            "text/plain",
            "not ready\n".to_owned(),
        ),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// One metric family: its HELP and TYPE lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format wants it: backslash, quote and newline escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Everything the server counts, in the Prometheus text format (version 0.0.4).
pub(crate) fn render(server: &ServerHandle, mode: &str) -> String {
    let s: StatsSnapshot = server.stats();
    let mut out = String::with_capacity(4096);
    let simple: [(&str, &str, &str, u64); 14] = [
        (
            "cypherwire_connections",
            "gauge",
            "Authenticated connections now.",
            s.connections as u64,
        ),
        (
            "cypherwire_sessions",
            "gauge",
            "Sessions kept (attached or resumable).",
            s.sessions as u64,
        ),
        (
            "cypherwire_bans_active",
            "gauge",
            "Sources banned now.",
            server.bans().len() as u64,
        ),
        (
            "cypherwire_messages_in_total",
            "counter",
            "Messages received.",
            s.messages_in,
        ),
        (
            "cypherwire_pushes_total",
            "counter",
            "Pushes and broadcast messages queued.",
            s.pushes,
        ),
        (
            "cypherwire_slow_consumer_disconnects_total",
            "counter",
            "Connections closed because their outbox was full.",
            s.slow_consumers,
        ),
        (
            "cypherwire_kicks_total",
            "counter",
            "Connections kicked.",
            s.kicks,
        ),
        (
            "cypherwire_bytes_in_total",
            "counter",
            "Plaintext bytes received.",
            s.bytes_in,
        ),
        (
            "cypherwire_bytes_out_total",
            "counter",
            "Plaintext bytes sent.",
            s.bytes_out,
        ),
        (
            "cypherwire_requests_received_total",
            "counter",
            "Requests received (answered or not yet).",
            s.requests,
        ),
        (
            "cypherwire_compat_connections_total",
            "counter",
            "CYPHER_PROTOCOL compat connections accepted.",
            s.compat_connections,
        ),
        (
            "cypherwire_compat_refused_total",
            "counter",
            "Compat connections refused (too many at once).",
            s.compat_refused,
        ),
        (
            "cypherwire_compat_replayed_total",
            "counter",
            "Compat requests answered from the replay cache.",
            s.compat_replayed,
        ),
        (
            "cypherwire_compat_errors_total",
            "counter",
            "Compat connections closed on an error.",
            s.compat_errors,
        ),
    ];
    for (name, kind, help, value) in simple {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    family(
        &mut out,
        "cypherwire_handshakes_total",
        "counter",
        "Handshakes by result.",
    );
    for (result, n) in [("ok", s.handshakes_ok), ("failed", s.handshakes_failed)] {
        let _ = writeln!(
            out,
            "cypherwire_handshakes_total{{mode=\"{mode}\",result=\"{result}\"}} {n}"
        );
    }
    family(
        &mut out,
        "cypherwire_resumes_total",
        "counter",
        "Session resumes, by result.",
    );
    for (result, n) in [("ok", s.resumes_ok), ("refused", s.resumes_refused)] {
        let _ = writeln!(out, "cypherwire_resumes_total{{result=\"{result}\"}} {n}");
    }
    family(
        &mut out,
        "cypherwire_refused_total",
        "counter",
        "Connections refused before their handshake, by reason.",
    );
    let r = s.refused_by;
    for (reason, n) in [
        ("banned", r.banned),
        ("rate_limited", r.rate_limited),
        ("over_capacity", r.over_capacity),
        ("hook", r.hook),
        ("shutting_down", r.shutting_down),
    ] {
        let _ = writeln!(out, "cypherwire_refused_total{{reason=\"{reason}\"}} {n}");
    }
    let routes = server.route_stats();
    family(
        &mut out,
        "cypherwire_requests_total",
        "counter",
        "Requests answered, by route and status.",
    );
    for route in &routes {
        let (path, op) = (label(&route.path), label(&route.operation));
        for (code, n) in &route.by_status {
            let status = code.name().unwrap_or("APPLICATION");
            let _ = writeln!(
                out,
                "cypherwire_requests_total{{path=\"{path}\",operation=\"{op}\",status=\"{status}\"}} {n}"
            );
        }
    }
    let name = "cypherwire_request_duration_seconds";
    family(
        &mut out,
        name,
        "histogram",
        "Time from a request read to its answer, by route.",
    );
    let bounds = LatencyHistogram::bounds();
    for route in &routes {
        let (path, op) = (label(&route.path), label(&route.operation));
        let mut cumulative = 0;
        for (n, bound) in route
            .latency
            .counts
            .iter()
            .zip(bounds.iter().map(Some).chain([None]))
        {
            cumulative += n;
            let le = bound.map_or_else(|| "+Inf".to_owned(), |b| b.as_secs_f64().to_string());
            let _ = writeln!(
                out,
                "{name}_bucket{{path=\"{path}\",operation=\"{op}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let labels = format!("path=\"{path}\",operation=\"{op}\"");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            route.latency.sum.as_secs_f64()
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", route.latency.count);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
