//! pyile-protocol's peer-to-peer network, the cypherwire way: an authenticating peer admits
//! members by password (a PAKE: the password never crosses the wire), bans a guesser,
//! distributes a signed peer list; members broadcast, message each other directly over pinned
//! channels, and leave cleanly.
//!
//! Run: `cargo run -p cypherwire-examples --bin pyile_mesh`

use std::time::Duration;

use cypherwire::mesh::{AuthPeer, Error, Event, Events, JoinPeer, MeshConfig};
use cypherwire::session::{Argon2Cost, BanPolicy, Password, PasswordVerifier};

/// Waits (at most 5 s) for the first event `want` accepts.
async fn wait_for(events: &mut Events, want: impl Fn(&Event) -> bool) -> anyhow::Result<Event> {
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(e) = events.next().await {
            if want(&e) {
                return Ok(e);
            }
        }
        anyhow::bail!("event stream ended")
    })
    .await?
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // pyile: AuthPeer(address=(..., 4702), password_attempts=1, password="password").
    // The authenticating peer stores only a verifier. (Port 0 here so the example never
    // collides with a real mesh; the default is 4702.)
    let verifier = PasswordVerifier::create("password", Argon2Cost::default())?;
    let mut bans = BanPolicy::default();
    bans.max_attempts = 1;
    let auth = AuthPeer::builder(verifier)
        .listen("127.0.0.1:0")
        .ban_policy(bans)
        .start()
        .await?;
    let addr = auth.local_addr().to_string();
    let mut auth_events = auth.take_events().ok_or_else(|| anyhow::anyhow!("taken"))?;
    println!("authenticating peer {} on {addr}", auth.id());

    // pyile: peer.get_authenticated(("...", 4702), "password").
    let alice = JoinPeer::join(
        addr.clone(),
        Password::new("password"),
        MeshConfig::default(),
    )
    .await?;
    let bob = JoinPeer::join(
        addr.clone(),
        Password::new("password"),
        MeshConfig::default(),
    )
    .await?;
    println!("alice {} and bob {} joined", alice.id(), bob.id());

    // A wrong password is an authentication error; with password_attempts=1 the address is
    // now banned (here: 127.0.0.1, so we do this last in real life; the example only shows
    // the typed error and the event, then lifts the ban).
    match JoinPeer::join(addr.clone(), Password::new("guess"), MeshConfig::default()).await {
        Err(Error::Authentication { reason }) => println!("wrong password refused: {reason}"),
        other => anyhow::bail!("a wrong password was not refused: {other:?}"),
    }
    wait_for(&mut auth_events, |e| matches!(e, Event::Banned { .. })).await?;
    println!("bans: {:?}", auth.bans());
    let local = "127.0.0.1".parse()?;
    auth.unban_addr(local);

    // Everyone holds the same signed list.
    while alice.peers().len() < 3 || bob.peers().len() < 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "peer list: {:?}",
        auth.peers().iter().map(|p| p.id).collect::<Vec<_>>()
    );

    // Broadcast and a direct message.
    let mut bob_events = bob.take_events().ok_or_else(|| anyhow::anyhow!("taken"))?;
    let report = alice.broadcast("hello, everyone").await?;
    println!(
        "broadcast acknowledged by {} members",
        report.delivered.len()
    );
    alice.send(bob.id(), "just for you, bob").await?;
    for _ in 0..2 {
        if let Event::Message {
            from,
            data,
            broadcast,
        } = wait_for(&mut bob_events, |e| matches!(e, Event::Message { .. })).await?
        {
            println!("bob got {data:?} from {from} (broadcast: {broadcast})");
        }
    }

    // pyile: peer.leave(); the others see it at once.
    let alice_id = alice.id();
    alice.leave().await;
    wait_for(
        &mut bob_events,
        |e| matches!(e, Event::PeerLeft { id, .. } if *id == alice_id),
    )
    .await?;
    println!("bob saw alice leave");
    bob.leave().await;
    auth.leave().await;
    Ok(())
}
