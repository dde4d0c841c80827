//! The routing view of a cluster: per priority level, the locality groups of endpoints picks
//! choose from (ejected ones left out unless in panic), with the load each level gets. Built
//! by the cluster when endpoints, health or warmup weights change; read lock-free by picks.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::{ClusterState, EndpointSet, LiveEndpoint, OVERPROVISIONING};
use crate::upstream::lb::{self, LbKind};

/// One priority level as picks see it.
#[derive(Debug)]
pub(super) struct Level {
    /// Cumulative share of requests (out of 100) up to and including this level.
    pub(super) load_upto: u32,
    /// Locality groups with their cumulative effective weights.
    pub(super) groups: Vec<(u64, Arc<EndpointSet>)>,
    /// Sum of the groups' effective weights.
    pub(super) total: u64,
    /// Locality round robin: position and step (as weighted round robin over endpoints, so
    /// localities interleave in proportion to their weights, like Envoy's schedule).
    pub(super) rr: AtomicU64,
    pub(super) stride: u64,
}

/// The endpoints picks choose from: per priority level, the locality groups without their
/// ejected endpoints (or with them, in panic), recomputed when endpoints or health change.
#[derive(Debug, Default)]
pub struct Routable {
    pub(super) levels: Vec<Level>,
    /// Priority levels that get no load now (their endpoints still healthy), in priority
    /// order: where `retryRemoteLocalities` sends a retry once the loaded levels were tried.
    pub(super) spare: Vec<Level>,
}

impl Routable {
    pub(super) fn single(set: Arc<EndpointSet>) -> Self {
        Routable {
            levels: vec![Level {
                load_upto: 100,
                groups: vec![(1, set)],
                total: 1,
                rr: AtomicU64::new(0),
                stride: 1,
            }],
            spare: Vec::new(),
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

impl ClusterState {
    /// Envoy's priority and locality selection over `set`: per priority, health is the
    /// healthy share times the overprovisioning factor (at most 100%); priorities take load
    /// in order until it adds up to 100%; below the panic threshold in total, load follows
    /// host counts; a priority in panic uses all its endpoints. Localities (when weighted)
    /// get their weight times their health.
    pub(super) fn levels(&self, set: &EndpointSet, weights: Option<Vec<u32>>) -> Routable {
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
        let mut spare = Vec::new();
        for p in 0..n {
            let members: Vec<usize> = (0..set.endpoints.len())
                .filter(|i| {
                    let e = &set.endpoints[*i];
                    e.priority as usize == p && (panic[p] || !e.outlier.is_ejected())
                })
                .collect();
            // A priority without load keeps its healthy endpoints aside for retries in other
            // localities (`retryRemoteLocalities`).
            if load[p] == 0 && (members.is_empty() || panic[p]) {
                continue;
            }
            upto += load[p] as u32;
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
            let level = Level {
                load_upto: upto,
                groups,
                total,
                rr: AtomicU64::new(0),
                stride: lb::stride(total),
            };
            if load[p] == 0 {
                spare.push(level);
            } else {
                levels.push(level);
            }
        }
        if let Some(last) = levels.last_mut() {
            last.load_upto = 100;
        }
        Routable { levels, spare }
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}
