//! # cypherwire-server
//!
//! The server of cypherwire: every connection is authenticated and encrypted by
//! [`cypherwire_session`] (PSK, identity keys or password), then requests are routed by
//! (path, operation) to async handlers, named actions to action handlers, and the server can
//! push to one connection or broadcast to all.
//!
//! **What it does**
//! - [`Server::builder`]: routes ([`ServerBuilder::route`]), a fallback for unmatched requests,
//!   named actions, limits ([`ServerLimits`]), bans ([`BanPolicy`](cypherwire_session::BanPolicy)),
//!   an accept hook; [`ServerBuilder::bind`] starts it on TCP, [`ServerBuilder::serve_on`] on
//!   any other transport with ordered, reliable byte streams (an [`Accept`] implementation:
//!   Unix sockets, in-memory pipes, a simulated network).
//! - Handlers get a [`Ctx`] (connection id, peer address and identity, session id, request
//!   id, deadline, a [`ServerHandle`], the application's state from [`ServerBuilder::state`])
//!   and return anything `Serialize` ([`IntoReply`]), a [`Reply`] with metadata, or a
//!   [`HandlerError`] that becomes an error response; `req.data::<T>()?` reads typed data. A
//!   panicking handler becomes an `INTERNAL` response; the connection and the server live on.
//!   Unknown routes get `NOT_FOUND`; requests past their deadline get `DEADLINE_EXCEEDED` and
//!   their work is stopped; a `Cancel` stops the work and suppresses the answer.
//! - [`ServerHandle`]: the registry (list, count, get by id or address, kick one, kick all),
//!   [`Events`] (accepted, refused, authenticated, authentication failed, banned, disconnected
//!   with reason, unknown action), [`send_to`](ServerHandle::send_to) and
//!   [`broadcast`](ServerHandle::broadcast) over bounded outboxes (a full outbox disconnects that
//!   slow consumer; nobody else waits), bans, counters, graceful
//!   [`shutdown`](ServerHandle::shutdown) or an immediate
//!   [`shutdown_now`](ServerHandle::shutdown_now).
//! - Bounds everywhere: connections in total and per address, a handshake rate per address
//!   (token bucket), handshakes in progress (beyond: refused before any work), banned sources
//!   refused before reading a byte, requests in flight
//!   per connection (beyond: the server stops reading), outbox size, idle timeout.
//!
//! - An operator's [`console`]: list, kick, broadcast, ban and unban by line, plus the
//!   application's own commands, on any input and output (`cypherwire serve --console`).
//! - Every stream ([`Events`], [`Inbox`]) is a `futures_core::Stream`; a server stops on
//!   [`ServerHandle::shutdown`] or [`Server::with_graceful_shutdown`], never by being dropped.
//!
//! - A pull-style [`Inbox`] ([`ServerBuilder::inbox`]) for messages no handler takes, or a
//!   bounded receive queue per connection ([`ServerBuilder::connection_queue`],
//!   [`ConnectionHandle::recv`]); named broadcast groups ([`ServerHandle::join_group`],
//!   [`ServerHandle::broadcast_group`]).
//!
//! - Sessions that outlive connections ([`ResumePolicy`]): every connection is welcomed with a
//!   rotating resumption token inside the encrypted channel; a client that reconnects (fresh
//!   handshake) and presents it continues its session: requests it resends are answered from
//!   a bounded response cache instead of running twice, and pushes it missed are replayed in
//!   order. `docs/protocol.md` §3.7 and the delivery contract in the README.
//!
//! - **Cluster**: several servers acting as one ([`ServerBuilder::cluster`] with a
//!   [`Backplane`]: `cypherwire-cluster`'s Redis backplane across processes and machines, or a
//!   [`LocalHub`] within one process). Broadcasts and groups reach every connection of every
//!   instance once and in order, or the connection is closed with `PUSHES_LOST` and told
//!   `resumed: false`, never left with a silent hole; [`Cluster::send_to`] and
//!   [`Cluster::kick`] reach connections of other instances ([`ConnectionId::node`]), with
//!   [`ClusterError::NoSuchNode`] and [`ClusterError::Indeterminate`] kept apart; bans and
//!   failed handshakes count on every instance; [`Cluster::count`],
//!   [`Cluster::connections`] and [`Cluster::group_members`] name the nodes that did not
//!   answer; a client that reconnects to
//!   another instance resumes its session there while the old instance lives.
//!   `docs/cluster.md` has the failure semantics.
//!
//! - `tracing` spans per connection (`connection`, with the peer) and per request (`request`,
//!   with id, path and operation).

//!
//! ```
//! use cypherwire_server::{Ctx, HandlerError, Server};
//! use cypherwire_session::Psk;
//! use cypherwire_wire::{Request, Value};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let psk = Psk::from_passphrase("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U")?;
//! let server = Server::builder(psk)
//!     .route("/NUMBER", "READ", |_req: Request, _ctx: Ctx| async move {
//!         Ok::<_, HandlerError>(Value::from(42))
//!     })
//!     .bind("127.0.0.1:0")
//!     .await?;
//! println!("listening on {}", server.local_addr());
//! server.handle().shutdown().await;
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(run())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Features
//!
//! | feature | default | enables |
//! | --- | --- | --- |
//! | `msgpack` | yes | the MessagePack payload codec |
//! | `json` | yes | the JSON payload codec |
//! | `ring` | yes | the `ring` crypto backend for records (otherwise pure Rust) |

#![doc(test(attr(deny(warnings))))]

mod accept;
mod app_state;
mod clock;
mod cluster;
mod compat;
mod conn;
pub mod console;
mod core;
mod delivery;
mod dispatch;
mod error;
mod events;
mod future;
mod handle;
mod handler;
mod id;
mod inbox;
mod limits;
mod metrics;
mod outgoing;
mod rate;
mod refusals;
mod registry;
mod router;
mod server;
mod sessions;
mod shared;
mod signals;
mod state;
mod unwind;

pub use crate::accept::Accept;
pub use crate::cluster::{
    Backplane, BackplaneError, BackplaneEvent, Cluster, ClusterError, ClusterStats,
    DEFAULT_QUERY_DEADLINE, History, LOCAL_HISTORY, LocalBackplane, LocalHub, Partial, Position,
    Publication, Published, RemoteConnection, Topic,
};
pub use crate::compat::CypherCompat;
pub use crate::error::{Error, Incoming, Refusal};
pub use crate::events::{DEFAULT_EVENT_CAPACITY, DisconnectReason, Event, EventKind, Events};
pub use crate::future::BoxFuture;
pub use crate::handle::{ConnectionHandle, ServerHandle, StatsSnapshot};
pub use crate::handler::{ActionHandler, Ctx, HandlerError, IntoReply, Reply, RequestHandler};
pub use crate::id::{ConnectionId, NodeId, ParseConnectionIdError, SessionId};
pub use crate::inbox::{Inbox, InboxItem};
pub use crate::limits::ServerLimits;
pub use crate::metrics::{LatencyHistogram, RouteStats};
pub use crate::rate::{DEFAULT_HANDSHAKE_RATE, RateLimit};
pub use crate::refusals::RefusalCounts;
pub use crate::registry::ConnectionInfo;
pub use crate::server::{Server, ServerBuilder};
pub use crate::sessions::ResumePolicy;
pub use crate::state::{MAX_GROUP_NAME_LEN, MAX_GROUPS};
