//! Envoy's circuit breakers for one cluster (Istio `connectionPool`): connections, pending
//! requests, active requests and active retries, shared by every worker as atomics.
//!
//! Each admission is an RAII guard that gives its slot back when dropped; a refusal counts
//! Envoy's overflow stat. No lock and no allocation: a guard is one `Arc` clone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meshgate_config::model::destination_rule::ConnectionPoolSettings;

use super::cluster::StatValue;

/// Istio's (and Envoy's) limit when a field is unset: effectively unlimited.
pub const UNLIMITED: u64 = u32::MAX as u64;
/// Envoy's default upstream idle timeout (`common_http_protocol_options.idle_timeout`).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// Istio's default `connectTimeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The four thresholds of Envoy's default-priority circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `tcp.maxConnections` (Envoy `max_connections`).
    pub max_connections: u64,
    /// `http.http1MaxPendingRequests` (Envoy `max_pending_requests`).
    pub max_pending_requests: u64,
    /// `http.http2MaxRequests` (Envoy `max_requests`).
    pub max_requests: u64,
    /// `http.maxRetries` (Envoy `max_retries`).
    pub max_retries: u64,
}

/// TCP keepalive on upstream sockets (`tcp.tcpKeepalive`); `None` leaves the OS default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Keepalive {
    /// Idle time before the first probe.
    pub time: Option<Duration>,
    /// Time between probes.
    pub interval: Option<Duration>,
    /// Unanswered probes before the connection is dropped.
    pub probes: Option<u32>,
}

/// Per-connection settings the worker pools apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// `tcp.connectTimeout`.
    pub connect_timeout: Duration,
    /// `http.maxRequestsPerConnection` (`None`: unlimited).
    pub max_requests_per_connection: Option<u32>,
    /// `http.idleTimeout`: a connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// `tcp.maxConnectionDuration`: a connection is drained once this old.
    pub max_connection_duration: Option<Duration>,
    /// `tcp.tcpKeepalive`.
    pub keepalive: Option<Keepalive>,
    /// `http.maxConcurrentStreams`: streams in flight on one HTTP/2 connection before another
    /// connection is opened (`None`: unlimited).
    pub max_concurrent_streams: Option<u32>,
}

fn limit(v: i32) -> u64 {
    u64::try_from(v)
        .ok()
        .filter(|v| *v > 0)
        .unwrap_or(UNLIMITED)
}

fn duration(d: Option<meshgate_config::model::common::Duration>) -> Option<Duration> {
    d.and_then(|d| d.to_std()).filter(|d| !d.is_zero())
}

impl Limits {
    /// Istio's translation of `connectionPool` into thresholds (unset or 0: unlimited).
    pub fn from_policy(p: Option<&ConnectionPoolSettings>) -> Limits {
        let tcp = p.and_then(|p| p.tcp.as_ref());
        let http = p.and_then(|p| p.http.as_ref());
        Limits {
            max_connections: limit(tcp.map_or(0, |t| t.max_connections)),
            max_pending_requests: limit(http.map_or(0, |h| h.http1_max_pending_requests)),
            max_requests: limit(http.map_or(0, |h| h.http2_max_requests)),
            max_retries: limit(http.map_or(0, |h| h.max_retries)),
        }
    }
}

impl PoolSettings {
    /// Istio's translation of `connectionPool` into upstream connection settings.
    pub fn from_policy(p: Option<&ConnectionPoolSettings>) -> PoolSettings {
        let tcp = p.and_then(|p| p.tcp.as_ref());
        let http = p.and_then(|p| p.http.as_ref());
        PoolSettings {
            connect_timeout: duration(tcp.and_then(|t| t.connect_timeout))
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            max_requests_per_connection: http
                .and_then(|h| u32::try_from(h.max_requests_per_connection).ok())
                .filter(|n| *n > 0),
            idle_timeout: duration(http.and_then(|h| h.idle_timeout))
                .unwrap_or(DEFAULT_IDLE_TIMEOUT),
            max_connection_duration: duration(tcp.and_then(|t| t.max_connection_duration)),
            keepalive: tcp
                .and_then(|t| t.tcp_keepalive.as_ref())
                .map(|k| Keepalive {
                    time: duration(k.time),
                    interval: duration(k.interval),
                    probes: Some(k.probes).filter(|p| *p > 0),
                }),
            max_concurrent_streams: http
                .and_then(|h| u32::try_from(h.max_concurrent_streams).ok())
                .filter(|n| *n > 0),
        }
    }
}

/// A gauge with a limit.
#[derive(Debug, Default)]
struct Slot(AtomicU64);

impl Slot {
    fn try_acquire(&self, max: u64) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The circuit breakers, gauges and overflow counters of one cluster.
#[derive(Debug)]
pub struct Circuit {
    /// Unique per cluster state: keeps worker pools of different clusters apart.
    pub id: u64,
    /// Thresholds.
    pub limits: Limits,
    /// Settings for the connections of this cluster.
    pub settings: PoolSettings,
    cx_active: Slot,
    rq_pending_active: Slot,
    rq_active: Slot,
    rq_retry_active: Slot,
    cx_overflow: AtomicU64,
    rq_pending_overflow: AtomicU64,
    rq_active_overflow: AtomicU64,
    rq_retry_overflow: AtomicU64,
    cx_max_requests: AtomicU64,
    cx_idle_timeout: AtomicU64,
    cx_max_duration_reached: AtomicU64,
}

/// Which slot a guard holds.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Connection,
    Pending,
    Request,
    Retry,
}

/// Holds one slot of a circuit breaker; gives it back when dropped.
#[derive(Debug)]
#[must_use = "the slot is released when the guard drops"]
pub struct Guard {
    circuit: Arc<Circuit>,
    kind: Kind,
}

/// An admitted retry (`http.maxRetries`): hold it for as long as the retry is outstanding
/// (its backoff and its attempt), as Envoy does.
pub type RetryGuard = Guard;

impl Drop for Guard {
    fn drop(&mut self) {
        let slot = match self.kind {
            Kind::Connection => &self.circuit.cx_active,
            Kind::Pending => &self.circuit.rq_pending_active,
            Kind::Request => &self.circuit.rq_active,
            Kind::Retry => &self.circuit.rq_retry_active,
        };
        slot.0.fetch_sub(1, Ordering::AcqRel);
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Envoy's per-connection events counted on the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CxEvent {
    /// Closed after `maxRequestsPerConnection` requests (`upstream_cx_max_requests`).
    MaxRequests,
    /// Closed for being idle (`upstream_cx_idle_timeout`).
    IdleTimeout,
    /// Drained at `maxConnectionDuration` (`upstream_cx_max_duration_reached`).
    MaxDuration,
}

impl Circuit {
    /// The breakers for a cluster with this `connectionPool`.
    pub fn new(p: Option<&ConnectionPoolSettings>) -> Circuit {
        Circuit {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            limits: Limits::from_policy(p),
            settings: PoolSettings::from_policy(p),
            cx_active: Slot::default(),
            rq_pending_active: Slot::default(),
            rq_active: Slot::default(),
            rq_retry_active: Slot::default(),
            cx_overflow: AtomicU64::new(0),
            rq_pending_overflow: AtomicU64::new(0),
            rq_active_overflow: AtomicU64::new(0),
            rq_retry_overflow: AtomicU64::new(0),
            cx_max_requests: AtomicU64::new(0),
            cx_idle_timeout: AtomicU64::new(0),
            cx_max_duration_reached: AtomicU64::new(0),
        }
    }

    fn guard(self: &Arc<Self>, kind: Kind) -> Guard {
        Guard {
            circuit: self.clone(),
            kind,
        }
    }

    /// A new connection within `max_connections`; `None` counts `upstream_cx_overflow`.
    pub fn try_connection(self: &Arc<Self>) -> Option<Guard> {
        if self.cx_active.try_acquire(self.limits.max_connections) {
            Some(self.guard(Kind::Connection))
        } else {
            self.cx_overflow.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// A connection over the limit: Envoy still opens one when a worker's pool for the
    /// endpoint has none at all, so its pending requests can progress.
    pub fn forced_connection(self: &Arc<Self>) -> Guard {
        self.cx_active.0.fetch_add(1, Ordering::AcqRel);
        self.guard(Kind::Connection)
    }

    /// A request waiting for a connection; `None` counts `upstream_rq_pending_overflow`.
    pub fn try_pending(self: &Arc<Self>) -> Option<Guard> {
        if self
            .rq_pending_active
            .try_acquire(self.limits.max_pending_requests)
        {
            Some(self.guard(Kind::Pending))
        } else {
            self.rq_pending_overflow.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// An active request; `None` counts `upstream_rq_active_overflow` (Envoy 1.40's name).
    pub fn try_request(self: &Arc<Self>) -> Option<Guard> {
        if self.rq_active.try_acquire(self.limits.max_requests) {
            Some(self.guard(Kind::Request))
        } else {
            self.rq_active_overflow.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// An outstanding retry; `None` counts `upstream_rq_retry_overflow`.
    pub fn try_retry(self: &Arc<Self>) -> Option<RetryGuard> {
        if self.rq_retry_active.try_acquire(self.limits.max_retries) {
            Some(self.guard(Kind::Retry))
        } else {
            self.rq_retry_overflow.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// Counts a connection event.
    pub fn count(&self, e: CxEvent) {
        let c = match e {
            CxEvent::MaxRequests => &self.cx_max_requests,
            CxEvent::IdleTimeout => &self.cx_idle_timeout,
            CxEvent::MaxDuration => &self.cx_max_duration_reached,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Envoy's stat names with their values: overflow and connection counters.
    pub fn counters(&self) -> [StatValue; 7] {
        let v = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            (
                "upstream_cx_overflow",
                v(&self.cx_overflow),
                "times the connection circuit breaker was open",
            ),
            (
                "upstream_rq_pending_overflow",
                v(&self.rq_pending_overflow),
                "requests refused by the pending requests circuit breaker",
            ),
            (
                "upstream_rq_active_overflow",
                v(&self.rq_active_overflow),
                "requests refused by the active requests circuit breaker",
            ),
            (
                "upstream_rq_retry_overflow",
                v(&self.rq_retry_overflow),
                "retries refused by the retry circuit breaker",
            ),
            (
                "upstream_cx_max_requests",
                v(&self.cx_max_requests),
                "connections closed at maxRequestsPerConnection",
            ),
            (
                "upstream_cx_idle_timeout",
                v(&self.cx_idle_timeout),
                "connections closed for being idle",
            ),
            (
                "upstream_cx_max_duration_reached",
                v(&self.cx_max_duration_reached),
                "connections drained at maxConnectionDuration",
            ),
        ]
    }

    /// Envoy's gauge names with their current values: what is active, and what is left
    /// under each threshold (Istio sets `track_remaining`).
    pub fn gauges(&self) -> [StatValue; 7] {
        let l = &self.limits;
        let left = |max: u64, slot: &Slot| max.saturating_sub(slot.get());
        [
            (
                "upstream_cx_active",
                self.cx_active.get(),
                "open connections",
            ),
            (
                "upstream_rq_pending_active",
                self.rq_pending_active.get(),
                "requests waiting for a connection",
            ),
            (
                "upstream_rq_active",
                self.rq_active.get(),
                "active requests",
            ),
            (
                "circuit_breakers_default_remaining_cx",
                left(l.max_connections, &self.cx_active),
                "connections left under maxConnections",
            ),
            (
                "circuit_breakers_default_remaining_pending",
                left(l.max_pending_requests, &self.rq_pending_active),
                "pending requests left under http1MaxPendingRequests",
            ),
            (
                "circuit_breakers_default_remaining_rq",
                left(l.max_requests, &self.rq_active),
                "requests left under http2MaxRequests",
            ),
            (
                "circuit_breakers_default_remaining_retries",
                left(l.max_retries, &self.rq_retry_active),
                "retries left under maxRetries",
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(yaml: &str) -> ConnectionPoolSettings {
        serde_json::from_value(serde_json::from_str::<serde_json::Value>(yaml).expect("json"))
            .expect("settings")
    }

    #[test]
    fn unset_is_unlimited_and_defaults_apply() {
        let c = Circuit::new(None);
        assert_eq!(c.limits.max_connections, UNLIMITED);
        assert_eq!(c.limits.max_retries, UNLIMITED);
        assert_eq!(c.settings.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        assert_eq!(c.settings.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(c.settings.max_requests_per_connection, None);
        assert_eq!(c.settings.keepalive, None);
    }

    #[test]
    fn guards_hold_and_release_slots_and_count_overflow() {
        let p = pool(
            r#"{"tcp": {"maxConnections": 1, "tcpKeepalive": {"time": "7s", "probes": 3}},
                "http": {"http2MaxRequests": 2, "http1MaxPendingRequests": 1, "maxRetries": 1,
                         "maxRequestsPerConnection": 5, "idleTimeout": "2s"}}"#,
        );
        let c = Arc::new(Circuit::new(Some(&p)));
        assert_eq!(c.settings.max_requests_per_connection, Some(5));
        assert_eq!(c.settings.idle_timeout, Duration::from_secs(2));
        let ka = c.settings.keepalive.expect("keepalive");
        assert_eq!(
            (ka.time, ka.interval, ka.probes),
            (Some(Duration::from_secs(7)), None, Some(3))
        );
        let r1 = c.try_request().expect("first");
        let r2 = c.try_request().expect("second");
        assert!(c.try_request().is_none());
        drop(r1);
        let _r3 = c.try_request().expect("a slot came back");
        drop(r2);
        let cx = c.try_connection().expect("one connection");
        assert!(c.try_connection().is_none());
        let forced = c.forced_connection();
        assert_eq!(c.gauges()[0].1, 2);
        drop((cx, forced));
        assert_eq!(c.gauges()[0].1, 0);
        let p1 = c.try_pending().expect("pending");
        assert!(c.try_pending().is_none());
        drop(p1);
        let t = c.try_retry().expect("retry");
        assert!(c.try_retry().is_none());
        drop(t);
        let counters: Vec<(&str, u64)> = c.counters().iter().map(|(n, v, _)| (*n, *v)).collect();
        assert_eq!(
            &counters[..4],
            &[
                ("upstream_cx_overflow", 1),
                ("upstream_rq_pending_overflow", 1),
                ("upstream_rq_active_overflow", 1),
                ("upstream_rq_retry_overflow", 1)
            ]
        );
        let g = c.gauges();
        assert_eq!((g[1].1, g[2].1), (0, 1), "one request still active");
        assert_eq!((g[3].1, g[4].1, g[5].1, g[6].1), (1, 1, 1, 1), "remaining");
    }
}
