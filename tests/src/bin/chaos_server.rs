//! The server of the separate-process chaos test (`tests/tests/chaos_process.rs`) and the DoS
//! bench: serves `/ADD ONE` (data + 1) and appends `who id` to a log file for every execution,
//! unbuffered, so executions survive a SIGKILL; `/FLOOD GO` broadcasts `data` (at most 1,000)
//! actions of 1 KiB to every connection. Prints `listening on ADDR` when ready.
//!
//! Usage: `chaos-server ADDR LOG_FILE`

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use cypherwire::server::{Ctx, HandlerError, Server};
use cypherwire::session::Psk;
use cypherwire::wire::{Request, Value};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(log)) = (args.next(), args.next()) else {
        return Err("usage: chaos-server ADDR LOG_FILE".into());
    };
    let log = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?,
    ));
    let server = Server::builder(Psk::from_bytes([0x5c; 32]))
        .route("/ADD", "ONE", move |req: Request, _ctx: Ctx| {
            let log = log.clone();
            async move {
                let who = req.metadata.as_u64().unwrap_or(0);
                // One write per line (O_APPEND): a SIGKILL cannot leave half a line.
                let line = format!("{who} {}\n", req.id);
                log.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .write_all(line.as_bytes())
                    .map_err(|e| {
                        HandlerError::new(cypherwire::wire::StatusCode::INTERNAL, e.to_string())
                    })?;
                Ok::<_, HandlerError>(Value::from(req.data.as_i64().unwrap_or(0) + 1))
            }
        })
        .route("/FLOOD", "GO", |req: Request, ctx: Ctx| async move {
            let n = req.data.as_u64().unwrap_or(0).min(1_000);
            let payload = Value::bytes(vec![0x42; 1024]);
            for _ in 0..n {
                ctx.server.broadcast_action(&cypherwire::wire::Action::new(
                    "flood",
                    payload.clone(),
                    0,
                ));
            }
            Ok::<_, HandlerError>(Value::from(n))
        })
        .bind(&addr)
        .await?;
    println!("listening on {}", server.local_addr());
    std::future::pending::<()>().await;
    Ok(())
}
