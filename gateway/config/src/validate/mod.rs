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
mod virtual_service;
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
}

/// Runs the per-kind rules for one resource. Field paths start at `spec`.
pub fn validate_resource(res: &Resource) -> Report {
    let mut r = Report::new();
    let ctx = Ctx {
        meta: &res.meta,
        namespace: &res.namespace,
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
