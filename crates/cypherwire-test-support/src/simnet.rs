//! A simulated network for running the real server and client in virtual time (a tokio
//! runtime with the clock paused: timers jump forward whenever every task waits).
//!
//! Connections are in-memory byte streams with a latency per link and, optionally, packet
//! loss as a TCP connection sees it (a lost segment is retransmitted: the chunk and everything
//! behind it arrive a retransmission timeout later, in order); the network can cut one
//! link or all of them (both ends see the stream end) and partition itself for a while
//! (existing links are cut, new connections are refused until the partition heals). The
//! server accepts through [`SimListener`] (`ServerBuilder::serve_on`), clients dial through
//! [`SimConnector`] (`ClientBuilder::connect_with`). Faults are chosen by the test, from its own
//! seeded generator, so a seed replays the same schedule of faults.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Bytes buffered in each direction of a link (beyond this, writers wait).
const LINK_BUFFER: usize = 64 * 1024;

/// Counters of what the network did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Connections opened.
    pub connections: u64,
    /// Connection attempts refused during partitions.
    pub refused: u64,
    /// Links cut (one by one, by `cut_all`, or by a partition).
    pub cuts: u64,
    /// Partitions started.
    pub partitions: u64,
}

struct Link {
    cut: watch::Sender<bool>,
}

struct State {
    accept: Option<mpsc::Sender<(DuplexStream, SocketAddr)>>,
    links: Vec<Link>,
    next_link: u64,
    partitioned_until: Option<Instant>,
    latency: Duration,
    loss: Loss,
    stats: NetStats,
}

/// Packet loss on every link: each chunk is lost (and retransmitted `rto` later) with
/// probability `per_mille` / 1000, drawn from a generator seeded with `seed` and the link's
/// number.
#[derive(Debug, Clone, Copy, Default)]
struct Loss {
    per_mille: u64,
    rto: Duration,
    seed: u64,
}

/// The simulated network. Cheap to clone.
#[derive(Clone)]
pub struct SimNet {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for SimNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimNet")
            .field("stats", &self.stats())
            .finish()
    }
}

/// The address the simulated server listens on.
pub const SERVER_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 7000);

impl SimNet {
    /// A network whose links each delay every chunk of bytes by `latency` (one way).
    pub fn new(latency: Duration) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                accept: None,
                links: Vec::new(),
                next_link: 0,
                partitioned_until: None,
                latency,
                loss: Loss::default(),
                stats: NetStats::default(),
            })),
        }
    }

    /// Adds packet loss: each chunk of bytes is lost with probability `per_mille` / 1000 and
    /// arrives `rto` later (as TCP retransmits it), delaying what follows it; drawn from
    /// `seed` (and each link's number), so a seed replays the same losses.
    #[must_use]
    pub fn with_loss(self, per_mille: u64, rto: Duration, seed: u64) -> Self {
        self.lock().loss = Loss {
            per_mille,
            rto,
            seed,
        };
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The server's side: connections dialled through this network's connectors arrive here.
    /// Only one listener at a time; a new one replaces the old.
    pub fn listen(&self) -> SimListener {
        let (tx, rx) = mpsc::channel(1024);
        self.lock().accept = Some(tx);
        SimListener { rx }
    }

    /// A client's side, dialling from `ip`.
    pub fn connector(&self, ip: Ipv4Addr) -> SimConnector {
        SimConnector {
            net: self.clone(),
            ip,
            dialed: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Cuts the `n`-th open link (modulo the number open); false if none is open.
    pub fn cut_one(&self, n: usize) -> bool {
        let mut st = self.lock();
        st.links.retain(|l| !l.cut.is_closed());
        if st.links.is_empty() {
            return false;
        }
        let i = n % st.links.len();
        let link = st.links.swap_remove(i);
        let _ = link.cut.send(true);
        st.stats.cuts += 1;
        true
    }

    /// Cuts every open link.
    pub fn cut_all(&self) {
        let mut st = self.lock();
        let links = std::mem::take(&mut st.links);
        for link in links {
            if !link.cut.is_closed() {
                let _ = link.cut.send(true);
                st.stats.cuts += 1;
            }
        }
    }

    /// Cuts every link and refuses new connections for `d` (from now, in virtual time).
    pub fn partition(&self, d: Duration) {
        self.cut_all();
        let mut st = self.lock();
        st.partitioned_until = Some(Instant::now() + d);
        st.stats.partitions += 1;
    }

    /// What the network did so far.
    pub fn stats(&self) -> NetStats {
        self.lock().stats
    }

    /// Opens a link from `from`: returns the client's end, or refuses.
    fn dial(&self, from: SocketAddr) -> io::Result<DuplexStream> {
        let mut st = self.lock();
        if st.partitioned_until.is_some_and(|t| Instant::now() < t) {
            st.stats.refused += 1;
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "partitioned",
            ));
        }
        let Some(accept) = st.accept.clone() else {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "nothing listens",
            ));
        };
        let (client_end, client_net) = tokio::io::duplex(LINK_BUFFER);
        let (server_end, server_net) = tokio::io::duplex(LINK_BUFFER);
        let (cut, cut_rx) = watch::channel(false);
        let latency = st.latency;
        let loss = st.loss;
        let link_seed = loss.seed ^ (st.next_link + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let (cr, cw) = tokio::io::split(client_net);
        let (sr, sw) = tokio::io::split(server_net);
        tokio::spawn(pump(cr, sw, latency, (loss, link_seed), cut_rx.clone()));
        tokio::spawn(pump(sr, cw, latency, (loss, !link_seed), cut_rx));
        if accept.try_send((server_end, from)).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "accept queue full",
            ));
        }
        st.next_link += 1;
        st.links.push(Link { cut });
        st.stats.connections += 1;
        Ok(client_end)
    }
}

/// Moves bytes one way, each chunk `latency` later (plus a retransmission timeout when it is
/// lost), in order, until either end closes or the link is cut (then both ends see the stream
/// end).
async fn pump(
    mut from: tokio::io::ReadHalf<DuplexStream>,
    mut to: tokio::io::WriteHalf<DuplexStream>,
    latency: Duration,
    (loss, seed): (Loss, u64),
    mut cut: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut rng = crate::rng::SeededRng::new(seed);
    let work = async {
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let lost = rng.per_mille(loss.per_mille);
            tokio::time::sleep(if lost { latency + loss.rto } else { latency }).await;
            if to.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::select! {
        () = work => {}
        _ = cut.wait_for(|c| *c) => {}
    }
}

/// The server's end of a [`SimNet`].
#[derive(Debug)]
pub struct SimListener {
    rx: mpsc::Receiver<(DuplexStream, SocketAddr)>,
}

impl cypherwire_server::Accept for SimListener {
    type Io = DuplexStream;

    async fn accept(&mut self) -> io::Result<(Self::Io, SocketAddr)> {
        match self.rx.recv().await {
            Some(c) => Ok(c),
            // The network is gone: nothing will ever arrive again.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(SERVER_ADDR)
    }
}

/// The source port of a connector's `n`th connection: 40,001 ..= 65,535, then around again.
fn source_port(n: u32) -> u16 {
    40_001 + u16::try_from(n % 25_535).unwrap_or(0)
}

/// A client's end of a [`SimNet`].
#[derive(Debug, Clone)]
pub struct SimConnector {
    net: SimNet,
    ip: Ipv4Addr,
    /// Connections dialled so far (each one's source port is [`source_port`] of it).
    dialed: Arc<AtomicU32>,
}

impl cypherwire_client::Connect for SimConnector {
    type Io = DuplexStream;

    async fn connect(&self) -> io::Result<Self::Io> {
        let port = source_port(self.dialed.fetch_add(1, Ordering::Relaxed));
        self.net.dial(SocketAddr::new(IpAddr::V4(self.ip), port))
    }

    fn describe(&self) -> String {
        format!("simnet {} -> {SERVER_ADDR}", self.ip)
    }
}

#[cfg(test)]
mod tests {
    use super::source_port;

    #[test]
    fn source_ports_cycle_above_40000() {
        assert_eq!(source_port(0), 40_001);
        assert_eq!(source_port(25_534), 65_535);
        assert_eq!(source_port(25_535), 40_001);
        // Past where a 16-bit counter would wrap: still distinct ports in order.
        assert_eq!(source_port(65_536), source_port(65_535) + 1);
        assert!((0..200_000).map(source_port).all(|p| p > 40_000));
    }
}
