//! "Secrets are wiped": after a handshake and a session in each mode, no freed heap block still
//! holds the long-term secret (the PSK, the identity private key, the password verifier's
//! hash). The test binary's allocator scans every block as it is freed (`cypherwire-freed-scan`),
//! whichever crate allocated it. What is and is not wiped: `docs/security.md`, "Secrets in
//! memory".

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use base64::Engine as _;
use cypherwire_freed_scan::{FreedScanner, watch};
use cypherwire_session::{
    Argon2Cost, ClientAuth, IdentityKey, Password, PasswordVerifier, PeerTrust, Psk, ServerAuth,
    SessionConfig, accept, connect,
};

#[global_allocator]
static ALLOC: FreedScanner = FreedScanner;

/// One handshake, a message each way and a clean close, on a fresh runtime that is dropped
/// before returning (so every task's memory is freed).
fn session(client: ClientAuth, server: ServerAuth) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let cfg = SessionConfig::default();
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (c, s) = tokio::join!(connect(a, &client, &cfg), accept(b, &server, &cfg));
        let (mut c, mut s) = (c.unwrap(), s.unwrap());
        c.send(b"hello").await.unwrap();
        assert_eq!(s.recv().await.unwrap().as_deref(), Some(&b"hello"[..]));
        s.send(b"world").await.unwrap();
        assert_eq!(c.recv().await.unwrap().as_deref(), Some(&b"world"[..]));
        c.close().await.unwrap();
        assert_eq!(s.recv().await.unwrap(), None);
    });
    drop(rt);
}

#[test]
fn a_psk_session_leaves_no_copy_of_the_psk_in_freed_memory() {
    let bytes: [u8; 32] = *b"psk-zeroize-canary-0123456789ab!";
    let w = watch(&bytes);
    cypherwire_freed_scan::abort_on_hit(std::env::var_os("CW_TRAP").is_some());
    let psk = Psk::from_bytes(bytes);
    session(ClientAuth::Psk(psk.clone()), ServerAuth::Psk(psk));
    assert_eq!(w.hits(), 0, "freed blocks still holding the PSK");
}

#[test]
fn an_identity_session_leaves_no_copy_of_either_private_key_in_freed_memory() {
    let (a, b) = (
        IdentityKey::from_private(*b"identity-canary-client-012345678").unwrap(),
        IdentityKey::from_private(*b"identity-canary-server-012345678").unwrap(),
    );
    let wa = watch(b"identity-canary-client-012345678");
    let wb = watch(b"identity-canary-server-012345678");
    let client = ClientAuth::Identity(a.clone(), PeerTrust::AllowList(vec![b.public()]));
    let server = ServerAuth::Identity(b, PeerTrust::AllowList(vec![a.public()]));
    drop(a);
    cypherwire_freed_scan::abort_on_hit(std::env::var_os("CW_TRAP").is_some());
    session(client, server);
    assert_eq!(
        wa.hits(),
        0,
        "freed blocks still holding the client's private key"
    );
    assert_eq!(
        wb.hits(),
        0,
        "freed blocks still holding the server's private key"
    );
}

#[test]
fn a_password_session_leaves_no_copy_of_the_verifier_hash_in_freed_memory() {
    let verifier = PasswordVerifier::create("correct horse", Argon2Cost::new(64, 1, 1)).unwrap();
    // The hash is the PHC string's last field (base64 without padding).
    let phc = verifier.to_phc();
    let hash = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(phc.rsplit('$').next().unwrap())
        .unwrap();
    drop(phc);
    let w = watch(&hash);
    cypherwire_freed_scan::abort_on_hit(std::env::var_os("CW_TRAP").is_some());
    session(
        ClientAuth::Password(Password::new("correct horse")),
        ServerAuth::Password(verifier),
    );
    assert_eq!(
        w.hits(),
        0,
        "freed blocks still holding the verifier hash (last: size, offset {:?})",
        w.last_hit()
    );
}
