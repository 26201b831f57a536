//! An in-process man in the middle: relays a framed cypherwire stream between two in-memory
//! pipes and tampers with chosen frames (bit flips, replays, reordering, drops, truncation,
//! reflection, handshake edits), so tests can assert that every attack is detected and that
//! nothing altered reaches the application.
//!
//! The relay understands only the 4-byte length prefix (`docs/protocol.md` §2): it never holds
//! keys.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

/// Which way a frame travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the initiator (client) to the responder (server).
    ClientToServer,
    /// From the responder to the initiator.
    ServerToClient,
}

/// The attack to perform. Frame indices count whole frames in one direction from 0 (the first
/// handshake message is frame 0 of `ClientToServer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// Forward everything untouched.
    None,
    /// Flip one bit of frame `frame` (bit 0 is the most significant bit of the first header
    /// byte; header bits count too).
    FlipBit {
        /// Direction.
        dir: Direction,
        /// Frame index.
        frame: usize,
        /// Bit index within the whole frame, header included (taken modulo its length).
        bit: usize,
    },
    /// Send frame `frame` twice.
    Replay {
        /// Direction.
        dir: Direction,
        /// Frame index.
        frame: usize,
    },
    /// Swap frames `frame` and `frame + 1`.
    Swap {
        /// Direction.
        dir: Direction,
        /// Index of the first of the two frames.
        frame: usize,
    },
    /// Do not forward frame `frame`.
    Drop {
        /// Direction.
        dir: Direction,
        /// Frame index.
        frame: usize,
    },
    /// Forward `frames` whole frames and `extra` bytes of the next, then cut both directions.
    Truncate {
        /// Direction.
        dir: Direction,
        /// Whole frames forwarded.
        frames: usize,
        /// Bytes of the next frame forwarded before the cut.
        extra: usize,
    },
    /// Also send client-to-server frame `frame` back to the client.
    Reflect {
        /// Frame index (client to server).
        frame: usize,
    },
}

/// What the relay did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Frames forwarded client to server.
    pub c2s_frames: usize,
    /// Frames forwarded server to client.
    pub s2c_frames: usize,
    /// Whether the tamper was applied (the chosen frame existed).
    pub tampered: bool,
}

/// Creates a pipe pair for a client and a server connected through a tampering relay, and
/// spawns the relay on the current tokio runtime. Returns `(client_end, server_end, report)`;
/// the report arrives when both directions have ended.
pub fn pipe(tamper: Tamper) -> (DuplexStream, DuplexStream, tokio::task::JoinHandle<Report>) {
    const CAP: usize = 256 * 1024;
    let (client_end, relay_client) = tokio::io::duplex(CAP);
    let (server_end, relay_server) = tokio::io::duplex(CAP);
    let handle = tokio::spawn(relay(relay_client, relay_server, tamper));
    (client_end, server_end, handle)
}

async fn relay(client: DuplexStream, server: DuplexStream, tamper: Tamper) -> Report {
    let (c_read, c_write) = tokio::io::split(client);
    let (s_read, s_write) = tokio::io::split(server);
    // Reflected frames are injected into the server-to-client stream through this channel.
    let (reflect_tx, reflect_rx) = mpsc::channel::<Vec<u8>>(16);
    let up = pump(
        c_read,
        s_write,
        Direction::ClientToServer,
        tamper,
        Some(reflect_tx),
        None,
    );
    let down = pump(
        s_read,
        c_write,
        Direction::ServerToClient,
        tamper,
        None,
        Some(reflect_rx),
    );
    let ((c2s, t1), (s2c, t2)) = tokio::join!(up, down);
    Report {
        c2s_frames: c2s,
        s2c_frames: s2c,
        tampered: t1 || t2,
    }
}

/// Reads the next whole frame (header included); `None` at EOF.
async fn next_frame<R: AsyncRead + Unpin>(r: &mut R, buf: &mut BytesMut) -> Option<Vec<u8>> {
    loop {
        if buf.len() >= 4 {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            // The relay is only used with well-behaved endpoints; cap what it buffers.
            if len > 64 * 1024 * 1024 {
                return None;
            }
            if buf.len() >= 4 + len {
                let frame = buf[..4 + len].to_vec();
                buf.advance(4 + len);
                return Some(frame);
            }
        }
        match r.read_buf(buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

async fn pump<R, W>(
    mut r: R,
    mut w: W,
    dir: Direction,
    tamper: Tamper,
    reflect_out: Option<mpsc::Sender<Vec<u8>>>,
    mut reflect_in: Option<mpsc::Receiver<Vec<u8>>>,
) -> (usize, bool)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::new();
    let mut index = 0usize;
    let mut held: Option<Vec<u8>> = None;
    let mut tampered = false;
    loop {
        let frame = tokio::select! {
            f = next_frame(&mut r, &mut buf) => f,
            Some(reflected) = async {
                match reflect_in.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                if w.write_all(&reflected).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let Some(mut frame) = frame else { break };
        let i = index;
        index += 1;
        let mut out: Vec<Vec<u8>> = Vec::with_capacity(2);
        match tamper {
            Tamper::FlipBit {
                dir: d,
                frame: f,
                bit,
            } if d == dir && f == i => {
                let bit = bit % (frame.len() * 8);
                frame[bit / 8] ^= 0x80 >> (bit % 8);
                tampered = true;
                out.push(frame);
            }
            Tamper::Replay { dir: d, frame: f } if d == dir && f == i => {
                tampered = true;
                out.push(frame.clone());
                out.push(frame);
            }
            Tamper::Swap { dir: d, frame: f } if d == dir && f == i => {
                held = Some(frame);
                continue;
            }
            Tamper::Drop { dir: d, frame: f } if d == dir && f == i => {
                tampered = true;
                continue;
            }
            Tamper::Truncate {
                dir: d,
                frames,
                extra,
            } if d == dir && i == frames => {
                let cut = extra.min(frame.len().saturating_sub(1));
                let _ = w.write_all(&frame[..cut]).await;
                tampered = true;
                break;
            }
            Tamper::Reflect { frame: f } if dir == Direction::ClientToServer && f == i => {
                if let Some(tx) = &reflect_out {
                    let _ = tx.send(frame.clone()).await;
                    tampered = true;
                }
                out.push(frame);
            }
            _ => out.push(frame),
        }
        if let Some(first) = held.take() {
            // Swap: the later frame goes first.
            tampered = true;
            out.push(first);
        }
        for f in out {
            if w.write_all(&f).await.is_err() {
                return (index, tampered);
            }
        }
    }
    if let Some(f) = held.take() {
        let _ = w.write_all(&f).await;
    }
    let _ = w.shutdown().await;
    (index, tampered)
}
