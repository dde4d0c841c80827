//! `WorkloadEntry` and `WorkloadGroup` (networking.istio.io): non-Kubernetes workloads.
//!
//! Mirrors istio/api `networking/v1alpha3/workload_entry.proto` and `workload_group.proto`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The spec of a `WorkloadEntry` (also a ServiceEntry endpoint).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEntry {
    /// IP, DNS name or `unix://` socket.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Port name to endpoint port.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    /// Workload labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Network the workload is on.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
    /// `region/zone/subzone`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub locality: String,
    /// Load-balancing weight.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub weight: u32,
    /// Service account of the workload.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account: String,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// The spec of a `WorkloadGroup`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadGroup {
    /// Metadata copied to generated WorkloadEntries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<WorkloadGroupObjectMeta>,
    /// Template of generated WorkloadEntries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<WorkloadEntry>,
    /// Readiness probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ReadinessProbe>,
}

/// Labels and annotations for generated entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadGroupObjectMeta {
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A readiness probe (one of httpGet, tcpSocket, exec, grpc).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessProbe {
    /// Delay before the first probe (seconds).
    #[serde(default)]
    pub initial_delay_seconds: i32,
    /// Probe timeout (seconds).
    #[serde(default)]
    pub timeout_seconds: i32,
    /// Probe period (seconds).
    #[serde(default)]
    pub period_seconds: i32,
    /// Successes to become ready.
    #[serde(default)]
    pub success_threshold: i32,
    /// Failures to become unready.
    #[serde(default)]
    pub failure_threshold: i32,
    /// HTTP GET probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpHealthCheckConfig>,
    /// TCP connect probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpHealthCheckConfig>,
    /// Command probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecHealthCheckConfig>,
    /// gRPC health probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcHealthCheckConfig>,
}

/// HTTP GET probe.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpHealthCheckConfig {
    /// Path.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// Port (required).
    #[serde(default)]
    pub port: u32,
    /// Host.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// `HTTP` or `HTTPS`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scheme: String,
    /// Extra headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
}

/// A probe header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpHeader {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Value.
    #[serde(default)]
    pub value: String,
}

/// TCP connect probe.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpHealthCheckConfig {
    /// Host.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// Port (required).
    #[serde(default)]
    pub port: u32,
}

/// Command probe.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecHealthCheckConfig {
    /// Command and arguments.
    #[serde(default)]
    pub command: Vec<String>,
}

/// gRPC health probe.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcHealthCheckConfig {
    /// Port.
    #[serde(default)]
    pub port: u32,
    /// Service name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service: String,
}
