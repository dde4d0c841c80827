//! Istio-standard metrics: `istio_requests_total` and `istio_request_duration_milliseconds`
//! with Istio's labels and buckets, plus per-cluster counters, rendered for Prometheus.
//!
//! Workers keep their own handle cache, so recording a request hashes a small key in a
//! worker-local map and bumps atomics: no shared lock on the request path.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::live::Live;
use crate::upstream::cluster::StatValue;

/// Istio's buckets for request duration (milliseconds).
pub const DURATION_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Istio's standard label names, in the order values are given.
const LABELS: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_canonical_service",
    "source_canonical_revision",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

/// Who this gateway is, for the `source_*` labels.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Workload name (e.g. `istio-ingressgateway`).
    pub workload: String,
    /// Namespace.
    pub namespace: String,
}

/// The process's metric families.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    identity: std::sync::OnceLock<Identity>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers the families.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "istio_requests_total",
                "Requests handled, by Istio's standard labels",
            ),
            &LABELS,
        )
        .expect("static metric definition");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "istio_request_duration_milliseconds",
                "Request duration in milliseconds, by Istio's standard labels",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &LABELS,
        )
        .expect("static metric definition");
        registry
            .register(Box::new(requests.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(duration.clone()))
            .expect("unique metric");
        Metrics {
            registry,
            requests,
            duration,
            identity: std::sync::OnceLock::new(),
        }
    }

    /// Sets the gateway's identity (once, at start-up).
    pub fn set_identity(&self, id: Identity) {
        let _ = self.identity.set(id);
    }

    /// Prometheus text for everything: Istio families, then per-cluster counters and gauges of `live`.
    pub fn render(&self, live: &Live) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        let mut out = String::from_utf8_lossy(&buf).into_owned();
        let mut names: Vec<_> = live.clusters.keys().collect();
        names.sort();
        // Per cluster: each stat with its Prometheus type.
        let per_cluster: Vec<(&Arc<str>, Vec<Typed>)> = names
            .iter()
            .map(|n| {
                let c = &live.clusters[*n];
                let counters = c.stats.values().into_iter().chain(c.circuit.counters());
                let mut v: Vec<Typed> = counters.map(|s| (s, "counter")).collect();
                v.extend(c.circuit.gauges().into_iter().map(|s| (s, "gauge")));
                (*n, v)
            })
            .collect();
        families(&mut out, "envoy_cluster_", &per_cluster);
        // Envoy creates these only for clusters with outlier detection.
        let outlier: Vec<(&Arc<str>, Vec<Typed>)> = names
            .iter()
            .filter_map(|n| {
                let stats = live.clusters[*n].outlier.as_ref()?.stats.values();
                let typed = stats
                    .iter()
                    .map(|&(stat, v, help, gauge)| {
                        ((stat, v, help), if gauge { "gauge" } else { "counter" })
                    })
                    .collect();
                Some((*n, typed))
            })
            .collect();
        families(&mut out, "envoy_cluster_outlier_detection_", &outlier);
        out
    }
}

/// A stat with its Prometheus type (`counter` or `gauge`).
type Typed = (StatValue, &'static str);

/// One Prometheus family per stat, a line per cluster (every cluster lists the same stats).
fn families(out: &mut String, prefix: &str, per_cluster: &[(&Arc<str>, Vec<Typed>)]) {
    let Some((_, first)) = per_cluster.first() else {
        return;
    };
    for (k, &((stat, _, help), kind)) in first.iter().enumerate() {
        out.push_str(&format!(
            "# HELP {prefix}{stat} Per-cluster {help}.\n# TYPE {prefix}{stat} {kind}\n"
        ));
        for (name, values) in per_cluster {
            if let Some(((_, v, _), _)) = values.get(k) {
                out.push_str(&format!("{prefix}{stat}{{cluster_name=\"{name}\"}} {v}\n"));
            }
        }
    }
}

/// What one request contributes to the Istio metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestKey {
    /// Destination service host (FQDN), or `unknown`.
    pub service: Arc<str>,
    /// Status code sent downstream.
    pub code: u16,
    /// `http` or `grpc`.
    pub grpc: bool,
    /// Envoy response flags (`-` when none).
    pub flags: &'static str,
}

/// A worker's cache of label handles.
#[derive(Default)]
pub struct LocalMetrics {
    handles: RefCell<
        HashMap<RequestKey, (prometheus::IntCounter, prometheus::Histogram), crate::live::FastHash>,
    >,
}

impl LocalMetrics {
    /// Records one finished request.
    pub fn record(&self, m: &Metrics, key: RequestKey, millis: f64) {
        let mut handles = self.handles.borrow_mut();
        if let Some((c, h)) = handles.get(&key) {
            c.inc();
            h.observe(millis);
            return;
        }
        let values = label_values(m, &key);
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let c = m.requests.with_label_values(&refs);
        let h = m.duration.with_label_values(&refs);
        c.inc();
        h.observe(millis);
        handles.insert(key, (c, h));
    }
}

fn label_values(m: &Metrics, k: &RequestKey) -> Vec<String> {
    let unknown = || "unknown".to_owned();
    let id = m.identity.get();
    let svc = k.service.to_string();
    // `name.namespace.svc.<suffix>` gives name and namespace; other hosts only a name.
    let mut parts = svc.split('.');
    let (svc_name, svc_ns) = match (parts.next(), parts.next(), parts.next()) {
        (Some(n), Some(ns), Some("svc")) => (n.to_owned(), ns.to_owned()),
        _ => (svc.clone(), unknown()),
    };
    let workload = id.map_or_else(unknown, |i| i.workload.clone());
    vec![
        "source".into(),
        workload.clone(),
        id.map_or_else(unknown, |i| i.namespace.clone()),
        unknown(),
        workload.clone(),
        unknown(),
        workload,
        "latest".into(),
        unknown(),
        unknown(),
        unknown(),
        unknown(),
        unknown(),
        unknown(),
        svc.clone(),
        svc_name.clone(),
        svc_ns,
        svc_name,
        "latest".into(),
        unknown(),
        if k.grpc { "grpc" } else { "http" }.into(),
        k.code.to_string(),
        "-".into(),
        k.flags.into(),
        "unknown".into(),
    ]
}
