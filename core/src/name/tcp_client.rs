//! The client of msocket's own name server.
//!
//! Each request uses a fresh TCP connection. Name requests are rare (at startup, when an
//! address changes, when a peer is looked up), so the extra round trip costs little, and
//! it avoids keeping a pooled connection that silently died when the phone changed
//! networks: every request starts from the current network state.

use std::time::Duration;

use tokio::net::TcpStream;

use super::protocol::{read_message, write_message, FrameError, Request, Response};
use super::{unix_now, validate_name, NameError, NameFuture, NameService, SignedRecord};

/// A [`NameService`] reached over TCP at `host:port`, speaking [`super::protocol`].
#[derive(Debug, Clone)]
pub struct TcpNameClient {
    server: String,
    timeout: Duration,
}

impl TcpNameClient {
    /// A client of the server at `server` (`host:port`). `timeout` bounds each request as
    /// a whole: name resolution, connect, send and response.
    pub fn new(server: String, timeout: Duration) -> Self {
        TcpNameClient { server, timeout }
    }

    /// The server's address, as given.
    pub fn server(&self) -> &str {
        &self.server
    }

    async fn request(&self, request: &Request) -> Result<Response, NameError> {
        match tokio::time::timeout(self.timeout, self.exchange(request)).await {
            Ok(result) => result,
            Err(_) => Err(NameError::Timeout { server: self.server.clone(), after: self.timeout }),
        }
    }

    async fn exchange(&self, request: &Request) -> Result<Response, NameError> {
        let unreachable =
            |reason: String| NameError::Unreachable { server: self.server.clone(), reason };
        let mut stream = TcpStream::connect(self.server.as_str())
            .await
            .map_err(|e| unreachable(format!("connect: {e}")))?;
        // Requests are single small writes; don't let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        write_message(&mut stream, &request.encode())
            .await
            .map_err(|e| unreachable(format!("send: {e}")))?;
        let body = match read_message(&mut stream).await {
            Ok(body) => body,
            Err(FrameError::TooLong(len)) => {
                return Err(NameError::Malformed(format!("response of {len} bytes is too long")))
            }
            Err(FrameError::Closed) => {
                return Err(unreachable("connection closed before a response".into()))
            }
            Err(FrameError::Io(e)) => return Err(unreachable(format!("receive: {e}"))),
        };
        Response::decode(&body)
    }
}

impl NameService for TcpNameClient {
    /// Sends the record as is: the server applies the registration rules, so the client
    /// does not check the record first.
    fn register<'a>(&'a self, record: &'a SignedRecord) -> NameFuture<'a, ()> {
        Box::pin(async move {
            let name = &record.record.name;
            tracing::debug!(server = %self.server, %name, seq = record.record.seq, "registering name");
            match self.request(&Request::Register(record.clone())).await? {
                Response::Ok => Ok(()),
                Response::Refused { code, current_seq, message } => Err(Response::refusal_error(
                    code,
                    current_seq,
                    &message,
                    name,
                    record.record.seq,
                )),
                other => Err(unexpected(&other)),
            }
        })
    }

    /// Verifies the served record (signature, name, expiry): the server is trusted for
    /// availability, not integrity.
    fn lookup<'a>(&'a self, name: &'a str) -> NameFuture<'a, SignedRecord> {
        Box::pin(async move {
            validate_name(name)?;
            tracing::debug!(server = %self.server, name, "looking name up");
            match self.request(&Request::Lookup(name.to_string())).await? {
                Response::Record(record) => {
                    if record.record.name != name {
                        tracing::warn!(server = %self.server, asked = name,
                            got = %record.record.name, "name server returned another name's record");
                        return Err(NameError::BadSignature);
                    }
                    if let Err(e) = record.verify(unix_now()) {
                        tracing::warn!(server = %self.server, name, error = %e,
                            "name server returned a record that does not verify");
                        return Err(e);
                    }
                    Ok(record)
                }
                Response::NotFound => Err(NameError::NotFound(name.to_string())),
                Response::Refused { code, current_seq, message } => {
                    Err(Response::refusal_error(code, current_seq, &message, name, 0))
                }
                other => Err(unexpected(&other)),
            }
        })
    }
}

fn unexpected(response: &Response) -> NameError {
    let kind = match response {
        Response::Ok => "Ok",
        Response::Record(_) => "Record",
        Response::NotFound => "NotFound",
        Response::Unchanged => "Unchanged",
        Response::Refused { .. } => "Refused",
    };
    NameError::Malformed(format!("unexpected {kind} response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        // Bind then drop a listener so the port is (very likely) closed.
        let port = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().port()
        };
        let client = TcpNameClient::new(format!("127.0.0.1:{port}"), Duration::from_secs(5));
        assert!(matches!(client.lookup("alice").await, Err(NameError::Unreachable { .. })));
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        // Accept and hold the connection without answering.
        let holder = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
        let client = TcpNameClient::new(addr.clone(), Duration::from_millis(200));
        assert_eq!(
            client.lookup("alice").await,
            Err(NameError::Timeout { server: addr, after: Duration::from_millis(200) })
        );
        drop(holder);
    }

    #[tokio::test]
    async fn invalid_names_are_refused_locally() {
        // Nothing listens on port 9 of a TEST-NET address; the name check comes first.
        let client = TcpNameClient::new("192.0.2.1:9".into(), Duration::from_secs(5));
        assert!(matches!(client.lookup("Alice").await, Err(NameError::InvalidName { .. })));
    }
}
