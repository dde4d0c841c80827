//! The door between a VM and the gateway: what the host tells the wasm runtime about the
//! world (callout targets, node metadata) and the per-stream facts properties are read from.
//!
//! Implemented by the proxy; the SDK testkit implements it with fixed answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::abi::LogLevel;

/// What the gateway provides to its VMs.
pub trait Host {
    /// Whether a callout may be sent to `upstream`: an Istio cluster name
    /// (`outbound|PORT|SUBSET|HOST`) or a host the gateway knows.
    fn has_upstream(&self, upstream: &str) -> bool;
    /// A property of the node (`node.id`, `node.cluster`, `node.metadata.*`): `path` is the
    /// segments after `node`. Encoded as Envoy encodes it.
    fn node_property(&self, _path: &[&[u8]]) -> Option<Vec<u8>> {
        None
    }
    /// Sees every line the guest logs (`proxy_log`, and WASI stdout/stderr lines), after it
    /// went to the gateway's log. The gateway ignores it; the SDK testkit captures lines here.
    fn log(&self, _level: LogLevel, _message: &str) {}
    /// The wall clock the guest reads (`proxy_get_current_time_nanoseconds`, WASI clocks).
    /// The gateway's is the system clock; the testkit's can be moved by the test.
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A host with no upstreams and no node metadata (for tests and tools).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHost;

impl Host for NoHost {
    fn has_upstream(&self, _upstream: &str) -> bool {
        false
    }
}

/// What the gateway knows of a stream, for `source.*`, `destination.*`, `connection.*`,
/// `upstream.*`, `response.*`, `route_name` and `cluster_name` properties.
#[derive(Debug, Clone, Default)]
pub struct StreamInfo {
    /// The downstream peer.
    pub source: Option<SocketAddr>,
    /// The local address the connection arrived on.
    pub destination: Option<SocketAddr>,
    /// The downstream connection's id.
    pub connection_id: u64,
    /// The request's arrival.
    pub start: Option<SystemTime>,
    /// `HTTP/1.1`, `HTTP/2`, ...
    pub protocol: &'static str,
    /// The route's name.
    pub route_name: Option<Arc<str>>,
    /// The cluster the route chose.
    pub cluster_name: Option<Arc<str>>,
    /// The endpoint the request went to.
    pub upstream: Option<SocketAddr>,
    /// Response code, once known.
    pub response_code: Option<u16>,
    /// Envoy's response code details.
    pub response_code_details: Option<&'static str>,
    /// Envoy's response flags (`-` for none).
    pub response_flags: Option<&'static str>,
    /// Request body bytes received so far.
    pub request_body_size: u64,
    /// Response body bytes sent so far.
    pub response_body_size: u64,
}
