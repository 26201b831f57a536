//! pnetwork's named packets bound to handlers, the cypherwire way: actions dispatched by name,
//! a per-client session token issued by the handshake inside the encrypted channel (never shown
//! to other clients), and an operator's console over the connections.
//!
//! Run: `cargo run -p cypherwire-examples --bin pnetwork_actions`

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cypherwire::client::{Client, Incoming};
use cypherwire::server::{Ctx, Server};
use cypherwire::session::Psk;
use cypherwire::wire::{Action, Value};

/// The server's own state, shared with every handler.
#[derive(Default)]
struct Pings(AtomicU64);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let psk = Psk::generate()?;
    let server = Server::builder(psk.clone())
        .state(Pings::default())
        // Packet "ping": count it and answer the sender alone, naming its session (the
        // handshake-issued identity; the secret token itself never reaches handlers).
        .action("ping", |_a: Action, ctx: Ctx| async move {
            let Ok(pings) = ctx.state::<Pings>() else {
                return;
            };
            let n = pings.0.fetch_add(1, Ordering::SeqCst) + 1;
            let session = ctx.session.map(|s| s.to_string()).unwrap_or_default();
            let _ = ctx.server.send_to(
                ctx.connection,
                Value::from(format!("pong #{n} for {session}")),
            );
        })
        // Packet "say": everyone hears it.
        .action("say", |a: Action, ctx: Ctx| async move {
            ctx.server.broadcast_action(&a);
        })
        .bind("127.0.0.1:0")
        .await?;
    let handle = server.handle();
    // The client binds its own handler to "say" (pnetwork's client-side bindAction).
    let (heard_tx, mut heard) = tokio::sync::mpsc::channel::<String>(4);
    let client = Client::builder(psk)
        .on_action("say", move |a: Action| {
            let heard_tx = heard_tx.clone();
            async move {
                let _ = heard_tx.send(a.data.to_string()).await;
            }
        })
        .connect_and_wait(handle.local_addr().to_string())
        .await?;
    let mut incoming = client
        .take_incoming()
        .ok_or_else(|| anyhow::anyhow!("taken"))?;

    client.emit("ping", Value::Nil).await?;
    client.emit("say", "hello").await?;
    match tokio::time::timeout(Duration::from_secs(5), incoming.next()).await? {
        Some(Incoming::Push(p)) => println!("server answered: {}", p.data),
        other => anyhow::bail!("expected the pong, got {other:?}"),
    }
    let said = tokio::time::timeout(Duration::from_secs(5), heard.recv()).await?;
    println!(
        "the client's \"say\" handler heard: {}",
        said.unwrap_or_default()
    );
    // The operator's console (the building block behind `cypherwire serve --console`, the
    // coretools of pnetwork), here driven line by line.
    let console = cypherwire::server::console::Console::new(handle.clone());
    for line in ["list", "broadcast maintenance at noon"] {
        match console.execute(line).await {
            cypherwire::server::console::Outcome::Done(text) => println!("console> {line}\n{text}"),
            other => anyhow::bail!("console {line}: {other:?}"),
        }
    }
    let pings = handle
        .state::<Pings>()
        .map_or(0, |p| p.0.load(Ordering::SeqCst));
    println!("pings handled: {pings}");
    client.close().await;
    handle.shutdown().await;
    Ok(())
}
