//! Man-in-the-middle battery (threat model T2–T7): an in-process relay tampers with real
//! sessions, and every attack must be detected with nothing altered delivered.
//!
//! Counts are printed; `CYPHERWIRE_MITM_FLIPS` sets the number of bit-flip sessions
//! (default 10,000, spread over the cipher suites).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::sync::LazyLock;
use std::time::Duration;

use cypherwire::session::{
    CipherSuite, ClientAuth, Psk, ServerAuth, SessionConfig, accept, connect,
};
use cypherwire_test_support::mitm::{self, Direction, Tamper};

const MESSAGES: usize = 5;

static PSK: LazyLock<Psk> = LazyLock::new(|| Psk::from_bytes([9; 32]));

fn message(from_client: bool, i: usize) -> Vec<u8> {
    let tag = if from_client { b'c' } else { b's' };
    (0..100).map(|j| tag ^ (i as u8) ^ (j as u8)).collect()
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Outcome {
    /// A side saw an error (handshake or record).
    detected: bool,
    /// Messages delivered that differ from what was sent, or in the wrong place.
    altered: usize,
    /// Genuine messages delivered.
    genuine: usize,
    /// The session ran into the per-session timeout.
    hung: bool,
}

impl Outcome {
    /// Counts one receive: the `i`-th message from the `from_client` side is genuine only if it
    /// is exactly what was sent in that place. Returns whether to keep receiving.
    fn tally<E>(
        &mut self,
        got: Result<Option<bytes::Bytes>, E>,
        from_client: bool,
        i: &mut usize,
    ) -> bool {
        match got {
            Ok(Some(m)) => {
                if *i < MESSAGES && m[..] == message(from_client, *i)[..] {
                    self.genuine += 1;
                } else {
                    self.altered += 1;
                }
                *i += 1;
                true
            }
            Ok(None) => false,
            Err(_) => {
                self.detected = true;
                false
            }
        }
    }
}

async fn session(suite: CipherSuite, tamper: Tamper) -> Outcome {
    // A tampered length prefix in a handshake frame leaves a side waiting for bytes that never
    // come: the handshake timeout ends it (a detection), well before the test's own limit.
    let cfg = SessionConfig::builder()
        .suites([suite])
        .handshake_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let (c_io, s_io, relay) = mitm::pipe(tamper);
    let client_auth = ClientAuth::Psk(PSK.clone());
    let server_auth = ServerAuth::Psk(PSK.clone());
    let client = async {
        let mut out = Outcome::default();
        let Ok(mut c) = connect(c_io, &client_auth, &cfg).await else {
            out.detected = true;
            return out;
        };
        for i in 0..MESSAGES {
            if c.send(&message(true, i)).await.is_err() {
                break;
            }
        }
        let _ = c.close().await;
        let mut i = 0;
        while out.tally(c.recv().await, false, &mut i) {}
        out
    };
    let server = async {
        let mut out = Outcome::default();
        let Ok(s) = accept(s_io, &server_auth, &cfg).await else {
            out.detected = true;
            return out;
        };
        let (mut r, mut w) = s.into_split();
        let mut i = 0;
        while out.tally(r.recv().await, true, &mut i) {}
        for i in 0..MESSAGES {
            if w.send(&message(false, i)).await.is_err() {
                break;
            }
        }
        let _ = w.close().await;
        out
    };
    let both = async { tokio::join!(client, server) };
    match tokio::time::timeout(Duration::from_secs(10), both).await {
        Ok((c, s)) => {
            let _ = relay.await;
            Outcome {
                detected: c.detected || s.detected,
                altered: c.altered + s.altered,
                genuine: c.genuine + s.genuine,
                hung: false,
            }
        }
        Err(_) => Outcome {
            hung: true,
            ..Outcome::default()
        },
    }
}

/// Runs sessions with the given tampers, 32 at a time; returns (sessions, detected, altered,
/// hung).
async fn campaign(tampers: Vec<(CipherSuite, Tamper)>) -> (usize, usize, usize, usize) {
    let mut totals = (0, 0, 0, 0);
    for chunk in tampers.chunks(32) {
        let mut set = tokio::task::JoinSet::new();
        for &(suite, t) in chunk {
            set.spawn(session(suite, t));
        }
        while let Some(o) = set.join_next().await {
            let o = o.unwrap();
            totals.0 += 1;
            totals.1 += usize::from(o.detected);
            totals.2 += o.altered;
            totals.3 += usize::from(o.hung);
        }
    }
    totals
}

fn rng(seed: &mut u64) -> usize {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untampered_sessions_deliver_everything() {
    for suite in CipherSuite::ALL {
        let o = session(suite, Tamper::None).await;
        assert_eq!(
            o,
            Outcome {
                detected: false,
                altered: 0,
                genuine: 2 * MESSAGES,
                hung: false
            }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bit_flips_in_records_are_all_detected() {
    let total: usize = std::env::var("CYPHERWIRE_MITM_FLIPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut seed = 0x5eed_1234_u64;
    let tampers: Vec<_> = (0..total)
        .map(|i| {
            let suite = CipherSuite::ALL[i % 3];
            // Client-to-server frames 1..=6 are the five messages and the close; server-to-client
            // frames 1..=6 likewise (frame 0 is the handshake).
            let dir = if rng(&mut seed).is_multiple_of(2) {
                Direction::ClientToServer
            } else {
                Direction::ServerToClient
            };
            let frame = 1 + rng(&mut seed) % (MESSAGES + 1);
            (
                suite,
                Tamper::FlipBit {
                    dir,
                    frame,
                    bit: rng(&mut seed),
                },
            )
        })
        .collect();
    let (n, detected, altered, hung) = campaign(tampers).await;
    println!(
        "bit flips: {n} sessions, {detected} detected, {altered} altered deliveries, {hung} hung"
    );
    assert_eq!((detected, altered, hung), (n, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reorder_drop_truncate_and_reflect_are_all_detected() {
    let mut tampers = Vec::new();
    for suite in CipherSuite::ALL {
        for dir in [Direction::ClientToServer, Direction::ServerToClient] {
            for frame in 1..=MESSAGES + 1 {
                // (Replaying the close record, frame MESSAGES + 1, has no effect: see below.)
                if frame <= MESSAGES {
                    tampers.push((suite, Tamper::Replay { dir, frame }));
                }
                tampers.push((suite, Tamper::Drop { dir, frame }));
                if frame <= MESSAGES {
                    tampers.push((suite, Tamper::Swap { dir, frame }));
                }
                for extra in [0, 1, 3, 4, 10] {
                    tampers.push((
                        suite,
                        Tamper::Truncate {
                            dir,
                            frames: frame,
                            extra,
                        },
                    ));
                }
            }
        }
        for frame in 1..=MESSAGES {
            tampers.push((suite, Tamper::Reflect { frame }));
        }
    }
    let (n, detected, altered, hung) = campaign(tampers).await;
    println!(
        "replay/reorder/drop/truncate/reflect: {n} sessions, {detected} detected, {altered} altered, {hung} hung"
    );
    assert_eq!((detected, altered, hung), (n, 0, 0));
}

/// Bytes after an authenticated close are never read: replaying the close record changes
/// nothing, every message arrives and the session ends cleanly on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_close_has_no_effect() {
    for suite in CipherSuite::ALL {
        for dir in [Direction::ClientToServer, Direction::ServerToClient] {
            let o = session(
                suite,
                Tamper::Replay {
                    dir,
                    frame: MESSAGES + 1,
                },
            )
            .await;
            assert_eq!(
                o,
                Outcome {
                    detected: false,
                    altered: 0,
                    genuine: 2 * MESSAGES,
                    hung: false
                }
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bit_of_both_handshake_messages_matters() {
    let mut tampers = Vec::new();
    for dir in [Direction::ClientToServer, Direction::ServerToClient] {
        // Frame 0 in each direction: ClientHello (4 + 63 bytes for one suite, two codecs) and
        // ServerHello (4 + 50 bytes); every bit, header included.
        for bit in 0..(4 + 64) * 8 {
            tampers.push((
                CipherSuite::Aes256Gcm,
                Tamper::FlipBit { dir, frame: 0, bit },
            ));
        }
    }
    let (n, detected, altered, hung) = campaign(tampers).await;
    println!("handshake edits: {n} sessions, {detected} detected, {altered} altered, {hung} hung");
    assert_eq!((detected, altered, hung), (n, 0, 0));
}
