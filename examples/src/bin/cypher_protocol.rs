//! CYPHER_PROTOCOL's README, the cypherwire way: a server answering `/SEQUENCE` by (path,
//! operation), a client that reconnects by itself and reports online/offline, and the same
//! 32-character key string. The server is stopped and started again on the same port: the
//! client says offline once, reconnects, says online, and carries on.
//!
//! Run: `cargo run -p cypherwire-examples --bin cypher_protocol`

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cypherwire::client::{Client, Status};
use cypherwire::server::{Ctx, HandlerError, Server};
use cypherwire::session::Psk;
use cypherwire::wire::{Request, Value};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let psk = Psk::from_passphrase("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U")?;
    // The application's data outlives the server process (a database, say).
    let sequence: Arc<Mutex<Vec<Value>>> = Arc::default();

    let server = sequence_server(&psk, &sequence, "127.0.0.1:0").await?;
    let addr = server.local_addr();

    let client = Client::builder(psk.clone()).connect(addr.to_string())?;
    // CYPHER_PROTOCOL's online_signal_processor / offline_signal_processor: every change, in
    // order, once.
    let (offline, online) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let (off, on) = (offline.clone(), online.clone());
    client.on_status(move |status| match status {
        Status::Offline { reason } => {
            off.fetch_add(1, Ordering::SeqCst);
            println!("offline: {reason}");
        }
        Status::Online { resumed } => {
            on.fetch_add(1, Ordering::SeqCst);
            println!("online (resumed: {resumed})");
        }
        other => println!("status: {other:?}"),
    });
    client.wait_online().await?;

    for n in [3, 1, 4] {
        let reply = client.request("/SEQUENCE", "UPDATE").data(n).send().await?;
        println!("UPDATE {n} -> {:?}", reply.data);
    }
    let seq: Vec<i64> = client.request("/SEQUENCE", "READ").send().await?.data()?;
    println!("READ -> {seq:?}");
    assert_eq!(seq, [3, 1, 4]);

    // The server goes away and comes back on the same address.
    server.handle().shutdown().await;
    let mut status = client.status();
    status.wait_for(|s| !s.is_online()).await?;
    let server = sequence_server(&psk, &sequence, &addr.to_string()).await?;
    client.wait_online().await?;
    let reply = client.request("/SEQUENCE", "UPDATE").data(5).send().await?;
    println!("UPDATE 5 -> {:?}", reply.data);
    let seq: Vec<i64> = client.request("/SEQUENCE", "READ").send().await?.data()?;
    println!("READ -> {seq:?}");
    assert_eq!(seq, [3, 1, 4, 5]);
    // One offline signal for the outage, one online for each connection (the callbacks run on
    // their own task: give it a moment to catch up).
    for _ in 0..100 {
        if online.load(Ordering::SeqCst) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(offline.load(Ordering::SeqCst), 1);
    assert_eq!(online.load(Ordering::SeqCst), 2);

    client.close_within(Duration::from_millis(200)).await;
    server.handle().shutdown().await;
    Ok(())
}

/// A server answering `/SEQUENCE` `UPDATE` (append, keep the last 10) and `READ`, on `addr`.
async fn sequence_server(
    psk: &Psk,
    sequence: &Arc<Mutex<Vec<Value>>>,
    addr: &str,
) -> anyhow::Result<Server> {
    let (seq_w, seq_r) = (sequence.clone(), sequence.clone());
    let server = Server::builder(psk.clone())
        .route("/SEQUENCE", "UPDATE", move |req: Request, _ctx: Ctx| {
            let seq = seq_w.clone();
            async move {
                let mut seq = seq
                    .lock()
                    .map_err(|_| HandlerError::bad_request("poisoned"))?;
                seq.push(req.data);
                if seq.len() > 10 {
                    seq.remove(0);
                }
                Ok(Value::from("UPDATED"))
            }
        })
        .route("/SEQUENCE", "READ", move |_req: Request, _ctx: Ctx| {
            let seq = seq_r.clone();
            async move {
                let seq = seq
                    .lock()
                    .map_err(|_| HandlerError::bad_request("poisoned"))?;
                Ok(Value::Array(seq.clone()))
            }
        })
        .bind(addr)
        .await?;
    Ok(server)
}
