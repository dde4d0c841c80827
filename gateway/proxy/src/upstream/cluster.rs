//! Live state of one cluster: its resolved endpoints, load balancer and counters.
//!
//! Shared by all workers through `Arc`; everything mutable is an atomic or an `ArcSwap`, so
//! picking an endpoint takes no lock.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use meshgate_config::model::destination_rule::{LoadBalancerSettings, SimpleLb};
use meshgate_config::snapshot::cluster::{Cluster, UpstreamProtocol};

use super::circuit::{Circuit, RetryGuard};
use super::lb::{self, HashPolicy, LbKind, Ring};
use super::locality::{self, Node, Plan};
use super::outlier::{AttemptResult, Detector, EndpointOutlier, Settings};
use super::pool::Proto;
pub use super::stats::{ClusterStats, StatValue};
use routable::Level;
pub use routable::Routable;

mod routable;

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
    /// Priority level (locality failover; 0 first).
    pub priority: u32,
    /// Locality group (index into the cluster's locality plan).
    pub group: u32,
    /// The config endpoint it comes from (index into the cluster's endpoints).
    pub source: usize,
    /// When it joined a cluster that already had endpoints (slow start); `None` for the
    /// endpoints a cluster starts with.
    pub joined: Option<Instant>,
}

impl LiveEndpoint {
    /// An endpoint at `addr` with `weight`, priority 0, not warming up.
    pub fn new(addr: SocketAddr, weight: u32) -> Self {
        LiveEndpoint {
            addr,
            weight: weight.max(1),
            active: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            outlier: EndpointOutlier::default(),
            priority: 0,
            group: 0,
            source: 0,
            joined: None,
        }
    }
}

/// The endpoints of a cluster at one moment, with the hash ring built for them.
#[derive(Debug, Default)]
pub struct EndpointSet {
    /// Endpoints in a stable order.
    pub endpoints: Vec<Arc<LiveEndpoint>>,
    /// The weight each endpoint balances with (its own, or scaled by slow start).
    pub weights: Vec<u32>,
    /// Sum of `weights`.
    pub total: u64,
    /// Step through the weighted round-robin sequence (coprime with `total`), so endpoints
    /// interleave instead of taking their weight in a row.
    pub stride: u64,
    /// Ring hash or Maglev table, when the cluster hashes.
    pub ring: Option<Ring>,
    /// True when all weights are equal (fast paths).
    pub uniform: bool,
}

impl EndpointSet {
    /// The set of `endpoints` with their own weights.
    pub fn new(endpoints: Vec<Arc<LiveEndpoint>>, kind: LbKind) -> Self {
        let weights = endpoints.iter().map(|e| e.weight.max(1)).collect();
        Self::weighted(endpoints, weights, kind)
    }

    /// The set of `endpoints` balancing with `weights` (same length).
    pub fn weighted(endpoints: Vec<Arc<LiveEndpoint>>, weights: Vec<u32>, kind: LbKind) -> Self {
        let uniform = weights.windows(2).all(|w| w[0] == w[1]);
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        let ring = lb::build_ring(kind, &endpoints);
        EndpointSet {
            endpoints,
            weights,
            total,
            stride: lb::stride(total),
            ring,
            uniform,
        }
    }
}

/// Slow start (`warmup` / `warmupDurationSecs`) as Envoy's `slow_start_config`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Warmup {
    /// The window during which a new endpoint's weight ramps up.
    pub window: Duration,
    /// Lowest weight factor (Envoy's `min_weight_percent` / 100; default 0.1).
    pub min_factor: f64,
    /// Ramp shape: factor = time_fraction ^ (1 / aggression).
    pub aggression: f64,
}

impl Warmup {
    /// Istio's translation for a balancer that supports slow start (round robin, least
    /// request); `None` when no window is set.
    fn from_istio(lb: &LoadBalancerSettings) -> Option<Warmup> {
        let (window, min, aggression) = match (&lb.warmup, lb.warmup_duration_secs) {
            (Some(w), _) => (w.duration, w.minimum_percent, w.aggression),
            (None, d) => (d, None, None),
        };
        let window = window.and_then(|d| d.to_std()).filter(|d| !d.is_zero())?;
        Some(Warmup {
            window,
            min_factor: (min.unwrap_or(10.0) / 100.0).clamp(0.0, 1.0),
            aggression: aggression
                .filter(|a| *a > 0.0 && a.is_finite())
                .unwrap_or(1.0),
        })
    }

    /// Weight factor of an endpoint `elapsed` into its window (None: out of it).
    pub fn factor(&self, elapsed: Duration) -> Option<f64> {
        if elapsed >= self.window {
            return None;
        }
        let ms = (elapsed.as_secs_f64() * 1000.0).max(1.0);
        let time = ms / (self.window.as_secs_f64() * 1000.0);
        Some(time.powf(1.0 / self.aggression).max(self.min_factor))
    }
}

/// Scale of slow-start weights (a weight of 1 becomes 1000 while any endpoint warms up).
const WARMUP_SCALE: f64 = 1000.0;
/// Envoy's default overprovisioning factor (percent); Istio does not change it.
const OVERPROVISIONING: u64 = 140;
/// How often weights are recomputed while an endpoint warms up.
const WARMUP_TICK: Duration = Duration::from_millis(100);

/// A resolved endpoint: address, weight and the index of the config endpoint it comes from.
pub type Resolved = (SocketAddr, u32, usize);

/// Live state of one cluster.
#[derive(Debug)]
pub struct ClusterState {
    /// The compiled config of the cluster.
    pub config: Arc<Cluster>,
    /// Current endpoints.
    pub endpoints: ArcSwap<EndpointSet>,
    /// The endpoints picks choose from: `endpoints` by priority and locality, without the
    /// ejected ones.
    routable: ArcSwap<Routable>,
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
    /// Priorities and locality weights of the config endpoints.
    pub plan: Plan,
    /// Slow start of endpoints that join later.
    pub warmup: Option<Warmup>,
    rr: AtomicUsize,
    /// Serialises recomputing `routable` (never taken by a pick).
    rebuild: Mutex<()>,
    /// Some endpoint is within its slow-start window.
    warming: AtomicBool,
    /// Endpoints were installed once (later ones warm up).
    started: AtomicBool,
    /// When the endpoints of the state this one replaces joined (carried on a config swap).
    inherited: Mutex<Vec<(SocketAddr, Option<Instant>)>>,
}

impl ClusterState {
    /// New state for `config` as the gateway `node` sees it, with no endpoints until resolved.
    /// `previous` is the state of the same cluster before a config change: endpoints it had
    /// keep their slow-start clock, new ones warm up.
    pub fn new(config: Arc<Cluster>, node: &Node, previous: Option<&ClusterState>) -> Self {
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
        let warmup = lbs
            .filter(|_| matches!(lb, LbKind::RoundRobin | LbKind::LeastRequest))
            .and_then(Warmup::from_istio);
        let host: Arc<str> = Arc::from(config.host.as_str());
        let outlier = (config.policy.outlier_detection.as_ref())
            .map(|od| Detector::new(Settings::from_istio(od)));
        let circuit = Arc::new(Circuit::new(config.policy.connection_pool.as_ref()));
        let plan = locality::plan(&config, node);
        let inherited: Vec<(SocketAddr, Option<Instant>)> = previous
            .map(|p| {
                p.endpoints
                    .load()
                    .endpoints
                    .iter()
                    .map(|e| (e.addr, e.joined))
                    .collect()
            })
            .unwrap_or_default();
        let state = ClusterState {
            config,
            endpoints: ArcSwap::from_pointee(EndpointSet::default()),
            routable: ArcSwap::from_pointee(Routable::default()),
            outlier,
            lb,
            hash_policy,
            stats: ClusterStats::default(),
            host,
            circuit,
            plan,
            warmup,
            rr: AtomicUsize::new(0),
            rebuild: Mutex::new(()),
            warming: AtomicBool::new(false),
            started: AtomicBool::new(previous.is_some_and(|p| p.started.load(Ordering::Relaxed))),
            inherited: Mutex::new(inherited),
        };
        // IP endpoints are known at once; names wait for the DNS refresher.
        let ips: Vec<Resolved> = state
            .config
            .endpoints
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                let ip = e.address.parse::<IpAddr>().ok()?;
                Some((SocketAddr::new(ip, e.port), e.weight, i))
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

    /// The wire protocol towards the endpoints for a request that came over `downstream`:
    /// the cluster's own, or the client's with `connectionPool.http.useClientProtocol`.
    pub fn wire_protocol(&self, downstream: http::Version) -> Proto {
        let client = self
            .config
            .policy
            .connection_pool
            .as_ref()
            .and_then(|p| p.http.as_ref())
            .is_some_and(|h| h.use_client_protocol);
        if client {
            return match downstream {
                http::Version::HTTP_2 => Proto::Http2,
                _ => Proto::Http1,
            };
        }
        match self.config.protocol {
            UpstreamProtocol::Http2 => Proto::Http2,
            _ => Proto::Http1,
        }
    }

    /// Replaces the endpoints (keeping in-flight counts of endpoints that stay). Endpoints
    /// `distribute` dropped are left out.
    pub fn set_endpoints(&self, addrs: Vec<Resolved>) {
        let old = self.endpoints.load();
        let first = !self.started.swap(true, Ordering::Relaxed);
        let inherited = std::mem::take(&mut *lock(&self.inherited));
        let now = Instant::now();
        let endpoints: Vec<Arc<LiveEndpoint>> = addrs
            .into_iter()
            .filter_map(|(addr, weight, source)| {
                let place = self.plan.placements.get(source).copied().flatten()?;
                let weight = weight.max(1);
                let kept = old.endpoints.iter().find(|e| {
                    e.addr == addr
                        && e.weight == weight
                        && e.priority == place.priority
                        && e.group == place.group
                });
                Some(kept.cloned().unwrap_or_else(|| {
                    let joined = match inherited.iter().find(|(a, _)| *a == addr) {
                        Some((_, j)) => *j,
                        None => old
                            .endpoints
                            .iter()
                            .find(|e| e.addr == addr)
                            .map_or((!first).then_some(now), |e| e.joined),
                    };
                    Arc::new(LiveEndpoint {
                        priority: place.priority,
                        group: place.group,
                        source,
                        joined,
                        ..LiveEndpoint::new(addr, weight)
                    })
                }))
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
        let set = Arc::new(EndpointSet::new(endpoints, self.lb));
        let _health = self.outlier.as_ref().map(Detector::lock);
        self.endpoints.store(set.clone());
        if let Some(d) = &self.outlier {
            d.count_active(&set.endpoints);
        }
        self.route(&set);
    }

    /// Recomputes the endpoints picks choose from (health lock held, if any).
    fn route(&self, set: &Arc<EndpointSet>) {
        let _rebuild = lock(&self.rebuild);
        let weights = self.warm_weights(set);
        self.warming.store(weights.is_some(), Ordering::Relaxed);
        let view = if self.plan.is_flat() {
            let base = match weights {
                Some(w) => Arc::new(EndpointSet::weighted(set.endpoints.clone(), w, self.lb)),
                None => set.clone(),
            };
            Routable::single(match &self.outlier {
                Some(d) => d.routable(&base, self.lb),
                None => base,
            })
        } else {
            self.levels(set, weights)
        };
        self.routable.store(Arc::new(view));
    }

    /// Slow-start weights of `set` now, when some endpoint is in its window.
    fn warm_weights(&self, set: &EndpointSet) -> Option<Vec<u32>> {
        let w = self.warmup?;
        let now = Instant::now();
        let mut warming = false;
        let weights = set
            .endpoints
            .iter()
            .map(|e| {
                let factor = e
                    .joined
                    .filter(|_| !e.outlier.is_ejected())
                    .and_then(|t| w.factor(now.saturating_duration_since(t)));
                warming |= factor.is_some();
                let v = f64::from(e.weight.max(1)) * WARMUP_SCALE * factor.unwrap_or(1.0);
                v.round().clamp(1.0, f64::from(u32::MAX)) as u32
            })
            .collect();
        warming.then_some(weights)
    }

    /// The current routing view (priority loads, for the admin API and tests).
    pub fn routable(&self) -> Arc<Routable> {
        self.routable.load_full()
    }

    /// Picks an endpoint (never an ejected one unless in panic): a priority level by its
    /// load, a locality by its effective weight, then an endpoint by the cluster's algorithm;
    /// `hash` is the request's hash key for consistent hashing (it also chooses the level).
    pub fn pick(&self, hash: Option<u64>) -> Option<Arc<LiveEndpoint>> {
        let view = self.routable.load();
        let level = match view.levels.as_slice() {
            [] => return None,
            [one] => one,
            many => {
                let x = hash.map_or_else(|| fastrand::u32(..100), |h| (h % 100) as u32);
                many.iter()
                    .find(|l| x < l.load_upto)
                    .unwrap_or(&many[many.len() - 1])
            }
        };
        self.pick_in(level, hash)
    }

    /// Picks in one priority level: a locality by its effective weight, then an endpoint.
    fn pick_in(&self, level: &Level, hash: Option<u64>) -> Option<Arc<LiveEndpoint>> {
        let set = match level.groups.as_slice() {
            [] => return None,
            [(_, one)] => one,
            many => {
                let total = level.total.max(1);
                let n = level.rr.fetch_add(1, Ordering::Relaxed) % total;
                let x = ((u128::from(n) * u128::from(level.stride)) % u128::from(total)) as u64;
                &many
                    .iter()
                    .find(|(upto, _)| x < *upto)
                    .unwrap_or(&many[many.len() - 1])
                    .1
            }
        };
        lb::pick(self.lb, set, &self.rr, hash).cloned()
    }

    /// The priority level `addr` is routed in now, counting loaded levels then spare ones
    /// (`None`: not routable).
    pub fn level_of(&self, addr: SocketAddr) -> Option<usize> {
        let view = self.routable.load();
        view.levels.iter().chain(&view.spare).position(|l| {
            l.groups
                .iter()
                .any(|(_, set)| set.endpoints.iter().any(|e| e.addr == addr))
        })
    }

    /// Picks in the first priority level not in `tried` (Envoy's `previous_priorities`, which
    /// Istio sets for `retryRemoteLocalities`); `None` when every level was tried.
    pub fn pick_other_level(
        &self,
        tried: &[usize],
        hash: Option<u64>,
    ) -> Option<Arc<LiveEndpoint>> {
        let view = self.routable.load();
        let level = view
            .levels
            .iter()
            .chain(&view.spare)
            .enumerate()
            .find(|(i, l)| !tried.contains(i) && !l.groups.is_empty())?
            .1;
        self.pick_in(level, hash)
    }

    /// A routable endpoint that is not in `avoid`, in priority order (`None`: every routable
    /// endpoint is in it). The retry path's last resort after random picks kept landing on
    /// endpoints already tried.
    pub fn untried(&self, avoid: &[SocketAddr]) -> Option<Arc<LiveEndpoint>> {
        let view = self.routable.load();
        view.levels
            .iter()
            .flat_map(|l| l.groups.iter())
            .flat_map(|(_, set)| set.endpoints.iter())
            .find(|e| !avoid.contains(&e.addr))
            .cloned()
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
    pub fn outlier_sweep(&self) -> Option<Duration> {
        let d = self.outlier.as_ref()?;
        let _health = d.lock();
        let set = self.endpoints.load_full();
        let (changed, next) = d.sweep(&set.endpoints);
        if changed {
            self.route(&set);
        }
        Some(next)
    }

    /// Periodic work on the control thread: the outlier sweep, and new slow-start weights
    /// while an endpoint warms up. Returns when to come back (None: nothing periodic).
    pub fn tick(&self) -> Option<Duration> {
        let next = self.outlier_sweep();
        if !self.warming.load(Ordering::Relaxed) {
            return next;
        }
        let _health = self.outlier.as_ref().map(Detector::lock);
        let set = self.endpoints.load_full();
        self.route(&set);
        Some(next.map_or(WARMUP_TICK, |n| n.min(WARMUP_TICK)))
    }

    /// Counts a request as started on `ep`; the guard ends it.
    pub fn start(ep: &Arc<LiveEndpoint>) -> ActiveRequest {
        ep.active.fetch_add(1, Ordering::Relaxed);
        ep.requests.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(ep.clone())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Decrements an endpoint's in-flight count when dropped.
#[derive(Debug)]
pub struct ActiveRequest(Arc<LiveEndpoint>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}
