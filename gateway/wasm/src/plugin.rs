//! A plugin as the host runs it: its configuration (root id, vm id, the configuration bytes
//! the guest reads, environment, limits), its compiled module, and the counters that report
//! how its VMs fare. One `Plugin` is shared by the plugin's VMs on every worker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::engine::CompiledModule;
use crate::metrics::MetricRegistry;
use crate::shared::SharedState;

/// How a plugin is to run.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// The plugin's name (`plugin_name` property, log prefix).
    pub name: String,
    /// The root id (WasmPlugin `pluginName`); selects the root context in multi-root modules.
    pub root_id: String,
    /// The VM id: plugins with the same one share shared data and queues.
    pub vm_id: String,
    /// What the guest reads as its plugin configuration (`proxy_on_configure`).
    pub configuration: Bytes,
    /// What the guest reads as its VM configuration (`proxy_on_vm_start`).
    pub vm_configuration: Bytes,
    /// Environment variables the guest sees through WASI (`vmConfig.env`).
    pub env: Vec<(String, String)>,
    /// Cap on the VM's linear memory, in bytes.
    pub memory_limit: usize,
    /// CPU deadline of one stream, tick or callout callback.
    pub callback_deadline: Duration,
    /// CPU deadline of VM start-up (`_initialize`, vm start, configure).
    pub start_deadline: Duration,
}

impl PluginConfig {
    /// A configuration with meshgate's defaults: 64 MiB of memory, 100 ms per callback,
    /// 1 s to start.
    pub fn new(name: impl Into<String>) -> PluginConfig {
        PluginConfig {
            name: name.into(),
            root_id: String::new(),
            vm_id: String::new(),
            configuration: Bytes::new(),
            vm_configuration: Bytes::new(),
            env: Vec::new(),
            memory_limit: 64 << 20,
            callback_deadline: Duration::from_millis(100),
            start_deadline: Duration::from_secs(1),
        }
    }
}

/// How a plugin's VMs have fared, over all workers.
#[derive(Debug, Default)]
pub struct PluginStats {
    /// VMs created.
    pub vm_starts: AtomicU64,
    /// VMs that failed to start.
    pub start_failures: AtomicU64,
    /// Guest traps.
    pub traps: AtomicU64,
    /// Callbacks stopped at their deadline.
    pub deadlines: AtomicU64,
    /// Callbacks that ran into the memory cap.
    pub memory_failures: AtomicU64,
    /// VMs replaced after a failure.
    pub recycles: AtomicU64,
    /// Linear memory of the plugin's live VMs, in bytes, summed over workers.
    pub memory_bytes: AtomicU64,
    /// How long its callbacks take, by callback.
    pub latency: Latency,
}

/// Upper bounds, in nanoseconds, of the callback latency buckets (exported in microseconds).
/// A small plugin's callbacks take a fraction of a microsecond, hence the bounds below 1 µs.
pub const LATENCY_BOUNDS_NS: [u64; 15] = [
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    5_000_000,
    25_000_000,
    100_000_000,
];

/// The callbacks latency is kept for, as their ABI names.
pub const CALLBACKS: [&str; 12] = [
    "proxy_on_request_headers",
    "proxy_on_request_body",
    "proxy_on_request_trailers",
    "proxy_on_response_headers",
    "proxy_on_response_body",
    "proxy_on_response_trailers",
    "proxy_on_log",
    "proxy_on_done",
    "proxy_on_http_call_response",
    "proxy_on_tick",
    "proxy_on_queue_ready",
    "proxy_on_context_create",
];

/// Latency histograms (bucket counts, sum in nanoseconds) per callback.
#[derive(Debug, Default)]
pub struct Latency {
    buckets: [[AtomicU64; LATENCY_BOUNDS_NS.len() + 1]; CALLBACKS.len()],
    sums: [AtomicU64; CALLBACKS.len()],
}

impl Latency {
    pub(crate) fn record(&self, callback: &str, d: std::time::Duration) {
        let i = match callback {
            "proxy_on_request_headers" => 0,
            "proxy_on_request_body" => 1,
            "proxy_on_request_trailers" => 2,
            "proxy_on_response_headers" => 3,
            "proxy_on_response_body" => 4,
            "proxy_on_response_trailers" => 5,
            "proxy_on_log" => 6,
            "proxy_on_done" => 7,
            "proxy_on_http_call_response" => 8,
            "proxy_on_tick" => 9,
            "proxy_on_queue_ready" => 10,
            "proxy_on_context_create" => 11,
            _ => return,
        };
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let b = LATENCY_BOUNDS_NS
            .iter()
            .position(|bound| ns <= *bound)
            .unwrap_or(LATENCY_BOUNDS_NS.len());
        self.buckets[i][b].fetch_add(1, Ordering::Relaxed);
        self.sums[i].fetch_add(ns, Ordering::Relaxed);
    }

    /// Per callback: its bucket counts (not cumulative; the last is past every bound) and the
    /// sum of its durations in nanoseconds. Callbacks never called are left out.
    pub fn snapshot(&self) -> Vec<(&'static str, Vec<u64>, u64)> {
        CALLBACKS
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let counts: Vec<u64> = self.buckets[i]
                    .iter()
                    .map(|b| b.load(Ordering::Relaxed))
                    .collect();
                (counts.iter().sum::<u64>() > 0)
                    .then(|| (*name, counts, self.sums[i].load(Ordering::Relaxed)))
            })
            .collect()
    }
}

impl PluginStats {
    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Counts a VM replaced after its failure (the host decides when to replace one).
    pub fn bump_recycle(&self) {
        Self::bump(&self.recycles);
    }

    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The parts every VM of a plugin shares.
#[derive(Debug)]
pub(crate) struct PluginShared {
    pub(crate) config: PluginConfig,
    pub(crate) module: CompiledModule,
    pub(crate) shared: Arc<SharedState>,
    pub(crate) metrics: Arc<MetricRegistry>,
    pub(crate) stats: PluginStats,
    /// The engine's epoch tick (deadlines are counted in it).
    pub(crate) epoch_tick: Duration,
    /// The engine's epoch clock (which VMs are in guest code).
    pub(crate) clock: Arc<crate::epoch::Clock>,
}

/// A loaded plugin: cheap to clone, shared by its VMs on every worker.
#[derive(Debug, Clone)]
pub struct Plugin(pub(crate) Arc<PluginShared>);

impl Plugin {
    /// Its configuration.
    pub fn config(&self) -> &PluginConfig {
        &self.0.config
    }

    /// Its module.
    pub fn module(&self) -> &CompiledModule {
        &self.0.module
    }

    /// Its VMs' counters.
    pub fn stats(&self) -> &PluginStats {
        &self.0.stats
    }

    /// The shared data and queues its VMs use.
    pub fn shared_state(&self) -> &Arc<SharedState> {
        &self.0.shared
    }

    /// The registry its metrics are defined in.
    pub fn metrics(&self) -> &Arc<MetricRegistry> {
        &self.0.metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_callback_with_latency_has_its_own_histogram() {
        let l = Latency::default();
        for (i, c) in CALLBACKS.iter().enumerate() {
            for _ in 0..=i {
                l.record(c, std::time::Duration::from_nanos(3_100));
            }
        }
        let snap = l.snapshot();
        assert_eq!(snap.len(), CALLBACKS.len());
        for (i, (name, counts, sum)) in snap.iter().enumerate() {
            assert_eq!(*name, CALLBACKS[i]);
            assert_eq!(counts.iter().sum::<u64>(), i as u64 + 1, "{name}");
            assert_eq!(*sum, 3_100 * (i as u64 + 1));
        }
    }

    #[test]
    fn durations_are_kept_to_the_nanosecond_and_bucketed_by_their_exact_value() {
        let l = Latency::default();
        let cb = "proxy_on_request_headers";
        // Under a microsecond, just under 2 µs (above the 1 µs bound), and past every bound.
        for ns in [180, 400, 1_900, 200_000_000] {
            l.record(cb, std::time::Duration::from_nanos(ns));
        }
        let snap = l.snapshot();
        let (_, counts, sum) = &snap[0];
        let at = |bound: u64| {
            let i = LATENCY_BOUNDS_NS.iter().position(|b| *b == bound);
            counts[i.expect("a bound of the histogram")]
        };
        assert_eq!(at(250), 1, "{counts:?}");
        assert_eq!(at(500), 1, "{counts:?}");
        assert_eq!(at(1_000), 0, "1.9 µs is not in the 1 µs bucket: {counts:?}");
        assert_eq!(at(2_500), 1, "{counts:?}");
        assert_eq!(counts.last().copied(), Some(1), "past every bound");
        assert_eq!(*sum, 180 + 400 + 1_900 + 200_000_000);
    }
}
