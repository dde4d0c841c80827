//! Istio's validation rules, per kind, plus the checks that span resources.
//!
//! Rules mirror istio/istio `pkg/config/validation` and the CRD schema/CEL rules. Every rule
//! records all its findings on a [`Report`] with a field path; nothing here stops at the first
//! error or touches files.

pub mod common;
pub mod cross;

mod authorization_policy;
mod destination_rule;
mod gateway;
mod peer_authentication;
mod request_authentication;
mod service_entry;
mod sidecar;
pub mod virtual_service;
mod wasm_plugin;
mod workload;

use crate::diag::{FieldPath, Report};
use crate::model::common::ObjectMeta;
use crate::resource::{Resource, Spec};

/// What a per-kind rule may know besides the spec itself.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The resource's metadata (name, labels, annotations).
    pub meta: &'a ObjectMeta,
    /// The resource's namespace (metadata's, or the loader's default).
    pub namespace: &'a str,
    /// istiod-generated resources (annotation `internal.istio.io/route-semantics: gateway`,
    /// e.g. translated from the Gateway API) get the relaxed checks Istio gives them.
    pub gateway_semantics: bool,
}

/// Runs the per-kind rules for one resource. Field paths start at `spec`.
pub fn validate_resource(res: &Resource) -> Report {
    let mut r = Report::new();
    let semantics = |k: &str| res.meta.annotations.get(k).is_some_and(|v| v == "gateway");
    let ctx = Ctx {
        meta: &res.meta,
        namespace: &res.namespace,
        gateway_semantics: semantics("internal.istio.io/route-semantics")
            || semantics("internal.istio.io/gateway-semantics"),
    };
    let at = FieldPath::root("spec");
    if res.meta.name.is_empty() {
        r.error(
            &FieldPath::root("metadata.name"),
            "Required value: name is required",
        );
    }
    match &res.spec {
        Spec::Gateway(s) => gateway::validate(s, &ctx, &at, &mut r),
        Spec::VirtualService(s) => virtual_service::validate(s, &ctx, &at, &mut r),
        Spec::DestinationRule(s) => destination_rule::validate(s, &ctx, &at, &mut r),
        Spec::ServiceEntry(s) => service_entry::validate(s, &ctx, &at, &mut r),
        Spec::Sidecar(s) => sidecar::validate(s, &ctx, &at, &mut r),
        Spec::WorkloadEntry(s) => workload::validate_entry(s, &ctx, &at, &mut r),
        Spec::WorkloadGroup(s) => workload::validate_group(s, &ctx, &at, &mut r),
        Spec::PeerAuthentication(s) => peer_authentication::validate(s, &ctx, &at, &mut r),
        Spec::RequestAuthentication(s) => request_authentication::validate(s, &ctx, &at, &mut r),
        Spec::AuthorizationPolicy(s) => authorization_policy::validate(s, &ctx, &at, &mut r),
        Spec::WasmPlugin(s) => wasm_plugin::validate(s, &ctx, &at, &mut r),
    }
    r
}

#[cfg(test)]
pub(crate) mod tests {
    //! Helpers for rule tests: a spec snippet in, diagnostics out, through the real loader.

    use crate::diag::Diagnostic;
    use crate::load::{load_text, LoadOptions, Loaded};
    use crate::resource::Kind;

    /// Loads one document of `kind` with `spec` (YAML, unindented) and returns everything said.
    pub fn diagnostics_of(kind: &str, spec: &str) -> Vec<Diagnostic> {
        let k = Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind)
            .unwrap_or_else(|| panic!("unknown kind {kind}"));
        let indented: String = spec.lines().map(|l| format!("  {l}\n")).collect();
        let doc = format!(
            "apiVersion: {}/{}\nkind: {kind}\nmetadata:\n  name: test\n  namespace: ns\nspec:\n{indented}",
            k.group(),
            k.versions()[0]
        );
        let mut l = Loaded::default();
        load_text("test.yaml", &doc, &LoadOptions::default(), &mut l);
        l.finish();
        l.diagnostics
    }

    /// The errors (field, message) for one document of `kind` with `spec`.
    pub fn errors_of(kind: &str, spec: &str) -> Vec<(String, String)> {
        diagnostics_of(kind, spec)
            .into_iter()
            .filter(Diagnostic::is_error)
            .map(|d| (d.field, d.message))
            .collect()
    }

    /// True when one of `issues` is at `field` and its message contains `msg`.
    pub fn has(issues: &[(String, String)], field: &str, msg: &str) -> bool {
        issues.iter().any(|(f, m)| f == field && m.contains(msg))
    }

    /// The warnings (field, message).
    pub fn warnings_of(kind: &str, spec: &str) -> Vec<(String, String)> {
        diagnostics_of(kind, spec)
            .into_iter()
            .filter(|d| !d.is_error())
            .map(|d| (d.field, d.message))
            .collect()
    }
}
