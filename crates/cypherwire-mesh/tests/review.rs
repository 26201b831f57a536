//! Regression tests for the security review's mesh findings (`docs/security.md`, "Review
//! findings"), against a real authenticating peer on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::time::Duration;

use cypherwire_client::Client;
use cypherwire_mesh::{AuthPeer, JoinPeer, MeshConfig, PeerEntry};
use cypherwire_session::{Argon2Cost, ClientAuth, Password, PasswordVerifier};
use cypherwire_wire::Value;

const PASSWORD: &str = "correct horse battery staple";

async fn start_auth(
    ban_file: Option<std::path::PathBuf>,
) -> Result<AuthPeer, cypherwire_mesh::Error> {
    let verifier = PasswordVerifier::create(PASSWORD, Argon2Cost::new(64, 1, 1)).unwrap();
    let mut b = AuthPeer::builder(verifier)
        .listen("127.0.0.1:0")
        .config(MeshConfig::default().with_heartbeat(Duration::from_millis(300), 3));
    if let Some(path) = ban_file {
        b = b.ban_file(path);
    }
    b.start().await
}

fn entry(auth: &AuthPeer, id: cypherwire_mesh::PeerId) -> Option<PeerEntry> {
    auth.peers().into_iter().find(|e| e.id == id)
}

/// Alice joins; Mallory (who knows the password and Alice's public key, which is in the peer
/// list) gets a raw client on the admission listener.
async fn alice_and_mallory() -> (AuthPeer, JoinPeer, PeerEntry, Client) {
    let auth = start_auth(None).await.unwrap();
    let alice = JoinPeer::join(
        auth.local_addr().to_string(),
        Password::new(PASSWORD),
        MeshConfig::default().with_heartbeat(Duration::from_millis(300), 3),
    )
    .await
    .unwrap();
    let entry = entry(&auth, alice.id()).expect("alice is listed");
    let mallory = Client::builder(ClientAuth::Password(Password::new(PASSWORD)))
        .connect(auth.local_addr().to_string())
        .unwrap();
    (auth, alice, entry, mallory)
}

/// Finding 8: a member holding the password could JOIN with another member's public key and its
/// own address, overwriting the victim's address in the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_take_another_members_key() {
    let (auth, alice, before, mallory) = alice_and_mallory().await;
    for proof in [None, Some(vec![0u8; 32])] {
        let mut fields = vec![
            ("key", Value::bytes(before.key.as_bytes().to_vec())),
            ("addr", Value::from("127.0.0.1:9")),
        ];
        if let Some(p) = proof {
            fields.push(("proof", Value::bytes(p)));
        }
        let _ = mallory
            .request("/mesh", "JOIN")
            .data(Value::map(fields))
            .send()
            .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = entry(&auth, alice.id()).expect("alice must still be listed");
    assert_eq!(after.addr, before.addr, "alice's address was overwritten");
    // Alice keeps her place through further heartbeats.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(entry(&auth, alice.id()).map(|e| e.addr), Some(before.addr));
}

/// Finding 8: LEAVE accepted any member's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_remove_another() {
    let (auth, alice, before, mallory) = alice_and_mallory().await;
    let leave = mallory
        .request("/mesh", "LEAVE")
        .data(Value::map([("id", Value::from(alice.id().to_string()))]))
        .send()
        .await;
    assert!(leave.is_err(), "a leave for another member must be refused");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(entry(&auth, alice.id()).map(|e| e.addr), Some(before.addr));
}

/// Finding 7: the auth peer refused to start when its ban file passed 4 MiB (about 85,000
/// IPv6 bans). It now starts with the newest bans that fit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(
    clippy::disallowed_methods,
    reason = "the ban file holds wall-clock times"
)]
async fn an_oversized_ban_file_does_not_stop_the_auth_peer() {
    let dir = std::env::temp_dir().join(format!("cw-banfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bans.txt");
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3_600;
    let mut text = String::from("# cypherwire mesh bans v1\n");
    let mut n: u32 = 0;
    while text.len() <= 5 * 1024 * 1024 {
        let (a, b) = (n >> 16, n & 0xffff);
        text.push_str(&format!(
            "ip 2001:db8:{a:x}:{b:x}:: {}\n",
            until + u64::from(n % 60)
        ));
        n += 1;
    }
    std::fs::write(&path, &text).unwrap();
    let auth = start_auth(Some(path.clone())).await;
    let auth = auth.expect("the auth peer must start with an oversized ban file");
    let kept = auth.bans().len();
    assert!(kept > 10_000, "only {kept} bans kept");
    assert!(
        kept < n as usize,
        "all {n} bans kept: the bound was not applied"
    );
    assert!(std::fs::metadata(&path).unwrap().len() <= 4 * 1024 * 1024);
    drop(auth);
    let _ = std::fs::remove_dir_all(&dir);
}
