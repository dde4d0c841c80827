//! Typed metric handles. Define them once (in `on_vm_start` or `on_configure`) and keep the
//! handle; updating is one host call with no allocation.
//!
//! The host exports them on `/stats/prometheus` under the name given here (Envoy prefixes
//! custom metrics with `wasmcustom`; meshgate shows them under the plain name, see the
//! gateway's docs). Defining a name twice returns the same metric.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{MetricType, Status};

/// A counter: only goes up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter(u32);

/// A gauge: goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gauge(u32);

/// A histogram of recorded values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Histogram(u32);

impl Counter {
    /// Defines (or finds) counter `name`.
    pub fn define(name: &str) -> Result<Counter, Status> {
        hostcalls::define_metric(MetricType::Counter, name).map(Counter)
    }

    /// Adds one.
    pub fn inc(self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(self, n: u64) {
        let _ = hostcalls::increment_metric(self.0, i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The current value (0 when the host cannot tell).
    pub fn value(self) -> u64 {
        hostcalls::get_metric(self.0).unwrap_or(0)
    }
}

impl Gauge {
    /// Defines (or finds) gauge `name`.
    pub fn define(name: &str) -> Result<Gauge, Status> {
        hostcalls::define_metric(MetricType::Gauge, name).map(Gauge)
    }

    /// Sets the value.
    pub fn set(self, value: u64) {
        let _ = hostcalls::record_metric(self.0, value);
    }

    /// Adds `delta` (which may be negative).
    pub fn add(self, delta: i64) {
        let _ = hostcalls::increment_metric(self.0, delta);
    }

    /// The current value (0 when the host cannot tell).
    pub fn value(self) -> u64 {
        hostcalls::get_metric(self.0).unwrap_or(0)
    }
}

impl Histogram {
    /// Defines (or finds) histogram `name`.
    pub fn define(name: &str) -> Result<Histogram, Status> {
        hostcalls::define_metric(MetricType::Histogram, name).map(Histogram)
    }

    /// Records one value.
    pub fn record(self, value: u64) {
        let _ = hostcalls::record_metric(self.0, value);
    }
}
