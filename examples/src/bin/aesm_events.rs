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
    let bob = Client::builder(psk.clone()).connect(handle.local_addr().to_string())?;
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

    // What clients send waits in the inbox; aesm's getDataOrdinal(oldToNew=False) is
    // drain_newest_first.
    for n in 1..=3 {
        alice.emit("note", format!("note {n} from alice")).await?;
    }
    for _ in 0..500 {
        if inbox.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let waiting = inbox.drain_newest_first();
    anyhow::ensure!(
        waiting.len() == 3,
        "expected 3 notes, got {}",
        waiting.len()
    );
    for item in &waiting {
        if let Message::Action(a) = &item.message {
            println!("inbox (newest first): {} said {}", item.connection, a.data);
        }
    }
    let alice_id = waiting[0].connection;

    // Send to one (alice, who reads it), then to all (bob reads it too).
    let mut alice_in = alice
        .take_incoming()
        .ok_or_else(|| anyhow::anyhow!("taken"))?;
    handle.send_to(alice_id, Value::from("got your notes"))?;
    let delivered = handle.broadcast(Value::from("hello everyone"));
    println!("broadcast queued for {delivered} connections");
    let mut to_alice = Vec::new();
    while to_alice.len() < 2 {
        match alice_in.next().await {
            Some(Incoming::Push(p)) => {
                println!("alice received push #{}: {}", p.seq, p.data);
                to_alice.push(p.data);
            }
            Some(_) => {}
            None => anyhow::bail!("alice's client stopped"),
        }
    }
    anyhow::ensure!(
        to_alice[0] == Value::from("got your notes"),
        "alice got {to_alice:?}"
    );
    if let Some(Incoming::Push(p)) = bob_in.next().await {
        println!("bob received push #{}: {}", p.seq, p.data);
        anyhow::ensure!(
            p.data == Value::from("hello everyone"),
            "bob got {}",
            p.data
        );
    }
    println!(
        "connections: {:?}",
        handle
            .connections()
            .iter()
            .map(|c| c.id)
            .collect::<Vec<_>>()
    );

    // aesm's per-connection queues: each connection's messages wait in a queue of its own.
    let queued = Server::builder(psk.clone())
        .connection_queue(16)
        .bind("127.0.0.1:0")
        .await?;
    let carol = Client::builder(psk.clone())
        .connect_and_wait(queued.local_addr().to_string())
        .await?;
    carol.emit("note", "for my queue only").await?;
    let carol_id = queued.handle().connections()[0].id;
    let queue = queued.handle().connection_handle(carol_id)?;
    match tokio::time::timeout(Duration::from_secs(5), queue.recv()).await?? {
        Some(item) => match &item.message {
            Message::Action(a) => println!("{carol_id}'s own queue: {}", a.data),
            other => anyhow::bail!("expected carol's note, got {other:?}"),
        },
        None => anyhow::bail!("carol's queue ended"),
    }
    carol.close().await;
    queued.handle().shutdown().await;

    alice.close_within(Duration::from_millis(100)).await;
    bob.close_within(Duration::from_millis(100)).await;
    handle.shutdown().await;
    Ok(())
}
