//! aesm's async encrypted sockets, the cypherwire way: connection activity as events, a
//! pull-style inbox of what clients send, send-to-one and send-to-all.
//!
//! Run: `cargo run -p cypherwire-examples --bin aesm_events`

use std::time::Duration;

use cypherwire::client::{Client, Incoming};
use cypherwire::server::{EventKind, Server};
use cypherwire::session::Psk;
use cypherwire::wire::{Message, Value};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let psk = Psk::generate()?;
    // No handlers: everything the clients send waits in the inbox.
    let server = Server::builder(psk.clone())
        .inbox(64)
        .bind("127.0.0.1:0")
        .await?;
    let handle = server.handle();
    let mut events = handle.events();
    let mut inbox = handle
        .take_inbox()
        .ok_or_else(|| anyhow::anyhow!("inbox taken"))?;

    let alice = Client::builder(psk.clone()).connect(handle.local_addr().to_string())?;
    let bob = Client::builder(psk).connect(handle.local_addr().to_string())?;
    let mut bob_in = bob
        .take_incoming()
        .ok_or_else(|| anyhow::anyhow!("taken"))?;
    alice.wait_online().await?;
    bob.wait_online().await?;
    let mut connected = 0;
    while connected < 2 {
        let e = events
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("server gone"))?;
        if let EventKind::Authenticated { id, peer, .. } = &e.kind {
            println!("event: {id} connected from {peer}");
            connected += 1;
        }
    }

    alice.emit("note", "hi from alice").await?;
    let item = tokio::time::timeout(Duration::from_secs(5), inbox.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("no message"))?;
    if let Message::Action(a) = &item.message {
        println!(
            "inbox: {} said {:?} at {:?}",
            item.connection, a.data, item.received_at
        );
    }

    // Send to one (the sender), then to all.
    handle.send_to(item.connection, Value::from("got it"))?;
    let delivered = handle.broadcast(Value::from("hello everyone"));
    println!("broadcast queued for {delivered} connections");
    if let Some(Incoming::Push(p)) = bob_in.next().await {
        println!("bob received push #{}: {:?}", p.seq, p.data);
    }
    println!(
        "connections: {:?}",
        handle
            .connections()
            .iter()
            .map(|c| c.id)
            .collect::<Vec<_>>()
    );

    alice.close_within(Duration::from_millis(100)).await;
    bob.close_within(Duration::from_millis(100)).await;
    handle.shutdown().await;
    Ok(())
}
