//! `ServiceEntry` (networking.istio.io): services known to the mesh beyond the platform's own.
//!
//! Mirrors istio/api `networking/v1alpha3/service_entry.proto` field for field.

use serde::{Deserialize, Serialize};

use super::common::LabelSelector;
use super::workload::WorkloadEntry;

/// The spec of a `ServiceEntry`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntry {
    /// Host names of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Virtual IPs or CIDRs of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Ports of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// Inside or outside the mesh.
    #[serde(default)]
    pub location: Location,
    /// How endpoints are found.
    #[serde(default)]
    pub resolution: Resolution,
    /// Endpoints (oneof with `workloadSelector`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<WorkloadEntry>,
    /// Selects WorkloadEntries (oneof with `endpoints`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelSelector>,
    /// Namespaces the entry is visible to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// Subject alternative names to verify.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

/// A port of a service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// Port number.
    #[serde(default)]
    pub number: u32,
    /// Protocol (HTTP, HTTPS, GRPC, HTTP2, MONGO, TCP, TLS), case-insensitive.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// Port name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Port on the endpoints.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub target_port: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// Whether the service is part of the mesh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    /// Outside the mesh.
    #[default]
    MeshExternal,
    /// Inside the mesh.
    MeshInternal,
}

/// How the proxy finds the service's endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Forward to the address the client asked for.
    #[default]
    None,
    /// Fixed endpoint addresses.
    Static,
    /// Resolve endpoints (or hosts) by DNS, use all answers.
    Dns,
    /// Resolve by DNS, use one answer per connection.
    DnsRoundRobin,
    /// Resolve per request by DNS (dynamic forward proxy).
    DynamicDns,
}
