//! The floor for any framed protocol, shared by the request/response and compat benches: a
//! tokio echo server for 4-byte big-endian length-prefixed frames that batches whatever it has
//! buffered into one write, optionally with every frame sealed and opened with `ring`'s
//! AES-256-GCM (one key per direction, counter nonces), and its client.

use std::net::SocketAddr;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

const TAG: usize = 16;

/// One direction's AEAD state: a key and a counter nonce.
struct Dir {
    key: LessSafeKey,
    counter: u64,
}

impl Dir {
    fn new(byte: u8) -> Self {
        Self {
            key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[byte; 32]).unwrap()),
            counter: 0,
        }
    }
    fn nonce(&mut self) -> Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&self.counter.to_be_bytes());
        self.counter += 1;
        Nonce::assume_unique_for_key(n)
    }
    /// Appends `len ‖ seal(plain)` to `out`.
    fn seal_frame(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&((plain.len() + TAG) as u32).to_be_bytes());
        out.extend_from_slice(plain);
        let nonce = self.nonce();
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::empty(), &mut out[start + 4..])
            .unwrap();
        out.extend_from_slice(tag.as_ref());
    }
    fn open<'a>(&mut self, body: &'a mut [u8]) -> &'a mut [u8] {
        let nonce = self.nonce();
        self.key.open_in_place(nonce, Aad::empty(), body).unwrap()
    }
}

const C2S: u8 = 0x11;
const S2C: u8 = 0x22;

/// Starts the echo server (sealing with one key per direction when `aead`) on the current
/// runtime and returns its address.
pub(crate) async fn echo_server(aead: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let (r, mut w) = s.split();
                let mut r = TokioBufReader::new(r);
                let (mut open, mut seal) = (Dir::new(C2S), Dir::new(S2C));
                let mut out = Vec::with_capacity(64 * 1024);
                let mut body = vec![0u8; 64 * 1024];
                loop {
                    // Echo one frame, then batch whatever else is already buffered.
                    let mut first = true;
                    while first || r.buffer().len() >= 4 {
                        first = false;
                        let Ok(len) = r.read_u32().await else { return };
                        if body.len() < len as usize {
                            body.resize(len as usize, 0);
                        }
                        let body = &mut body[..len as usize];
                        if r.read_exact(body).await.is_err() {
                            return;
                        }
                        if aead {
                            let plain = open.open(body);
                            seal.seal_frame(plain, &mut out);
                        } else {
                            out.extend_from_slice(&len.to_be_bytes());
                            out.extend_from_slice(body);
                        }
                    }
                    if w.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                }
            });
        }
    });
    addr
}

/// The client side: sends frames, reads echoes through a buffer (a burst of echoes is read
/// with one system call, as any framed client would).
pub(crate) struct FrameClient {
    r: TokioBufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
    aead: Option<(Dir, Dir)>,
    plain: Vec<u8>,
    out: Vec<u8>,
    body: Vec<u8>,
}

impl FrameClient {
    /// Connects; every frame will carry `payload` bytes (sealed when `aead`).
    pub(crate) async fn new(addr: SocketAddr, aead: bool, payload: usize) -> Self {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let (r, w) = s.into_split();
        Self {
            r: TokioBufReader::with_capacity(64 * 1024, r),
            w,
            aead: aead.then(|| (Dir::new(C2S), Dir::new(S2C))),
            out: Vec::with_capacity(64 * 1024),
            plain: vec![0xab; payload],
            body: vec![0u8; payload + TAG],
        }
    }
    /// Sends `n` frames of the payload size, in one write.
    pub(crate) async fn send(&mut self, n: usize) {
        for _ in 0..n {
            match &mut self.aead {
                Some((seal, _)) => seal.seal_frame(&self.plain, &mut self.out),
                None => {
                    self.out
                        .extend_from_slice(&(self.plain.len() as u32).to_be_bytes());
                    self.out.extend_from_slice(&self.plain);
                }
            }
        }
        self.w.write_all(&self.out).await.unwrap();
        self.out.clear();
    }
    /// Waits for one echoed frame.
    pub(crate) async fn recv(&mut self) {
        let len = self.r.read_u32().await.unwrap() as usize;
        let body = &mut self.body[..len];
        self.r.read_exact(body).await.unwrap();
        if let Some((_, open)) = &mut self.aead {
            assert_eq!(open.open(body).len(), self.plain.len());
        }
    }
}
