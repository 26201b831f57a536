//! Where connections come from: the [`Accept`] trait (TCP and any other reliable byte-stream
//! transport) and the accept loop that admits them (rate, counts, hook, handshake slots).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::conn;
use crate::error::{Incoming, Refusal};
use crate::events::EventKind;
use crate::router::Router;
use crate::shared::Shared;

/// A source of incoming connections for
/// [`ServerBuilder::serve_on`](crate::ServerBuilder::serve_on): TCP (implemented for
/// [`TcpListener`], with `TCP_NODELAY` set on each connection) or any transport with ordered,
/// reliable byte streams.
pub trait Accept: Send + 'static {
    /// One accepted connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Waits for the next connection and the address it comes from (used for limits, bans,
    /// events). An error is logged and retried after a short pause (as `EMFILE` is for TCP).
    fn accept(&mut self) -> impl Future<Output = std::io::Result<(Self::Io, SocketAddr)>> + Send;

    /// The address this listener serves (reported by
    /// [`ServerHandle::local_addr`](crate::ServerHandle::local_addr)).
    ///
    /// # Errors
    /// When the transport cannot tell.
    fn local_addr(&self) -> std::io::Result<SocketAddr>;
}

impl Accept for TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept(&mut self) -> std::io::Result<(Self::Io, SocketAddr)> {
        let (stream, peer) = Self::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, peer))
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Self::local_addr(self)
    }
}
pub(crate) async fn accept_loop<L: Accept>(
    shared: Arc<Shared>,
    router: Arc<Router>,
    mut listener: L,
    compat: Option<tokio::task::JoinHandle<()>>,
) {
    let handshakes = Arc::new(Semaphore::new(shared.limits.max_handshakes));
    let mut conns = JoinSet::new();
    let mut shutdown = shared.shutdown_rx();
    let mut purge = tokio::time::interval(Duration::from_secs(5));
    let mut rate = crate::rate::Buckets::new(
        shared.limits.handshake_rate_per_ip,
        shared.limits.max_connections.max(1024),
    );
    loop {
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|down| *down) => break,
            _ = purge.tick() => {
                shared.state.purge(crate::clock::monotonic());
                continue;
            }
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of dying or spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let refuse = |stream: L::Io, reason| {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            shared
                .refusals
                .record(peer, reason, crate::clock::monotonic());
            shared.emit(EventKind::Refused { peer, reason });
            shared
                .refusals
                .tell(stream, crate::refusals::wire_refusal(reason, None));
        };
        // Under load (half the handshake slots busy), each address gets a bounded rate of new
        // handshakes, so one source cannot take the rest.
        let busy = shared.limits.max_handshakes - handshakes.available_permits();
        if busy >= (shared.limits.max_handshakes / 2).max(1)
            && !rate.allow(&peer.ip(), crate::clock::monotonic())
        {
            refuse(stream, Refusal::RateLimited);
            continue;
        }
        if conns.len() >= shared.limits.max_connections {
            refuse(stream, Refusal::TooManyConnections);
            continue;
        }
        if let Some(hook) = &shared.hook
            && !hook(Incoming { peer })
        {
            refuse(stream, Refusal::Hook);
            continue;
        }
        if !shared
            .registry
            .admit_ip(peer.ip(), shared.limits.max_connections_per_ip)
        {
            refuse(stream, Refusal::TooManyFromAddress);
            continue;
        }
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            shared.registry.release_ip(peer.ip());
            refuse(stream, Refusal::TooManyHandshakes);
            continue;
        };
        let span = tracing::info_span!("connection", %peer);
        conns.spawn(tracing::Instrument::instrument(
            conn::run(shared.clone(), router.clone(), stream, peer, permit),
            span,
        ));
    }
    drop(listener);
    if *shared.abort.borrow() {
        conns.abort_all();
    } else {
        // Connections drain themselves on the shutdown signal; give them the grace period and
        // a little more to say goodbye, then stop what is left.
        let all_done = async { while conns.join_next().await.is_some() {} };
        if tokio::time::timeout(shared.grace() + Duration::from_secs(2), all_done)
            .await
            .is_err()
        {
            conns.abort_all();
        }
    }
    while conns.join_next().await.is_some() {}
    // The compat listener stops on the same signal; "stopped" means its port is free too.
    if let Some(task) = compat {
        let _ = task.await;
    }
    // Aborted connections never reached their own cleanup.
    shared.registry.clear();
    if let Some(cluster) = &shared.cluster {
        cluster.backplane().leave().await;
    }
    shared.stopped.send_replace(true);
}
