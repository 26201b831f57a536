//! A client for CYPHER_PROTOCOL 1.5.0 servers (**legacy** compat mode, see `docs/compat.md`):
//! call an existing Python `CYPHER_SERVER` from Rust while migrating.
//!
//! The format has no request ids, so requests go **one at a time**, in order (callers may
//! issue many; they queue, bounded). Like the Python client, a request whose answer does not
//! arrive is sent again, identically, after a reconnect, at most `max_attempts` times; a
//! Python server has no duplicate cache, so such a request may run twice there (a cypherwire
//! compat server answers the repeat from its cache). Status changes as the native client's.
//! Dropping every handle closes the connection once queued requests are done.

use std::time::Duration;

use cypherwire_session::compat::{
    self, CompatMessage, CypherKeys, DEFAULT_MAX_COMPAT_MESSAGE, NulFramer,
};
use cypherwire_wire::{StatusCode, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

use crate::backoff::{Backoff, Jitter};
use crate::error::{DataError, Error};
use crate::shared::{OfflineReason, Status};

/// An answer from a compat server.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CompatReply {
    /// `PATH` as answered.
    pub path: String,
    /// `OPERATION` as answered.
    pub operation: String,
    /// `DATA`.
    pub data: Value,
    /// `METADATA`.
    pub metadata: Value,
}

struct Job {
    request: CompatMessage,
    reply: oneshot::Sender<Result<CompatReply, Error>>,
}

/// Configures a [`CompatClient`].
#[derive(Debug)]
#[must_use = "call `connect()`"]
pub struct CompatClientBuilder {
    keys: CypherKeys,
    backoff: Backoff,
    timeout: Duration,
    max_attempts: u32,
    max_message_len: usize,
    queue: usize,
}

impl CompatClientBuilder {
    /// Reconnect backoff (default [`Backoff::default`]).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How long one attempt waits for its answer (default 60 s, the Python client's).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Sends of one request before it fails with [`Error::GaveUp`] (default 3).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Largest answer accepted (default 16 MiB), checked as bytes arrive.
    pub fn max_message_len(mut self, n: usize) -> Self {
        self.max_message_len = n;
        self
    }

    /// Starts the client; it connects on the first request. Must be called within a tokio
    /// runtime.
    ///
    /// # Errors
    /// [`Error::Config`] for zero limits or an invalid backoff.
    pub fn connect(self, addr: impl Into<String>) -> Result<CompatClient, Error> {
        self.backoff.validate()?;
        if self.timeout.is_zero() || self.max_attempts == 0 || self.max_message_len == 0 {
            return Err(Error::Config(
                "timeout, attempts and message length must be non-zero",
            ));
        }
        let (tx, rx) = mpsc::channel(self.queue);
        let (status_tx, status) = watch::channel(Status::Connecting);
        tokio::spawn(drive(self, addr.into(), rx, status_tx));
        Ok(CompatClient { tx, status })
    }
}

/// A handle on a compat client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CompatClient {
    tx: mpsc::Sender<Job>,
    status: watch::Receiver<Status>,
}

impl CompatClient {
    /// Starts configuring a client with the keys as the Python client takes them:
    /// `encryption` seals requests, `decryption` opens answers.
    pub fn builder(keys: CypherKeys) -> CompatClientBuilder {
        CompatClientBuilder {
            keys,
            backoff: Backoff::default(),
            timeout: Duration::from_secs(60),
            max_attempts: 3,
            max_message_len: DEFAULT_MAX_COMPAT_MESSAGE,
            queue: 1024,
        }
    }

    /// Sends one request and waits for its answer.
    ///
    /// # Errors
    /// [`Error::Status`] when a cypherwire compat server reports a handler error (its
    /// `METADATA.ERROR`), [`Error::GaveUp`] after `max_attempts` sends without an answer,
    /// [`Error::Data`] for an answer that does not open or parse, [`Error::BufferFull`] when
    /// the queue is full, [`Error::Closed`] if the driver stopped.
    pub async fn request(
        &self,
        path: impl Into<String>,
        operation: impl Into<String>,
        data: impl Into<Value>,
        metadata: impl Into<Value>,
    ) -> Result<CompatReply, Error> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            request: CompatMessage {
                path: path.into(),
                operation: operation.into(),
                data: data.into(),
                metadata: metadata.into(),
            },
            reply,
        };
        self.tx.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Error::BufferFull {
                pending: self.tx.max_capacity(),
                bytes: 0,
            },
            mpsc::error::TrySendError::Closed(_) => Error::Closed,
        })?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// The connection state, watchable.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }
}

async fn drive(
    cfg: CompatClientBuilder,
    addr: String,
    mut rx: mpsc::Receiver<Job>,
    status: watch::Sender<Status>,
) {
    let mut conn: Option<TcpStream> = None;
    let mut jitter = Jitter::new();
    let mut ever_online = false;
    while let Some(job) = rx.recv().await {
        let wire = match compat::encode(
            &job.request,
            &cfg.keys.encryption,
            crate::unix_millis() / 1000,
        ) {
            Ok(w) => w,
            Err(e) => {
                let _ = job.reply.send(Err(Error::Data(DataError::new(e))));
                continue;
            }
        };
        let mut attempts = 0;
        let result = loop {
            if conn.is_none() {
                match connect(&cfg, &addr, &status, &mut jitter, ever_online).await {
                    Ok(s) => {
                        ever_online = true;
                        conn = Some(s);
                    }
                    Err(e) => break Err(e),
                }
            }
            let Some(stream) = conn.as_mut() else {
                continue;
            };
            attempts += 1;
            match exchange(stream, &wire, &cfg).await {
                Ok(token) => break open(&token, &cfg),
                Err(why) => {
                    conn = None;
                    status.send_replace(Status::Offline {
                        reason: OfflineReason::ConnectionLost(why),
                    });
                    if attempts >= cfg.max_attempts {
                        break Err(Error::GaveUp { attempts });
                    }
                }
            }
        };
        let _ = job.reply.send(result);
    }
    status.send_replace(Status::Closed);
}

async fn connect(
    cfg: &CompatClientBuilder,
    addr: &str,
    status: &watch::Sender<Status>,
    jitter: &mut Jitter,
    ever_online: bool,
) -> Result<TcpStream, Error> {
    let started = tokio::time::Instant::now();
    let mut failed = 0u32;
    loop {
        status.send_replace(if ever_online || failed > 0 {
            Status::Reconnecting {
                attempt: failed + 1,
            }
        } else {
            Status::Connecting
        });
        match tokio::time::timeout(cfg.timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                status.send_replace(Status::Online { resumed: false });
                return Ok(s);
            }
            Ok(Err(e)) => status.send_replace(Status::Offline {
                reason: OfflineReason::Unreachable(e.to_string()),
            }),
            Err(_) => status.send_replace(Status::Offline {
                reason: OfflineReason::TimedOut,
            }),
        };
        failed += 1;
        if cfg.backoff.gives_up(failed, started.elapsed()) {
            status.send_replace(Status::GaveUp);
            return Err(Error::GaveUp { attempts: failed });
        }
        tokio::time::sleep(cfg.backoff.delay(failed - 1, jitter.next())).await;
    }
}

/// Sends one request and reads one answer (the bytes before its NUL).
async fn exchange(
    stream: &mut TcpStream,
    wire: &[u8],
    cfg: &CompatClientBuilder,
) -> Result<cypherwire_wire::bytes::Bytes, String> {
    stream.write_all(wire).await.map_err(|e| e.to_string())?;
    let mut framer = NulFramer::new(cfg.max_message_len);
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::timeout(cfg.timeout, async {
        loop {
            if let Some(token) = framer.next_message().map_err(|e| e.to_string())? {
                return Ok(token);
            }
            let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the server closed the connection without an answer".to_owned());
            }
            framer.push(&buf[..n]);
        }
    })
    .await
    .map_err(|_| "no answer within the timeout".to_owned())?
}

fn open(token: &[u8], cfg: &CompatClientBuilder) -> Result<CompatReply, Error> {
    let m =
        compat::decode(token, &cfg.keys.decryption).map_err(|e| Error::Data(DataError::new(e)))?;
    if let Some(err) = m.metadata.get("ERROR") {
        let code = err
            .get("code")
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())
            .map_or(StatusCode::INTERNAL, StatusCode);
        let message = err
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        return Err(Error::Status { code, message });
    }
    Ok(CompatReply {
        path: m.path,
        operation: m.operation,
        data: m.data,
        metadata: m.metadata,
    })
}
