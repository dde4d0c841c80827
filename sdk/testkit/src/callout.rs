//! Callouts the plugin dispatched, as tests inspect them, and the answers tests feed back.

use std::time::Duration;

use bytes::Bytes;
use meshgate_wasm::{CallResponse, GrpcCall, HttpCall};

use crate::Headers;

/// An HTTP callout the plugin dispatched with `proxy_http_call`, waiting for its answer
/// ([`Harness::respond_http`](crate::Harness::respond_http) or
/// [`Harness::fail_http`](crate::Harness::fail_http)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCallout {
    /// The token the plugin got back (answer with it).
    pub token: u32,
    /// The context that dispatched it (a [`Stream::id`](crate::Stream::id), or the root's).
    pub context_id: u32,
    /// Where it goes: an Istio cluster name (`outbound|80||auth.example.com`) or a host.
    pub upstream: String,
    /// Its headers, pseudo-headers (`:method`, `:path`, `:authority`) included.
    pub headers: Headers,
    /// Its body.
    pub body: Bytes,
    /// Its trailers.
    pub trailers: Headers,
    /// Its timeout.
    pub timeout: Duration,
}

impl HttpCallout {
    pub(crate) fn new(call: &HttpCall) -> HttpCallout {
        HttpCallout {
            token: call.token,
            context_id: call.context_id,
            upstream: call.upstream.clone(),
            headers: Headers::from_owned(&call.headers),
            body: call.body.clone(),
            trailers: Headers::from_owned(&call.trailers),
            timeout: call.timeout,
        }
    }

    /// The value of header `name` (pseudo-headers included).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)
    }

    /// `:method`.
    pub fn method(&self) -> Option<&str> {
        self.headers.get(":method")
    }

    /// `:path`.
    pub fn path(&self) -> Option<&str> {
        self.headers.get(":path")
    }

    /// `:authority`.
    pub fn authority(&self) -> Option<&str> {
        self.headers.get(":authority")
    }

    /// The body as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The answer to an HTTP callout.
///
/// ```
/// use meshgate_testkit::HttpResponse;
/// let ok = HttpResponse::new(200)
///     .header("content-type", "application/json")
///     .body(r#"{"allow":true}"#);
/// # let _ = ok;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
    trailers: Vec<(String, String)>,
}

impl HttpResponse {
    /// A response with `status`, no headers and no body.
    pub fn new(status: u16) -> HttpResponse {
        HttpResponse {
            status,
            ..HttpResponse::default()
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> HttpResponse {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> HttpResponse {
        self.body = body.into();
        self
    }

    /// Adds a trailer.
    pub fn trailer(mut self, name: &str, value: &str) -> HttpResponse {
        self.trailers
            .push((name.to_ascii_lowercase(), value.to_owned()));
        self
    }

    pub(crate) fn into_call_response(self) -> CallResponse {
        let pairs = |v: Vec<(String, String)>| -> Vec<(String, Bytes)> {
            v.into_iter().map(|(k, v)| (k, Bytes::from(v))).collect()
        };
        let mut headers = vec![(":status".to_owned(), Bytes::from(self.status.to_string()))];
        headers.extend(pairs(self.headers));
        CallResponse {
            headers,
            body: self.body,
            trailers: pairs(self.trailers),
        }
    }
}

/// A unary gRPC callout the plugin dispatched with `proxy_grpc_call`, waiting for its
/// answer ([`Harness::respond_grpc`](crate::Harness::respond_grpc) or
/// [`Harness::fail_grpc`](crate::Harness::fail_grpc)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcCallout {
    /// The token the plugin got back.
    pub token: u32,
    /// Where it goes: an Istio cluster name or a host.
    pub upstream: String,
    /// Fully qualified service name (`package.Service`).
    pub service: String,
    /// Method name.
    pub method: String,
    /// Initial metadata.
    pub metadata: Headers,
    /// The serialized request message.
    pub message: Bytes,
    /// Timeout (zero: none).
    pub timeout: Duration,
}

impl GrpcCallout {
    pub(crate) fn new(call: &GrpcCall) -> GrpcCallout {
        GrpcCallout {
            token: call.token,
            upstream: call.upstream.clone(),
            service: call.service.clone(),
            method: call.method.clone(),
            metadata: Headers::from_owned(&call.metadata),
            message: call.message.clone(),
            timeout: call.timeout,
        }
    }
}
