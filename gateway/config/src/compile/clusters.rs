//! Clusters from route destinations and ServiceEntries, with endpoints and the merged
//! DestinationRule policy (top-level, then port-level, then the subset's own, as Istio merges).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::hosts::{covers, exported_to, resolve_fqdn};
use super::routes::{ClusterKey, ClusterNamer};
use super::CompileOptions;
use crate::model::destination_rule::{H2UpgradePolicy, Subset, TrafficPolicy};
use crate::model::service_entry::{Resolution, ServicePort};
use crate::model::{DestinationRule, ServiceEntry, WorkloadEntry};
use crate::resource::{Resource, ResourceSet};
use crate::snapshot::cluster::{
    cluster_name, Cluster, ClusterPolicy, Discovery, Endpoint, UpstreamProtocol,
};

/// Port used for a destination that names none and whose service has no single port.
pub const DEFAULT_PORT: u16 = 80;

/// A ServiceEntry host: the entry that declares it.
struct ServiceRef<'a> {
    res: &'a Resource,
    se: &'a ServiceEntry,
}

/// Collects the clusters routes ask for, then builds them.
pub struct ClusterBuilder<'a> {
    set: &'a ResourceSet,
    opts: &'a CompileOptions,
    services: HashMap<String, ServiceRef<'a>>,
    wildcard_services: Vec<(String, ServiceRef<'a>)>,
    wanted: BTreeMap<Arc<str>, (String, u16, String)>,
}

impl<'a> ClusterBuilder<'a> {
    /// Indexes the ServiceEntries visible to the gateway's namespace.
    pub fn new(set: &'a ResourceSet, opts: &'a CompileOptions) -> Self {
        let mut services = HashMap::new();
        let mut wildcard_services = Vec::new();
        for (res, se) in set.service_entries() {
            if !exported_to(&se.export_to, &res.namespace, &opts.namespace) {
                continue;
            }
            for h in &se.hosts {
                let fqdn = resolve_fqdn(h, &res.namespace, &opts.domain_suffix);
                let sref = ServiceRef { res, se };
                if fqdn.contains('*') {
                    wildcard_services.push((fqdn, sref));
                } else {
                    services.entry(fqdn).or_insert(sref);
                }
            }
        }
        ClusterBuilder {
            set,
            opts,
            services,
            wildcard_services,
            wanted: BTreeMap::new(),
        }
    }

    fn service(&self, host: &str) -> Option<&ServiceRef<'a>> {
        self.services.get(host).or_else(|| {
            self.wildcard_services
                .iter()
                .filter(|(p, _)| covers(p, host))
                .max_by_key(|(p, _)| p.len())
                .map(|(_, s)| s)
        })
    }

    /// Also builds a cluster for every port (and DestinationRule subset) of every
    /// non-wildcard ServiceEntry host, so callouts can name them.
    pub fn add_service_entry_clusters(&mut self) {
        let mut keys = Vec::new();
        for (host, s) in &self.services {
            for p in &s.se.ports {
                let Ok(port) = u16::try_from(p.number) else {
                    continue;
                };
                keys.push((host.clone(), port, String::new()));
                if let Some((_, dr)) = self.destination_rule(host) {
                    for sub in &dr.subsets {
                        keys.push((host.clone(), port, sub.name.clone()));
                    }
                }
            }
        }
        for (h, p, s) in keys {
            self.wanted
                .entry(Arc::from(cluster_name(p, &s, &h)))
                .or_insert((h, p, s));
        }
    }

    /// The DestinationRule for `host`: visible to the gateway, selecting it, most specific host;
    /// on a tie the one in the gateway's namespace, then the first loaded.
    fn destination_rule(&self, host: &str) -> Option<(&'a Resource, &'a DestinationRule)> {
        let mut best: Option<(&Resource, &DestinationRule, (bool, usize, bool))> = None;
        for (res, dr) in self.set.destination_rules() {
            if !exported_to(&dr.export_to, &res.namespace, &self.opts.namespace) {
                continue;
            }
            if let Some(sel) = &dr.workload_selector {
                let ours = res.namespace == self.opts.namespace
                    && sel
                        .match_labels
                        .iter()
                        .all(|(k, v)| self.opts.labels.get(k) == Some(v));
                if !ours {
                    continue;
                }
            }
            let dr_host = resolve_fqdn(&dr.host, &res.namespace, &self.opts.domain_suffix);
            if !covers(&dr_host, host) {
                continue;
            }
            let rank = (
                dr_host == host,
                dr_host.len(),
                res.namespace == self.opts.namespace,
            );
            if best.as_ref().is_none_or(|(_, _, b)| rank > *b) {
                best = Some((res, dr, rank));
            }
        }
        best.map(|(r, d, _)| (r, d))
    }

    /// Builds every requested cluster.
    pub fn build(self) -> Vec<Arc<Cluster>> {
        self.wanted
            .iter()
            .map(|(name, (host, port, subset))| Arc::new(self.cluster(name, host, *port, subset)))
            .collect()
    }

    fn cluster(&self, name: &Arc<str>, host: &str, port: u16, subset: &str) -> Cluster {
        let mut sources = Vec::new();
        let svc = self.service(host);
        let svc_port = svc.and_then(|s| s.se.ports.iter().find(|p| p.number == u32::from(port)));
        let (discovery, mut endpoints) = match svc {
            Some(s) => {
                sources.push(format!(
                    "ServiceEntry {}/{}",
                    s.res.namespace, s.res.meta.name
                ));
                self.service_endpoints(s, host, port, svc_port)
            }
            None => (
                Discovery::StrictDns,
                vec![Endpoint {
                    address: host.to_owned(),
                    port,
                    weight: 1,
                    locality: String::new(),
                    labels: BTreeMap::new(),
                }],
            ),
        };
        let mut policy = ClusterPolicy::default();
        let mut protocol = match svc_port.map(|p| p.protocol.to_ascii_uppercase()) {
            Some(p) if p == "HTTP2" || p == "GRPC" => UpstreamProtocol::Http2,
            Some(p) if matches!(p.as_str(), "TCP" | "TLS" | "MONGO" | "MYSQL" | "REDIS") => {
                UpstreamProtocol::Tcp
            }
            _ => UpstreamProtocol::Http1,
        };
        if let Some((res, dr)) = self.destination_rule(host) {
            sources.push(format!(
                "DestinationRule {}/{}",
                res.namespace, res.meta.name
            ));
            if let Some(tp) = &dr.traffic_policy {
                apply(&mut policy, tp, port);
            }
            if !subset.is_empty() {
                if let Some(sub) = dr.subsets.iter().find(|s| s.name == subset) {
                    if let Some(tp) = &sub.traffic_policy {
                        apply(&mut policy, tp, port);
                    }
                    endpoints.retain(|e| subset_selects(sub, e));
                }
            }
        }
        let upgrade = policy
            .connection_pool
            .as_ref()
            .and_then(|c| c.http.as_ref())
            .map(|h| h.h2_upgrade_policy);
        if upgrade == Some(H2UpgradePolicy::Upgrade) && protocol == UpstreamProtocol::Http1 {
            protocol = UpstreamProtocol::Http2;
        }
        Cluster {
            name: name.clone(),
            host: host.to_owned(),
            port,
            subset: subset.to_owned(),
            discovery,
            endpoints,
            protocol,
            policy,
            sources,
        }
    }

    fn service_endpoints(
        &self,
        s: &ServiceRef<'_>,
        host: &str,
        port: u16,
        svc_port: Option<&ServicePort>,
    ) -> (Discovery, Vec<Endpoint>) {
        let target = |we: &WorkloadEntry| -> u16 {
            svc_port
                .and_then(|p| we.ports.get(&p.name).copied())
                .or(svc_port.map(|p| p.target_port).filter(|t| *t != 0))
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(port)
        };
        let to_endpoint = |we: &WorkloadEntry| Endpoint {
            address: we.address.clone(),
            port: target(we),
            weight: we.weight.max(1),
            locality: we.locality.clone(),
            labels: we.labels.clone(),
        };
        let discovery = match s.se.resolution {
            Resolution::Static => Discovery::Static,
            Resolution::Dns => Discovery::StrictDns,
            Resolution::DnsRoundRobin => Discovery::LogicalDns,
            Resolution::None | Resolution::DynamicDns => {
                return (Discovery::OriginalDst, Vec::new())
            }
        };
        let mut eps: Vec<Endpoint> = if let Some(sel) = &s.se.workload_selector {
            self.set
                .workload_entries()
                .filter(|(r, we)| {
                    r.namespace == s.res.namespace
                        && sel
                            .labels
                            .iter()
                            .all(|(k, v)| we.labels.get(k).or(r.meta.labels.get(k)) == Some(v))
                })
                .map(|(r, we)| {
                    let mut e = to_endpoint(we);
                    for (k, v) in &r.meta.labels {
                        e.labels.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                    e
                })
                .collect()
        } else {
            s.se.endpoints.iter().map(to_endpoint).collect()
        };
        if eps.is_empty() && discovery != Discovery::Static {
            eps.push(Endpoint {
                address: host.to_owned(),
                port: svc_port
                    .map(|p| p.target_port)
                    .filter(|t| *t != 0)
                    .and_then(|t| u16::try_from(t).ok())
                    .unwrap_or(port),
                weight: 1,
                locality: String::new(),
                labels: BTreeMap::new(),
            });
        }
        (discovery, eps)
    }
}

impl ClusterNamer for ClusterBuilder<'_> {
    fn name(&mut self, key: ClusterKey) -> Arc<str> {
        let port = key.port.unwrap_or_else(|| {
            let ports = self.service(&key.host).map(|s| s.se.ports.as_slice());
            match ports {
                Some([only]) => u16::try_from(only.number).unwrap_or(DEFAULT_PORT),
                _ => DEFAULT_PORT,
            }
        });
        let name: Arc<str> = Arc::from(cluster_name(port, &key.subset, &key.host));
        self.wanted
            .entry(name.clone())
            .or_insert((key.host, port, key.subset));
        name
    }
}

fn subset_selects(sub: &Subset, e: &Endpoint) -> bool {
    sub.labels.iter().all(|(k, v)| e.labels.get(k) == Some(v))
}

/// Overlays a traffic policy, then its port-level settings for `port`, field by field.
fn apply(policy: &mut ClusterPolicy, tp: &TrafficPolicy, port: u16) {
    overlay(
        policy,
        tp.load_balancer.as_ref(),
        tp.connection_pool.as_ref(),
        tp.outlier_detection.as_ref(),
        tp.tls.as_ref(),
    );
    let port_level = tp
        .port_level_settings
        .iter()
        .find(|p| p.port.is_some_and(|p| p.number == u32::from(port)));
    if let Some(pl) = port_level {
        overlay(
            policy,
            pl.load_balancer.as_ref(),
            pl.connection_pool.as_ref(),
            pl.outlier_detection.as_ref(),
            pl.tls.as_ref(),
        );
    }
}

fn overlay(
    policy: &mut ClusterPolicy,
    lb: Option<&crate::model::destination_rule::LoadBalancerSettings>,
    pool: Option<&crate::model::destination_rule::ConnectionPoolSettings>,
    od: Option<&crate::model::destination_rule::OutlierDetection>,
    tls: Option<&crate::model::destination_rule::ClientTlsSettings>,
) {
    if let Some(v) = lb {
        policy.load_balancer = Some(v.clone());
    }
    if let Some(v) = pool {
        policy.connection_pool = Some(v.clone());
    }
    if let Some(v) = od {
        policy.outlier_detection = Some(v.clone());
    }
    if let Some(v) = tls {
        policy.tls = Some(v.clone());
    }
}
