//! A stand-in for a load balancer in front of several instances: each connection goes to the
//! first instance that accepts it.

use std::net::SocketAddr;

/// A client connector trying `0`'s addresses in order (so that when an instance is gone, its
/// clients land on the next one).
#[derive(Debug, Clone)]
pub struct FirstAlive(pub Vec<SocketAddr>);

impl cypherwire_client::Connect for FirstAlive {
    type Io = tokio::net::TcpStream;

    async fn connect(&self) -> std::io::Result<tokio::net::TcpStream> {
        let mut last = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        for a in &self.0 {
            match tokio::net::TcpStream::connect(a).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn describe(&self) -> String {
        format!("the first of {:?}", self.0)
    }
}
