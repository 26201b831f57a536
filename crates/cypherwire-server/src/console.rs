//! An operator's console over a running server (pnetwork's admin console): one command per
//! line — list the connections, kick, broadcast, ban and unban — plus the application's own
//! commands. `cypherwire serve --console` is this console on stdin and stdout.

use std::sync::Arc;
use std::time::Duration;

use cypherwire_session::human_duration;
use cypherwire_wire::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::error::Error;
use crate::handle::ServerHandle;
use crate::id::ConnectionId;

/// What one console line did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The command ran; its output, one or more lines (empty for an empty line).
    Done(String),
    /// The command failed or was not understood; why, for the operator.
    Failed(String),
    /// `quit` or `exit`: the operator is done.
    Quit,
}

type Extra = Arc<dyn Fn(&str, &ServerHandle) -> Result<String, String> + Send + Sync>;

/// A console over one server. [`execute`](Self::execute) runs one line;
/// [`run`](Self::run) reads lines from any input until `quit` or its end.
///
/// | command | does |
/// | --- | --- |
/// | `help` | lists the commands |
/// | `list` | the connections: id, address, messages in and out |
/// | `kick ID` | closes that connection with `KICKED`; in a cluster, also one held by another instance |
/// | `broadcast TEXT` | pushes `TEXT` to every connection |
/// | `bans` | the banned sources and how long each ban lasts |
/// | `ban IP [MINUTES]` | bans a source (60 minutes unless told), closing its connections |
/// | `unban IP` | lifts a ban |
/// | `quit`, `exit` | ends [`run`](Self::run) |
///
/// ```
/// use cypherwire_server::console::{Console, Outcome};
/// use cypherwire_server::Server;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// # let psk = cypherwire_session::Psk::from_passphrase("2ZpK1CdQfm0s1EZ1SIhYfV7MHdJf8X3U")?;
/// let server = Server::builder(psk).bind("127.0.0.1:0").await?;
/// let console = Console::new(server.handle())
///     .command("uptime", "uptime", |_args, _server| Ok("up".to_owned()));
/// assert_eq!(console.execute("list").await, Outcome::Done("0 connected".into()));
/// assert_eq!(console.execute("uptime").await, Outcome::Done("up".into()));
/// assert!(matches!(console.execute("frobnicate").await, Outcome::Failed(_)));
/// server.handle().shutdown().await;
/// # Ok(()) }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(run())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Console {
    server: ServerHandle,
    extras: Vec<(String, String, Extra)>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("server", &self.server)
            .field(
                "commands",
                &self.extras.iter().map(|e| &e.0).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The built-in commands, as `help` lists them.
const BUILT_IN: &str = "help, list, kick ID, broadcast TEXT, bans, ban IP MINUTES, unban IP";

impl Console {
    /// A console over `server` with the built-in commands.
    pub fn new(server: ServerHandle) -> Self {
        Self {
            server,
            extras: Vec::new(),
        }
    }

    /// Adds the application's command `name`: `run` gets the rest of the line and the server,
    /// and returns the output or why it failed. `usage` is how `help` shows it (e.g.
    /// `"stats ROUTE"`). A built-in command of the same name takes precedence.
    #[must_use]
    pub fn command(
        mut self,
        name: impl Into<String>,
        usage: impl Into<String>,
        run: impl Fn(&str, &ServerHandle) -> Result<String, String> + Send + Sync + 'static,
    ) -> Self {
        self.extras.push((name.into(), usage.into(), Arc::new(run)));
        self
    }

    /// The help line: every command, the application's after the built-in ones.
    pub fn help(&self) -> String {
        let mut text = format!("commands: {BUILT_IN}");
        for (_, usage, _) in &self.extras {
            text.push_str(", ");
            text.push_str(usage);
        }
        text.push_str(", quit");
        text
    }

    /// Runs one line.
    pub async fn execute(&self, line: &str) -> Outcome {
        let line = line.trim();
        let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        match command {
            "" => Outcome::Done(String::new()),
            "quit" | "exit" => Outcome::Quit,
            "help" => Outcome::Done(self.help()),
            "list" => Outcome::Done(self.list()),
            "kick" => self.kick(rest).await,
            "broadcast" => {
                let n = self.server.broadcast(Value::from(rest));
                Outcome::Done(format!("sent to {n} connections"))
            }
            "bans" => Outcome::Done(self.bans()),
            "ban" => self.ban(rest),
            "unban" => match rest.parse() {
                Ok(ip) if self.server.unban(ip) => Outcome::Done("unbanned".into()),
                Ok(_) => Outcome::Done("not banned".into()),
                Err(e) => Outcome::Failed(format!("usage: unban IP: {e}")),
            },
            other => match self.extras.iter().find(|e| e.0 == other) {
                Some((_, _, run)) => match run(rest, &self.server) {
                    Ok(text) => Outcome::Done(text),
                    Err(why) => Outcome::Failed(why),
                },
                None => Outcome::Failed(format!("unknown command {other:?}; {}", self.help())),
            },
        }
    }

    /// Reads commands from `input` until `quit` or its end, writing each output to `output`
    /// (failures as lines starting with `! `).
    ///
    /// # Errors
    /// If reading or writing fails.
    pub async fn run<R, W>(&self, input: R, mut output: W) -> std::io::Result<()>
    where
        R: AsyncBufRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut lines = input.lines();
        while let Some(line) = lines.next_line().await? {
            let text = match self.execute(&line).await {
                Outcome::Quit => return Ok(()),
                Outcome::Done(text) if text.is_empty() => continue,
                Outcome::Done(text) => text,
                Outcome::Failed(why) => format!("! {why}"),
            };
            output.write_all(text.as_bytes()).await?;
            output.write_all(b"\n").await?;
            output.flush().await?;
        }
        Ok(())
    }

    fn list(&self) -> String {
        let conns = self.server.connections();
        let mut text = format!("{} connected", conns.len());
        for c in conns {
            text.push_str(&format!(
                "\n{} {} in {} out {}",
                c.id, c.peer, c.messages_in, c.messages_out
            ));
        }
        text
    }

    async fn kick(&self, id: &str) -> Outcome {
        let id: ConnectionId = match id.parse() {
            Ok(id) => id,
            Err(e) => return Outcome::Failed(format!("usage: kick ID (as shown by list): {e}")),
        };
        let kicked = match (self.server.kick(id), self.server.cluster()) {
            (Err(Error::Remote(_)), Some(cluster)) => {
                cluster.kick(id).await.map_err(|e| e.to_string())
            }
            (r, _) => r.map_err(|e| e.to_string()),
        };
        match kicked {
            Ok(()) => Outcome::Done(format!("kicked {id}")),
            Err(why) => Outcome::Failed(why),
        }
    }

    fn bans(&self) -> String {
        let bans = self.server.bans();
        if bans.is_empty() {
            return "no bans".into();
        }
        let lines: Vec<String> = bans
            .into_iter()
            .map(|(ip, left)| format!("{ip} for another {}", human_duration(left)))
            .collect();
        lines.join("\n")
    }

    fn ban(&self, args: &str) -> Outcome {
        let mut words = args.split_whitespace();
        let ip = match words.next().unwrap_or_default().parse::<std::net::IpAddr>() {
            Ok(ip) => ip,
            Err(e) => return Outcome::Failed(format!("usage: ban IP MINUTES: {e}")),
        };
        let minutes = match words.next().map_or(Ok(60), str::parse::<u64>) {
            Ok(m) if m > 0 => m,
            Ok(_) => return Outcome::Failed("usage: ban IP MINUTES: at least 1 minute".into()),
            Err(e) => return Outcome::Failed(format!("usage: ban IP MINUTES: {e}")),
        };
        let closed = self
            .server
            .ban(ip, Duration::from_secs(minutes.saturating_mul(60)));
        Outcome::Done(if closed > 0 {
            format!("banned {ip} for {minutes} min ({closed} connections closed)")
        } else {
            format!("banned {ip} for {minutes} min")
        })
    }
}
