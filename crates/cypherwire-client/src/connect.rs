//! How the client opens connections: TCP by default, any ordered reliable byte stream through
//! [`Connect`].

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

/// Opens the client's connections for [`ClientBuilder::connect_with`](crate::ClientBuilder::connect_with):
/// called for the first connection and for every reconnect.
pub trait Connect: Send + Sync + 'static {
    /// One connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Opens a connection. An error counts as a failed attempt (the client backs off and
    /// tries again).
    fn connect(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;

    /// What this connects to, for logs (an address, a path, a name).
    fn describe(&self) -> String;
}

/// A connection of any transport (internal).
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A boxed connection of any transport (internal).
pub(crate) type BoxIo = Box<dyn Io>;

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Object-safe form of [`Connect`] (internal).
pub(crate) trait DynConnect: Send + Sync {
    fn connect(&self) -> BoxFuture<'_, io::Result<BoxIo>>;
    fn describe(&self) -> String;
}

struct Dyn<C>(C);

impl<C: Connect> DynConnect for Dyn<C> {
    fn connect(&self) -> BoxFuture<'_, io::Result<BoxIo>> {
        Box::pin(async move {
            let io = self.0.connect().await?;
            Ok(Box::new(io) as BoxIo)
        })
    }

    fn describe(&self) -> String {
        self.0.describe()
    }
}

pub(crate) fn boxed(c: impl Connect) -> Arc<dyn DynConnect> {
    Arc::new(Dyn(c))
}

/// TCP to an address (`host:port`), with `TCP_NODELAY`.
pub(crate) struct Tcp(pub(crate) String);

impl Connect for Tcp {
    type Io = tokio::net::TcpStream;

    async fn connect(&self) -> io::Result<Self::Io> {
        let tcp = tokio::net::TcpStream::connect(&self.0).await?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    fn describe(&self) -> String {
        self.0.clone()
    }
}
