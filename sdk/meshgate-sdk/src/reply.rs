//! Local replies: answer the client from the plugin instead of forwarding the request.
//!
//! ```text
//! return reply(401)
//!     .header("www-authenticate", "Basic realm=\"orders\"")
//!     .text("credentials required")
//!     .send();
//! ```
//! [`Reply::send`] hands the reply to the host and returns [`Action::Pause`], which is what the
//! callback must return after a local reply (the host ends the stream with the reply).

use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, GrpcStatusCode};

/// A local reply being built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a reply does nothing until `send` is called"]
pub struct Reply {
    status: u32,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Starts a local reply with HTTP status `status`.
pub fn reply(status: u32) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

impl Reply {
    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Reply {
        self.body = body.into();
        self
    }

    /// Sets a plain-text body and `content-type: text/plain`.
    pub fn text(self, text: &str) -> Reply {
        self.header("content-type", "text/plain").body(text)
    }

    /// Sets a JSON body (`content-type: application/json`).
    pub fn json(self, value: &serde_json::Value) -> Reply {
        let body = value.to_string();
        self.header("content-type", "application/json").body(body)
    }

    /// The status.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Sends the reply and returns [`Action::Pause`] for the callback to return.
    pub fn send(self) -> Action {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let body = (!self.body.is_empty()).then_some(&self.body[..]);
        if let Err(status) = hostcalls::send_http_response(self.status, headers, body) {
            log::warn!("local reply {} not sent: {status:?}", self.status);
        }
        Action::Pause
    }
}

/// Ends a gRPC request with `grpc-status` `code` and `message` (HTTP 200, trailers only) and
/// returns [`Action::Pause`].
pub fn grpc_error(code: GrpcStatusCode, message: &str) -> Action {
    if let Err(status) = hostcalls::send_grpc_response(code, Some(message), Vec::new()) {
        log::warn!("gRPC local reply not sent: {status:?}");
    }
    Action::Pause
}
