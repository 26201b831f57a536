//! Swapping the payload codec (JSON instead of MessagePack) and the cipher suite
//! (ChaCha20-Poly1305), and sending a typed serde payload.
//!
//! Run: `cargo run -p cypherwire-examples --bin codec_and_suite`

use std::time::Duration;

use cypherwire::client::Client;
use cypherwire::server::{Ctx, HandlerError, Server};
use cypherwire::session::{CipherSuite, Psk, SessionConfig};
use cypherwire::wire::{CodecId, Request, from_value, to_value};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Order {
    item: String,
    quantity: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let psk = Psk::generate()?;
    let config = SessionConfig::builder()
        .codecs([CodecId::Json])
        .suites([CipherSuite::ChaCha20Poly1305])
        .build()?;
    let server = Server::builder(psk.clone())
        .session_config(config.clone())
        .route("/ORDERS", "CREATE", |req: Request, _ctx: Ctx| async move {
            let order: Order = from_value(req.data)?;
            Ok::<_, HandlerError>(to_value(&Order {
                quantity: order.quantity * 2,
                ..order
            })?)
        })
        .bind("127.0.0.1:0")
        .await?;
    let client = Client::builder(psk)
        .session_config(config)
        .connect(server.local_addr().to_string())?;
    let order = Order {
        item: "tea".into(),
        quantity: 3,
    };
    let doubled: Order = client
        .request("/ORDERS", "CREATE")
        .data(to_value(&order)?)
        .send()
        .await?
        .data()?;
    println!("sent {order:?} over JSON + ChaCha20-Poly1305, got {doubled:?}");
    assert_eq!(doubled.quantity, 6);
    client.close_within(Duration::from_millis(100)).await;
    server.handle().shutdown().await;
    Ok(())
}
