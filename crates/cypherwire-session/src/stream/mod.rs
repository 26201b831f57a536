//! The tokio adapter: handshake and records over any `AsyncRead + AsyncWrite`.
//!
//! [`connect`] and [`accept`] run the handshake (bounded by the configured timeout and the
//! 64 KiB pre-handshake frame limit) and return a [`SecureStream`]: send and receive whole
//! messages, or split it into a [`SecureReader`] and a [`SecureWriter`] for two tasks.
//!
//! ```
//! # async fn demo() -> Result<(), cypherwire_session::Error> {
//! use cypherwire_session::{Psk, SessionConfig, accept, connect};
//!
//! let psk = Psk::generate()?;
//! let (client_auth, server_auth) = (psk.clone().into(), psk.into());
//! let config = SessionConfig::default();
//! let (a, b) = tokio::io::duplex(64 * 1024);
//! let (client, server) =
//!     tokio::join!(connect(a, &client_auth, &config), accept(b, &server_auth, &config));
//! let (mut client, mut server) = (client?, server?);
//! client.send(b"hello").await?;
//! assert_eq!(server.recv().await?.as_deref(), Some(&b"hello"[..]));
//! client.close().await?;
//! assert_eq!(server.recv().await?, None); // authenticated end of stream
//! # Ok(()) }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(demo()).unwrap();
//! ```

mod drive;
mod secure;
mod state;
#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code")]
mod tests;

pub use self::drive::{MAX_CONCURRENT_ARGON2, accept, accept_guarded, connect, refuse};
pub use self::secure::{SecureReader, SecureStream, SecureWriter, SessionInfo};
