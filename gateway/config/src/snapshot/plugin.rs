//! Compiled WasmPlugins: where the module comes from, how its VM is set up and which requests
//! of this gateway it runs on, in the order Istio puts them in Envoy's filter chain.
//!
//! Built only by `compile`; the proxy-wasm runtime reads these and owns fetching, VMs and
//! host environment lookups.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Serialize, Serializer};

use crate::model::wasm_plugin::{FailStrategy, PullPolicy};

/// Where the Wasm module is fetched from (Istio's `url`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PluginSource {
    /// A local file: `file://PATH` (the rest after `file://`, as Istio hands it to Envoy), or a
    /// plain absolute path (a meshgate convenience: Istio would read it as `oci:///PATH`).
    File(PathBuf),
    /// `http://` or `https://`, fetched as is.
    Http {
        /// The URL as written.
        url: String,
    },
    /// An OCI image: `oci://REF`, or any URL without a scheme (Istio's default).
    Oci {
        /// The image reference without `oci://` (`registry/repo:tag` or `…@sha256:…`).
        reference: String,
    },
}

impl fmt::Display for PluginSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginSource::File(p) => write!(f, "file://{}", p.display()),
            PluginSource::Http { url } => f.write_str(url),
            PluginSource::Oci { reference } => write!(f, "oci://{reference}"),
        }
    }
}

/// Where in the HTTP filter chain a plugin runs. Ordered as Istio inserts them: `Authn` before
/// Istio's authentication, `Authz` before authorization, `Stats` before stats, `Unspecified`
/// last, right before the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Phase {
    /// `AUTHN`.
    Authn,
    /// `AUTHZ`.
    Authz,
    /// `STATS`.
    Stats,
    /// `UNSPECIFIED_PHASE`.
    Unspecified,
}

impl Phase {
    /// Istio's name of the phase (`AUTHN`, ..., `UNSPECIFIED_PHASE`).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Authn => "AUTHN",
            Phase::Authz => "AUTHZ",
            Phase::Stats => "STATS",
            Phase::Unspecified => "UNSPECIFIED_PHASE",
        }
    }
}

/// What a plugin filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PluginType {
    /// An HTTP filter (`HTTP`, or the type left unspecified).
    Http,
    /// A network (L4) filter: compiled and dumped, not run by meshgate.
    Network,
}

/// The value of one VM environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum EnvValue {
    /// `valueFrom: INLINE`: this value.
    Inline(String),
    /// `valueFrom: HOST`: read from the gateway process's environment by the runtime (a
    /// variable that is not set there is left out, as Envoy does).
    Host,
}

/// One WasmPlugin that applies to this gateway.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plugin {
    /// `namespace/name` of the WasmPlugin.
    pub name: Arc<str>,
    /// Identifies the VM the plugin can share: `sha256:HEX` when a digest is given, else the
    /// source (`file://…`, `http(s)://…`, `oci://…`), then `|` and the root id. Plugins with the
    /// same key and the same `env` can run in one VM.
    pub vm_key: Arc<str>,
    /// Where the module comes from.
    pub source: PluginSource,
    /// Expected SHA-256 of the module, decoded from `sha256`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_sha256"
    )]
    pub sha256: Option<[u8; 32]>,
    /// `imagePullPolicy` as written (`UNSPECIFIED_POLICY`: `IfNotPresent`, or `Always` for an
    /// OCI `latest` tag; the fetcher decides).
    pub image_pull_policy: PullPolicy,
    /// `imagePullSecret` (a Secret in the plugin's namespace), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    /// The root id (`pluginName`); empty when unset.
    pub root_id: String,
    /// `pluginConfig` as the JSON string Istio hands to Envoy (keys sorted, compact); empty when
    /// the config is absent or `{}`.
    pub configuration: Arc<str>,
    /// Filter-chain phase.
    pub phase: Phase,
    /// `priority` as written. Within a phase higher runs first; an unset priority sorts after
    /// every set one (Istio sorts it as `i32::MIN`, whatever the API docs say of a default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// What a fatal plugin error does.
    pub fail_strategy: FailStrategy,
    /// VM environment variables, in the order written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, EnvValue)>,
    /// Listener ports it runs on (`match[].ports` of the match entries that apply to a
    /// gateway); empty: every port.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// HTTP or network filter; only HTTP plugins are served.
    pub plugin_type: PluginType,
    /// HTTP route names it runs on (annotation [`ROUTES_ANNOTATION`]); empty: every route.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// Cap on each VM's memory, in bytes (annotation [`MEMORY_LIMIT_ANNOTATION`]); `None`: the
    /// runtime's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<u64>,
    /// CPU deadline of each callback (annotation [`CALLBACK_DEADLINE_ANNOTATION`]); `None`: the
    /// runtime's default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_deadline: Option<std::time::Duration>,
}

/// meshgate extension: a comma-separated list of VirtualService HTTP route `name`s on the
/// WasmPlugin limits it to those routes.
pub const ROUTES_ANNOTATION: &str = "plugins.meshgate.io/routes";

/// meshgate extension: the plugin's VM memory cap, a Kubernetes quantity (`32Mi`, `1Gi`,
/// `500000`).
pub const MEMORY_LIMIT_ANNOTATION: &str = "plugins.meshgate.io/memory-limit";

/// meshgate extension: the CPU deadline of each plugin callback, a duration (`50ms`, `1s`).
pub const CALLBACK_DEADLINE_ANNOTATION: &str = "plugins.meshgate.io/callback-deadline";

impl Plugin {
    /// True when the plugin runs on a request to listener `port` that matched the route named
    /// `route` (`None`: no route matched). Network plugins never run here.
    pub fn applies(&self, route: Option<&str>, port: u16) -> bool {
        self.plugin_type == PluginType::Http
            && (self.ports.is_empty() || self.ports.contains(&port))
            && (self.routes.is_empty() || route.is_some_and(|r| self.routes.iter().any(|n| n == r)))
    }
}

fn serialize_sha256<S: Serializer>(v: &Option<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(d) => s.serialize_str(&hex(d)),
        None => s.serialize_none(),
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}
