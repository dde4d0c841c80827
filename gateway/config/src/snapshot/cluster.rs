//! Compiled upstream clusters: service host + port + subset, how endpoints are found, and the
//! traffic policy that applies after Istio's DestinationRule merging.
//!
//! Endpoint health, DNS answers and connection pools are live state owned by the proxy; here
//! only what config says.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::model::destination_rule::{
    ClientTlsSettings, ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection,
};

/// How a cluster finds its endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Discovery {
    /// Fixed addresses (ServiceEntry `STATIC`, WorkloadEntry).
    Static,
    /// Resolve each endpoint's host name (or the service host) by DNS, all answers used.
    StrictDns,
    /// Resolve by DNS, use the first answer (ServiceEntry `DNS_ROUND_ROBIN`).
    LogicalDns,
    /// Forward to the address the client asked for (ServiceEntry `NONE`).
    OriginalDst,
}

/// One endpoint as config names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// IP address or DNS name (or `unix://` path).
    pub address: String,
    /// Port to connect to.
    pub port: u16,
    /// Load-balancing weight (1 when unset).
    pub weight: u32,
    /// `region/zone/subzone`, if known.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub locality: String,
    /// Workload labels (subset selection already applied).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Upstream protocol of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 unless the policy upgrades it.
    Http1,
    /// HTTP/2 (ports named/declared HTTP2 or GRPC, or `h2UpgradePolicy: UPGRADE`).
    Http2,
    /// Raw TCP.
    Tcp,
}

/// The traffic policy of a cluster after merging top-level, port-level and subset policies.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPolicy {
    /// Load balancer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection pool limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Outlier detection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS towards the upstream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTlsSettings>,
}

/// One upstream cluster: `outbound|PORT|SUBSET|HOST`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    /// Istio's cluster name.
    pub name: Arc<str>,
    /// The service host (FQDN).
    pub host: String,
    /// The service port.
    pub port: u16,
    /// Subset name, empty for the whole service.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subset: String,
    /// How endpoints are found.
    pub discovery: Discovery,
    /// Endpoints named by config (for DNS discovery: names to resolve).
    pub endpoints: Vec<Endpoint>,
    /// Upstream protocol.
    pub protocol: UpstreamProtocol,
    /// Merged traffic policy.
    pub policy: ClusterPolicy,
    /// The resources that shaped it (`Kind ns/name`).
    pub sources: Vec<String>,
}

/// Istio's outbound cluster name.
pub fn cluster_name(port: u16, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}
