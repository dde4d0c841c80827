//! HTTP callouts: ask another service from inside a callback and carry on when it answers.
//!
//! Envoy refuses a callout without `:method`, `:path` and `:authority`; [`Callout`] always sends
//! them (the authority defaults to the upstream's name). The upstream is a cluster name as
//! Istio spells it (`outbound|8080||auth.default.svc.cluster.local`) or, on meshgate, a host.
//!
//! ```text
//! let token = Callout::get("outbound|80||auth.svc", "/check")
//!     .header("x-user", &user)
//!     .timeout(Duration::from_millis(500))
//!     .dispatch()?;
//! // ... later, in on_http_call_response(token, _, body_size, _):
//! let answer = CallResponse::read(body_size);
//! if answer.status == 200 { /* ... */ }
//! ```

use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, Status};

/// A callout being built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a callout does nothing until `dispatch` is called"]
pub struct Callout {
    upstream: String,
    method: String,
    path: String,
    authority: Option<String>,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    timeout: Duration,
}

impl Callout {
    /// A request with `method` to `path` on `upstream`; 1 s timeout.
    pub fn new(upstream: &str, method: &str, path: &str) -> Callout {
        Callout {
            upstream: upstream.to_owned(),
            method: method.to_owned(),
            path: path.to_owned(),
            authority: None,
            headers: Vec::new(),
            body: None,
            timeout: Duration::from_secs(1),
        }
    }

    /// A GET.
    pub fn get(upstream: &str, path: &str) -> Callout {
        Callout::new(upstream, "GET", path)
    }

    /// A POST with `body`.
    pub fn post(upstream: &str, path: &str, body: impl Into<Vec<u8>>) -> Callout {
        Callout::new(upstream, "POST", path).body(body)
    }

    /// Sets `:authority` (default: the upstream's name).
    pub fn authority(mut self, authority: &str) -> Callout {
        self.authority = Some(authority.to_owned());
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Callout {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Callout {
        self.body = Some(body.into());
        self
    }

    /// Sets how long the host waits for the answer before answering 504 itself.
    pub fn timeout(mut self, timeout: Duration) -> Callout {
        self.timeout = timeout;
        self
    }

    /// Sends the callout; the answer arrives in `on_http_call_response` with the returned
    /// token. `Err(BadArgument)` when the host does not know the upstream.
    pub fn dispatch(self) -> Result<u32, Status> {
        let authority = self.authority.as_deref().unwrap_or(&self.upstream);
        let mut headers: Vec<(&str, &str)> = vec![
            (":method", &self.method),
            (":path", &self.path),
            (":authority", authority),
        ];
        headers.extend(self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        hostcalls::dispatch_http_call(
            &self.upstream,
            headers,
            self.body.as_deref(),
            Vec::new(),
            self.timeout,
        )
    }
}

/// The answer to a callout, read inside `on_http_call_response`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallResponse {
    /// `:status` (0 when the host gave none).
    pub status: u16,
    /// The response headers, pseudo-headers included (a value that is not UTF-8 is converted
    /// lossily).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl CallResponse {
    /// Reads the answer being delivered (`body_size` is the callback's argument).
    pub fn read(body_size: usize) -> CallResponse {
        // Bytes, not proxy-wasm's text getter, which traps on a value that is not UTF-8.
        let headers: Vec<(String, String)> =
            hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders)
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect();
        let status = headers
            .iter()
            .find(|(k, _)| k == ":status")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let body = if body_size == 0 {
            Vec::new()
        } else {
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        CallResponse {
            status,
            headers,
            body,
        }
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}
