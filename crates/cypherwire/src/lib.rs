//! # cypherwire
//!
//! Secure messaging over TCP, in layers you can take one at a time. This facade re-exports
//! each layer as a module behind a feature of the same name:
//!
//! | module | feature | crate | what it is | status |
//! | --- | --- | --- | --- | --- |
//! | [`wire`] | `wire` (default) | `cypherwire-wire` | frames, payload codecs, [`Value`](wire::Value), envelopes; sans-IO | done |
//! | `session` | `session` | `cypherwire-session` | Noise handshakes (PSK, identity, password), AEAD records, tokens, bans, Fernet | done |
//! | `server` | `server` | `cypherwire-server` | router, actions, registry, events, push, broadcast, inbox, resumption | done |
//! | `client` | `client` | `cypherwire-client` | reconnecting client that loses no request | done |
//! | `mesh` | `mesh` | `cypherwire-mesh` | password-admitted P2P mesh: auth peer, signed peer lists, heartbeats, broadcast and direct messages | done |
//! | `cluster` | `cluster` | `cypherwire-cluster` | several server instances as one service over Redis 7: fan-out with gap recovery, routed sends, shared bans, sealed backplane | in progress |
//!
//! `full` enables every layer; `msgpack` (default) and `json` choose the payload codecs; `ring`
//! selects the faster crypto backend for records.
//! Users who need only one layer can depend on its crate directly: the crates form a strict
//! stack (`wire ← session ← {server, client} ← mesh`, and `server ← cluster`) and none depends on this facade.
//!
//! ```
//! use cypherwire::prelude::*;
//!
//! let req = Request::new(1, "/NUMBER", "READ");
//! let mut buf = cypherwire::wire::bytes::BytesMut::new();
//! Message::from(req).encode(&Codec::default(), &mut buf)?;
//! assert_eq!(buf[0], cypherwire::wire::ENVELOPE_VERSION);
//! # Ok::<(), cypherwire::wire::Error>(())
//! ```

//! A server and a client (features `server` and `client`):
//!
//! ```
//! # #[cfg(all(feature = "server", feature = "client"))]
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use cypherwire::client::Client;
//! use cypherwire::server::{Ctx, HandlerError, Server};
//! use cypherwire::session::Psk;
//! use cypherwire::wire::{Request, Value};
//!
//! let psk = Psk::from_passphrase("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U")?;
//! let server = Server::builder(psk.clone())
//!     .route("/NUMBER", "READ", |_req: Request, _ctx: Ctx| async move {
//!         Ok::<_, HandlerError>(Value::from(42))
//!     })
//!     .bind("127.0.0.1:0")
//!     .await?;
//! let client = Client::builder(psk).connect(server.local_addr().to_string())?;
//! let n: i64 = client.request("/NUMBER", "READ").send().await?.data()?;
//! assert_eq!(n, 42);
//! assert!(client.status().borrow().is_online());
//! client.close_within(std::time::Duration::from_millis(100)).await;
//! server.handle().shutdown().await;
//! # Ok(()) }
//! # #[cfg(all(feature = "server", feature = "client"))]
//! # tokio::runtime::Runtime::new()?.block_on(demo())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "wire")]
pub use cypherwire_wire as wire;

#[cfg(feature = "session")]
pub use cypherwire_session as session;

#[cfg(feature = "server")]
pub use cypherwire_server as server;

#[cfg(feature = "client")]
pub use cypherwire_client as client;

#[cfg(feature = "mesh")]
pub use cypherwire_mesh as mesh;

#[cfg(feature = "cluster")]
pub use cypherwire_cluster as cluster;

/// The items most programs need, for `use cypherwire::prelude::*`.
pub mod prelude {
    #[cfg(feature = "wire")]
    pub use cypherwire_wire::{
        Action, Close, CloseCode, Codec, Limits, Message, PayloadCodec, Push, Request, Response,
        Status, StatusCode, Value, from_value, to_value,
    };
}
