//! Request and action handlers.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use cypherwire_session::PublicKey;
use cypherwire_wire::{Action, Request, StatusCode, Value};

use crate::future::BoxFuture;
use crate::handle::ServerHandle;
use crate::id::{ConnectionId, SessionId};

/// What a request handler answers: data and metadata.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct Reply {
    /// The response data.
    pub data: Value,
    /// The response metadata.
    pub metadata: Value,
    /// Close the connection once this answer is written (see [`Reply::then_close`]).
    pub close_after: bool,
}

impl Reply {
    /// A reply with data and nil metadata.
    pub fn new(data: impl Into<Value>) -> Self {
        Self {
            data: data.into(),
            metadata: Value::Nil,
            close_after: false,
        }
    }

    /// Sets the metadata.
    #[must_use]
    pub fn with_metadata(mut self, metadata: impl Into<Value>) -> Self {
        self.metadata = metadata.into();
        self
    }

    /// Closes the connection right after this answer: the peer reads the answer, then `Close`
    /// with code `KICKED` (e.g. a refusal the peer must see before it is disconnected).
    #[must_use]
    pub fn then_close(mut self) -> Self {
        self.close_after = true;
        self
    }
}

impl From<Value> for Reply {
    fn from(data: Value) -> Self {
        Self::new(data)
    }
}

impl From<&str> for Reply {
    fn from(data: &str) -> Self {
        Self::new(data)
    }
}

impl From<String> for Reply {
    fn from(data: String) -> Self {
        Self::new(data)
    }
}

/// What a request handler may return: a [`Reply`] (data with metadata, or closing after it),
/// a [`Value`], or any other `serde` type, converted with
/// [`to_value`](cypherwire_wire::to_value). A value that does not convert is answered with
/// `INTERNAL` (the peer is not told more; the error is logged).
///
/// ```
/// use cypherwire_server::{Ctx, HandlerError, Server};
/// use cypherwire_wire::Request;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Point { x: i32, y: i32 }
///
/// # let psk = cypherwire_session::Psk::from_passphrase("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U")?;
/// let builder = Server::builder(psk).route("/FLIP", "GET", |req: Request, _ctx: Ctx| async move {
///     let p: Point = req.data()?; // BAD_REQUEST if the data is not a point
///     Ok::<_, HandlerError>(Point { x: p.y, y: p.x })
/// });
/// # drop(builder);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait IntoReply {
    /// The reply.
    ///
    /// # Errors
    /// If the value cannot be represented as a [`Value`].
    fn into_reply(self) -> Result<Reply, HandlerError>;
}

impl IntoReply for Reply {
    fn into_reply(self) -> Result<Reply, HandlerError> {
        Ok(self)
    }
}

impl<T: serde::Serialize + 'static> IntoReply for T {
    fn into_reply(self) -> Result<Reply, HandlerError> {
        // A `Value` is taken as it is, not serialized again.
        let mut slot = Some(self);
        if let Some(value) = (&mut slot as &mut dyn std::any::Any).downcast_mut::<Option<Value>>() {
            return Ok(Reply::new(value.take().unwrap_or_default()));
        }
        let value = slot.take().map(|v| cypherwire_wire::to_value(&v));
        match value {
            Some(Ok(data)) => Ok(Reply::new(data)),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "a handler's answer does not convert to a Value");
                Err(HandlerError::new(
                    StatusCode::INTERNAL,
                    "the answer could not be encoded",
                ))
            }
            None => Ok(Reply::default()),
        }
    }
}

/// A handler's failure: becomes an error response with this code and message. The message
/// goes to the peer, so it must not contain secrets or internals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
#[non_exhaustive]
pub struct HandlerError {
    /// The status code.
    pub code: StatusCode,
    /// A short message for the peer.
    pub message: String,
}

impl HandlerError {
    /// An error with a code and message.
    pub fn new(code: StatusCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `BAD_REQUEST` (e.g. data of the wrong shape).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<cypherwire_wire::Error> for HandlerError {
    /// Data that does not convert to the type a handler wants is the caller's fault.
    fn from(e: cypherwire_wire::Error) -> Self {
        Self::bad_request(format!("bad data: {e}"))
    }
}

/// Context handed to every handler.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Ctx {
    /// The connection the message came on.
    pub connection: ConnectionId,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The peer's authenticated static key (identity mode).
    pub identity: Option<PublicKey>,
    /// The request id (requests only).
    pub request_id: Option<u64>,
    /// The time left for this request when the handler started, if the caller set a deadline.
    pub deadline: Option<Duration>,
    /// The server, for push, broadcast, registry access.
    pub server: ServerHandle,
    /// The session the message belongs to (pnetwork's per-client token, without the secret):
    /// the same for every connection that resumes it on this instance. `None` on the
    /// CYPHER_PROTOCOL compat listener, which has no sessions.
    pub session: Option<SessionId>,
}

impl Ctx {
    /// The value of type `S` given to [`ServerBuilder::state`](crate::ServerBuilder::state).
    ///
    /// # Errors
    /// If the server has none: an `INTERNAL` answer (a setup mistake, logged).
    pub fn state<S: Send + Sync + 'static>(&self) -> Result<std::sync::Arc<S>, HandlerError> {
        self.server.state::<S>().ok_or_else(|| {
            let name = std::any::type_name::<S>();
            tracing::error!(
                state = name,
                "a handler wants state the server was not given"
            );
            HandlerError::new(StatusCode::INTERNAL, "server misconfigured")
        })
    }
}

/// Handles requests of one (path, operation).
pub trait RequestHandler: Send + Sync + 'static {
    /// Handles one request.
    fn call(&self, req: Request, ctx: Ctx) -> BoxFuture<Result<Reply, HandlerError>>;
}

impl<F, Fut, R> RequestHandler for F
where
    F: Fn(Request, Ctx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
    R: IntoReply,
{
    fn call(&self, req: Request, ctx: Ctx) -> BoxFuture<Result<Reply, HandlerError>> {
        let fut = self(req, ctx);
        Box::pin(async move { fut.await.and_then(IntoReply::into_reply) })
    }
}

/// Handles one named action (fire and forget).
pub trait ActionHandler: Send + Sync + 'static {
    /// Handles one action.
    fn call(&self, action: Action, ctx: Ctx) -> BoxFuture<()>;
}

impl<F, Fut> ActionHandler for F
where
    F: Fn(Action, Ctx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn call(&self, action: Action, ctx: Ctx) -> BoxFuture<()> {
        Box::pin(self(action, ctx))
    }
}
