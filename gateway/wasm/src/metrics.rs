//! Metrics plugins define (`proxy_define_metric`): one process-wide registry, so every VM of
//! every worker that defines a name shares one value, as Envoy's stats do. Updates are atomics;
//! the registry's lock is taken only when a name is defined and when metrics are rendered.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The kinds a plugin can define.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Set to a value, or moved by a delta.
    Gauge,
    /// Recorded values.
    Histogram,
}

impl MetricKind {
    pub(crate) fn from_i32(v: i32) -> Option<MetricKind> {
        Some(match v {
            0 => MetricKind::Counter,
            1 => MetricKind::Gauge,
            2 => MetricKind::Histogram,
            _ => return None,
        })
    }
}

/// Upper bounds of the histogram buckets (Envoy's default bucket bounds).
pub const HISTOGRAM_BOUNDS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// One metric.
#[derive(Debug)]
pub struct Metric {
    /// The name the plugin gave.
    pub name: String,
    /// Its kind.
    pub kind: MetricKind,
    value: AtomicI64,
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Metric {
    fn new(name: String, kind: MetricKind) -> Metric {
        let n = if kind == MetricKind::Histogram {
            HISTOGRAM_BOUNDS.len() + 1
        } else {
            0
        };
        Metric {
            name,
            kind,
            value: AtomicI64::new(0),
            buckets: (0..n).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    /// Counter or gauge value (a histogram: its count).
    pub fn value(&self) -> i64 {
        self.value.load(Ordering::Relaxed)
    }

    pub(crate) fn increment(&self, by: i64) {
        self.value.fetch_add(by, Ordering::Relaxed);
    }

    pub(crate) fn set(&self, v: i64) {
        self.value.store(v, Ordering::Relaxed);
    }

    pub(crate) fn record(&self, v: u64) {
        let i = HISTOGRAM_BOUNDS
            .iter()
            .position(|b| (v as f64) <= *b)
            .unwrap_or(HISTOGRAM_BOUNDS.len());
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(v, Ordering::Relaxed);
        self.value.fetch_add(1, Ordering::Relaxed);
    }

    /// Histogram: the count in each bucket (not cumulative; the last is past every bound),
    /// and the sum of recorded values.
    pub fn histogram(&self) -> (Vec<u64>, u64) {
        (
            self.buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            self.sum.load(Ordering::Relaxed),
        )
    }
}

/// Every metric any plugin defined, by name.
#[derive(Debug, Default)]
pub struct MetricRegistry {
    by_name: Mutex<BTreeMap<(String, u8), Arc<Metric>>>,
}

impl MetricRegistry {
    /// The metric `name` of `kind`, created on first definition.
    pub(crate) fn define(&self, name: &str, kind: MetricKind) -> Arc<Metric> {
        let mut map = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((name.to_owned(), kind as u8))
            .or_insert_with(|| Arc::new(Metric::new(name.to_owned(), kind)))
            .clone()
    }

    /// Every metric, sorted by name.
    pub fn all(&self) -> Vec<Arc<Metric>> {
        let map = self.by_name.lock().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }
}
