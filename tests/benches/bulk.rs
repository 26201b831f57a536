//! Bulk transfer, one connection, in one run (the first part of the performance suite):
//! 1 GiB in 64 KiB and in 16 KiB messages over 127.0.0.1 for plain tokio TCP (the limit),
//! tokio-rustls TLS 1.3 (ring; AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305; self-signed
//! via rcgen) and
//! cypherwire with each cipher suite. Runs are interleaved (A B C … A B C …) 5 times; medians
//! with min–max and ratios to plain TCP and to TLS with the same AEAD. Writes
//! `target/bench-bulk.json`.
//!
//! Run: `cargo bench -p cypherwire-tests --bench bulk` (`CYPHERWIRE_BULK_MIB` to change the
//! size).

#![allow(missing_docs, reason = "benchmark binary")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    clippy::cast_precision_loss,
    reason = "benchmark code: a failure should abort, wall-clock timing is the point"
)]

use std::sync::Arc;
use std::time::Instant;

use cypherwire::session::suite::CipherSuite;
use cypherwire::session::{ClientAuth, Psk, ServerAuth, SessionConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ROUNDS: usize = 5;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Plain,
    Tls(&'static str),
    Cypherwire(CipherSuite),
}

fn name(k: Kind) -> String {
    match k {
        Kind::Plain => "plain TCP".into(),
        Kind::Tls(s) => format!("tokio-rustls {s}"),
        Kind::Cypherwire(s) => format!("cypherwire {s:?}"),
    }
}

fn tls_configs(suite: &str) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let der = rustls::pki_types::CertificateDer::from(cert.cert.der().to_vec());
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der()).unwrap();
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .retain(|s| format!("{:?}", s.suite()).contains(suite));
    let provider = Arc::new(provider);
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

/// Seconds to move `total` bytes in `msg`-byte writes, handshake excluded; the receiver
/// confirms with one byte when it has everything.
async fn run(kind: Kind, total: usize, msg: usize) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let psk = Psk::from_bytes([0x77; 32]);
    let tls = match kind {
        Kind::Tls(s) => Some(tls_configs(s)),
        _ => None,
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let server_tls = tls.as_ref().map(|(s, _)| s.clone());
    let server_psk = psk.clone();
    let receiver = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0usize;
        match kind {
            Kind::Plain => {
                let mut tcp = tcp;
                let _ = ready_tx.send(());
                while got < total {
                    got += tcp.read(&mut buf).await.unwrap();
                }
                tcp.write_all(&[1]).await.unwrap();
            }
            Kind::Tls(_) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(server_tls.unwrap());
                let mut s = acceptor.accept(tcp).await.unwrap();
                let _ = ready_tx.send(());
                while got < total {
                    got += s.read(&mut buf).await.unwrap();
                }
                s.write_all(&[1]).await.unwrap();
                s.flush().await.unwrap();
            }
            Kind::Cypherwire(suite) => {
                let cfg = SessionConfig::builder().suites([suite]).build().unwrap();
                let mut s = cypherwire::session::accept(tcp, &ServerAuth::Psk(server_psk), &cfg)
                    .await
                    .unwrap();
                let _ = ready_tx.send(());
                while got < total {
                    got += s.recv().await.unwrap().unwrap().len();
                }
                s.send(&[1]).await.unwrap();
            }
        }
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let chunk = vec![0xabu8; msg];
    let secs = match kind {
        Kind::Plain => {
            let mut tcp = tcp;
            ready_rx.await.unwrap();
            let t = Instant::now();
            let mut sent = 0;
            while sent < total {
                tcp.write_all(&chunk).await.unwrap();
                sent += msg;
            }
            let mut ack = [0u8; 1];
            tcp.read_exact(&mut ack).await.unwrap();
            t.elapsed().as_secs_f64()
        }
        Kind::Tls(_) => {
            let connector = tokio_rustls::TlsConnector::from(tls.unwrap().1);
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut s = connector.connect(name, tcp).await.unwrap();
            ready_rx.await.unwrap();
            let t = Instant::now();
            let mut sent = 0;
            while sent < total {
                s.write_all(&chunk).await.unwrap();
                sent += msg;
            }
            s.flush().await.unwrap();
            let mut ack = [0u8; 1];
            s.read_exact(&mut ack).await.unwrap();
            t.elapsed().as_secs_f64()
        }
        Kind::Cypherwire(suite) => {
            let cfg = SessionConfig::builder().suites([suite]).build().unwrap();
            let mut s = cypherwire::session::connect(tcp, &ClientAuth::Psk(psk), &cfg)
                .await
                .unwrap();
            ready_rx.await.unwrap();
            let t = Instant::now();
            let mut sent = 0;
            while sent < total {
                s.send(&chunk).await.unwrap();
                sent += msg;
            }
            let _ = s.recv().await.unwrap();
            t.elapsed().as_secs_f64()
        }
    };
    receiver.await.unwrap();
    secs
}

fn main() {
    let mib: usize = std::env::var("CYPHERWIRE_BULK_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let total = mib * 1024 * 1024;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let kinds = [
        Kind::Plain,
        Kind::Tls("AES_128_GCM"),
        Kind::Tls("AES_256_GCM"),
        Kind::Tls("CHACHA20_POLY1305"),
        Kind::Cypherwire(CipherSuite::Aes256Gcm),
        Kind::Cypherwire(CipherSuite::ChaCha20Poly1305),
        Kind::Cypherwire(CipherSuite::Aes128CbcHmacSha256),
    ];
    println!(
        "bulk transfer of {mib} MiB over 127.0.0.1, {ROUNDS} interleaved rounds; GB/s median (min–max)"
    );
    let mut json = Vec::new();
    for msg in [64 * 1024, 16 * 1024] {
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
        for _ in 0..ROUNDS {
            for (i, k) in kinds.iter().enumerate() {
                let secs = rt.block_on(run(*k, total, msg));
                rates[i].push(total as f64 / secs / 1e9);
            }
        }
        let med = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2], v[0], v[v.len() - 1])
        };
        let plain = med(&rates[0]).0;
        println!("\n{} KiB messages:", msg / 1024);
        println!("| transport | GB/s median (min–max) | × plain TCP | × TLS, same AEAD |");
        println!("| --- | --- | --- | --- |");
        for (i, k) in kinds.iter().enumerate() {
            let (m, lo, hi) = med(&rates[i]);
            let tls_ref = match k {
                Kind::Cypherwire(CipherSuite::Aes256Gcm) => Some(med(&rates[2]).0),
                Kind::Cypherwire(CipherSuite::ChaCha20Poly1305) => Some(med(&rates[3]).0),
                _ => None,
            };
            println!(
                "| {} | {m:.2} ({lo:.2}–{hi:.2}) | {:.2} | {} |",
                name(*k),
                m / plain,
                tls_ref.map_or_else(|| "—".to_owned(), |t| format!("{:.2}", m / t))
            );
            json.push(format!(
                "{{\"message_bytes\":{msg},\"transport\":\"{}\",\"gb_per_s_median\":{m:.4},\"min\":{lo:.4},\"max\":{hi:.4},\"ratio_to_plain\":{:.4}}}",
                name(*k),
                m / plain
            ));
        }
    }
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("bench-bulk.json");
    std::fs::write(&out, format!("[{}]\n", json.join(",\n"))).unwrap();
    println!("\nwritten: {}", out.display());
}
