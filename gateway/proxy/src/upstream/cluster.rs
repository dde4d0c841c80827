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

/// One priority level as picks see it.
#[derive(Debug)]
struct Level {
    /// Cumulative share of requests (out of 100) up to and including this level.
    load_upto: u32,
    /// Locality groups with their cumulative effective weights.
    groups: Vec<(u64, Arc<EndpointSet>)>,
    /// Sum of the groups' effective weights.
    total: u64,
    /// Locality round robin: position and step (as weighted round robin over endpoints, so
    /// localities interleave in proportion to their weights, like Envoy's schedule).
    rr: AtomicU64,
    stride: u64,
}

/// The endpoints picks choose from: per priority level, the locality groups without their
/// ejected endpoints (or with them, in panic), recomputed when endpoints or health change.
#[derive(Debug, Default)]
pub struct Routable {
    levels: Vec<Level>,
}

impl Routable {
    fn single(set: Arc<EndpointSet>) -> Self {
        Routable {
            levels: vec![Level {
                load_upto: 100,
                groups: vec![(1, set)],
                total: 1,
                rr: AtomicU64::new(0),
                stride: 1,
            }],
        }
    }

    /// The share of requests (percent) each priority level gets now.
    pub fn priority_load(&self) -> Vec<u32> {
        let mut prev = 0;
        self.levels
            .iter()
            .map(|l| {
                let v = l.load_upto - prev;
                prev = l.load_upto;
                v
            })
            .collect()
    }
}

/// A resolved endpoint: address, weight and the index of the config endpoint it comes from.
pub type Resolved = (SocketAddr, u32, usize);

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

    /// Envoy's priority and locality selection over `set`: per priority, health is the
    /// healthy share times the overprovisioning factor (at most 100%); priorities take load
    /// in order until it adds up to 100%; below the panic threshold in total, load follows
    /// host counts; a priority in panic uses all its endpoints. Localities (when weighted)
    /// get their weight times their health.
    fn levels(&self, set: &EndpointSet, weights: Option<Vec<u32>>) -> Routable {
        let weight_of = |i: usize| weights.as_ref().map_or(set.weights[i], |w| w[i]);
        let threshold = self
            .outlier
            .as_ref()
            .map_or(50, |d| u64::from(d.settings.panic_threshold));
        let n = self.plan.priorities.max(1) as usize;
        let mut hosts = vec![0u64; n];
        let mut healthy = vec![0u64; n];
        for e in &set.endpoints {
            let p = (e.priority as usize).min(n - 1);
            hosts[p] += 1;
            if !e.outlier.is_ejected() {
                healthy[p] += 1;
            }
        }
        let health: Vec<u64> = (0..n)
            .map(|p| {
                (OVERPROVISIONING * healthy[p])
                    .checked_div(hosts[p])
                    .map_or(0, |h| h.min(100))
            })
            .collect();
        let total_health = health.iter().sum::<u64>().min(100);
        let panic: Vec<bool> = (0..n)
            .map(|p| {
                total_health < 100 && (hosts[p] == 0 || 100 * healthy[p] < threshold * hosts[p])
            })
            .collect();
        let mut load = vec![0u64; n];
        let total_hosts: u64 = hosts.iter().sum();
        if total_hosts == 0 {
            return Routable::default();
        }
        if threshold == 0 && total_health == 0 {
            load[0] = 100;
        } else if total_health < threshold {
            for p in 0..n {
                load[p] = 100 * hosts[p] / total_hosts;
            }
            let first = hosts.iter().position(|h| *h > 0).unwrap_or(0);
            load[first] += 100 - load.iter().sum::<u64>();
        } else {
            let mut left = 100;
            for p in 0..n {
                load[p] = (health[p] * 100 / total_health).min(left);
                left -= load[p];
            }
            let first = health.iter().position(|h| *h > 0).unwrap_or(0);
            load[first] += left;
        }
        let hashing = matches!(self.lb, LbKind::RingHash { .. } | LbKind::Maglev { .. });
        let mut levels = Vec::new();
        let mut upto = 0;
        for p in 0..n {
            if load[p] == 0 {
                continue;
            }
            upto += load[p] as u32;
            let members: Vec<usize> = (0..set.endpoints.len())
                .filter(|i| {
                    let e = &set.endpoints[*i];
                    e.priority as usize == p && (panic[p] || !e.outlier.is_ejected())
                })
                .collect();
            let make = |idx: &[usize]| {
                Arc::new(EndpointSet::weighted(
                    idx.iter().map(|i| set.endpoints[*i].clone()).collect(),
                    idx.iter().map(|i| weight_of(*i)).collect(),
                    self.lb,
                ))
            };
            let mut weighted: Vec<(u64, Vec<usize>)> = Vec::new();
            if self.plan.weighted && !panic[p] && !hashing {
                let mut ids: Vec<u32> = members.iter().map(|i| set.endpoints[*i].group).collect();
                ids.sort_unstable();
                ids.dedup();
                for g in ids {
                    let in_group = |e: &LiveEndpoint| e.priority as usize == p && e.group == g;
                    let all = set.endpoints.iter().filter(|e| in_group(e)).count() as f64;
                    let idx: Vec<usize> = members
                        .iter()
                        .copied()
                        .filter(|i| in_group(&set.endpoints[*i]))
                        .collect();
                    let ratio = (OVERPROVISIONING as f64 / 100.0 * idx.len() as f64 / all).min(1.0);
                    let w = self
                        .plan
                        .group_weights
                        .get(g as usize)
                        .copied()
                        .unwrap_or(1);
                    let eff = (f64::from(w) * ratio * 1000.0) as u64;
                    if eff > 0 && !idx.is_empty() {
                        weighted.push((eff, idx));
                    }
                }
            }
            // Smallest equivalent weights, so small counts already follow them exactly.
            let common = weighted.iter().fold(0, |g, (w, _)| gcd(g, *w)).max(1);
            let mut groups = Vec::new();
            let mut total = 0u64;
            for (w, idx) in &weighted {
                total += w / common;
                groups.push((total, make(idx)));
            }
            if groups.is_empty() {
                total = 1;
                groups.push((1, make(&members)));
            }
            levels.push(Level {
                load_upto: upto,
                groups,
                total,
                rr: AtomicU64::new(0),
                stride: lb::stride(total),
            });
        }
        if let Some(last) = levels.last_mut() {
            last.load_upto = 100;
        }
        Routable { levels }
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

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
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
