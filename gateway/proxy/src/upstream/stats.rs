//! Per-cluster counters with Envoy's stat names, shared by all workers (atomics), exported
//! on `/clusters` and `/stats/prometheus`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Per-cluster counters, exported on `/clusters` and `/stats/prometheus`.
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Requests forwarded.
    pub rq_total: AtomicU64,
    /// Responses with 5xx (upstream or local).
    pub rq_5xx: AtomicU64,
    /// Connection attempts that failed.
    pub cx_connect_fail: AtomicU64,
    /// Requests failed because there was no endpoint.
    pub no_healthy_upstream: AtomicU64,
    /// Requests that hit the route timeout.
    pub rq_timeout: AtomicU64,
    /// Retries made.
    pub rq_retry: AtomicU64,
    /// Requests that succeeded after a retry.
    pub rq_retry_success: AtomicU64,
    /// Requests that still failed when no retry was left.
    pub rq_retry_limit_exceeded: AtomicU64,
    /// Attempts that hit the per-try timeout.
    pub rq_per_try_timeout: AtomicU64,
}

/// One counter: Envoy's stat name, its value, a description.
pub type StatValue = (&'static str, u64, &'static str);

impl ClusterStats {
    /// Envoy's stat names with their current values and a description.
    pub fn values(&self) -> Vec<StatValue> {
        let v = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("upstream_rq_total", v(&self.rq_total), "requests forwarded"),
            ("upstream_rq_5xx", v(&self.rq_5xx), "5xx responses"),
            (
                "upstream_cx_connect_fail",
                v(&self.cx_connect_fail),
                "failed connection attempts",
            ),
            (
                "upstream_cx_none_healthy",
                v(&self.no_healthy_upstream),
                "requests with no endpoint to send to",
            ),
            (
                "upstream_rq_timeout",
                v(&self.rq_timeout),
                "requests that hit the route timeout",
            ),
            ("upstream_rq_retry", v(&self.rq_retry), "retries made"),
            (
                "upstream_rq_retry_success",
                v(&self.rq_retry_success),
                "requests that succeeded after a retry",
            ),
            (
                "upstream_rq_retry_limit_exceeded",
                v(&self.rq_retry_limit_exceeded),
                "requests that failed with no retry left",
            ),
            (
                "upstream_rq_per_try_timeout",
                v(&self.rq_per_try_timeout),
                "attempts that hit the per-try timeout",
            ),
        ]
    }
}
