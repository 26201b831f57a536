//! A TCP fault proxy on loopback: forwards connections to a target, and on command cuts every
//! connection or stalls forwarding (a half-open link that TCP alone does not notice).
//!
//! With [`Faults`] it also misbehaves by itself, per whole frame (cypherwire's 4-byte length
//! prefix) and seeded, so a failing run can be replayed: delays, bit flips, duplicated frames,
//! swapped adjacent frames, resets (RST) and closes in the middle of a frame.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

/// Seeded per-frame faults, each a chance in 1,000 per frame and direction (all zero: a clean
/// proxy). Connection `n` draws from `seed ^ n`, so a run replays with the same seed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Faults {
    /// The seed.
    pub seed: u64,
    /// Hold a frame for 1 to `max_delay_ms` milliseconds.
    pub delay: u32,
    /// The longest delay.
    pub max_delay_ms: u64,
    /// Flip one random bit of the frame body.
    pub flip: u32,
    /// Send the frame twice.
    pub duplicate: u32,
    /// Swap the frame with the next one already received.
    pub reorder: u32,
    /// Reset the connection (RST) instead of sending the frame.
    pub reset: u32,
    /// Send half the frame, then close the connection (FIN).
    pub close_mid_frame: u32,
}

impl Faults {
    /// No faults, with this seed; set the chances with the fields.
    pub fn seeded(seed: u64) -> Self {
        Self {
            seed,
            max_delay_ms: 20,
            ..Self::default()
        }
    }

    fn any(&self) -> bool {
        self.delay + self.flip + self.duplicate + self.reorder + self.reset + self.close_mid_frame
            > 0
    }
}

/// How many faults the proxy injected.
#[derive(Debug, Default)]
pub struct FaultCounts {
    /// Frames delayed.
    pub delayed: AtomicU64,
    /// Frames with a flipped bit.
    pub flipped: AtomicU64,
    /// Frames sent twice.
    pub duplicated: AtomicU64,
    /// Frame pairs swapped.
    pub reordered: AtomicU64,
    /// Connections reset.
    pub resets: AtomicU64,
    /// Connections closed mid-frame.
    pub mid_frame_closes: AtomicU64,
}

impl FaultCounts {
    /// All injected faults.
    pub fn total(&self) -> u64 {
        [
            &self.delayed,
            &self.flipped,
            &self.duplicated,
            &self.reordered,
            &self.resets,
            &self.mid_frame_closes,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

/// A running proxy. Dropping it stops accepting (existing connections are cut).
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    generation: watch::Sender<u64>,
    stalled: watch::Sender<bool>,
    target: Arc<std::sync::Mutex<SocketAddr>>,
    cuts: Arc<AtomicU64>,
    counts: Arc<FaultCounts>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 forwarding to `target`.
    ///
    /// # Errors
    /// If the listening socket cannot be bound.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        Self::start_with(target, Faults::default()).await
    }

    /// Starts a proxy that also injects `faults`.
    ///
    /// # Errors
    /// If the listening socket cannot be bound.
    pub async fn start_with(target: SocketAddr, faults: Faults) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (generation, _) = watch::channel(0u64);
        let (stalled, _) = watch::channel(false);
        let target = Arc::new(std::sync::Mutex::new(target));
        let cuts = Arc::new(AtomicU64::new(0));
        let counts = Arc::new(FaultCounts::default());
        let (g, s, t, c) = (
            generation.clone(),
            stalled.clone(),
            target.clone(),
            counts.clone(),
        );
        let task = tokio::spawn(async move {
            let mut n = 0u64;
            while let Ok((client, _)) = listener.accept().await {
                n += 1;
                let counts = c.clone();
                let target = *t.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let (mut gen_rx, stall_rx) = (g.subscribe(), s.subscribe());
                let born = *gen_rx.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let kill = Arc::new(Notify::new());
                    let up = pump(
                        cr,
                        sw,
                        stall_rx.clone(),
                        Plan::new(faults, n, 0),
                        &counts,
                        &kill,
                    );
                    let down = pump(sr, cw, stall_rx, Plan::new(faults, n, 1), &counts, &kill);
                    tokio::select! {
                        () = async { tokio::join!(up, down); } => {}
                        _ = gen_rx.wait_for(|g| *g != born) => {}
                        () = kill.notified() => {}
                    }
                });
            }
        });
        Ok(Self {
            addr,
            generation,
            stalled,
            target,
            cuts,
            counts,
            task,
        })
    }

    /// The faults injected so far.
    pub fn fault_counts(&self) -> &FaultCounts {
        &self.counts
    }

    /// The address clients should connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts every current connection (both directions, abruptly).
    pub fn cut_all(&self) {
        self.cuts.fetch_add(1, Ordering::Relaxed);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Stops (or resumes) forwarding without closing anything.
    pub fn set_stalled(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }

    /// Points new connections at another target (e.g. a restarted server).
    pub fn set_target(&self, target: SocketAddr) {
        *self
            .target
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = target;
    }

    /// How many times [`cut_all`](Self::cut_all) was called.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut_all();
    }
}

/// One direction's fault plan: the chances and a seeded generator.
struct Plan {
    faults: Faults,
    rng: crate::rng::SeededRng,
}

impl Plan {
    fn new(faults: Faults, connection: u64, direction: u64) -> Self {
        Self {
            faults,
            rng: crate::rng::SeededRng::new(
                faults.seed ^ connection.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ direction,
            ),
        }
    }

    fn next(&mut self) -> u64 {
        self.rng.next_u64()
    }

    fn roll(&mut self, per_mille: u32) -> bool {
        self.rng.per_mille(u64::from(per_mille))
    }
}

/// Frames larger than this are passed through without faults (and without buffering them).
const MAX_FAULT_FRAME: usize = 17 * 1024 * 1024;

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: watch::Receiver<bool>,
    mut plan: Plan,
    counts: &FaultCounts,
    kill: &Notify,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut raw = !plan.faults.any();
    loop {
        // While stalled, read nothing (bytes pile up in the kernel buffers, as on a dead link).
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = stalled.wait_for(|s| *s) => continue,
        };
        if raw {
            if to.write_all(&buf[..n]).await.is_err() {
                break;
            }
            continue;
        }
        pending.extend_from_slice(&buf[..n]);
        let mut frames = Vec::new();
        while pending.len() >= 4 {
            let len = u32::from_be_bytes([pending[0], pending[1], pending[2], pending[3]]) as usize;
            if len > MAX_FAULT_FRAME {
                raw = true;
                break;
            }
            if pending.len() < 4 + len {
                break;
            }
            frames.push(pending.drain(..4 + len).collect::<Vec<u8>>());
        }
        if raw {
            frames.push(std::mem::take(&mut pending));
        }
        let mut i = 0;
        while i < frames.len() {
            let f = &plan.faults;
            let (reset, mid, delay, flip, dup, reorder) = (
                f.reset,
                f.close_mid_frame,
                f.delay,
                f.flip,
                f.duplicate,
                f.reorder,
            );
            if !raw && plan.roll(reset) {
                counts.resets.fetch_add(1, Ordering::Relaxed);
                let _ = to.as_ref().set_zero_linger();
                let _ = from.as_ref().set_zero_linger();
                kill.notify_one();
                return;
            }
            if !raw && plan.roll(mid) {
                counts.mid_frame_closes.fetch_add(1, Ordering::Relaxed);
                let half = frames[i].len() / 2;
                let _ = to.write_all(&frames[i][..half]).await;
                let _ = to.shutdown().await;
                kill.notify_one();
                return;
            }
            if !raw && plan.roll(delay) {
                counts.delayed.fetch_add(1, Ordering::Relaxed);
                let ms = 1 + plan.next() % plan.faults.max_delay_ms.max(1);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
            if !raw && frames[i].len() > 4 && plan.roll(flip) {
                counts.flipped.fetch_add(1, Ordering::Relaxed);
                let bits = (frames[i].len() - 4) * 8;
                let bit = usize::try_from(plan.next() % bits as u64).unwrap_or(0);
                frames[i][4 + bit / 8] ^= 1 << (bit % 8);
            }
            if !raw && i + 1 < frames.len() && plan.roll(reorder) {
                counts.reordered.fetch_add(1, Ordering::Relaxed);
                frames.swap(i, i + 1);
            }
            let copies = if !raw && plan.roll(dup) {
                counts.duplicated.fetch_add(1, Ordering::Relaxed);
                2
            } else {
                1
            };
            for _ in 0..copies {
                if to.write_all(&frames[i]).await.is_err() {
                    kill.notify_one();
                    return;
                }
            }
            i += 1;
        }
    }
    let _ = to.shutdown().await;
}
