//! Bulk transfer, one connection, in one run (the first part of the performance suite):
//! 1 GiB in 64 KiB and in 16 KiB messages over 127.0.0.1 for plain tokio TCP (the limit),
//! tokio-rustls TLS 1.3 (ring; AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305; self-signed
//! via rcgen), a bare `snow` transport (NNpsk0, RustCrypto ChaChaPoly and AESGCM; Noise
//! messages are at most 65,535 bytes, so a 64 KiB message goes out as two), and cypherwire
//! with each cipher suite on the `ring` backend and on the pure-Rust RustCrypto backend. Runs
//! are interleaved (A B C … A B C …) 5 times; medians with min–max and ratios to plain TCP and
//! to TLS with the same AEAD.
//!
//! The pure-Rust backend is also compared with its ceiling `1 / (1/TCP + 1/seal)`: on two
//! cores the sender pays the seal and the receiver the open, and each pays half the copy, so
//! the plain-TCP time and the sealing time add up. The seal speed (RustCrypto, in place, same
//! message size) is measured in the same run. Writes `target/bench-bulk.json`.
//!
//! Run: `cargo bench -p cypherwire-tests --bench bulk` (`CYPHERWIRE_BULK_MIB` to change the
//! size). For a profiler, `CYPHERWIRE_BENCH_PROFILE=NAME` runs only the transport named `NAME`
//! in the table (or, if none is, those whose names contain it), once each in 64 KiB messages
//! (`CYPHERWIRE_BENCH_PROFILE_MSG` for another size), and prints their rates: no table, no
//! file. A name that matches none lists the names and exits with status 2.

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

use cypherwire::session::suite::{Backend, CipherSuite};
use cypherwire::session::{ClientAuth, Psk, ServerAuth, SessionConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ROUNDS: usize = 5;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Plain,
    Tls(&'static str),
    /// A bare snow transport with this Noise cipher name.
    Snow(&'static str),
    Cypherwire(CipherSuite, Backend),
}

fn name(k: Kind) -> String {
    match k {
        Kind::Plain => "plain TCP".into(),
        Kind::Tls(s) => format!("tokio-rustls {s}"),
        Kind::Snow(c) => format!("bare snow NNpsk0 {c}"),
        Kind::Cypherwire(s, Backend::RustCrypto) => format!("cypherwire {s:?} (RustCrypto)"),
        Kind::Cypherwire(s, _) => format!("cypherwire {s:?}"),
    }
}

/// One suite on one backend.
fn session_config(suite: CipherSuite, backend: Backend) -> SessionConfig {
    SessionConfig::builder()
        .suites([suite])
        .backend(backend)
        .build()
        .unwrap()
}

const SNOW_PSK: [u8; 32] = [0x31; 32];
/// Largest plaintext in one Noise transport message.
const SNOW_MAX_PLAIN: usize = 65_535 - 16;

fn snow_builder(cipher: &str) -> snow::Builder<'static> {
    let params: snow::params::NoiseParams = format!("Noise_NNpsk0_25519_{cipher}_SHA256")
        .parse()
        .unwrap();
    snow::Builder::new(params).psk(0, &SNOW_PSK).unwrap()
}

async fn write_snow(s: &mut TcpStream, m: &[u8]) {
    let mut frame = Vec::with_capacity(2 + m.len());
    frame.extend_from_slice(&u16::try_from(m.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(m);
    s.write_all(&frame).await.unwrap();
}

async fn read_snow(s: &mut TcpStream, buf: &mut [u8]) -> usize {
    let n = usize::from(s.read_u16().await.unwrap());
    s.read_exact(&mut buf[..n]).await.unwrap();
    n
}

/// Bytes per second that the RustCrypto AEAD of `suite` seals in place, `msg` bytes at a
/// time (about 0.3 s of work).
fn seal_speed(suite: CipherSuite, msg: usize) -> f64 {
    use aes_gcm::aead::{AeadInPlace, KeyInit};
    let mut buf = vec![0x5au8; msg];
    let nonce = [0u8; 12];
    let t = Instant::now();
    let mut sealed = 0usize;
    while t.elapsed().as_secs_f64() < 0.3 {
        for _ in 0..8 {
            match suite {
                CipherSuite::ChaCha20Poly1305 => {
                    let k = chacha20poly1305::ChaCha20Poly1305::new(&[7u8; 32].into());
                    let tag = k
                        .encrypt_in_place_detached(&nonce.into(), b"", &mut buf)
                        .unwrap();
                    std::hint::black_box(tag);
                }
                _ => {
                    let k = aes_gcm::Aes256Gcm::new(&[7u8; 32].into());
                    let tag = k
                        .encrypt_in_place_detached(&nonce.into(), b"", &mut buf)
                        .unwrap();
                    std::hint::black_box(tag);
                }
            }
            sealed += msg;
        }
    }
    sealed as f64 / t.elapsed().as_secs_f64()
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
            Kind::Snow(cipher) => {
                let mut tcp = tcp;
                let mut r = snow_builder(cipher).build_responder().unwrap();
                let (mut m, mut p) = (vec![0u8; 65_536], vec![0u8; 65_536]);
                let k = read_snow(&mut tcp, &mut m).await;
                r.read_message(&m[..k], &mut p).unwrap();
                let k = r.write_message(&[], &mut m).unwrap();
                write_snow(&mut tcp, &m[..k]).await;
                let mut t = r.into_transport_mode().unwrap();
                let _ = ready_tx.send(());
                let mut tcp = tokio::io::BufReader::with_capacity(256 * 1024, tcp);
                while got < total {
                    let n = usize::from(tcp.read_u16().await.unwrap());
                    tcp.read_exact(&mut m[..n]).await.unwrap();
                    got += t.read_message(&m[..n], &mut p).unwrap();
                }
                let k = t.write_message(&[1], &mut m).unwrap();
                write_snow(tcp.get_mut(), &m[..k]).await;
            }
            Kind::Cypherwire(suite, backend) => {
                let cfg = session_config(suite, backend);
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
        Kind::Snow(cipher) => {
            let mut tcp = tcp;
            let mut i = snow_builder(cipher).build_initiator().unwrap();
            let (mut m, mut p) = (vec![0u8; 65_536], vec![0u8; 65_536]);
            let k = i.write_message(&[], &mut m).unwrap();
            write_snow(&mut tcp, &m[..k]).await;
            let k = read_snow(&mut tcp, &mut m).await;
            i.read_message(&m[..k], &mut p).unwrap();
            let mut tr = i.into_transport_mode().unwrap();
            ready_rx.await.unwrap();
            let t = Instant::now();
            let mut sent = 0;
            // One write per message: the Noise messages of a message, each length-prefixed.
            let mut frame = Vec::with_capacity(msg + 64);
            while sent < total {
                frame.clear();
                for piece in chunk.chunks(SNOW_MAX_PLAIN) {
                    let at = frame.len();
                    frame.resize(at + 2 + piece.len() + 16, 0);
                    let k = tr.write_message(piece, &mut frame[at + 2..]).unwrap();
                    frame[at..at + 2].copy_from_slice(&u16::try_from(k).unwrap().to_be_bytes());
                }
                tcp.write_all(&frame).await.unwrap();
                sent += msg;
            }
            let k = read_snow(&mut tcp, &mut m).await;
            tr.read_message(&m[..k], &mut p).unwrap();
            t.elapsed().as_secs_f64()
        }
        Kind::Cypherwire(suite, backend) => {
            let cfg = session_config(suite, backend);
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
    let ring = Backend::default_for_build();
    let kinds = [
        Kind::Plain,
        Kind::Tls("AES_128_GCM"),
        Kind::Tls("AES_256_GCM"),
        Kind::Tls("CHACHA20_POLY1305"),
        Kind::Snow("ChaChaPoly"),
        Kind::Snow("AESGCM"),
        Kind::Cypherwire(CipherSuite::Aes256Gcm, ring),
        Kind::Cypherwire(CipherSuite::ChaCha20Poly1305, ring),
        Kind::Cypherwire(CipherSuite::Aes256Gcm, Backend::RustCrypto),
        Kind::Cypherwire(CipherSuite::ChaCha20Poly1305, Backend::RustCrypto),
        Kind::Cypherwire(CipherSuite::Aes128CbcHmacSha256, ring),
    ];
    let tls_same_aead = |k: Kind| match k {
        Kind::Cypherwire(CipherSuite::Aes256Gcm, b) if b == ring => Some(2),
        Kind::Cypherwire(CipherSuite::ChaCha20Poly1305, b) if b == ring => Some(3),
        _ => None,
    };
    if let Ok(only) = std::env::var("CYPHERWIRE_BENCH_PROFILE") {
        let msg = std::env::var("CYPHERWIRE_BENCH_PROFILE_MSG")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64 * 1024);
        let mut picked: Vec<Kind> = kinds.into_iter().filter(|k| name(*k) == only).collect();
        if picked.is_empty() {
            picked = kinds
                .into_iter()
                .filter(|k| name(*k).contains(&only))
                .collect();
        }
        if picked.is_empty() {
            let names: Vec<String> = kinds.into_iter().map(name).collect();
            eprintln!(
                "no transport named {only:?}; the names: {}",
                names.join(", ")
            );
            std::process::exit(2);
        }
        for k in &picked {
            let secs = rt.block_on(run(*k, total, msg));
            println!("{}: {:.2} GB/s", name(*k), total as f64 / secs / 1e9);
        }
        return;
    }
    println!(
        "bulk transfer of {mib} MiB over 127.0.0.1, {ROUNDS} interleaved rounds; GB/s median (min–max)"
    );
    let med = cypherwire_tests::bench::median_min_max;
    let mut json = Vec::new();
    for msg in [64 * 1024, 16 * 1024] {
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
        // RustCrypto seal speed (GB/s) per suite, measured between the rounds.
        let mut seal: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..ROUNDS {
            for (i, k) in kinds.iter().enumerate() {
                let secs = rt.block_on(run(*k, total, msg));
                rates[i].push(total as f64 / secs / 1e9);
            }
            seal[0].push(seal_speed(CipherSuite::Aes256Gcm, msg) / 1e9);
            seal[1].push(seal_speed(CipherSuite::ChaCha20Poly1305, msg) / 1e9);
        }
        let plain = med(&rates[0]).0;
        println!("\n{} KiB messages:", msg / 1024);
        println!(
            "| transport | GB/s median (min–max) | × plain TCP | × TLS, same AEAD | × own ceiling |"
        );
        println!("| --- | --- | --- | --- | --- |");
        for (i, k) in kinds.iter().enumerate() {
            let (m, lo, hi) = med(&rates[i]);
            let tls_ref = tls_same_aead(*k).map(|j| med(&rates[j]).0);
            let ceiling = match k {
                Kind::Cypherwire(CipherSuite::Aes256Gcm, Backend::RustCrypto) => {
                    Some(1.0 / (1.0 / plain + 1.0 / med(&seal[0]).0))
                }
                Kind::Cypherwire(CipherSuite::ChaCha20Poly1305, Backend::RustCrypto) => {
                    Some(1.0 / (1.0 / plain + 1.0 / med(&seal[1]).0))
                }
                _ => None,
            };
            let fmt = |r: Option<f64>| r.map_or_else(|| "—".to_owned(), |r| format!("{r:.2}"));
            println!(
                "| {} | {m:.2} ({lo:.2}–{hi:.2}) | {:.2} | {} | {} |",
                name(*k),
                m / plain,
                fmt(tls_ref.map(|t| m / t)),
                fmt(ceiling.map(|c| m / c)),
            );
            json.push(format!(
                "{{\"message_bytes\":{msg},\"transport\":\"{}\",\"gb_per_s_median\":{m:.4},\"min\":{lo:.4},\"max\":{hi:.4},\"ratio_to_plain\":{:.4},\"ratio_to_tls_same_aead\":{},\"ceiling_gb_per_s\":{},\"ratio_to_ceiling\":{}}}",
                name(*k),
                m / plain,
                tls_ref.map_or_else(|| "null".to_owned(), |t| format!("{:.4}", m / t)),
                ceiling.map_or_else(|| "null".to_owned(), |c| format!("{c:.4}")),
                ceiling.map_or_else(|| "null".to_owned(), |c| format!("{:.4}", m / c)),
            ));
        }
        for (j, suite) in ["AES-256-GCM", "ChaCha20-Poly1305"].iter().enumerate() {
            let (m, lo, hi) = med(&seal[j]);
            println!(
                "RustCrypto {suite} seal in place, {} KiB: {m:.2} GB/s ({lo:.2}–{hi:.2}); ceiling with plain TCP {:.2} GB/s",
                msg / 1024,
                1.0 / (1.0 / plain + 1.0 / m)
            );
            json.push(format!(
                "{{\"message_bytes\":{msg},\"transport\":\"RustCrypto {suite} seal (no I/O)\",\"gb_per_s_median\":{m:.4},\"min\":{lo:.4},\"max\":{hi:.4}}}"
            ));
        }
    }
    let out = cypherwire_tests::bench::write_json("bulk", &json).unwrap();
    println!("\nwritten: {}", out.display());
}
