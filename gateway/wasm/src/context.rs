//! The values that cross between the filter and a VM per stream: what a callback decided
//! (continue or pause), a reply the plugin asked for, and HTTP callouts out and back.

use std::time::Duration;

use bytes::Bytes;

/// What a stream callback decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Go on to the next filter.
    Continue,
    /// Stop here until the plugin resumes the stream (headers), or buffer and wait for more
    /// (body).
    Pause,
}

impl Action {
    /// Maps a filter status the guest returned: 0 continue; 1 (stop iteration) and Envoy's 3
    /// and 4 (stop all and buffer / watermark) pause; 2 (continue and end stream) continues.
    pub(crate) fn from_guest(v: i32) -> Option<Action> {
        match v {
            0 | 2 => Some(Action::Continue),
            1 | 3 | 4 => Some(Action::Pause),
            _ => None,
        }
    }
}

/// A reply the plugin asked for with `proxy_send_local_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// HTTP status.
    pub status: u16,
    /// Response code details given by the plugin (Envoy logs them).
    pub details: String,
    /// Body.
    pub body: Bytes,
    /// Extra headers.
    pub headers: Vec<(String, Bytes)>,
    /// A gRPC status to reply with (`-1`/none: a plain HTTP reply).
    pub grpc_status: Option<u32>,
}

/// A callout the plugin dispatched with `proxy_http_call`.
#[derive(Debug, Clone)]
pub struct HttpCall {
    /// The token the plugin got back.
    pub token: u32,
    /// The context that dispatched it (gets `proxy_on_http_call_response`).
    pub context_id: u32,
    /// The upstream: an Istio cluster name or a host.
    pub upstream: String,
    /// Headers, pseudo-headers (`:method`, `:path`, `:authority`) included.
    pub headers: Vec<(String, Bytes)>,
    /// Body.
    pub body: Bytes,
    /// Trailers.
    pub trailers: Vec<(String, Bytes)>,
    /// Timeout.
    pub timeout: Duration,
}

/// A unary gRPC callout the plugin dispatched with `proxy_grpc_call`.
#[derive(Debug, Clone)]
pub struct GrpcCall {
    /// The token the plugin got back.
    pub token: u32,
    /// The upstream: an Istio cluster name or a host.
    pub upstream: String,
    /// Fully qualified service name (`package.Service`).
    pub service: String,
    /// Method name.
    pub method: String,
    /// Initial metadata (request headers).
    pub metadata: Vec<(String, Bytes)>,
    /// The serialized request message.
    pub message: Bytes,
    /// Timeout (zero: none).
    pub timeout: Duration,
}

/// A gRPC stream the plugin opened with `proxy_grpc_stream`.
#[derive(Debug, Clone)]
pub struct GrpcStreamOpen {
    /// The token the plugin got back.
    pub token: u32,
    /// The upstream: an Istio cluster name or a host.
    pub upstream: String,
    /// Fully qualified service name.
    pub service: String,
    /// Method name.
    pub method: String,
    /// Initial metadata.
    pub metadata: Vec<(String, Bytes)>,
}

/// A callout, or a step of an open gRPC stream, for the host to carry out.
#[derive(Debug, Clone)]
pub enum Callout {
    /// `proxy_http_call`.
    Http(HttpCall),
    /// `proxy_grpc_call`.
    Grpc(GrpcCall),
    /// `proxy_grpc_stream`.
    GrpcStream(GrpcStreamOpen),
    /// `proxy_grpc_send`: a message on an open stream (`end_stream`: the last one).
    GrpcSend {
        /// The stream.
        token: u32,
        /// The serialized message.
        message: Bytes,
        /// Half-close after it.
        end_stream: bool,
    },
    /// `proxy_grpc_close` on a stream: no more messages from the plugin.
    GrpcHalfClose(u32),
    /// `proxy_grpc_cancel` on a stream: drop it.
    GrpcCancel(u32),
}

/// What an open gRPC stream brings back to the plugin.
#[derive(Debug, Clone)]
pub enum GrpcEvent {
    /// The response headers.
    InitialMetadata(Vec<(String, Bytes)>),
    /// One response message.
    Message(Bytes),
    /// The trailers.
    TrailingMetadata(Vec<(String, Bytes)>),
    /// The end: gRPC status code and message.
    Close(u32, Bytes),
}

/// What came back for a callout.
#[derive(Debug, Clone, Default)]
pub struct CallResponse {
    /// Headers, `:status` first; empty when the call failed.
    pub headers: Vec<(String, Bytes)>,
    /// Body.
    pub body: Bytes,
    /// Trailers.
    pub trailers: Vec<(String, Bytes)>,
}
