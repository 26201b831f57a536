//! The demo service: CYPHER_PROTOCOL's README example (`/SEQUENCE`, `/NUMBER`), `/ECHO`, and a
//! `chat` action broadcast to everyone. Shared by `demo` and `serve`.

use std::sync::{Arc, Mutex};

use cypherwire::server::{Ctx, HandlerError, Reply, Server, ServerBuilder};
use cypherwire::session::ServerAuth;
use cypherwire::wire::{Action, Request, Value};

/// The state the CYPHER_PROTOCOL example keeps: the last 10 numbers and one number.
#[derive(Debug, Default)]
pub(crate) struct State {
    sequence: Vec<Value>,
    number: Value,
}

/// A server builder with the demo routes.
pub(crate) fn builder(auth: impl Into<ServerAuth>, state: Arc<Mutex<State>>) -> ServerBuilder {
    let (s1, s2, s3, s4) = (state.clone(), state.clone(), state.clone(), state);
    Server::builder(auth)
        .route("/SEQUENCE", "UPDATE", move |req: Request, _ctx: Ctx| {
            let st = s1.clone();
            async move {
                let mut st = st.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                st.sequence.push(req.data);
                if st.sequence.len() > 10 {
                    st.sequence.remove(0);
                }
                Ok::<_, HandlerError>(
                    Reply::new(Value::from("UPDATED")).with_metadata(req.metadata),
                )
            }
        })
        .route("/SEQUENCE", "READ", move |req: Request, _ctx: Ctx| {
            let st = s2.clone();
            async move {
                let seq = st
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .sequence
                    .clone();
                Ok::<_, HandlerError>(Reply::new(Value::Array(seq)).with_metadata(req.metadata))
            }
        })
        .route("/NUMBER", "UPDATE", move |req: Request, _ctx: Ctx| {
            let st = s3.clone();
            async move {
                st.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .number = req.data;
                Ok::<_, HandlerError>(
                    Reply::new(Value::from("UPDATED")).with_metadata(req.metadata),
                )
            }
        })
        .route("/NUMBER", "READ", move |req: Request, _ctx: Ctx| {
            let st = s4.clone();
            async move {
                let n = st
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .number
                    .clone();
                Ok::<_, HandlerError>(Reply::new(n).with_metadata(req.metadata))
            }
        })
        .fallback(|req: Request, _ctx: Ctx| async move {
            if req.path == "/ECHO" {
                Ok(Reply::new(req.data).with_metadata(req.metadata))
            } else {
                Err(HandlerError::new(
                    cypherwire::wire::StatusCode::NOT_FOUND,
                    format!("no route {} {}", req.path, req.operation),
                ))
            }
        })
        .action("chat", |act: Action, ctx: Ctx| async move {
            ctx.server.broadcast_action(&act);
        })
}
