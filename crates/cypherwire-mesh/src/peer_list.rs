//! Peer ids, the peer list, and its signature.
//!
//! The authenticating peer signs every list it distributes with an Ed25519 key whose public
//! half members receive in the (password-authenticated) answer to their join. The list body has
//! a fixed binary layout (`docs/protocol.md` §7.3), so the bytes signed are the bytes sent and
//! parsing is bounded before anything is allocated.

use std::fmt;
use std::net::SocketAddr;

use cypherwire_session::PublicKey;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

/// Why a peer list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ListError {
    /// The list exceeds a cap.
    #[error("peer list has {len} {what}, more than the maximum of {max}")]
    TooLarge {
        /// What was counted.
        what: &'static str,
        /// How many.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The signature does not verify with the authenticating peer's key.
    #[error("peer list signature does not verify")]
    BadSignature,
    /// The list is older than (or as old as) the one held.
    #[error("stale peer list (version {got}, holding {held})")]
    Stale {
        /// The version received.
        got: u64,
        /// The version held.
        held: u64,
    },
    /// The body does not parse.
    #[error("malformed peer list: {0}")]
    Malformed(&'static str),
    /// The operating system's random generator failed.
    #[error("random generator failed")]
    Random,
}

/// Most members in one list (default cap, see [`ListLimits`]).
pub const DEFAULT_MAX_PEERS: usize = 1024;

/// The domain separator prefixed to the body before signing.
const SIGNING_CONTEXT: &[u8] = b"cypherwire mesh peer list v1\0";
const MAGIC: &[u8; 4] = b"CWPL";
const ENTRY_FIXED: usize = 8 + 32 + 1;
const HEADER: usize = 4 + 8 + 8 + 2;
const MAX_ADDR_TEXT: usize = 64;

/// A member's id: the first 8 bytes of SHA-256 of its identity public key, written as 16 hex
/// digits. Derived, never chosen, so a member cannot claim another's id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId([u8; 8]);

impl PeerId {
    /// The id of the member holding `key`.
    pub fn of(key: &PublicKey) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        Self(id)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }

    /// From raw bytes (as found in a list).
    pub fn from_bytes(bytes: [u8; 8]) -> Self {
        Self(bytes)
    }

    /// Parses the 16-hex-digit form.
    ///
    /// # Errors
    /// [`ListError::Malformed`] for anything else.
    pub fn parse(text: &str) -> Result<Self, ListError> {
        let t = text.trim();
        if t.len() != 16 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ListError::Malformed("a peer id is 16 hex digits"));
        }
        let mut id = [0u8; 8];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&t[2 * i..2 * i + 2], 16)
                .map_err(|_| ListError::Malformed("a peer id is 16 hex digits"))?;
        }
        Ok(Self(id))
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

/// One member: its id, where its direct listener is, and its identity key (pinned by everyone
/// who talks to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEntry {
    /// The id (derived from `key`).
    pub id: PeerId,
    /// The address of its direct listener.
    pub addr: SocketAddr,
    /// Its identity public key.
    pub key: PublicKey,
}

impl PeerEntry {
    /// An entry for the member holding `key`, listening on `addr`.
    pub fn new(key: PublicKey, addr: SocketAddr) -> Self {
        Self {
            id: PeerId::of(&key),
            addr,
            key,
        }
    }
}

/// Why a member left the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeaveReason {
    /// It said goodbye.
    Left,
    /// It missed its heartbeats.
    HeartbeatTimeout,
    /// An operator kicked it.
    Kicked,
    /// An operator banned it.
    Banned,
    /// It registered again from a new address (the old entry is replaced).
    Replaced,
    /// Not stated (an older list, or the member's departure predates the last list seen).
    Unknown,
}

impl LeaveReason {
    fn to_u8(self) -> u8 {
        match self {
            Self::Left => 1,
            Self::HeartbeatTimeout => 2,
            Self::Kicked => 3,
            Self::Banned => 4,
            Self::Replaced => 5,
            Self::Unknown => 0,
        }
    }

    /// The reason a byte names; `None` above 5 (a list carries one body per content, so a
    /// byte this version would write back differently is refused, not read as unknown).
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Unknown,
            1 => Self::Left,
            2 => Self::HeartbeatTimeout,
            3 => Self::Kicked,
            4 => Self::Banned,
            5 => Self::Replaced,
            _ => return None,
        })
    }
}

/// A version of the membership, as the authenticating peer published it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerList {
    /// The authenticating peer's run (random per start): versions compare within one epoch.
    pub epoch: u64,
    /// Increases with every change within an epoch.
    pub version: u64,
    /// The members, sorted by id.
    pub entries: Vec<PeerEntry>,
    /// Members removed by this version, with the reason.
    pub departed: Vec<(PeerId, LeaveReason)>,
}

impl PeerList {
    /// The entry of `id`, if listed.
    pub fn get(&self, id: &PeerId) -> Option<&PeerEntry> {
        self.entries
            .binary_search_by(|e| e.id.cmp(id))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Whether `key` is a listed member's key.
    pub fn contains_key(&self, key: &PublicKey) -> bool {
        self.get(&PeerId::of(key)).is_some_and(|e| e.key == *key)
    }

    /// The list's body in its signed binary form (`docs/protocol.md` §7.3).
    ///
    /// # Errors
    /// [`ListError::TooLarge`] beyond `u16::MAX` entries; [`ListError::Malformed`] for an
    /// address whose text form exceeds 64 bytes (impossible for IP socket addresses).
    pub fn encode(&self) -> Result<Vec<u8>, ListError> {
        let count = u16::try_from(self.entries.len()).map_err(|_| ListError::TooLarge {
            what: "entries",
            len: self.entries.len(),
            max: usize::from(u16::MAX),
        })?;
        let departed = u16::try_from(self.departed.len()).map_err(|_| ListError::TooLarge {
            what: "departures",
            len: self.departed.len(),
            max: usize::from(u16::MAX),
        })?;
        let mut out = Vec::with_capacity(HEADER + self.entries.len() * (ENTRY_FIXED + 24));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&count.to_be_bytes());
        for e in &self.entries {
            let addr = e.addr.to_string();
            let len = u8::try_from(addr.len())
                .ok()
                .filter(|l| usize::from(*l) <= MAX_ADDR_TEXT)
                .ok_or(ListError::Malformed("address text too long"))?;
            out.extend_from_slice(e.id.as_bytes());
            out.extend_from_slice(e.key.as_bytes());
            out.push(len);
            out.extend_from_slice(addr.as_bytes());
        }
        out.extend_from_slice(&departed.to_be_bytes());
        for (id, reason) in &self.departed {
            out.extend_from_slice(id.as_bytes());
            out.push(reason.to_u8());
        }
        Ok(out)
    }

    /// Parses a body, enforcing `limits` before allocating: entry count, byte length, sorted
    /// unique ids, ids that match their keys, valid addresses, no trailing bytes.
    ///
    /// # Errors
    /// [`ListError`] naming what is wrong.
    pub fn decode(body: &[u8], limits: ListLimits) -> Result<Self, ListError> {
        if body.len() > limits.max_bytes {
            return Err(ListError::TooLarge {
                what: "bytes",
                len: body.len(),
                max: limits.max_bytes,
            });
        }
        let mut r = Reader(body);
        if r.take(4)? != MAGIC {
            return Err(ListError::Malformed("not a peer list"));
        }
        let epoch = r.u64()?;
        let version = r.u64()?;
        let count = usize::from(r.u16()?);
        if count > limits.max_peers {
            return Err(ListError::TooLarge {
                what: "entries",
                len: count,
                max: limits.max_peers,
            });
        }
        // Each entry takes at least ENTRY_FIXED + 9 bytes ("1.2.3.4:5"): a count the bytes
        // cannot hold is refused before the vector is sized by it.
        if count * (ENTRY_FIXED + 9) > r.0.len() {
            return Err(ListError::Malformed(
                "entry count exceeds the bytes present",
            ));
        }
        let mut entries: Vec<PeerEntry> = Vec::with_capacity(count);
        for _ in 0..count {
            let id = PeerId::from_bytes(r.array()?);
            let key = PublicKey::from_bytes(r.array()?);
            let len = usize::from(r.take(1)?[0]);
            if len > MAX_ADDR_TEXT {
                return Err(ListError::Malformed("address text too long"));
            }
            let text = std::str::from_utf8(r.take(len)?)
                .map_err(|_| ListError::Malformed("invalid address"))?;
            let addr = text
                .parse::<SocketAddr>()
                .map_err(|_| ListError::Malformed("invalid address"))?;
            // spec: §7.3: a receiver MUST refuse "an address not in its canonical text form"
            // One list, one body: `[::0]:40001` and `[::]:40001` must not both decode to it.
            if addr.to_string() != text {
                return Err(ListError::Malformed("address not in canonical text form"));
            }
            if PeerId::of(&key) != id {
                return Err(ListError::Malformed("peer id does not match its key"));
            }
            if entries.last().is_some_and(|prev| prev.id >= id) {
                return Err(ListError::Malformed("entries not sorted by unique id"));
            }
            entries.push(PeerEntry { id, addr, key });
        }
        let departed_count = usize::from(r.u16()?);
        if departed_count > limits.max_peers || departed_count * 9 != r.0.len() {
            return Err(ListError::Malformed(
                "departures do not match the bytes present",
            ));
        }
        let mut departed = Vec::with_capacity(departed_count);
        for _ in 0..departed_count {
            let id = PeerId::from_bytes(r.array()?);
            let reason = LeaveReason::from_u8(r.take(1)?[0])
                .ok_or(ListError::Malformed("unknown departure reason"))?;
            departed.push((id, reason));
        }
        Ok(Self {
            epoch,
            version,
            entries,
            departed,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ListError> {
        if self.0.len() < n {
            return Err(ListError::Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ListError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u16(&mut self) -> Result<u16, ListError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, ListError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}

/// Caps on a received list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListLimits {
    /// Most entries (default [`DEFAULT_MAX_PEERS`]).
    pub max_peers: usize,
    /// Most body bytes (default: what `max_peers` entries with IPv6 addresses take).
    pub max_bytes: usize,
}

impl ListLimits {
    /// Limits for lists of at most `max_peers` members.
    pub fn for_peers(max_peers: usize) -> Self {
        let per_entry = ENTRY_FIXED + MAX_ADDR_TEXT;
        Self {
            max_peers,
            max_bytes: HEADER + 2 + max_peers.saturating_mul(per_entry + 9),
        }
    }
}

impl Default for ListLimits {
    fn default() -> Self {
        Self::for_peers(DEFAULT_MAX_PEERS)
    }
}

/// A list body with the authenticating peer's signature, as it travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPeerList {
    /// [`PeerList::encode`]'s output.
    pub body: Vec<u8>,
    /// Ed25519 over the context string and `body`.
    pub signature: [u8; 64],
}

impl SignedPeerList {
    /// Checks the signature against `signer`, then parses within `limits`.
    ///
    /// # Errors
    /// [`ListError::TooLarge`] before any cryptographic work for an oversized body;
    /// [`ListError::BadSignature`]; or a parse error.
    pub fn verify(&self, signer: &ListVerifier, limits: ListLimits) -> Result<PeerList, ListError> {
        if self.body.len() > limits.max_bytes {
            return Err(ListError::TooLarge {
                what: "bytes",
                len: self.body.len(),
                max: limits.max_bytes,
            });
        }
        let mut msg = Vec::with_capacity(SIGNING_CONTEXT.len() + self.body.len());
        msg.extend_from_slice(SIGNING_CONTEXT);
        msg.extend_from_slice(&self.body);
        signer
            .0
            .verify(&msg, &Signature::from_bytes(&self.signature))
            .map_err(|_| ListError::BadSignature)?;
        PeerList::decode(&self.body, limits)
    }
}

/// The authenticating peer's list-signing key (Ed25519), fresh per start unless given.
pub struct ListSigner(SigningKey);

impl ListSigner {
    /// A fresh key from the operating system's generator.
    ///
    /// # Errors
    /// [`ListError::Random`] if the generator fails.
    pub fn generate() -> Result<Self, ListError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|_| ListError::Random)?;
        Ok(Self::from_seed(seed))
    }

    /// The key with this 32-byte seed (for reproducible tests and vectors).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// The public half members verify with.
    pub fn verifier(&self) -> ListVerifier {
        ListVerifier(self.0.verifying_key())
    }

    /// Encodes and signs `list`.
    ///
    /// # Errors
    /// As [`PeerList::encode`].
    pub fn sign(&self, list: &PeerList) -> Result<SignedPeerList, ListError> {
        let body = list.encode()?;
        let mut msg = Vec::with_capacity(SIGNING_CONTEXT.len() + body.len());
        msg.extend_from_slice(SIGNING_CONTEXT);
        msg.extend_from_slice(&body);
        let signature = self.0.sign(&msg).to_bytes();
        Ok(SignedPeerList { body, signature })
    }
}

impl fmt::Debug for ListSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ListSigner").field(&self.verifier()).finish()
    }
}

/// The public key that verifies peer lists.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ListVerifier(VerifyingKey);

impl ListVerifier {
    /// From the 32 bytes members receive when they join.
    ///
    /// # Errors
    /// [`ListError::Malformed`] for bytes that are not a valid Ed25519 point.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, ListError> {
        VerifyingKey::from_bytes(bytes)
            .map(Self)
            .map_err(|_| ListError::Malformed("invalid list-signing key"))
    }

    /// The 32 bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }
}

impl fmt::Debug for ListVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ListVerifier(")?;
        for b in &self.0.to_bytes()[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8, port: u16) -> PeerEntry {
        PeerEntry::new(
            PublicKey::from_bytes([n; 32]),
            format!("127.0.0.1:{port}").parse().unwrap(),
        )
    }

    fn list(n: u8) -> PeerList {
        let mut entries: Vec<_> = (1..=n).map(|i| entry(i, 4000 + u16::from(i))).collect();
        entries.sort_by_key(|e| e.id);
        PeerList {
            epoch: 7,
            version: 3,
            entries,
            departed: vec![(PeerId::from_bytes([9; 8]), LeaveReason::HeartbeatTimeout)],
        }
    }

    #[test]
    fn sign_verify_round_trip() {
        let signer = ListSigner::from_seed([1; 32]);
        let l = list(5);
        let signed = signer.sign(&l).unwrap();
        assert_eq!(
            signed
                .verify(&signer.verifier(), ListLimits::default())
                .unwrap(),
            l
        );
        assert!(l.contains_key(&PublicKey::from_bytes([3; 32])));
        assert!(!l.contains_key(&PublicKey::from_bytes([30; 32])));
    }

    #[test]
    fn tampered_or_foreign_lists_are_rejected() {
        let signer = ListSigner::from_seed([1; 32]);
        let other = ListSigner::from_seed([2; 32]);
        let signed = signer.sign(&list(3)).unwrap();
        for i in 0..signed.body.len() {
            let mut bad = signed.clone();
            bad.body[i] ^= 0x01;
            assert_eq!(
                bad.verify(&signer.verifier(), ListLimits::default()),
                Err(ListError::BadSignature),
                "flipping byte {i} went unnoticed"
            );
        }
        assert_eq!(
            signed.verify(&other.verifier(), ListLimits::default()),
            Err(ListError::BadSignature)
        );
        let mut zero_sig = signed;
        zero_sig.signature = [0; 64];
        assert_eq!(
            zero_sig.verify(&signer.verifier(), ListLimits::default()),
            Err(ListError::BadSignature)
        );
    }

    #[test]
    fn oversized_lists_are_rejected_before_verifying() {
        let signer = ListSigner::from_seed([1; 32]);
        let signed = signer.sign(&list(20)).unwrap();
        let small = ListLimits::for_peers(5);
        assert!(matches!(
            signed.verify(&signer.verifier(), small),
            Err(ListError::TooLarge { what: "bytes", .. })
        ));
        // Within the byte cap but over the entry cap.
        let tight = ListLimits {
            max_peers: 10,
            max_bytes: 1 << 20,
        };
        assert!(matches!(
            signed.verify(&signer.verifier(), tight),
            Err(ListError::TooLarge {
                what: "entries",
                ..
            })
        ));
    }

    #[test]
    fn malformed_bodies_are_typed_errors() {
        let good = list(3).encode().unwrap();
        let limits = ListLimits::default();
        // Every truncation.
        for n in 0..good.len() {
            assert!(PeerList::decode(&good[..n], limits).is_err(), "prefix {n}");
        }
        // Trailing bytes.
        let mut long = good.clone();
        long.push(0);
        assert!(PeerList::decode(&long, limits).is_err());
        // A huge declared count with few bytes.
        let mut bomb = good[..HEADER].to_vec();
        bomb[20..22].copy_from_slice(&1000u16.to_be_bytes());
        assert!(PeerList::decode(&bomb, limits).is_err());
        // An id that does not match its key.
        let mut forged = good;
        forged[HEADER] ^= 0xff;
        assert_eq!(
            PeerList::decode(&forged, limits),
            Err(ListError::Malformed("peer id does not match its key"))
        );
        // Duplicated entry.
        let mut dup = list(2);
        dup.entries.push(dup.entries[0].clone());
        assert!(PeerList::decode(&dup.encode().unwrap(), limits).is_err());
    }

    #[test]
    fn peer_id_text_form() {
        let id = PeerId::of(&PublicKey::from_bytes([4; 32]));
        assert_eq!(PeerId::parse(&id.to_string()).unwrap(), id);
        assert!(PeerId::parse("xyz").is_err());
        assert!(PeerId::parse("0123456789abcdeg").is_err());
    }

    /// A one-entry body whose address is `addr`, laid out by hand as `docs/protocol.md` §7.3
    /// gives it (the encoder only writes canonical text).
    fn body_with_addr(addr: &str) -> Vec<u8> {
        let key = PublicKey::from_bytes([0x22; 32]);
        let mut b = b"CWPL".to_vec();
        b.extend_from_slice(&0u64.to_be_bytes());
        b.extend_from_slice(&1u64.to_be_bytes());
        b.extend_from_slice(&1u16.to_be_bytes());
        b.extend_from_slice(PeerId::of(&key).as_bytes());
        b.extend_from_slice(key.as_bytes());
        b.push(u8::try_from(addr.len()).unwrap());
        b.extend_from_slice(addr.as_bytes());
        b.extend_from_slice(&0u16.to_be_bytes());
        b
    }

    #[test]
    fn an_address_in_non_canonical_text_is_refused() {
        // The fuzzer's minimal input: `[::0]:40001`, which would re-encode as `[::]:40001`.
        let found = "4357504c0000000000000000000000000000000100019f72ea0cf49536e3\
                     2222222222222222222222222222222222222222222222222222222222222222\
                     0b5b3a3a305d3a34303030310000";
        let found: Vec<u8> = (0..found.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&found[i..i + 2], 16).unwrap())
            .collect();
        assert_eq!(found, body_with_addr("[::0]:40001"));
        for text in [
            "[::0]:40001",
            "[0::]:40001",
            "[::A]:40001",
            "[0000::1]:40001",
            "[0:0:0:0:0:0:0:1]:40001",
            "127.0.0.1:01",
            "[::1]:040001",
        ] {
            assert_eq!(
                PeerList::decode(&body_with_addr(text), ListLimits::default()),
                Err(ListError::Malformed("address not in canonical text form")),
                "{text}"
            );
        }
        for text in [
            "[::]:40001",
            "[::a]:40001",
            "[::1]:40001",
            "127.0.0.1:1",
            "[::ffff:1.2.3.4]:9",
        ] {
            let list = PeerList::decode(&body_with_addr(text), ListLimits::default()).unwrap();
            assert_eq!(list.entries[0].addr.to_string(), text);
            assert_eq!(list.encode().unwrap(), body_with_addr(text));
        }
    }

    #[test]
    fn a_departure_reason_above_five_is_refused() {
        // The fuzzer found reason 0x22 read as Unknown and written back as 0: two bodies, one list.
        let mut l = list(2);
        for (byte, reason) in [
            (0, LeaveReason::Unknown),
            (1, LeaveReason::Left),
            (2, LeaveReason::HeartbeatTimeout),
            (3, LeaveReason::Kicked),
            (4, LeaveReason::Banned),
            (5, LeaveReason::Replaced),
        ] {
            l.departed[0].1 = reason;
            let body = l.encode().unwrap();
            assert_eq!(body.last(), Some(&byte));
            assert_eq!(PeerList::decode(&body, ListLimits::default()).unwrap(), l);
        }
        let mut body = l.encode().unwrap();
        for bad in [6u8, 0x22, 0xff] {
            *body.last_mut().unwrap() = bad;
            assert_eq!(
                PeerList::decode(&body, ListLimits::default()),
                Err(ListError::Malformed("unknown departure reason")),
                "reason {bad}"
            );
        }
    }
}
