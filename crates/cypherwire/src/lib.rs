#![doc = include_str!("../README.md")]
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

/// The items most programs need, for `use cypherwire::prelude::*`: the message types, and with
/// their features the server's builder and handler types, the client and its stream items, and
/// the pre-shared key.
pub mod prelude {
    #[cfg(feature = "client")]
    pub use cypherwire_client::{Client, Incoming};
    #[cfg(feature = "server")]
    pub use cypherwire_server::{Ctx, HandlerError, Reply, Server};
    #[cfg(feature = "session")]
    pub use cypherwire_session::Psk;
    #[cfg(feature = "wire")]
    pub use cypherwire_wire::{
        Action, Close, CloseCode, Codec, Limits, Message, PayloadCodec, Push, Request, Response,
        Status, StatusCode, Value, from_value, to_value,
    };
}
