//! Live state of one cluster: its resolved endpoints, load balancer and counters.
//!
//! Shared by all workers through `Arc`; everything mutable is an atomic or an `ArcSwap`, so
//! picking an endpoint takes no lock.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use meshgate_config::model::destination_rule::SimpleLb;
use meshgate_config::snapshot::cluster::{Cluster, UpstreamProtocol};

use super::circuit::{Circuit, RetryGuard};
use super::lb::{self, HashPolicy, LbKind, Ring};
use super::outlier::{AttemptResult, Detector, EndpointOutlier, Settings};

/// One endpoint with its in-flight request count.
#[derive(Debug)]
pub struct LiveEndpoint {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Load-balancing weight (>= 1).
    pub weight: u32,
    /// Requests in flight to this endpoint (for LEAST_REQUEST).
    pub active: AtomicU32,
    /// Requests sent to this endpoint.
    pub requests: AtomicU64,
    /// Outlier detection state (counters, ejection).
    pub outlier: EndpointOutlier,
}

/// The endpoints of a cluster at one moment, with the hash ring built for them.
#[derive(Debug, Default)]
pub struct EndpointSet {
    /// Endpoints in a stable order.
    pub endpoints: Vec<Arc<LiveEndpoint>>,
    /// Ring hash or Maglev table, when the cluster hashes.
    pub ring: Option<Ring>,
    /// True when all weights are equal (fast paths).
    pub uniform: bool,
}

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

/// Live state of one cluster.
#[derive(Debug)]
pub struct ClusterState {
    /// The compiled config of the cluster.
    pub config: Arc<Cluster>,
    /// Current endpoints.
    pub endpoints: ArcSwap<EndpointSet>,
    /// The endpoints picks choose from: `endpoints` without the ejected ones.
    routable: ArcSwap<EndpointSet>,
    /// Outlier detection, when the policy asks for it.
    pub outlier: Option<Detector>,
    /// The balancing algorithm.
    pub lb: LbKind,
    /// Where the hash key comes from (consistent hashing only).
    pub hash_policy: Option<HashPolicy>,
    /// Counters.
    pub stats: ClusterStats,
    /// The service host, shared with every request's metrics key.
    pub host: Arc<str>,
    /// Circuit breakers and connection settings (`connectionPool`).
    pub circuit: Arc<Circuit>,
    rr: AtomicUsize,
}

impl ClusterState {
    /// New state for `config`, with no endpoints until resolved.
    pub fn new(config: Arc<Cluster>) -> Self {
        let lbs = config.policy.load_balancer.as_ref();
        let (lb, hash_policy) = match lbs.and_then(|l| l.consistent_hash.as_ref()) {
            Some(ch) => lb::consistent_hash(ch),
            None => (
                match lbs.and_then(|l| l.simple) {
                    Some(SimpleLb::RoundRobin) => LbKind::RoundRobin,
                    Some(SimpleLb::Random) => LbKind::Random,
                    Some(SimpleLb::Passthrough) => LbKind::Random,
                    // Istio's default is LEAST_REQUEST (LEAST_CONN is its old name).
                    _ => LbKind::LeastRequest,
                },
                None,
            ),
        };
        let host: Arc<str> = Arc::from(config.host.as_str());
        let outlier = (config.policy.outlier_detection.as_ref())
            .map(|od| Detector::new(Settings::from_istio(od)));
        let circuit = Arc::new(Circuit::new(config.policy.connection_pool.as_ref()));
        let state = ClusterState {
            config,
            endpoints: ArcSwap::from_pointee(EndpointSet::default()),
            routable: ArcSwap::from_pointee(EndpointSet::default()),
            outlier,
            lb,
            hash_policy,
            stats: ClusterStats::default(),
            host,
            circuit,
            rr: AtomicUsize::new(0),
        };
        // IP endpoints are known at once; names wait for the DNS refresher.
        let ips: Vec<(SocketAddr, u32)> = state
            .config
            .endpoints
            .iter()
            .filter_map(|e| {
                let ip = e.address.parse::<IpAddr>().ok()?;
                Some((SocketAddr::new(ip, e.port), e.weight))
            })
            .collect();
        if !ips.is_empty() {
            state.set_endpoints(ips);
        }
        state
    }

    /// True when `c` would produce the same live state (so the old state can be kept).
    pub fn same_config(&self, c: &Cluster) -> bool {
        self.config.discovery == c.discovery
            && self.config.endpoints == c.endpoints
            && self.config.policy == c.policy
            && self.config.protocol == c.protocol
    }

    /// Admits one retry under `http.maxRetries`; `None` is an overflow (counted as
    /// `upstream_rq_retry_overflow`): do not retry. Hold the guard until the retry is over.
    pub fn try_retry(&self) -> Option<RetryGuard> {
        self.circuit.try_retry()
    }

    /// Upstream protocol.
    pub fn protocol(&self) -> UpstreamProtocol {
        self.config.protocol
    }

    /// Replaces the endpoints (keeping in-flight counts of endpoints that stay).
    pub fn set_endpoints(&self, addrs: Vec<(SocketAddr, u32)>) {
        let old = self.endpoints.load();
        let endpoints: Vec<Arc<LiveEndpoint>> = addrs
            .into_iter()
            .map(|(addr, weight)| {
                old.endpoints
                    .iter()
                    .find(|e| e.addr == addr && e.weight == weight)
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(LiveEndpoint {
                            addr,
                            weight: weight.max(1),
                            active: AtomicU32::new(0),
                            requests: AtomicU64::new(0),
                            outlier: EndpointOutlier::default(),
                        })
                    })
            })
            .collect();
        let same = endpoints.len() == old.endpoints.len()
            && endpoints
                .iter()
                .zip(old.endpoints.iter())
                .all(|(a, b)| Arc::ptr_eq(a, b));
        if same {
            return;
        }
        let uniform = endpoints.windows(2).all(|w| w[0].weight == w[1].weight);
        let ring = lb::build_ring(self.lb, &endpoints);
        let set = Arc::new(EndpointSet {
            endpoints,
            ring,
            uniform,
        });
        let _health = self.outlier.as_ref().map(Detector::lock);
        self.endpoints.store(set.clone());
        if let Some(d) = &self.outlier {
            d.count_active(&set.endpoints);
        }
        self.route(&set);
    }

    /// Recomputes the endpoints picks choose from (health lock held, if any).
    fn route(&self, set: &Arc<EndpointSet>) {
        let view = match &self.outlier {
            Some(d) => d.routable(set, self.lb),
            None => set.clone(),
        };
        self.routable.store(view);
    }

    /// Picks an endpoint (never an ejected one unless in panic); `hash` is the request's hash
    /// key for consistent hashing.
    pub fn pick(&self, hash: Option<u64>) -> Option<Arc<LiveEndpoint>> {
        let set = self.routable.load();
        lb::pick(self.lb, &set, &self.rr, hash).cloned()
    }

    /// Reports how an attempt to `ep` ended, for outlier detection. Lock-free unless the
    /// result makes `ep` an outlier.
    pub fn report(&self, ep: &Arc<LiveEndpoint>, result: AttemptResult) {
        let Some(d) = &self.outlier else {
            return;
        };
        for kind in d.record(&ep.outlier, result).into_iter().flatten() {
            let _health = d.lock();
            let set = self.endpoints.load_full();
            if d.eject(&set.endpoints, ep, kind) {
                self.route(&set);
            }
        }
    }

    /// Runs the outlier sweep if due; returns the time until the next one (None: no outlier
    /// detection).
    pub fn outlier_sweep(&self) -> Option<std::time::Duration> {
        let d = self.outlier.as_ref()?;
        let _health = d.lock();
        let set = self.endpoints.load_full();
        let (changed, next) = d.sweep(&set.endpoints);
        if changed {
            self.route(&set);
        }
        Some(next)
    }

    /// Counts a request as started on `ep`; the guard ends it.
    pub fn start(ep: &Arc<LiveEndpoint>) -> ActiveRequest {
        ep.active.fetch_add(1, Ordering::Relaxed);
        ep.requests.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(ep.clone())
    }
}

/// Decrements an endpoint's in-flight count when dropped.
#[derive(Debug)]
pub struct ActiveRequest(Arc<LiveEndpoint>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}
