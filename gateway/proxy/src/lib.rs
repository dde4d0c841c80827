//! meshgate, the proxy: workers, listeners, HTTP serving, routing, upstreams, admin, telemetry.
//!
//! Request path (one worker thread, no shared locks): `worker` accepts on SO_REUSEPORT
//! listeners, `http` runs the codec and the edge rules, `router` applies the compiled snapshot,
//! `upstream` picks an endpoint and a pooled connection. `live` holds what workers share: the
//! current snapshot (swapped atomically) and per-cluster live state.

pub mod access_log;
pub mod admin;
pub mod body;
pub mod config_source;
pub mod demo;
pub mod http;
pub mod live;
pub mod router;
pub mod telemetry;
pub mod upstream;
pub mod wasm;
pub mod worker;
