//! `WasmPlugin` (extensions.istio.io): a proxy-wasm plugin, where to fetch it and how to run it.
//!
//! Mirrors istio/api `extensions/v1alpha1/wasm.proto` field for field.

use serde::{Deserialize, Serialize};

use super::common::{PolicyTargetReference, PortSelector, WorkloadSelector};

/// The spec of a `WasmPlugin`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmPlugin {
    /// Workloads it applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Deprecated single target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// Targets it applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// Module location: `oci://`, `file://`, `http(s)://` (required).
    #[serde(default)]
    pub url: String,
    /// Expected SHA-256 of the module (hex).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
    /// When to pull OCI images.
    #[serde(default)]
    pub image_pull_policy: PullPolicy,
    /// Secret with registry credentials (must not be empty when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    /// Public key to verify signatures.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verification_key: String,
    /// Configuration handed to the plugin (as JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_config: Option<serde_json::Value>,
    /// Root id of the plugin in the module (must not be empty when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_name: Option<String>,
    /// Where in the filter chain it runs.
    #[serde(default)]
    pub phase: PluginPhase,
    /// Order within the phase (higher first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// What to do when the plugin fails.
    #[serde(default)]
    pub fail_strategy: FailStrategy,
    /// VM settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_config: Option<VmConfig>,
    /// Traffic it applies to.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub match_: Vec<WasmPluginTrafficSelector>,
    /// HTTP or network plugin.
    #[serde(default, rename = "type")]
    pub type_: PluginType,
}

/// Pull policies (Istio spells two of them in CamelCase).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum PullPolicy {
    /// Default: `IfNotPresent`, or `Always` for `latest`.
    #[default]
    #[serde(rename = "UNSPECIFIED_POLICY")]
    UnspecifiedPolicy,
    /// Use a cached image when present.
    IfNotPresent,
    /// Always pull.
    Always,
}

/// Filter chain phases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PluginPhase {
    /// After the built-in filters, before the router.
    #[default]
    UnspecifiedPhase,
    /// Before authentication.
    Authn,
    /// Before authorization.
    Authz,
    /// Before stats.
    Stats,
}

/// Failure handling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailStrategy {
    /// Fail the request.
    #[default]
    FailClose,
    /// Skip the plugin.
    FailOpen,
    /// Recycle the VM and retry.
    FailReload,
}

/// VM settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VmConfig {
    /// Environment variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

/// Where an environment variable's value comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EnvValueSource {
    /// The `value` field.
    #[default]
    Inline,
    /// The proxy's own environment.
    Host,
}

/// An environment variable of the VM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// Name (required).
    #[serde(default)]
    pub name: String,
    /// Source of the value.
    #[serde(default)]
    pub value_from: EnvValueSource,
    /// Value (INLINE only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
}

/// Workload modes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadMode {
    /// Both.
    #[default]
    Undefined,
    /// Outbound.
    Client,
    /// Inbound.
    Server,
    /// Both.
    ClientAndServer,
}

/// Traffic a plugin applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmPluginTrafficSelector {
    /// Mode.
    #[serde(default)]
    pub mode: WorkloadMode,
    /// Ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSelector>,
}

/// Plugin types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PluginType {
    /// HTTP.
    #[default]
    UnspecifiedPluginType,
    /// HTTP filter.
    Http,
    /// Network filter.
    Network,
}
