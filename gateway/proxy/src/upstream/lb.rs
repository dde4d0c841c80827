//! Load-balancing algorithms over an [`EndpointSet`]: round robin, least request (power of two
//! choices), random, ring hash and Maglev, all weight-aware. Lock-free; the ring and the Maglev
//! table are built once per endpoint set, not per request.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use meshgate_config::model::destination_rule::ConsistentHashLb;

use super::cluster::{EndpointSet, LiveEndpoint};

/// Envoy's default minimum ring size.
const DEFAULT_RING_SIZE: u64 = 1024;
/// Upper bound on ring points, whatever the config says.
const MAX_RING_SIZE: u64 = 1 << 20;
/// Envoy's default Maglev table size (a prime).
const DEFAULT_MAGLEV_SIZE: u64 = 65_537;

/// The balancing algorithm of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbKind {
    /// Weighted round robin.
    RoundRobin,
    /// Two random choices, the one with fewer requests in flight wins (weights scale it).
    LeastRequest,
    /// Weighted random.
    Random,
    /// Ketama-style ring with at least `min_size` points.
    RingHash {
        /// Minimum number of points on the ring.
        min_size: u64,
    },
    /// Maglev lookup table of `size` entries (should be prime).
    Maglev {
        /// Table size.
        size: u64,
    },
}

/// Where a consistent-hash key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashPolicy {
    /// A request header's value.
    Header(String),
    /// A cookie's value; when the request has none, the gateway makes one up and sets it on
    /// the response (Envoy's behaviour), so the client sticks from its first request on.
    Cookie {
        /// Cookie name.
        name: String,
        /// Cookie path (empty: none).
        path: String,
        /// Lifetime of a generated cookie (`Max-Age`), seconds; 0: a session cookie.
        ttl_secs: u64,
    },
    /// The downstream client's IP address.
    SourceIp,
    /// A query parameter's value.
    QueryParam(String),
}

/// A hash ring (sorted points) or a Maglev table (endpoint index per slot).
#[derive(Debug)]
pub enum Ring {
    /// (point hash, endpoint index), sorted by hash.
    Points(Vec<(u64, u32)>),
    /// Endpoint index per slot.
    Maglev(Vec<u32>),
}

/// Reads the consistent-hash settings of a DestinationRule.
pub fn consistent_hash(ch: &ConsistentHashLb) -> (LbKind, Option<HashPolicy>) {
    let policy = if let Some(h) = &ch.http_header_name {
        Some(HashPolicy::Header(h.to_ascii_lowercase()))
    } else if let Some(c) = &ch.http_cookie {
        Some(HashPolicy::Cookie {
            name: c.name.clone(),
            path: c.path.clone(),
            ttl_secs: c.ttl.and_then(|t| t.to_std()).map_or(0, |d| d.as_secs()),
        })
    } else if ch.use_source_ip == Some(true) {
        Some(HashPolicy::SourceIp)
    } else {
        ch.http_query_parameter_name
            .as_ref()
            .map(|q| HashPolicy::QueryParam(q.clone()))
    };
    let kind = if let Some(m) = &ch.maglev {
        LbKind::Maglev {
            size: if m.table_size == 0 {
                DEFAULT_MAGLEV_SIZE
            } else {
                m.table_size.min(MAX_RING_SIZE)
            },
        }
    } else {
        let min = ch
            .ring_hash
            .as_ref()
            .map(|r| r.minimum_ring_size)
            .filter(|m| *m > 0)
            .unwrap_or(if ch.minimum_ring_size > 0 {
                ch.minimum_ring_size
            } else {
                DEFAULT_RING_SIZE
            });
        LbKind::RingHash {
            min_size: min.min(MAX_RING_SIZE),
        }
    };
    (kind, policy)
}

/// A stable 64-bit hash of `v` (the same in every worker and across config swaps).
pub fn hash_of(v: impl Hash) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// Builds the ring or table for hashing kinds.
pub fn build_ring(kind: LbKind, eps: &[Arc<LiveEndpoint>]) -> Option<Ring> {
    if eps.is_empty() {
        return None;
    }
    match kind {
        LbKind::RingHash { min_size } => {
            let total: u64 = eps.iter().map(|e| u64::from(e.weight)).sum();
            let per_weight = min_size.div_ceil(total).max(1);
            let mut points = Vec::new();
            for (i, e) in eps.iter().enumerate() {
                let n = per_weight * u64::from(e.weight);
                for k in 0..n {
                    points.push((hash_of((e.addr, k)), i as u32));
                }
            }
            points.sort_unstable();
            Some(Ring::Points(points))
        }
        LbKind::Maglev { size } => Some(Ring::Maglev(maglev(eps, size as usize))),
        _ => None,
    }
}

/// Maglev table population with weights: each round, an endpoint takes a slot while its
/// share (weight / max weight) allows.
fn maglev(eps: &[Arc<LiveEndpoint>], m: usize) -> Vec<u32> {
    let n = eps.len();
    let max_w = eps.iter().map(|e| e.weight).max().unwrap_or(1).max(1);
    let offsets: Vec<usize> = eps
        .iter()
        .map(|e| (hash_of((e.addr, "o")) % m as u64) as usize)
        .collect();
    let skips: Vec<usize> = eps
        .iter()
        .map(|e| (hash_of((e.addr, "s")) % (m as u64 - 1).max(1)) as usize + 1)
        .collect();
    let mut next = vec![0usize; n];
    let mut taken = vec![0u64; n];
    let mut table = vec![u32::MAX; m];
    let mut filled = 0;
    let mut round: u64 = 0;
    while filled < m {
        round += 1;
        for i in 0..n {
            // Endpoint i may hold round * w_i / max_w slots after this round.
            let allowed = round * u64::from(eps[i].weight) / u64::from(max_w);
            if taken[i] >= allowed {
                continue;
            }
            loop {
                let c = (offsets[i] + next[i] * skips[i]) % m;
                next[i] += 1;
                if table[c] == u32::MAX {
                    table[c] = i as u32;
                    taken[i] += 1;
                    filled += 1;
                    break;
                }
            }
            if filled == m {
                break;
            }
        }
    }
    table
}

/// Picks an endpoint from `set`.
pub fn pick<'a>(
    kind: LbKind,
    set: &'a EndpointSet,
    rr: &AtomicUsize,
    hash: Option<u64>,
) -> Option<&'a Arc<LiveEndpoint>> {
    let eps = &set.endpoints;
    match eps.len() {
        0 => return None,
        1 => return eps.first(),
        _ => {}
    }
    match (kind, &set.ring, hash) {
        (LbKind::RingHash { .. }, Some(Ring::Points(points)), Some(h)) => {
            let i = points.partition_point(|(p, _)| *p < h);
            let (_, idx) = points.get(i).or(points.first())?;
            return eps.get(*idx as usize);
        }
        (LbKind::Maglev { .. }, Some(Ring::Maglev(table)), Some(h)) => {
            let idx = table.get((h % table.len() as u64) as usize)?;
            return eps.get(*idx as usize);
        }
        _ => {}
    }
    match kind {
        LbKind::RoundRobin if set.uniform => {
            let n = rr.fetch_add(1, Ordering::Relaxed);
            eps.get(n % eps.len())
        }
        LbKind::RoundRobin => {
            // Weighted: walk a virtual sequence where endpoint i holds weight_i slots, visiting
            // the slots in a permuted order (a stride coprime with the total) so each cycle
            // gives every endpoint exactly its weight, interleaved.
            let total = set.total.max(1);
            let n = rr.fetch_add(1, Ordering::Relaxed) as u64 % total;
            let slot = ((u128::from(n) * u128::from(set.stride)) % u128::from(total)) as u64;
            eps.get(slot_owner(set, slot))
        }
        LbKind::LeastRequest => {
            let a = weighted_random(set);
            let b = weighted_random(set);
            // Compare active/weight without division: a.active * b.w vs b.active * a.w.
            let (wa, wb) = (u64::from(set.weights[a]), u64::from(set.weights[b]));
            let la = u64::from(eps[a].active.load(Ordering::Relaxed)) * wb;
            let lb = u64::from(eps[b].active.load(Ordering::Relaxed)) * wa;
            eps.get(if lb < la { b } else { a })
        }
        // Hashing kinds without a key fall back to random, as Envoy does.
        _ => eps.get(weighted_random(set)),
    }
}

/// The endpoint holding slot `n` of the weighted sequence.
fn slot_owner(set: &EndpointSet, mut n: u64) -> usize {
    for (i, w) in set.weights.iter().enumerate() {
        let w = u64::from(*w);
        if n < w {
            return i;
        }
        n -= w;
    }
    set.weights.len().saturating_sub(1)
}

/// A step through `total` slots that visits each once per cycle and spreads consecutive picks
/// (the integer coprime with `total` closest to `total / golden ratio`).
pub fn stride(total: u64) -> u64 {
    if total <= 2 {
        return 1;
    }
    let gcd = |mut a: u64, mut b: u64| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let target = (total as f64 * 0.618_033_988_75) as u64;
    (0..total)
        .flat_map(|d| [target.saturating_sub(d), target + d])
        .find(|s| *s > 0 && *s < total && gcd(*s, total) == 1)
        .unwrap_or(1)
}

/// Index of a random endpoint of a non-empty `set`, by weight.
fn weighted_random(set: &EndpointSet) -> usize {
    if set.uniform {
        return fastrand::usize(..set.endpoints.len());
    }
    slot_owner(set, fastrand::u64(..set.total.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn set(weights: &[u32], kind: LbKind) -> EndpointSet {
        let endpoints: Vec<Arc<LiveEndpoint>> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                Arc::new(LiveEndpoint::new(
                    SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16)),
                    *w,
                ))
            })
            .collect();
        EndpointSet::new(endpoints, kind)
    }

    fn counts(
        kind: LbKind,
        weights: &[u32],
        n: usize,
        hash: impl Fn(usize) -> Option<u64>,
    ) -> Vec<usize> {
        let s = set(weights, kind);
        let rr = AtomicUsize::new(0);
        let mut c = vec![0; weights.len()];
        for i in 0..n {
            let e = pick(kind, &s, &rr, hash(i)).expect("endpoint");
            c[(e.addr.port() - 10_000) as usize] += 1;
        }
        c
    }

    #[test]
    fn round_robin_follows_weights_exactly() {
        assert_eq!(
            counts(LbKind::RoundRobin, &[1, 1, 1], 300, |_| None),
            [100, 100, 100]
        );
        assert_eq!(
            counts(LbKind::RoundRobin, &[1, 3], 400, |_| None),
            [100, 300]
        );
    }

    #[test]
    fn random_and_least_request_respect_weights_roughly() {
        for kind in [LbKind::Random, LbKind::LeastRequest] {
            let c = counts(kind, &[1, 4], 20_000, |_| None);
            let share = c[1] as f64 / 20_000.0;
            assert!((0.7..0.9).contains(&share), "{kind:?}: {c:?}");
        }
    }

    #[test]
    fn least_request_prefers_idle_endpoints() {
        let s = set(&[1, 1], LbKind::LeastRequest);
        s.endpoints[0].active.store(100, Ordering::Relaxed);
        let rr = AtomicUsize::new(0);
        let idle = (0..1000)
            .filter(|_| {
                pick(LbKind::LeastRequest, &s, &rr, None).is_some_and(|e| e.addr.port() == 10_001)
            })
            .count();
        // Only a draw of the busy endpoint twice picks it: about a quarter of the time.
        assert!(idle > 650, "{idle}");
    }

    #[test]
    fn hashing_is_stable_and_spreads() {
        for kind in [
            LbKind::RingHash { min_size: 1024 },
            LbKind::Maglev { size: 65_537 },
        ] {
            let s = set(&[1, 1, 1, 1], kind);
            let rr = AtomicUsize::new(0);
            for key in 0..100u64 {
                let h = hash_of(key);
                let a = pick(kind, &s, &rr, Some(h)).map(|e| e.addr);
                let b = pick(kind, &s, &rr, Some(h)).map(|e| e.addr);
                assert_eq!(a, b, "{kind:?}");
            }
            let c = counts(kind, &[1, 1, 1, 1], 8000, |i| Some(hash_of(i)));
            assert!(c.iter().all(|n| *n > 1200), "{kind:?}: {c:?}");
        }
    }

    #[test]
    fn maglev_weights_and_minimal_disruption() {
        let kind = LbKind::Maglev { size: 65_537 };
        let c = counts(kind, &[1, 3], 20_000, |i| Some(hash_of(i)));
        let share = c[1] as f64 / 20_000.0;
        assert!((0.65..0.85).contains(&share), "{c:?}");
        // Removing one of four endpoints moves few keys that were not on it.
        let four = set(&[1, 1, 1, 1], kind);
        let three = EndpointSet::new(four.endpoints[..3].to_vec(), kind);
        let rr = AtomicUsize::new(0);
        let moved = (0..4000u64)
            .filter(|k| {
                let h = hash_of(k);
                let a = pick(kind, &four, &rr, Some(h)).map(|e| e.addr);
                let b = pick(kind, &three, &rr, Some(h)).map(|e| e.addr);
                a != b && a != Some(four.endpoints[3].addr)
            })
            .count();
        assert!(moved < 600, "moved {moved}");
    }
}
