//! `Sidecar` (networking.istio.io): the ingress and egress a workload's proxy accepts.
//!
//! Mirrors istio/api `networking/v1alpha3/sidecar.proto` field for field.

use serde::{Deserialize, Serialize};

use super::common::LabelSelector;
use super::destination_rule::ConnectionPoolSettings;
use super::gateway::ServerTlsSettings;
use super::virtual_service::Destination;

/// The spec of a `Sidecar`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sidecar {
    /// Workloads it applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<LabelSelector>,
    /// Inbound listeners.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IstioIngressListener>,
    /// Outbound listeners and reachable hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<IstioEgressListener>,
    /// Inbound connection pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
    /// Policy for unknown outbound destinations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// A sidecar port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SidecarPort {
    /// Port number.
    #[serde(default)]
    pub number: u32,
    /// Protocol.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// Name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Target port.
    #[serde(default)]
    pub target_port: u32,
}

/// How traffic is captured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaptureMode {
    /// Environment default.
    #[default]
    Default,
    /// iptables redirection.
    Iptables,
    /// No capture.
    None,
}

/// An inbound listener.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IstioIngressListener {
    /// Port (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<SidecarPort>,
    /// Bind address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind: String,
    /// Capture mode.
    #[serde(default)]
    pub capture_mode: CaptureMode,
    /// Where to forward (`127.0.0.1:PORT`, `0.0.0.0:PORT`, `unix://...`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_endpoint: String,
    /// TLS termination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    /// Connection pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
}

/// An outbound listener.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IstioEgressListener {
    /// Port (absent: catch-all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<SidecarPort>,
    /// Bind address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bind: String,
    /// Capture mode.
    #[serde(default)]
    pub capture_mode: CaptureMode,
    /// Reachable hosts, `namespace/dnsName`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// Outbound traffic modes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundMode {
    /// Only registered services.
    #[default]
    RegistryOnly,
    /// Anything.
    AllowAny,
}

/// Policy for outbound traffic to unknown hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboundTrafficPolicy {
    /// Mode.
    #[serde(default)]
    pub mode: OutboundMode,
    /// Egress proxy for unknown hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<Destination>,
}
