//! meshgate-wasm: the proxy-wasm host (ABI 0.2.1, also 0.2.0 and 0.1.0) on wasmtime.
//!
//! Sits between the proxy's wasm filter and the guest: it compiles and caches modules, creates
//! one VM per plugin per worker, drives root and HTTP contexts through the ABI callbacks, and
//! answers the guest's host calls. It knows nothing of hyper or sockets; everything it needs
//! from the gateway comes through [`Host`] and the data the filter hands over per stream.

mod abi;
mod body_buffer;
mod code_cache;
mod context;
mod engine;
mod epoch;
mod error;
mod header_cache;
mod host;
mod metrics;
mod plugin;
mod shared;
mod state;
mod vm;

pub use abi::{encode_pairs, BufferType, LogLevel, MapType, Status};
pub use context::{
    Action, CallResponse, Callout, GrpcCall, GrpcEvent, GrpcStreamOpen, HttpCall, LocalResponse,
};
pub use engine::{hex, AbiVersion};
pub use engine::{CompiledModule, Engine, EngineOptions};
pub use error::{VmFailure, WasmError};
pub use host::{Host, NoHost, StreamInfo};
pub use metrics::{Metric, MetricKind, MetricRegistry, HISTOGRAM_BOUNDS};
pub use plugin::{Latency, Plugin, PluginConfig, PluginStats, CALLBACKS, LATENCY_BOUNDS_NS};
pub use shared::Inbox;
pub use shared::SharedState;
pub use state::{RequestEdits, RequestHead};
pub use vm::{PluginVm, Resume, StreamId, Whole, LATENCY_SAMPLE};
