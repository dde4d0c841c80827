//! WasmPlugins for this gateway: which apply (namespace, selector, targetRefs and `match`, as
//! istiod decides for a gateway proxy), what each compiles to, and their filter-chain order.
//!
//! Sources: istio/istio `pilot/pkg/model/push_context.go` (`WasmPluginsByListenerInfo`),
//! `policyattachment.go` (`ShouldAttachPolicy`) and `extensions.go` (URL, config, `match`).

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use super::plugin_json::istio_plugin_config;
use super::CompileOptions;
use crate::diag::{Diagnostic, Issue, Severity};
use crate::model::common::PolicyTargetReference;
use crate::model::wasm_plugin::{
    EnvValueSource, PluginPhase, PluginType as SpecType, WasmPluginTrafficSelector, WorkloadMode,
};
use crate::model::WasmPlugin;
use crate::resource::{Resource, ResourceSet};
use crate::snapshot::plugin::{
    hex, EnvValue, Phase, Plugin, PluginSource, PluginType, CALLBACK_DEADLINE_ANNOTATION,
    MEMORY_LIMIT_ANNOTATION, ROUTES_ANNOTATION,
};

/// The workload label that makes a proxy a Kubernetes Gateway API gateway (its value is the
/// Gateway's name); WasmPlugin `targetRefs` to a `gateway.networking.k8s.io` Gateway match it.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// What plugin compilation needs to know about the rest of the snapshot.
pub struct PluginScope<'a> {
    /// Who this gateway is.
    pub opts: &'a CompileOptions,
    /// The classic Gateways selected for this gateway (`(namespace, name)`).
    pub gateways: &'a [(String, String)],
    /// Names of every HTTP route compiled onto this gateway's listeners.
    pub route_names: &'a HashSet<Arc<str>>,
}

/// Everything plugin compilation produced.
#[derive(Default)]
pub struct PluginsOut {
    /// The plugins, in filter-chain order.
    pub plugins: Vec<Arc<Plugin>>,
    /// What each WasmPlugin became.
    pub outcomes: HashMap<*const Resource, Vec<String>>,
    /// Route names in the annotation that no route has.
    pub warnings: Vec<Diagnostic>,
    /// Internal inconsistencies (values validation should have rejected).
    pub errors: Vec<Diagnostic>,
}

/// Compiles the WasmPlugins of `set` that apply to the gateway in `scope`.
pub fn compile_plugins(set: &ResourceSet, scope: &PluginScope<'_>) -> PluginsOut {
    let opts = scope.opts;
    let mut out = PluginsOut::default();
    let mut built: Vec<(SortKey, &Resource, Plugin)> = Vec::new();
    for (res, spec) in set.wasm_plugins() {
        let notes = out.outcomes.entry(res as *const _).or_default();
        let how = match selected(res, spec, scope) {
            Ok(how) => how,
            Err(why) => {
                notes.push(format!("not selected: {why}"));
                continue;
            }
        };
        let Some(ports) = gateway_ports(&spec.match_) else {
            notes.push(
                "not selected: every match entry is for mode SERVER (inbound); Istio treats a \
                 gateway's listeners as CLIENT"
                    .into(),
            );
            continue;
        };
        notes.push(format!("selected: {how}"));
        let plugin = match build(res, spec, ports) {
            Ok(p) => p,
            Err(issue) => {
                notes.push(format!("not compiled: {}", issue.message));
                out.errors.push(res.diagnostic(issue));
                continue;
            }
        };
        for r in &plugin.routes {
            if !scope.route_names.contains(r.as_str()) {
                let message = format!(
                    "{ROUTES_ANNOTATION}: no HTTP route named {r:?} on this gateway; the plugin \
                     runs on no request for it"
                );
                notes.push(message.clone());
                out.warnings.push(res.diagnostic(Issue {
                    severity: Severity::Warning,
                    field: "metadata.annotations".into(),
                    message,
                }));
            }
        }
        if plugin.plugin_type == PluginType::Network {
            notes.push("NETWORK plugin: compiled, not served (meshgate runs HTTP plugins)".into());
        }
        let own_ns = res.namespace == opts.namespace;
        let key = (
            plugin.phase,
            Reverse(plugin.priority.unwrap_or(i32::MIN)),
            !own_ns,
            res.meta.name.clone(),
        );
        built.push((key, res, plugin));
    }
    built.sort_by(|a, b| a.0.cmp(&b.0));
    let total = built.len();
    for (i, (_, res, plugin)) in built.into_iter().enumerate() {
        let prio = plugin
            .priority
            .map_or_else(|| "unset".to_owned(), |p| p.to_string());
        out.outcomes
            .entry(res as *const _)
            .or_default()
            .push(format!(
                "plugin {} of {total}: phase {}, priority {prio}",
                i + 1,
                plugin.phase.as_str()
            ));
        out.plugins.push(Arc::new(plugin));
    }
    out
}

/// Filter-chain order: phase, priority descending (unset lowest), the gateway's own namespace
/// before the root namespace, then name (Istio's creation-time order falls back to name).
type SortKey = (Phase, Reverse<i32>, bool, String);

/// Whether the plugin attaches to this gateway, and how; or why not.
fn selected(res: &Resource, spec: &WasmPlugin, scope: &PluginScope<'_>) -> Result<String, String> {
    let opts = scope.opts;
    let ns = res.namespace.as_str();
    if ns != opts.namespace && ns != opts.root_namespace {
        return Err(format!(
            "in namespace {ns}, neither the gateway's ({}) nor the root namespace ({})",
            opts.namespace, opts.root_namespace
        ));
    }
    let refs: Vec<&PolicyTargetReference> = if spec.target_refs.is_empty() {
        spec.target_ref.iter().collect()
    } else {
        spec.target_refs.iter().collect()
    };
    // A classic Gateway this gateway serves, from a plugin in that Gateway's namespace.
    for t in &refs {
        if !is_kind(t, "networking.istio.io", "Gateway") {
            continue;
        }
        let hit = scope.gateways.iter().find(|(gns, gname)| {
            t.name == *gname
                && ns == gns.as_str()
                && (t.namespace.is_empty() || t.namespace == *gns)
        });
        if let Some((gns, gname)) = hit {
            return Ok(format!("targetRef to Gateway {gns}/{gname}"));
        }
    }
    let by_selector = || match &spec.selector {
        None => Ok(format!("no selector or targetRefs, in namespace {ns}")),
        Some(sel) => {
            let all = sel
                .match_labels
                .iter()
                .all(|(k, v)| opts.labels.get(k) == Some(v));
            if all {
                Ok("selector matches this gateway's labels".into())
            } else {
                Err("its selector does not match this gateway's labels".into())
            }
        }
    };
    let Some(gw_name) = opts.labels.get(GATEWAY_NAME_LABEL) else {
        if refs.is_empty() {
            return by_selector();
        }
        return Err(format!(
            "it has targetRefs, which attach to a Gateway API gateway (label {GATEWAY_NAME_LABEL}) \
             or to a Gateway this gateway serves; neither matches"
        ));
    };
    if refs.is_empty() {
        // ENABLE_SELECTOR_BASED_K8S_GATEWAY_POLICY (default on) lets selectors apply here too.
        return by_selector();
    }
    let hit = refs.iter().any(|t| {
        ns == opts.namespace
            && (t.namespace.is_empty() || t.namespace == opts.namespace)
            && is_kind(t, "gateway.networking.k8s.io", "Gateway")
            && t.name == *gw_name
    });
    if hit {
        Ok(format!(
            "targetRef to Gateway {}/{gw_name} (gateway.networking.k8s.io)",
            opts.namespace
        ))
    } else {
        Err(format!(
            "no targetRef names this gateway (gateway.networking.k8s.io Gateway {}/{gw_name})",
            opts.namespace
        ))
    }
}

/// Istio's `matchesGroupKind`: an empty group is `core`, never a gateway group.
fn is_kind(t: &PolicyTargetReference, group: &str, kind: &str) -> bool {
    t.group == group && t.kind == kind
}

/// The listener ports a gateway runs the plugin on: `Some(empty)` for all, `None` when no match
/// entry applies. Istio matches a gateway's listeners as mode CLIENT, so entries for SERVER
/// are skipped; UNDEFINED and CLIENT_AND_SERVER match both.
fn gateway_ports(match_: &[WasmPluginTrafficSelector]) -> Option<Vec<u32>> {
    if match_.is_empty() {
        return Some(Vec::new());
    }
    let mut ports = Vec::new();
    let mut any = false;
    for m in match_.iter().filter(|m| m.mode != WorkloadMode::Server) {
        if m.ports.is_empty() {
            return Some(Vec::new());
        }
        any = true;
        ports.extend(m.ports.iter().map(|p| p.number));
    }
    ports.sort_unstable();
    ports.dedup();
    any.then_some(ports)
}

fn build(res: &Resource, spec: &WasmPlugin, ports: Vec<u32>) -> Result<Plugin, Issue> {
    let issue = |field: &str, message: String| Issue {
        severity: Severity::Error,
        field: field.to_owned(),
        message,
    };
    let sha256 = if spec.sha256.is_empty() {
        None
    } else {
        Some(
            decode_sha256(&spec.sha256)
                .ok_or_else(|| issue("spec.sha256", "sha256 is not 64 hex digits".to_owned()))?,
        )
    };
    let configuration = istio_plugin_config(spec.plugin_config.as_ref())
        .map_err(|e| issue("spec.pluginConfig", e.to_string()))?;
    let ports = ports
        .into_iter()
        .map(|p| {
            u16::try_from(p).map_err(|_| issue("spec.match", format!("port {p} out of range")))
        })
        .collect::<Result<Vec<u16>, Issue>>()?;
    let annotation = |name: &str| res.meta.annotations.get(name).map(|v| v.trim());
    let annotation_field = |name: &str| format!("metadata.annotations[{name}]");
    let memory_limit = annotation(MEMORY_LIMIT_ANNOTATION)
        .map(|v| {
            parse_quantity(v).filter(|b| *b >= 1 << 16).ok_or_else(|| {
                issue(
                    &annotation_field(MEMORY_LIMIT_ANNOTATION),
                    format!("{v:?} is not a memory size of at least 64Ki (e.g. 32Mi)"),
                )
            })
        })
        .transpose()?;
    let callback_deadline = annotation(CALLBACK_DEADLINE_ANNOTATION)
        .map(|v| {
            crate::model::common::Duration::parse(v)
                .ok()
                .and_then(|d| d.to_std())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    issue(
                        &annotation_field(CALLBACK_DEADLINE_ANNOTATION),
                        format!("{v:?} is not a positive duration (e.g. 50ms)"),
                    )
                })
        })
        .transpose()?;
    let source = plugin_source(&spec.url);
    let root_id = spec.plugin_name.clone().unwrap_or_default();
    let code = match &sha256 {
        Some(d) => format!("sha256:{}", hex(d)),
        None => source.to_string(),
    };
    let env = spec
        .vm_config
        .iter()
        .flat_map(|vm| &vm.env)
        .map(|e| {
            let v = match e.value_from {
                EnvValueSource::Inline => EnvValue::Inline(e.value.clone()),
                EnvValueSource::Host => EnvValue::Host,
            };
            (e.name.clone(), v)
        })
        .collect();
    Ok(Plugin {
        name: Arc::from(format!("{}/{}", res.namespace, res.meta.name)),
        vm_key: Arc::from(format!("{code}|{root_id}")),
        source,
        sha256,
        image_pull_policy: spec.image_pull_policy,
        image_pull_secret: spec.image_pull_secret.clone(),
        root_id,
        configuration: Arc::from(configuration),
        phase: match spec.phase {
            PluginPhase::Authn => Phase::Authn,
            PluginPhase::Authz => Phase::Authz,
            PluginPhase::Stats => Phase::Stats,
            PluginPhase::UnspecifiedPhase => Phase::Unspecified,
        },
        priority: spec.priority,
        fail_strategy: spec.fail_strategy,
        env,
        ports,
        plugin_type: match spec.type_ {
            SpecType::Network => PluginType::Network,
            SpecType::Http | SpecType::UnspecifiedPluginType => PluginType::Http,
        },
        routes: route_names(res),
        memory_limit,
        callback_deadline,
    })
}

/// A Kubernetes memory quantity in bytes: digits with an optional binary (`Ki`, `Mi`, `Gi`)
/// or decimal (`k`, `M`, `G`) suffix.
fn parse_quantity(v: &str) -> Option<u64> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let scale: u64 = match unit {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// The names in the routes annotation (trimmed, empty items dropped).
fn route_names(res: &Resource) -> Vec<String> {
    res.meta
        .annotations
        .get(ROUTES_ANNOTATION)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Where `url` points, as Istio reads it: `file://`, `http(s)://`, `oci://`; any other URL is an
/// OCI reference (`oci://` is prepended). A plain absolute path is read as a file.
pub fn plugin_source(url: &str) -> PluginSource {
    if let Some((scheme, rest)) = url.split_once("://") {
        match scheme.to_ascii_lowercase().as_str() {
            "file" => return PluginSource::File(PathBuf::from(rest)),
            "http" | "https" => {
                return PluginSource::Http {
                    url: url.to_owned(),
                }
            }
            "oci" => {
                return PluginSource::Oci {
                    reference: rest.to_owned(),
                }
            }
            _ => {}
        }
    } else if url.starts_with('/') {
        return PluginSource::File(PathBuf::from(url));
    }
    PluginSource::Oci {
        reference: url.to_owned(),
    }
}

/// 64 hex digits as 32 bytes.
pub fn decode_sha256(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nibble = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}
