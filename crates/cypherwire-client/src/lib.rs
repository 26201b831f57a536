//! # cypherwire-client
//!
//! The reconnecting client of cypherwire: a cheap clonable [`Client`] handle whose driver
//! connects, authenticates ([`cypherwire_session`]), and reconnects with exponential backoff and
//! full jitter ([`Backoff`]), reporting its [`Status`] (online, offline with a typed
//! [`OfflineReason`], reconnecting, resumed, gave up, kicked) as a watch, a stream, or
//! callbacks. A rejection (wrong key, banned) is reported at once rather than retried, and a
//! kick is final unless the application asks otherwise.
//!
//! **No hand-off per request.** The driver is polled by whoever is at hand: a caller waiting
//! for an answer reads the connection, hands the answers it finds to their callers and writes
//! what is queued, on its own thread; a background task of the client takes over whenever no
//! caller waits (pushes, heartbeats, reconnects, deadlines). A burst of requests goes out in one
//! write and a burst of answers is read in one go, with no thread crossing in between. A
//! request future that is polled once and then kept without being polled may delay the others
//! by at most 20 ms.
//!
//! **No lost requests.** Requests are correlated by id, many in flight at once. Issued while
//! offline they queue (bounded by count and bytes; beyond: [`Error::BufferFull`] at once, never
//! a silent drop). After a reconnect the client resumes its session over a fresh handshake and
//! resends everything unanswered: the server answers requests that already ran from its cache
//! instead of running them twice, and replays the pushes the client missed. Deadlines fail a
//! request with [`Error::DeadlineExceeded`]; dropping a request's future cancels it at the
//! server. A heartbeat detects half-open connections. See the delivery contract in
//! `docs/protocol.md` §3.7.
//!
//! **Any transport.** [`ClientBuilder::connect`] dials TCP; [`ClientBuilder::connect_with`]
//! takes a [`Connect`] implementation for anything else with ordered, reliable byte streams
//! (Unix sockets, in-memory pipes; the project's own simulation runs the client this way in
//! virtual time over a faulty network).
//!
//! ```
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use cypherwire_client::Client;
//! use cypherwire_session::Psk;
//!
//! let psk = Psk::from_passphrase("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U")?;
//! let client = Client::builder(psk).connect("127.0.0.1:12345")?; // returns at once
//! client.on_status(|s| println!("status: {s:?}"));
//! // With a server listening there: `client.request("/NUMBER", "READ").send().await?`.
//! client.close_within(std::time::Duration::from_millis(10)).await;
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

mod actions;
mod backoff;
mod client;
pub mod compat;
mod connect;
mod core;
mod driver;
mod engine;
mod error;
#[cfg(feature = "test-util")]
#[doc(hidden)]
pub mod fuzzing;
mod pending;
mod queue;
mod shared;
mod streams;

pub use crate::backoff::Backoff;
pub use crate::client::{
    Client, ClientBuilder, DEFAULT_CLOSE_DRAIN, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_BYTES, Reply,
    RequestBuilder,
};
pub use crate::connect::Connect;
pub use crate::error::{DataError, Error};
pub use crate::shared::{Incoming, OfflineReason, Status};
pub use crate::streams::{Emitter, IncomingStream, StatusEvents};

/// Milliseconds since the Unix epoch on this machine's clock (action timestamps).
#[expect(
    clippy::disallowed_methods,
    reason = "a timestamp for humans; never used for logic"
)]
pub(crate) fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
