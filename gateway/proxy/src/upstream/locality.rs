//! Locality-aware load balancing as Istio configures Envoy for it: from the gateway's own
//! locality and labels and a cluster's `localityLbSetting`, each config endpoint gets a
//! priority level (failover, failoverPriority) and a locality group with a weight
//! (distribute). Computed once per cluster config, never per request.
//!
//! Istio's rules (pilot `loadbalancer` package), restated:
//! - the DestinationRule setting wins over the mesh default (`{enabled: true}`); `enabled:
//!   false` turns everything off;
//! - `distribute` applies whether or not outlier detection is set: the first entry whose `from`
//!   matches the gateway's locality re-weights the matching localities and drops the others;
//! - failover (the default one, `failover` and `failoverPriority`) applies only with outlier
//!   detection, since without it Envoy never sees an endpoint fail;
//! - Envoy weighs localities (`locality_weighted_lb_config`) only with `distribute`, or with
//!   failover settings given explicitly; the default failover pools endpoints per priority.

use std::collections::BTreeMap;

use meshgate_config::snapshot::cluster::Cluster;

/// Istio's topology labels, added to the gateway's and every endpoint's labels from their
/// localities (as Istio's label augmentation does) so `failoverPriority` can name them.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// Zone label.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Subzone label.
pub const SUBZONE_LABEL: &str = "topology.istio.io/subzone";

/// `region/zone/subzone`; missing parts are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Locality {
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// Subzone.
    pub subzone: String,
}

impl Locality {
    /// Parses `region/zone/subzone` (any suffix may be missing).
    pub fn parse(s: &str) -> Locality {
        let mut it = s.splitn(3, '/');
        let mut next = || it.next().unwrap_or_default().to_owned();
        Locality {
            region: next(),
            zone: next(),
            subzone: next(),
        }
    }

    /// True when this locality matches a rule (`*` matches anything; a missing zone or
    /// subzone in the rule matches any).
    pub fn matches(&self, rule: &str) -> bool {
        let r = Locality::parse(rule);
        let part = |rule: &str, v: &str, optional: bool| {
            rule == "*" || (optional && rule.is_empty()) || rule == v
        };
        part(&r.region, &self.region, false)
            && part(&r.zone, &self.zone, true)
            && part(&r.subzone, &self.subzone, true)
    }

    /// Istio's priority of an endpoint in `ep` seen from `self`: 0 same subzone, 1 same zone,
    /// 2 same region, 3 elsewhere.
    fn priority_of(&self, ep: &Locality) -> u32 {
        if self.region != ep.region {
            3
        } else if self.zone != ep.zone {
            2
        } else if self.subzone != ep.subzone {
            1
        } else {
            0
        }
    }

    /// The topology labels Istio derives from a locality.
    pub fn labels(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            (REGION_LABEL, self.region.as_str()),
            (ZONE_LABEL, self.zone.as_str()),
            (SUBZONE_LABEL, self.subzone.as_str()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
    }
}

/// The gateway itself, as locality load balancing sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Node {
    /// `--locality`.
    pub locality: Locality,
    /// `--labels` plus the topology labels of `locality`.
    pub labels: BTreeMap<String, String>,
}

impl Node {
    /// The gateway with this locality string and labels.
    pub fn new(locality: &str, mut labels: BTreeMap<String, String>) -> Node {
        let locality = Locality::parse(locality);
        for (k, v) in locality.labels() {
            labels.entry(k.to_owned()).or_insert_with(|| v.to_owned());
        }
        Node { locality, labels }
    }
}

/// Where one config endpoint goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Priority level (0 first).
    pub priority: u32,
    /// Index of its locality group in [`Plan::group_weights`].
    pub group: u32,
}

/// Locality load balancing of one cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Per config endpoint: its placement, or `None` when `distribute` dropped it.
    pub placements: Vec<Option<Placement>>,
    /// Envoy's locality weight per group.
    pub group_weights: Vec<u32>,
    /// Envoy weighs localities within a priority (`locality_weighted_lb_config`).
    pub weighted: bool,
    /// Number of priority levels.
    pub priorities: u32,
}

impl Plan {
    /// True when the cluster is one pool (one priority, no locality weights).
    pub fn is_flat(&self) -> bool {
        self.priorities <= 1 && !self.weighted
    }
}

/// One Envoy `LocalityLbEndpoints` while Istio's rules run: a locality, a priority, a weight
/// and the config endpoints in it.
struct Group {
    locality: Locality,
    priority: u32,
    weight: u32,
    members: Vec<usize>,
}

/// Makes priorities consecutive from 0, keeping their order.
fn compact(groups: &mut [Group]) {
    let mut seen: Vec<u32> = groups.iter().map(|g| g.priority).collect();
    seen.sort_unstable();
    seen.dedup();
    for g in groups {
        g.priority = seen.binary_search(&g.priority).unwrap_or(0) as u32;
    }
}

/// Computes the plan of `cluster` for the gateway `node`.
pub fn plan(cluster: &Cluster, node: &Node) -> Plan {
    let eps = &cluster.endpoints;
    // One group per locality, in order of first appearance, weighing its endpoints' weights.
    let mut groups: Vec<Group> = Vec::new();
    for (i, e) in eps.iter().enumerate() {
        let loc = Locality::parse(&e.locality);
        match groups.iter_mut().find(|g| g.locality == loc) {
            Some(g) => {
                g.weight = g.weight.saturating_add(e.weight.max(1));
                g.members.push(i);
            }
            None => groups.push(Group {
                locality: loc,
                priority: 0,
                weight: e.weight.max(1),
                members: vec![i],
            }),
        }
    }
    let lb = cluster.policy.load_balancer.as_ref();
    let setting = lb.and_then(|l| l.locality_lb_setting.clone());
    let enabled = setting.as_ref().and_then(|s| s.enabled) != Some(false);
    let setting = setting.unwrap_or_default();
    let failover_on = cluster.policy.outlier_detection.is_some();
    let mut weighted = false;
    if enabled && !setting.distribute.is_empty() {
        weighted = true;
        distribute(&mut groups, node, &setting.distribute);
    } else if enabled && failover_on {
        weighted = !setting.failover.is_empty() || !setting.failover_priority.is_empty();
        if !setting.failover_priority.is_empty() {
            groups = failover_priority(groups, cluster, node, &setting.failover_priority);
            if !setting.failover.is_empty() {
                region_failover(&mut groups, node, &setting.failover);
            }
        } else {
            region_failover(&mut groups, node, &setting.failover);
        }
    }
    let mut placements = vec![None; eps.len()];
    let mut group_weights = Vec::with_capacity(groups.len());
    let mut priorities = 0;
    for (gi, g) in groups.iter().enumerate() {
        group_weights.push(g.weight.max(1));
        priorities = priorities.max(g.priority + 1);
        for &m in &g.members {
            placements[m] = Some(Placement {
                priority: g.priority,
                group: gi as u32,
            });
        }
    }
    Plan {
        placements,
        group_weights,
        weighted,
        priorities,
    }
}

/// `distribute`: the first rule whose `from` matches the gateway re-weights the localities its
/// `to` matches (a wildcard's weight is shared in proportion to the localities' own weights,
/// rounded up) and drops every other locality. A weight of 0 leaves a locality's weight as it
/// was (Istio's behaviour).
fn distribute(
    groups: &mut Vec<Group>,
    node: &Node,
    rules: &[meshgate_config::model::destination_rule::Distribute],
) {
    let Some(rule) = rules.iter().find(|d| node.locality.matches(&d.from)) else {
        return;
    };
    // Istio walks a Go map (no order); take exact localities before wildcards, then longer
    // ones first, so the most specific destination claims a locality.
    let mut tos: Vec<(&String, u32)> = rule.to.iter().map(|(k, v)| (k, *v)).collect();
    tos.sort_by_key(|(k, _)| (k.contains('*'), std::cmp::Reverse(k.len())));
    let mut claimed = vec![false; groups.len()];
    for (to, weight) in tos {
        let hit: Vec<usize> = (0..groups.len())
            .filter(|i| !claimed[*i] && groups[*i].locality.matches(to))
            .collect();
        let total: u64 = hit.iter().map(|i| u64::from(groups[*i].weight)).sum();
        for &i in &hit {
            claimed[i] = true;
            let w = u64::from(groups[i].weight) * u64::from(weight);
            if w > 0 && total > 0 {
                groups[i].weight = u32::try_from(w.div_ceil(total)).unwrap_or(u32::MAX);
            }
        }
    }
    let mut i = 0;
    groups.retain(|_| {
        i += 1;
        claimed[i - 1]
    });
}

/// Default failover (and `failover` between regions): same subzone, zone, region, the
/// failover region, then anything else; combined with priorities already set (by
/// `failoverPriority`) as Istio does (`existing * 5 + locality priority`), then compacted.
fn region_failover(
    groups: &mut [Group],
    node: &Node,
    failover: &[meshgate_config::model::destination_rule::Failover],
) {
    for g in groups.iter_mut() {
        let mut p = node.locality.priority_of(&g.locality);
        if p == 3 {
            if let Some(f) = failover.iter().find(|f| f.from == node.locality.region) {
                if g.locality.region != f.to {
                    p = 4;
                }
            }
        }
        g.priority = g.priority * 5 + p;
    }
    compact(groups);
}

/// `failoverPriority`: an endpoint whose labels match the gateway's on the first `n` listed
/// labels (all of them: priority 0) gets priority `len - n`; `label=value` compares with that
/// value instead of the gateway's. Splits each locality by priority.
fn failover_priority(
    groups: Vec<Group>,
    cluster: &Cluster,
    node: &Node,
    labels: &[String],
) -> Vec<Group> {
    if node.labels.is_empty() {
        return groups;
    }
    let wanted: Vec<(&str, Option<&str>)> = labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (l.as_str(), None),
        })
        .collect();
    let n = wanted.len() as u32;
    let mut out = Vec::new();
    for g in groups {
        let mut split: BTreeMap<u32, Group> = BTreeMap::new();
        for m in g.members {
            let e = &cluster.endpoints[m];
            let loc = Locality::parse(&e.locality);
            let label = |k: &str| -> String {
                if let Some(v) = e.labels.get(k) {
                    return v.clone();
                }
                loc.labels()
                    .find(|(l, _)| *l == k)
                    .map(|(_, v)| v.to_owned())
                    .unwrap_or_default()
            };
            let p = wanted
                .iter()
                .enumerate()
                .find(|(_, (k, over))| {
                    let mine = over.map_or_else(
                        || node.labels.get(*k).cloned().unwrap_or_default(),
                        str::to_owned,
                    );
                    mine != label(k)
                })
                .map_or(0, |(j, _)| n - j as u32);
            let entry = split.entry(p).or_insert_with(|| Group {
                locality: g.locality.clone(),
                priority: p,
                weight: 0,
                members: Vec::new(),
            });
            entry.weight = entry.weight.saturating_add(e.weight.max(1));
            entry.members.push(m);
        }
        out.extend(split.into_values());
    }
    compact(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshgate_config::model::destination_rule::{
        Distribute, Failover, LoadBalancerSettings, LocalityLoadBalancerSetting, OutlierDetection,
    };
    use meshgate_config::snapshot::cluster::{
        ClusterPolicy, Discovery, Endpoint, UpstreamProtocol,
    };

    fn cluster(locs: &[&str], lb: Option<LocalityLoadBalancerSetting>, outlier: bool) -> Cluster {
        Cluster {
            name: "c".into(),
            host: "h".into(),
            port: 80,
            subset: String::new(),
            discovery: Discovery::Static,
            endpoints: locs
                .iter()
                .enumerate()
                .map(|(i, l)| Endpoint {
                    address: format!("10.0.0.{i}"),
                    port: 80,
                    weight: 1,
                    locality: (*l).to_owned(),
                    labels: BTreeMap::new(),
                })
                .collect(),
            protocol: UpstreamProtocol::Http1,
            policy: ClusterPolicy {
                load_balancer: Some(LoadBalancerSettings {
                    locality_lb_setting: lb,
                    ..Default::default()
                }),
                outlier_detection: outlier.then(OutlierDetection::default),
                ..Default::default()
            },
            sources: Vec::new(),
        }
    }

    fn prios(p: &Plan) -> Vec<Option<u32>> {
        p.placements.iter().map(|x| x.map(|x| x.priority)).collect()
    }

    const LOCS: [&str; 5] = ["r1/z1/s1", "r1/z1/s2", "r1/z2/s1", "r2/z1/s1", "r3/z1/s1"];

    #[test]
    fn default_failover_needs_outlier_detection() {
        let node = Node::new("r1/z1/s1", BTreeMap::new());
        let off = plan(&cluster(&LOCS, None, false), &node);
        assert!(off.is_flat());
        let on = plan(&cluster(&LOCS, None, true), &node);
        assert_eq!(
            prios(&on),
            [Some(0), Some(1), Some(2), Some(3), Some(3)],
            "{on:?}"
        );
        assert!(!on.weighted);
        let disabled = LocalityLoadBalancerSetting {
            enabled: Some(false),
            ..Default::default()
        };
        assert!(plan(&cluster(&LOCS, Some(disabled), true), &node).is_flat());
    }

    #[test]
    fn priorities_are_compacted() {
        let node = Node::new("r1/z1/s1", BTreeMap::new());
        let p = plan(
            &cluster(&["r2/z/s", "r1/z1/s1", "r1/z9/s"], None, true),
            &node,
        );
        assert_eq!(prios(&p), [Some(2), Some(0), Some(1)]);
        assert_eq!(p.priorities, 3);
    }

    #[test]
    fn region_failover_orders_the_target_region_before_others() {
        let node = Node::new("r1/z1/s1", BTreeMap::new());
        let s = LocalityLoadBalancerSetting {
            failover: vec![Failover {
                from: "r1".into(),
                to: "r3".into(),
            }],
            ..Default::default()
        };
        let p = plan(&cluster(&LOCS, Some(s), true), &node);
        assert_eq!(prios(&p), [Some(0), Some(1), Some(2), Some(4), Some(3)]);
        assert!(p.weighted);
    }

    #[test]
    fn distribute_reweights_and_drops() {
        let node = Node::new("r1/z1/s1", BTreeMap::new());
        let s = LocalityLoadBalancerSetting {
            distribute: vec![Distribute {
                from: "r1/z1/*".into(),
                to: BTreeMap::from([("r1/z1/*".into(), 80), ("r2/*".into(), 20)]),
            }],
            ..Default::default()
        };
        let p = plan(&cluster(&LOCS, Some(s), false), &node);
        assert_eq!(prios(&p), [Some(0), Some(0), None, Some(0), None]);
        // r1/z1/* matches two localities of weight 1: 80 * 1 / 2 each.
        assert_eq!(p.group_weights, [40, 40, 20]);
        assert!(p.weighted);
    }

    #[test]
    fn failover_priority_by_labels() {
        let node = Node::new(
            "r1/z1/s1",
            BTreeMap::from([("net".to_owned(), "a".to_owned())]),
        );
        let mut c = cluster(
            &["r1/z1/s1", "r1/z2/s1", "r2/z1/s1", "r1/z1/s1"],
            None,
            true,
        );
        for (e, net) in c.endpoints.iter_mut().zip(["a", "a", "a", "b"]) {
            e.labels.insert("net".into(), net.into());
        }
        c.policy
            .load_balancer
            .as_mut()
            .expect("lb")
            .locality_lb_setting = Some(LocalityLoadBalancerSetting {
            failover_priority: vec!["net".into(), REGION_LABEL.into(), ZONE_LABEL.into()],
            ..Default::default()
        });
        let p = plan(&c, &node);
        // net+region+zone match: 0; net+region: 1; net only: 2; nothing: 3.
        assert_eq!(prios(&p), [Some(0), Some(1), Some(2), Some(3)]);
        // An override compares with the given value instead of the gateway's.
        c.policy
            .load_balancer
            .as_mut()
            .expect("lb")
            .locality_lb_setting = Some(LocalityLoadBalancerSetting {
            failover_priority: vec!["net=b".into()],
            ..Default::default()
        });
        assert_eq!(
            prios(&plan(&c, &node)),
            [Some(1), Some(1), Some(1), Some(0)]
        );
    }

    #[test]
    fn locality_rules_match_like_istio() {
        let l = Locality::parse("r1/z1/s1");
        for rule in ["*", "r1", "r1/*", "r1/z1", "r1/z1/*", "r1/z1/s1"] {
            assert!(l.matches(rule), "{rule}");
        }
        for rule in ["r2", "r1/z2", "r1/z1/s2", "*/z2"] {
            assert!(!l.matches(rule), "{rule}");
        }
    }
}
