//! meshgate-testkit: test a proxy-wasm plugin in meshgate's own wasm runtime, in-process.
//!
//! A [`Harness`] loads a built `.wasm` into the runtime the gateway runs plugins in
//! (`meshgate-wasm`: the same linker, host functions, limits and callback order), with no
//! gateway and no sockets, and lets a test play the gateway: open [`Stream`]s and feed them
//! request and response headers, bodies and trailers; answer the HTTP and gRPC callouts the
//! plugin dispatched; fire ticks on a simulated clock; read and write shared data and queues;
//! and read what the plugin did: continued, paused, replied locally, closed, which headers and
//! body it forwarded, which metrics it moved and what it logged.
//!
//! ```no_run
//! use meshgate_testkit::Harness;
//!
//! # fn main() -> Result<(), meshgate_testkit::Error> {
//! let plugin = Harness::builder("target/wasm32-wasip1/release/basic_auth.wasm")
//!     .config(r#"{"realm":"x"}"#)
//!     .build()?;
//! let mut stream = plugin.stream();
//! let out = stream.request_headers(&[(":method", "GET"), (":path", "/")], true)?;
//! let reply = out.local_reply().expect("rejected without credentials");
//! assert_eq!(reply.status, 401);
//! assert_eq!(reply.headers.get("www-authenticate"), Some(r#"Basic realm="x""#));
//! stream.end()?;
//! assert_eq!(plugin.counter("basic_auth_rejected"), Some(1));
//! # Ok(())
//! # }
//! ```
//!
//! Modules are compiled once per process (one engine is shared by every harness, modules
//! are kept by content) and, across runs, kept precompiled on disk (see [`cache_dir`]), so a
//! harness is cheap to build per test. Each harness has its own VM, shared data, queues,
//! metrics and log, so tests running in parallel do not see each other.
//!
//! Time: the clock the plugin reads (`proxy_get_current_time_nanoseconds`, WASI clocks) is
//! the harness's, frozen at [`HarnessBuilder::start_time`] (default: when the harness was
//! built) and moved only by [`Harness::advance`], which also fires the ticks that fall due.
//! CPU deadlines are real time, as in the gateway.

mod callout;
mod engine;
mod harness;
mod headers;
mod heads;
mod host;
mod stream;

pub use callout::{GrpcCallout, HttpCallout, HttpResponse};
pub use engine::cache_dir;
pub use harness::{Harness, HarnessBuilder, Histogram, MetricValue};
pub use headers::Headers;
pub use host::LogLine;
pub use stream::{LocalReply, Outcome, Stream};

/// The runtime's own types the harness hands out or takes.
pub use meshgate_wasm::{
    Callout, GrpcEvent, LogLevel, MetricKind, StreamInfo, VmFailure, HISTOGRAM_BOUNDS,
};

/// What can go wrong driving a plugin.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `.wasm` file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The shared wasm engine could not be built.
    #[error("wasm engine: {0}")]
    Engine(String),
    /// The module could not be compiled or linked (not wasm, not proxy-wasm, an import the
    /// host does not provide, ...).
    #[error(transparent)]
    Load(#[from] meshgate_wasm::WasmError),
    /// The VM did not start: a trap in start-up, or `proxy_on_vm_start` or
    /// `proxy_on_configure` returning false (typically a configuration the plugin rejects).
    #[error("{error}{}", logged(.logs))]
    Start {
        /// What the runtime reported.
        error: meshgate_wasm::WasmError,
        /// What the plugin logged while starting (usually why it refused).
        logs: Vec<LogLine>,
    },
    /// The VM failed (trap, deadline, memory cap, bad return value), now or earlier.
    #[error("the plugin's VM failed: {0}")]
    Vm(#[from] VmFailure),
    /// A header the test passed is not valid HTTP.
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader {
        /// The header name.
        name: String,
        /// Why.
        reason: String,
    },
    /// No callout with this token is waiting for an answer.
    #[error("no pending callout with token {0}")]
    NoSuchCallout(u32),
    /// No shared queue of this name exists in the plugin's vm id.
    #[error("no shared queue {0:?}")]
    NoSuchQueue(String),
    /// The shared queue refused the item (it is full).
    #[error("shared queue {0:?} refused the item")]
    QueueFull(String),
    /// The stream has ended ([`Stream::end`]) or was closed by the plugin.
    #[error("the stream has ended")]
    StreamEnded,
}

fn logged(logs: &[LogLine]) -> String {
    logs.iter()
        .map(|l| format!("\n  plugin log ({:?}): {}", l.level, l.message))
        .collect()
}

/// The harness's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
