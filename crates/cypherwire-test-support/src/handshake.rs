//! Drives a complete handshake in memory, message by message.

use cypherwire_session::handshake::HandshakeOptions;
use cypherwire_session::{
    ClientAuth, Error, Established, Initiator, Responder, ServerAuth, SessionConfig, Step,
};

/// The two ends of a completed in-memory handshake and every message exchanged.
#[derive(Debug)]
pub struct Handshake {
    /// The initiator's session.
    pub client: Established,
    /// The responder's session.
    pub server: Established,
    /// Frame bodies from the initiator, in order.
    pub to_server: Vec<Vec<u8>>,
    /// Frame bodies from the responder, in order.
    pub to_client: Vec<Vec<u8>>,
}

/// Which side failed.
#[derive(Debug)]
pub enum Side {
    /// The initiator rejected a message (or failed to start).
    Client(Error),
    /// The responder rejected a message.
    Server(Error),
}

/// Runs a handshake between `client` and `server` credentials in memory, with optional test
/// options for each side (fixed ephemerals, seeded PAKE).
///
/// # Errors
/// The first rejection, with the side that raised it.
pub fn run(
    client: &ClientAuth,
    server: &ServerAuth,
    client_config: &SessionConfig,
    server_config: &SessionConfig,
    options: (HandshakeOptions, HandshakeOptions),
) -> Result<Handshake, Side> {
    let now = crate::epoch();
    let (init, hello) =
        Initiator::start_with(client, client_config, options.0).map_err(Side::Client)?;
    let mut init = Some(init);
    let mut resp = Some(Responder::new_with(server, server_config, options.1));
    let (mut to_server, mut to_client) = (vec![hello.clone()], Vec::new());
    let (mut client_done, mut server_done) = (None, None);
    let mut msg = hello;
    // No mode needs more than four messages; the bound keeps a broken peer from looping.
    for _ in 0..4 {
        if let Some(r) = resp.take() {
            match r.handle(&msg, now).map_err(|e| Side::Server(e.error))? {
                Step::Continue { state, send } => (resp, msg) = (Some(state), send),
                Step::Done { established, send } => {
                    server_done = Some(*established);
                    msg = send.unwrap_or_default();
                }
            }
            if !msg.is_empty() {
                to_client.push(msg.clone());
            }
        }
        if let Some(i) = init.take()
            && !msg.is_empty()
        {
            match i.handle(&msg, now).map_err(|e| Side::Client(e.error))? {
                Step::Continue { state, send } => (init, msg) = (Some(state), send),
                Step::Done { established, send } => {
                    client_done = Some(*established);
                    msg = send.unwrap_or_default();
                }
            }
            if !msg.is_empty() {
                to_server.push(msg.clone());
            }
        }
        if let (Some(_), Some(_)) = (&client_done, &server_done) {
            break;
        }
    }
    match (client_done, server_done) {
        (Some(client), Some(server)) => Ok(Handshake {
            client,
            server,
            to_server,
            to_client,
        }),
        _ => Err(Side::Server(Error::Handshake(
            cypherwire_session::HandshakeFailure::Malformed,
        ))),
    }
}
