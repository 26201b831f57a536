//! pnetwork's named packets bound to handlers, the cypherwire way: actions dispatched by name,
//! a per-client session token issued by the handshake inside the encrypted channel (never shown
//! to other clients), and an operator's view of the connections.
//!
//! Run: `cargo run -p cypherwire-examples --bin pnetwork_actions`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cypherwire::client::{Client, Incoming};
use cypherwire::server::{Ctx, Server};
use cypherwire::session::Psk;
use cypherwire::wire::{Action, Value};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let psk = Psk::generate()?;
    let pings = Arc::new(AtomicU64::new(0));
    let counter = pings.clone();
    let server = Server::builder(psk.clone())
        // Packet "ping": count it and answer the sender alone.
        .action("ping", move |_a: Action, ctx: Ctx| {
            let counter = counter.clone();
            async move {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let _ = ctx
                    .server
                    .send_to(ctx.connection, Value::from(format!("pong #{n}")));
            }
        })
        // Packet "say": everyone hears it.
        .action("say", |a: Action, ctx: Ctx| async move {
            ctx.server.broadcast_action(&a);
        })
        .bind("127.0.0.1:0")
        .await?;
    let handle = server.handle();
    let client = Client::builder(psk).connect(handle.local_addr().to_string())?;
    let mut incoming = client
        .take_incoming()
        .ok_or_else(|| anyhow::anyhow!("taken"))?;
    client.wait_online().await?;

    client.emit("ping", Value::Nil).await?;
    client.emit("say", "hello").await?;
    for _ in 0..2 {
        match tokio::time::timeout(Duration::from_secs(5), incoming.next()).await? {
            Some(Incoming::Push(p)) => println!("server answered: {:?}", p.data),
            Some(Incoming::Action(a)) => println!("broadcast {}: {:?}", a.name, a.data),
            other => println!("other: {other:?}"),
        }
    }
    // The operator's console view (the `cypherwire serve --console` of pnetwork's coretools).
    for c in handle.connections() {
        println!(
            "{} {} in={} out={}",
            c.id, c.peer, c.messages_in, c.messages_out
        );
    }
    println!("pings handled: {}", pings.load(Ordering::SeqCst));
    client.close_within(Duration::from_millis(100)).await;
    handle.shutdown().await;
    Ok(())
}
