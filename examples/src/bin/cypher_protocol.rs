//! CYPHER_PROTOCOL's README, the cypherwire way: a server answering `/SEQUENCE` and `/NUMBER`
//! by (path, operation), a client that reconnects by itself and reports online/offline, and the
//! same 32-character key string.
//!
//! Run: `cargo run -p cypherwire-examples --bin cypher_protocol`

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cypherwire::client::Client;
use cypherwire::server::{Ctx, HandlerError, Server};
use cypherwire::session::Psk;
use cypherwire::wire::{Request, Value};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let psk = Psk::from_passphrase("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U")?;
    let sequence: Arc<Mutex<Vec<Value>>> = Arc::default();
    let (seq_w, seq_r) = (sequence.clone(), sequence);

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
        .bind("127.0.0.1:0")
        .await?;

    let client = Client::builder(psk).connect(server.local_addr().to_string())?;
    // CYPHER_PROTOCOL's online_signal_processor / offline_signal_processor.
    client.on_status(|status| println!("status: {status:?}"));
    client.wait_online().await?;

    for n in [3, 1, 4] {
        let reply = client.request("/SEQUENCE", "UPDATE").data(n).send().await?;
        println!("UPDATE {n} -> {:?}", reply.data);
    }
    let seq: Vec<i64> = client.request("/SEQUENCE", "READ").send().await?.data()?;
    println!("READ -> {seq:?}");
    assert_eq!(seq, [3, 1, 4]);

    client.close(Duration::from_millis(200)).await;
    server.handle().shutdown().await;
    Ok(())
}
