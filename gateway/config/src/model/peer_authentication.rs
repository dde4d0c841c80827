//! `PeerAuthentication` (security.istio.io): mutual TLS requirements for incoming traffic.
//!
//! Mirrors istio/api `security/v1beta1/peer_authentication.proto` field for field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::WorkloadSelector;

/// The spec of a `PeerAuthentication`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthentication {
    /// Workloads it applies to (absent: the whole namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Mutual TLS mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<PeerMtls>,
    /// Per-port mutual TLS modes (keys are port numbers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_level_mtls: Option<BTreeMap<u32, PeerMtls>>,
}

/// Mutual TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerMtls {
    /// Mode.
    #[serde(default)]
    pub mode: MtlsMode,
}

/// Mutual TLS modes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the parent.
    #[default]
    Unset,
    /// No mutual TLS.
    Disable,
    /// Plain text and mutual TLS.
    Permissive,
    /// Mutual TLS only.
    Strict,
}
