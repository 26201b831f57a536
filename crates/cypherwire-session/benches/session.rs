//! Session-layer benchmarks: handshakes per second for each mode against a bare `snow`
//! NNpsk0 handshake, and record seal+open throughput for each suite against the raw AEAD
//! primitive, all measured in the same run.
//!
//! Run: `cargo bench -p cypherwire-session --bench session`, then
//! `python3 scripts/bench-table.py handshake/ snow-nnpsk0` and
//! `python3 scripts/bench-table.py record/`. Add `--features ring` to measure the ring backend
//! and its raw primitive too. `chunked/` seals a 1 MiB message (16 records of 64 KiB) from a
//! slice (`seal_message`, each chunk copied into its record) and written into the buffer
//! first (`seal_with`, the chunks then moved apart in place), in the same run.

#![allow(
    missing_docs,
    reason = "criterion's macros generate undocumented items"
)]
#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    reason = "benchmark setup; a failure should abort"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use aes_gcm::aead::{AeadInPlace, KeyInit};
use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use cypherwire_session::record::{Opened, Sealer};
use cypherwire_session::{
    Argon2Cost, Backend, CipherSuite, ClientAuth, Established, IdentityKey, Initiator, Password,
    PasswordVerifier, PeerTrust, Psk, Responder, ServerAuth, SessionConfig, Step,
};
use cypherwire_wire::{FrameCodec, Limits};
use tokio_util::codec::Decoder;

/// A whole handshake in memory; returns the client's end.
fn handshake(
    client: &ClientAuth,
    server: &ServerAuth,
    cfg: &SessionConfig,
) -> (Established, Established) {
    let now = Instant::now();
    let (init, mut msg) = Initiator::start(client, cfg).unwrap();
    let (mut init, mut resp) = (Some(init), Some(Responder::new(server, cfg)));
    let (mut c, mut s) = (None, None);
    while c.is_none() || s.is_none() {
        if let Some(r) = resp.take() {
            match r.handle(&msg, now).unwrap() {
                Step::Continue { state, send } => (resp, msg) = (Some(state), send),
                Step::Done { established, send } => {
                    (s, msg) = (Some(established), send.unwrap_or_default())
                }
            }
        }
        if let Some(i) = init.take() {
            match i.handle(&msg, now).unwrap() {
                Step::Continue { state, send } => (init, msg) = (Some(state), send),
                Step::Done { established, send } => {
                    (c, msg) = (Some(established), send.unwrap_or_default())
                }
            }
        }
    }
    (*c.unwrap(), *s.unwrap())
}

fn bare_snow(psk: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let params: snow::params::NoiseParams = "Noise_NNpsk0_25519_ChaChaPoly_SHA256".parse().unwrap();
    let mut i = snow::Builder::new(params.clone())
        .psk(0, psk)
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut r = snow::Builder::new(params)
        .psk(0, psk)
        .unwrap()
        .build_responder()
        .unwrap();
    let (mut m, mut p) = ([0u8; 128], [0u8; 128]);
    let n = i.write_message(&[], &mut m).unwrap();
    r.read_message(&m[..n], &mut p).unwrap();
    let n = r.write_message(&[1, 1], &mut m).unwrap();
    i.read_message(&m[..n], &mut p).unwrap();
    (
        i.dangerously_get_raw_split().0,
        r.dangerously_get_raw_split().0,
    )
}

fn handshakes(c: &mut Criterion) {
    let mut g = c.benchmark_group("handshake");
    g.throughput(Throughput::Elements(1));
    let psk = Psk::generate().unwrap();
    let raw = [7u8; 32];
    let cfg = SessionConfig::default();
    g.bench_function("snow-nnpsk0", |b| b.iter(|| black_box(bare_snow(&raw))));
    let (cp, sp) = (ClientAuth::Psk(psk.clone()), ServerAuth::Psk(psk));
    g.bench_function("cypherwire-psk", |b| {
        b.iter(|| black_box(handshake(&cp, &sp, &cfg)))
    });
    let (a, bkey) = (
        IdentityKey::generate().unwrap(),
        IdentityKey::generate().unwrap(),
    );
    let ci = ClientAuth::Identity(a.clone(), PeerTrust::AllowList(vec![bkey.public()]));
    let si = ServerAuth::Identity(bkey, PeerTrust::AllowList(vec![a.public()]));
    g.bench_function("cypherwire-identity", |b| {
        b.iter(|| black_box(handshake(&ci, &si, &cfg)))
    });
    let verifier = PasswordVerifier::create("password", Argon2Cost::default()).unwrap();
    let (cw, sw) = (
        ClientAuth::Password(Password::new("password")),
        ServerAuth::Password(verifier),
    );
    g.sample_size(10);
    g.bench_function("cypherwire-password-argon2id-m19456-t2-p1", |b| {
        b.iter(|| black_box(handshake(&cw, &sw, &cfg)));
    });
    g.finish();
}

fn records(c: &mut Criterion) {
    let psk = Psk::generate().unwrap();
    let (cp, sp) = (ClientAuth::Psk(psk.clone()), ServerAuth::Psk(psk));
    for suite in CipherSuite::ALL {
        let mut g = c.benchmark_group(format!("record/{suite:?}"));
        for size in [64usize, 1024, 16 * 1024, 64 * 1024] {
            let msg = vec![0x42u8; size];
            g.throughput(Throughput::Bytes(size as u64));
            for &backend in Backend::ALL {
                if suite == CipherSuite::Aes128CbcHmacSha256 && backend != Backend::RustCrypto {
                    continue;
                }
                let cfg = SessionConfig::builder()
                    .suites([suite])
                    .backend(backend)
                    .build()
                    .unwrap();
                let (mut client, mut server) = handshake(&cp, &sp, &cfg);
                let mut frames = FrameCodec::new(Limits::default());
                let mut wire = BytesMut::with_capacity(2 * size + 64);
                g.bench_function(
                    BenchmarkId::new(format!("cypherwire-{backend:?}-seal+open"), size),
                    |b| {
                        b.iter(|| {
                            seal_fresh(&mut client.sealer, &msg, &mut wire);
                            let rec = frames.decode(&mut wire).unwrap().unwrap();
                            match server.opener.open(rec).unwrap() {
                                Opened::Message(m) => black_box(m.len()),
                                _ => unreachable!(),
                            }
                        });
                    },
                );
            }
            let mut buf = Vec::with_capacity(size + 64);
            #[cfg(feature = "ring")]
            if suite != CipherSuite::Aes128CbcHmacSha256 {
                let alg = if suite == CipherSuite::Aes256Gcm {
                    &ring::aead::AES_256_GCM
                } else {
                    &ring::aead::CHACHA20_POLY1305
                };
                let key = ring::aead::LessSafeKey::new(
                    ring::aead::UnboundKey::new(alg, &[1u8; 32]).unwrap(),
                );
                g.bench_function(BenchmarkId::new("raw-Ring-seal+open", size), |b| {
                    b.iter(|| {
                        let nonce = || ring::aead::Nonce::assume_unique_for_key([0u8; 12]);
                        buf.clear();
                        buf.extend_from_slice(&msg);
                        let tag = key
                            .seal_in_place_separate_tag(nonce(), ring::aead::Aad::empty(), &mut buf)
                            .unwrap();
                        buf.extend_from_slice(tag.as_ref());
                        let opened = key
                            .open_in_place(nonce(), ring::aead::Aad::empty(), &mut buf)
                            .unwrap();
                        black_box(opened.len())
                    });
                });
            }
            g.bench_function(
                BenchmarkId::new("raw-RustCrypto-seal+open", size),
                |b| match suite {
                    CipherSuite::ChaCha20Poly1305 => {
                        let k = chacha20poly1305::ChaCha20Poly1305::new(&[1u8; 32].into());
                        b.iter(|| raw_round(&k, &msg, &mut buf));
                    }
                    CipherSuite::Aes256Gcm => {
                        let k = aes_gcm::Aes256Gcm::new(&[1u8; 32].into());
                        b.iter(|| raw_round(&k, &msg, &mut buf));
                    }
                    _ => b.iter(|| raw_cbc_hmac(&msg, &mut buf)),
                },
            );
        }
        g.finish();
    }
}

fn chunked(c: &mut Criterion) {
    let psk = Psk::generate().unwrap();
    let (cp, sp) = (ClientAuth::Psk(psk.clone()), ServerAuth::Psk(psk));
    let msg = vec![0x42u8; 1 << 20];
    for suite in CipherSuite::ALL {
        let cfg = SessionConfig::builder().suites([suite]).build().unwrap();
        let (mut client, _server) = handshake(&cp, &sp, &cfg);
        let mut g = c.benchmark_group(format!("chunked/{suite:?}"));
        g.throughput(Throughput::Bytes(msg.len() as u64));
        let mut wire = BytesMut::with_capacity(2 * msg.len());
        g.bench_function("seal_message-1MiB", |b| {
            b.iter(|| {
                seal_fresh(&mut client.sealer, &msg, &mut wire);
                black_box(wire.len())
            });
        });
        g.bench_function("seal_with-1MiB", |b| {
            b.iter(|| {
                wire.clear();
                client
                    .sealer
                    .seal_with(Instant::now(), &mut wire, |d| {
                        d.extend_from_slice(&msg);
                        Ok(())
                    })
                    .unwrap();
                black_box(wire.len())
            });
        });
        g.finish();
    }
}

/// Seals `msg` into the emptied `wire` (`seal_message`).
fn seal_fresh(sealer: &mut Sealer, msg: &[u8], wire: &mut BytesMut) {
    wire.clear();
    sealer.seal_message(msg, Instant::now(), wire).unwrap();
}

fn raw_round<A: AeadInPlace>(aead: &A, msg: &[u8], buf: &mut Vec<u8>) -> usize {
    let nonce = aes_gcm::aead::Nonce::<A>::default();
    buf.clear();
    buf.extend_from_slice(msg);
    let tag = aead.encrypt_in_place_detached(&nonce, &[], buf).unwrap();
    aead.decrypt_in_place_detached(&nonce, &[], buf, &tag)
        .unwrap();
    black_box(buf.len())
}

fn raw_cbc_hmac(msg: &[u8], buf: &mut Vec<u8>) -> usize {
    use aes::cipher::block_padding::Pkcs7;
    use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
    use hmac::Mac;
    let (key, iv) = ([1u8; 16], [2u8; 16]);
    buf.clear();
    buf.extend_from_slice(msg);
    buf.resize(msg.len() + 16 - msg.len() % 16, 0);
    let ct_len = cbc::Encryptor::<aes::Aes128>::new(&key.into(), &iv.into())
        .encrypt_padded_mut::<Pkcs7>(buf, msg.len())
        .unwrap()
        .len();
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&[3u8; 32]).unwrap();
    mac.update(&buf[..ct_len]);
    let tag = mac.finalize().into_bytes();
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&[3u8; 32]).unwrap();
    mac.update(&buf[..ct_len]);
    mac.verify_slice(&tag).unwrap();
    let n = cbc::Decryptor::<aes::Aes128>::new(&key.into(), &iv.into())
        .decrypt_padded_mut::<Pkcs7>(&mut buf[..ct_len])
        .unwrap()
        .len();
    black_box(n)
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = handshakes, records, chunked
}
criterion_main!(benches);
