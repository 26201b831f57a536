//! Mesh churn with members as separate processes (`cypherwire chat join`): for 2 minutes a
//! seeded schedule SIGKILLs and restarts random members of a 10-member mesh; after the churn
//! stops, the authenticating peer's list and every member's list hold exactly the live members
//! within 3 heartbeat intervals + 1 s, and no registry entry of a dead member is left.
//!
//! `CYPHERWIRE_CHURN_SECS` sets the churn time, `CYPHERWIRE_CHURN_SEED` the schedule.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use cypherwire::mesh::{AuthPeer, MeshConfig};
use cypherwire::session::{Argon2Cost, PasswordVerifier};

const BIN: &str = env!("CARGO_BIN_EXE_cypherwire");
const HB_MS: u64 = 500;

struct Member {
    child: Child,
    input: ChildStdin,
    out: Receiver<String>,
    id: String,
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

fn spawn(auth: &str, password_file: &std::path::Path) -> Member {
    let mut child = Command::new(BIN)
        .args([
            "chat",
            "join",
            "--auth",
            auth,
            "--heartbeat-ms",
            &HB_MS.to_string(),
            "--password-file",
        ])
        .arg(password_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, out) = channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            let Ok(l) = l else { return };
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let first = out
        .recv_timeout(Duration::from_secs(20))
        .expect("the member starts");
    let id = first
        .strip_prefix("joined as ")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    let input = child.stdin.take().unwrap();
    Member {
        child,
        input,
        out,
        id,
    }
}

/// The member's own list, through its `/peers` command.
fn list_of(m: &mut Member) -> BTreeSet<String> {
    while m.out.try_recv().is_ok() {}
    writeln!(m.input, "/peers").unwrap();
    let mut ids = BTreeSet::new();
    loop {
        let l = m
            .out
            .recv_timeout(Duration::from_secs(10))
            .expect("/peers answers");
        if l.starts_with('(') && l.ends_with("members)") {
            return ids;
        }
        if let Some(id) = l.split(' ').next().filter(|w| w.len() == 16) {
            ids.insert(id.to_owned());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_churn_with_member_processes_converges_and_leaks_nothing() {
    let secs: u64 = std::env::var("CYPHERWIRE_CHURN_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    let mut seed: u64 = std::env::var("CYPHERWIRE_CHURN_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0xc4u64 << 32 | 0x0bad);
    println!("churn for {secs} s, seed {seed}");
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let verifier = PasswordVerifier::create("network password", Argon2Cost::new(64, 1, 1)).unwrap();
    let auth = AuthPeer::builder(verifier)
        .listen("127.0.0.1:0")
        .config(MeshConfig::default().with_heartbeat(Duration::from_millis(HB_MS), 3))
        .start()
        .await
        .unwrap();
    let addr = auth.local_addr().to_string();
    let dir = std::env::temp_dir().join(format!("cypherwire-churn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pw = dir.join("password");
    std::fs::write(&pw, "network password\n").unwrap();

    let mut members: Vec<Option<Member>> = (0..10).map(|_| Some(spawn(&addr, &pw))).collect();
    let (mut kills, mut restarts) = (0, 0);
    let stop = now() + Duration::from_secs(secs);
    while now() < stop {
        tokio::time::sleep(Duration::from_millis(200 + rand() % 800)).await;
        let i = usize::try_from(rand() % 10).unwrap();
        match members[i].take() {
            Some(mut m) => {
                m.child.kill().unwrap(); // SIGKILL: no goodbye
                let _ = m.child.wait();
                kills += 1;
            }
            None => {
                members[i] = Some(spawn(&addr, &pw));
                restarts += 1;
            }
        }
    }
    for slot in &mut members {
        if slot.is_none() {
            *slot = Some(spawn(&addr, &pw));
            restarts += 1;
        }
    }
    let churn_ended = now();
    let live: BTreeSet<String> = members
        .iter()
        .flatten()
        .map(|m| m.id.clone())
        .chain(std::iter::once(auth.id().to_string()))
        .collect();
    let auth_list =
        || -> BTreeSet<String> { auth.peers().iter().map(|p| p.id.to_string()).collect() };
    let bound = Duration::from_millis(3 * HB_MS) + Duration::from_secs(1);
    loop {
        if auth_list() == live && auth.listener_stats().connections == 10 {
            break;
        }
        assert!(
            now() - churn_ended < bound,
            "not converged {:?} after the churn: auth lists {:?}, live {live:?}, {} connections",
            now() - churn_ended,
            auth_list(),
            auth.listener_stats().connections
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let converged = now() - churn_ended;
    // Every member holds the same list (pushes can trail the auth peer's view by a moment).
    for m in members.iter_mut().flatten() {
        let deadline = now() + Duration::from_secs(3);
        loop {
            let theirs = list_of(m);
            if theirs == live {
                break;
            }
            assert!(
                now() < deadline,
                "member {} holds {theirs:?}, live {live:?}",
                m.id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!(
        "{kills} kills, {restarts} restarts; the authenticating peer's list and registry matched the \
         11 live members {converged:?} after the churn stopped; every member's list matched"
    );
    for m in members.iter_mut().flatten() {
        let _ = writeln!(m.input, "/exit");
    }
    for m in members.iter_mut().flatten() {
        let deadline = now() + Duration::from_secs(5);
        while m.child.try_wait().unwrap().is_none() && now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = m.child.kill();
        let _ = m.child.wait();
    }
    auth.leave().await;
    let _ = std::fs::remove_dir_all(&dir);
}
