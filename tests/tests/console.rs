//! The operator's console building block (`cypherwire::server::console`) against a real server
//! and client over loopback: what each command prints, and what the client sees of a kick and
//! a broadcast.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::time::Duration;

use cypherwire::client::{Client, Error, Incoming, Status};
use cypherwire::server::Server;
use cypherwire::server::console::{Console, Outcome};
use cypherwire::session::Psk;
use cypherwire::wire::Value;
use tokio::io::AsyncReadExt as _;

fn psk() -> Psk {
    Psk::from_passphrase("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U").unwrap()
}

fn done(text: &str) -> Outcome {
    Outcome::Done(text.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_command_does_what_it_prints_and_the_client_sees_it() {
    let server = Server::builder(psk()).bind("127.0.0.1:0").await.unwrap();
    let h = server.handle();
    let console = Console::new(h.clone()).command("count", "count", |_args, server| {
        Ok(format!("{} now", server.count()))
    });
    let client = Client::builder(psk())
        .connect_and_wait(h.local_addr().to_string())
        .await
        .unwrap();
    let mut incoming = client.take_incoming().unwrap();
    let id = h.connections()[0].id;

    let help = console.help();
    assert!(help.starts_with("commands: help, list, kick ID"), "{help}");
    assert!(help.ends_with(", count, quit"), "{help}");
    assert_eq!(console.execute("count").await, done("1 now"));

    let Outcome::Done(list) = console.execute("list").await else {
        panic!("list failed");
    };
    let mut lines = list.lines();
    assert_eq!(lines.next(), Some("1 connected"));
    let row = lines.next().unwrap();
    assert!(row.starts_with(&format!("{id} 127.0.0.1:")), "{row}");

    assert_eq!(
        console.execute("broadcast hello there").await,
        done("sent to 1 connections")
    );
    match tokio::time::timeout(Duration::from_secs(5), incoming.next())
        .await
        .unwrap()
    {
        Some(Incoming::Push(p)) => assert_eq!(p.data, Value::from("hello there")),
        other => panic!("{other:?}"),
    }

    assert_eq!(
        console.execute("ban 127.0.0.9 5").await,
        done("banned 127.0.0.9 for 5 min")
    );
    assert_eq!(
        console.execute("bans").await,
        done("127.0.0.9 for another 5 min")
    );
    assert_eq!(console.execute("unban 127.0.0.9").await, done("unbanned"));
    assert_eq!(console.execute("unban 127.0.0.9").await, done("not banned"));
    assert_eq!(console.execute("bans").await, done("no bans"));
    for bad in [
        "ban nonsense",
        "ban 127.0.0.9 0",
        "unban x",
        "kick x",
        "kick 99",
        "frobnicate",
    ] {
        assert!(
            matches!(console.execute(bad).await, Outcome::Failed(_)),
            "{bad} should fail"
        );
    }
    assert_eq!(console.execute("   ").await, done(""));
    assert_eq!(console.execute("quit").await, Outcome::Quit);

    // A kick from the console ends the client's session for good: it stops, told why.
    assert_eq!(
        console.execute(&format!("kick {id}")).await,
        done(&format!("kicked {id}"))
    );
    let kicked = tokio::time::timeout(Duration::from_secs(5), async {
        let mut status = client.status();
        status
            .wait_for(|s| matches!(s, Status::Kicked { .. }))
            .await
            .unwrap()
            .clone()
    })
    .await
    .unwrap();
    assert!(matches!(kicked, Status::Kicked { .. }), "{kicked:?}");
    assert!(matches!(
        client.wait_online().await,
        Err(Error::Kicked { .. })
    ));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_reads_lines_until_quit_and_marks_failures() {
    let server = Server::builder(psk()).bind("127.0.0.1:0").await.unwrap();
    let h = server.handle();
    let console = Console::new(h.clone());
    let input = tokio::io::BufReader::new(&b"list\n\nfrobnicate\nquit\nbroadcast not run\n"[..]);
    let (out, mut read_end) = tokio::io::duplex(64 * 1024);
    console.run(input, out).await.unwrap();
    let mut printed = String::new();
    read_end.read_to_string(&mut printed).await.unwrap();
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines[0], "0 connected");
    assert!(
        lines[1].starts_with("! unknown command \"frobnicate\""),
        "{printed}"
    );
    assert_eq!(lines.len(), 2, "nothing after quit: {printed}");
    assert_eq!(h.stats().pushes, 0);
    h.shutdown().await;
}
