//! Outlier detection (passive health checking) as Envoy runs it with the settings Istio's
//! DestinationRule `outlierDetection` translates to: per-endpoint consecutive 5xx, gateway and
//! local-origin failure counters (atomics on the shared endpoint, so every worker sees the same
//! verdict), ejection for `baseEjectionTime × times ejected`, `maxEjectionPercent`, and
//! `minHealthPercent` as Envoy's panic threshold. Health changes (rare) take a small lock.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use meshgate_config::model::destination_rule::OutlierDetection;

use super::cluster::{EndpointSet, LiveEndpoint};
use super::lb::LbKind;
use crate::live::Shared;

/// Envoy's defaults for what Istio leaves unset.
const DEFAULT_CONSECUTIVE: u32 = 5;
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(30);
const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(300);
const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;
/// Envoy's `healthy_panic_threshold` when Istio does not set it (negative `minHealthPercent`).
const DEFAULT_PANIC_THRESHOLD: u32 = 50;
/// Longest sleep of [`tick_loop`], so clusters created by a config swap are picked up soon.
const MAX_TICK_SLEEP: Duration = Duration::from_millis(250);

/// How one attempt to an endpoint ended, as the request path reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// The upstream answered with this status.
    Response(u16),
    /// The TCP connection could not be made (refused, unreachable, connect timeout).
    ConnectFailure,
    /// The route timeout fired before the upstream answered.
    Timeout,
    /// The connection or stream was reset before a response arrived.
    Reset,
}

/// Why an endpoint was found to be an outlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EjectionKind {
    /// `consecutive5xxErrors` reached.
    Consecutive5xx,
    /// `consecutiveGatewayErrors` (502, 503, 504) reached.
    GatewayFailure,
    /// `consecutiveLocalOriginFailures` reached (only with `splitExternalLocalOriginErrors`).
    LocalOrigin,
}

/// The Envoy outlier detection settings Istio produces from a DestinationRule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Consecutive 5xx that make an outlier (0: never).
    pub consecutive_5xx: u32,
    /// Whether a consecutive-5xx outlier is ejected.
    pub enforce_5xx: bool,
    /// Consecutive gateway errors that make an outlier (0: never).
    pub consecutive_gateway: u32,
    /// Whether a gateway-failure outlier is ejected (Istio: only when configured).
    pub enforce_gateway: bool,
    /// Local-origin failures are counted apart from HTTP statuses.
    pub split_local_origin: bool,
    /// Consecutive local-origin failures that make an outlier (split mode only).
    pub consecutive_local_origin: u32,
    /// Time between un-ejection sweeps.
    pub interval: Duration,
    /// Ejection time per time ejected.
    pub base_ejection: Duration,
    /// Longest ejection.
    pub max_ejection: Duration,
    /// Most endpoints (percent of the cluster) ejected at once.
    pub max_ejection_percent: u32,
    /// Below this healthy percentage the load balancer uses every endpoint (Envoy's panic).
    pub panic_threshold: u32,
}

fn positive(d: Option<meshgate_config::model::common::Duration>) -> Option<Duration> {
    d.and_then(|d| d.to_std()).filter(|d| !d.is_zero())
}

impl Settings {
    /// Istio's translation of `outlierDetection` (with Envoy's defaults for the rest).
    pub fn from_istio(od: &OutlierDetection) -> Self {
        let (consecutive_5xx, enforce_5xx) = match od.consecutive_5xx_errors {
            None => (DEFAULT_CONSECUTIVE, true),
            Some(v) => (v, v > 0),
        };
        let (consecutive_gateway, enforce_gateway) = match od.consecutive_gateway_errors {
            // Envoy still detects at its default of 5 but does not enforce.
            None => (DEFAULT_CONSECUTIVE, false),
            Some(v) => (v, v > 0),
        };
        let consecutive_local_origin = od
            .consecutive_local_origin_failures
            .filter(|v| *v > 0)
            .unwrap_or(DEFAULT_CONSECUTIVE);
        let base_ejection = positive(od.base_ejection_time).unwrap_or(DEFAULT_BASE_EJECTION);
        Settings {
            consecutive_5xx,
            enforce_5xx,
            consecutive_gateway,
            enforce_gateway,
            split_local_origin: od.split_external_local_origin_errors,
            consecutive_local_origin,
            interval: positive(od.interval).unwrap_or(DEFAULT_INTERVAL),
            base_ejection,
            max_ejection: DEFAULT_MAX_EJECTION.max(base_ejection),
            max_ejection_percent: u32::try_from(od.max_ejection_percent)
                .ok()
                .filter(|p| *p > 0)
                .unwrap_or(DEFAULT_MAX_EJECTION_PERCENT)
                .min(100),
            panic_threshold: u32::try_from(od.min_health_percent)
                .map_or(DEFAULT_PANIC_THRESHOLD, |p| p.min(100)),
        }
    }

    fn enforced(&self, kind: EjectionKind) -> bool {
        match kind {
            EjectionKind::Consecutive5xx => self.enforce_5xx,
            EjectionKind::GatewayFailure => self.enforce_gateway,
            EjectionKind::LocalOrigin => true,
        }
    }
}

/// Outlier state of one endpoint, updated by every worker.
#[derive(Debug, Default)]
pub struct EndpointOutlier {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    ejected: AtomicBool,
    /// Detector clock (ms) of the last ejection.
    ejected_at: AtomicU64,
    /// Detector clock (ms) + 1 of the last un-ejection; 0: never.
    unejected_at: AtomicU64,
    /// Envoy's ejection time multiplier.
    backoff: AtomicU32,
    ejections: AtomicU32,
}

impl EndpointOutlier {
    /// True while the endpoint is ejected.
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Relaxed)
    }

    /// How many times the endpoint was ejected.
    pub fn times_ejected(&self) -> u32 {
        self.ejections.load(Relaxed)
    }

    fn reset(&self, kind: EjectionKind) {
        match kind {
            EjectionKind::Consecutive5xx => self.consecutive_5xx.store(0, Relaxed),
            EjectionKind::GatewayFailure => self.consecutive_gateway.store(0, Relaxed),
            EjectionKind::LocalOrigin => self.consecutive_local.store(0, Relaxed),
        }
    }
}

/// One exported statistic: Envoy's name, value, description, and whether it is a gauge.
pub type OutlierStat = (&'static str, u64, &'static str, bool);

/// Envoy's `outlier_detection.*` statistics of one cluster.
#[derive(Debug, Default)]
pub struct OutlierStats {
    active: AtomicU64,
    overflow: AtomicU64,
    enforced_total: AtomicU64,
    enforced: [AtomicU64; 3],
    detected: [AtomicU64; 3],
}

fn index(kind: EjectionKind) -> usize {
    match kind {
        EjectionKind::Consecutive5xx => 0,
        EjectionKind::GatewayFailure => 1,
        EjectionKind::LocalOrigin => 2,
    }
}

impl OutlierStats {
    /// The statistics with Envoy's names (without the `outlier_detection.` prefix).
    pub fn values(&self) -> [OutlierStat; 9] {
        let v = |c: &AtomicU64| c.load(Relaxed);
        [
            (
                "ejections_active",
                v(&self.active),
                "endpoints ejected now",
                true,
            ),
            (
                "ejections_overflow",
                v(&self.overflow),
                "ejections refused by maxEjectionPercent",
                false,
            ),
            (
                "ejections_enforced_total",
                v(&self.enforced_total),
                "ejections carried out",
                false,
            ),
            (
                "ejections_enforced_consecutive_5xx",
                v(&self.enforced[0]),
                "consecutive 5xx ejections",
                false,
            ),
            (
                "ejections_detected_consecutive_5xx",
                v(&self.detected[0]),
                "consecutive 5xx outliers found",
                false,
            ),
            (
                "ejections_enforced_consecutive_gateway_failure",
                v(&self.enforced[1]),
                "gateway failure ejections",
                false,
            ),
            (
                "ejections_detected_consecutive_gateway_failure",
                v(&self.detected[1]),
                "gateway failure outliers found",
                false,
            ),
            (
                "ejections_enforced_consecutive_local_origin_failure",
                v(&self.enforced[2]),
                "local-origin failure ejections",
                false,
            ),
            (
                "ejections_detected_consecutive_local_origin_failure",
                v(&self.detected[2]),
                "local-origin failure outliers found",
                false,
            ),
        ]
    }
}

/// The outlier detector of one cluster.
#[derive(Debug)]
pub struct Detector {
    /// What Istio configured.
    pub settings: Settings,
    /// Counters.
    pub stats: OutlierStats,
    epoch: Instant,
    next_tick: AtomicU64,
    lock: Mutex<()>,
}

/// Thresholds hit by one result: at most a gateway failure and a 5xx, in Envoy's order.
pub type Detected = [Option<EjectionKind>; 2];

/// One more failure on `counter`; true when it reaches `threshold` exactly (as Envoy counts).
fn bump(counter: &AtomicU32, threshold: u32) -> bool {
    counter.fetch_add(1, Relaxed).wrapping_add(1) == threshold
}

impl Detector {
    /// A detector for `settings`; its first sweep is one interval from now.
    pub fn new(settings: Settings) -> Self {
        let next = millis(settings.interval);
        Detector {
            settings,
            stats: OutlierStats::default(),
            epoch: Instant::now(),
            next_tick: AtomicU64::new(next),
            lock: Mutex::new(()),
        }
    }

    fn now(&self) -> u64 {
        millis(self.epoch.elapsed())
    }

    /// Serialises health changes (ejections, sweeps, endpoint updates); never taken by a pick.
    pub fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts `result` on `ep`; returns the thresholds it reached. Lock-free.
    pub fn record(&self, ep: &EndpointOutlier, result: AttemptResult) -> Detected {
        let s = &self.settings;
        let status = match (result, s.split_local_origin) {
            (AttemptResult::Response(code), split) => {
                if split {
                    // The connection was made: a local-origin success.
                    ep.consecutive_local.store(0, Relaxed);
                }
                code
            }
            (AttemptResult::ConnectFailure | AttemptResult::Reset, false) => 503,
            (AttemptResult::Timeout, false) => 504,
            (AttemptResult::ConnectFailure, true) => {
                let hit = bump(&ep.consecutive_local, s.consecutive_local_origin);
                return [hit.then_some(EjectionKind::LocalOrigin), None];
            }
            (AttemptResult::Timeout | AttemptResult::Reset, true) => {
                // Envoy saw the connection succeed first (resetting the count), then the failure.
                ep.consecutive_local.store(1, Relaxed);
                let hit = s.consecutive_local_origin == 1;
                return [hit.then_some(EjectionKind::LocalOrigin), None];
            }
        };
        if !(500..600).contains(&status) {
            ep.consecutive_5xx.store(0, Relaxed);
            ep.consecutive_gateway.store(0, Relaxed);
            return [None, None];
        }
        let gateway = if (502..=504).contains(&status) {
            bump(&ep.consecutive_gateway, s.consecutive_gateway)
        } else {
            ep.consecutive_gateway.store(0, Relaxed);
            false
        };
        let c5xx = bump(&ep.consecutive_5xx, s.consecutive_5xx);
        [
            gateway.then_some(EjectionKind::GatewayFailure),
            c5xx.then_some(EjectionKind::Consecutive5xx),
        ]
    }

    /// Handles an outlier found on `ep` among `eps` (call with [`Detector::lock`] held).
    /// Returns true when `ep` was ejected.
    pub fn eject(
        &self,
        eps: &[Arc<LiveEndpoint>],
        ep: &Arc<LiveEndpoint>,
        kind: EjectionKind,
    ) -> bool {
        let o = &ep.outlier;
        if o.is_ejected() || !eps.iter().any(|e| Arc::ptr_eq(e, ep)) {
            return false;
        }
        self.stats.detected[index(kind)].fetch_add(1, Relaxed);
        let active = eps.iter().filter(|e| e.outlier.is_ejected()).count() as u64;
        let allowed =
            100 * (active + 1) <= u64::from(self.settings.max_ejection_percent) * eps.len() as u64;
        let ejected = if !allowed {
            self.stats.overflow.fetch_add(1, Relaxed);
            false
        } else if self.settings.enforced(kind) {
            o.ejected_at.store(self.now(), Relaxed);
            o.ejected.store(true, Relaxed);
            o.ejections.fetch_add(1, Relaxed);
            let base = millis(self.settings.base_ejection);
            let backoff = u64::from(o.backoff.load(Relaxed));
            if backoff.saturating_mul(base)
                < millis(self.settings.max_ejection).saturating_add(base)
            {
                o.backoff.fetch_add(1, Relaxed);
            }
            self.stats.enforced_total.fetch_add(1, Relaxed);
            self.stats.enforced[index(kind)].fetch_add(1, Relaxed);
            self.stats.active.store(active + 1, Relaxed);
            tracing::info!(endpoint = %ep.addr, ?kind, "outlier ejected");
            true
        } else {
            false
        };
        o.reset(kind);
        ejected
    }

    /// If a sweep is due: brings back endpoints whose ejection time is over and lowers the
    /// multiplier of endpoints healthy for an interval (call with the lock held). Returns
    /// whether an endpoint came back, and the time until the next sweep.
    pub fn sweep(&self, eps: &[Arc<LiveEndpoint>]) -> (bool, Duration) {
        let now = self.now();
        let next = self.next_tick.load(Relaxed);
        if now < next {
            return (false, Duration::from_millis(next - now));
        }
        let interval = millis(self.settings.interval);
        self.next_tick.store(now + interval, Relaxed);
        let base = millis(self.settings.base_ejection);
        let max = millis(self.settings.max_ejection);
        let mut changed = false;
        for e in eps {
            let o = &e.outlier;
            if !o.is_ejected() {
                continue;
            }
            let time = base
                .saturating_mul(u64::from(o.backoff.load(Relaxed)))
                .min(max);
            if now.saturating_sub(o.ejected_at.load(Relaxed)) >= time {
                for k in [
                    EjectionKind::Consecutive5xx,
                    EjectionKind::GatewayFailure,
                    EjectionKind::LocalOrigin,
                ] {
                    o.reset(k);
                }
                o.unejected_at.store(now + 1, Relaxed);
                o.ejected.store(false, Relaxed);
                changed = true;
                tracing::info!(endpoint = %e.addr, "outlier back in service");
            }
        }
        for e in eps {
            let o = &e.outlier;
            let back = o.unejected_at.load(Relaxed);
            if !o.is_ejected() && back != 0 && now.saturating_sub(back - 1) >= interval {
                let b = o.backoff.load(Relaxed);
                o.backoff.store(b.saturating_sub(1), Relaxed);
            }
        }
        self.count_active(eps);
        (changed, Duration::from_millis(interval))
    }

    /// Recounts the ejected endpoints (after the endpoint list changed).
    pub fn count_active(&self, eps: &[Arc<LiveEndpoint>]) {
        let n = eps.iter().filter(|e| e.outlier.is_ejected()).count() as u64;
        self.stats.active.store(n, Relaxed);
    }

    /// The endpoints the load balancer may use: the ones not ejected, or all of them when the
    /// healthy share is below the panic threshold. With panic disabled and every endpoint
    /// ejected: none for a single endpoint (503, as Envoy), all of them otherwise.
    pub fn routable(&self, set: &Arc<EndpointSet>, kind: LbKind) -> Arc<EndpointSet> {
        let total = set.endpoints.len();
        let keep: Vec<usize> = (0..total)
            .filter(|i| !set.endpoints[*i].outlier.is_ejected())
            .collect();
        let panic = 100 * keep.len() < self.settings.panic_threshold as usize * total;
        if keep.len() == total || panic || (keep.is_empty() && total > 1) {
            return set.clone();
        }
        Arc::new(EndpointSet::weighted(
            keep.iter().map(|i| set.endpoints[*i].clone()).collect(),
            keep.iter().map(|i| set.weights[*i]).collect(),
            kind,
        ))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs every cluster's un-ejection sweep at its interval until the process ends (on the
/// control thread, like Envoy's main-thread interval timer).
pub async fn tick_loop(shared: Arc<Shared>) {
    loop {
        let live = shared.live.load_full();
        let sleep = live
            .clusters
            .values()
            .filter_map(|c| c.tick())
            .fold(MAX_TICK_SLEEP, Duration::min);
        drop(live);
        tokio::time::sleep(sleep.max(Duration::from_millis(1))).await;
    }
}

#[cfg(test)]
mod tests;
