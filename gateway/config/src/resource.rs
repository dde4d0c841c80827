//! A loaded Istio resource: kind, metadata, typed spec and where it came from.
//!
//! The unit that validation checks and compilation consumes. Knows the kinds meshgate reads and
//! the API groups they belong to; nothing about files or YAML beyond a [`Source`].

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::diag::{Diagnostic, Issue, ResourceRef};
use crate::model::common::ObjectMeta;
use crate::model::{
    AuthorizationPolicy, DestinationRule, Gateway, PeerAuthentication, RequestAuthentication,
    ServiceEntry, Sidecar, VirtualService, WasmPlugin, WorkloadEntry, WorkloadGroup,
};
use crate::yaml::LineIndex;

/// The Istio kinds meshgate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Kind {
    /// `networking.istio.io` Gateway.
    Gateway,
    /// `networking.istio.io` VirtualService.
    VirtualService,
    /// `networking.istio.io` DestinationRule.
    DestinationRule,
    /// `networking.istio.io` ServiceEntry.
    ServiceEntry,
    /// `networking.istio.io` Sidecar.
    Sidecar,
    /// `networking.istio.io` WorkloadEntry.
    WorkloadEntry,
    /// `networking.istio.io` WorkloadGroup.
    WorkloadGroup,
    /// `security.istio.io` PeerAuthentication.
    PeerAuthentication,
    /// `security.istio.io` RequestAuthentication.
    RequestAuthentication,
    /// `security.istio.io` AuthorizationPolicy.
    AuthorizationPolicy,
    /// `extensions.istio.io` WasmPlugin.
    WasmPlugin,
}

impl Kind {
    /// Every kind, in a stable order.
    pub const ALL: [Kind; 11] = [
        Kind::Gateway,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::ServiceEntry,
        Kind::Sidecar,
        Kind::WorkloadEntry,
        Kind::WorkloadGroup,
        Kind::PeerAuthentication,
        Kind::RequestAuthentication,
        Kind::AuthorizationPolicy,
        Kind::WasmPlugin,
    ];

    /// The kind's name as written in `kind:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gateway => "Gateway",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::Sidecar => "Sidecar",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::WorkloadGroup => "WorkloadGroup",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::WasmPlugin => "WasmPlugin",
        }
    }

    /// The API group the kind belongs to.
    pub fn group(self) -> &'static str {
        match self {
            Kind::PeerAuthentication | Kind::RequestAuthentication | Kind::AuthorizationPolicy => {
                "security.istio.io"
            }
            Kind::WasmPlugin => "extensions.istio.io",
            _ => "networking.istio.io",
        }
    }

    /// The API versions meshgate accepts for the kind (all read as the same schema).
    pub fn versions(self) -> &'static [&'static str] {
        match self.group() {
            "networking.istio.io" => &["v1", "v1beta1", "v1alpha3"],
            "security.istio.io" => &["v1", "v1beta1"],
            _ => &["v1alpha1"],
        }
    }

    /// True when the CRD requires `spec` (a document without one is rejected); for the other
    /// kinds a missing spec is an empty one.
    pub fn spec_required(self) -> bool {
        matches!(
            self,
            Kind::ServiceEntry | Kind::WorkloadEntry | Kind::WorkloadGroup | Kind::WasmPlugin
        )
    }

    /// The kind for an `apiVersion` + `kind` pair, if meshgate reads it.
    pub fn from_api(api_version: &str, kind: &str) -> Option<Kind> {
        let (group, version) = api_version.split_once('/')?;
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == kind && k.group() == group && k.versions().contains(&version))
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The typed spec of a resource.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)]
pub enum Spec {
    /// A Gateway spec.
    Gateway(Gateway),
    /// A VirtualService spec.
    VirtualService(VirtualService),
    /// A DestinationRule spec.
    DestinationRule(DestinationRule),
    /// A ServiceEntry spec.
    ServiceEntry(ServiceEntry),
    /// A Sidecar spec.
    Sidecar(Sidecar),
    /// A WorkloadEntry spec.
    WorkloadEntry(WorkloadEntry),
    /// A WorkloadGroup spec.
    WorkloadGroup(WorkloadGroup),
    /// A PeerAuthentication spec.
    PeerAuthentication(PeerAuthentication),
    /// A RequestAuthentication spec.
    RequestAuthentication(RequestAuthentication),
    /// An AuthorizationPolicy spec.
    AuthorizationPolicy(AuthorizationPolicy),
    /// A WasmPlugin spec.
    WasmPlugin(WasmPlugin),
}

/// Where a resource was read from.
#[derive(Debug, Clone)]
pub struct Source {
    /// File name (or a label such as `<embedded>`).
    pub file: Arc<str>,
    /// First line of the document (of the list item for `kind: List`).
    pub line: u32,
    /// Lines of every field of the document.
    pub lines: Arc<LineIndex>,
}

impl Source {
    /// The line of a field path inside the document (`""` is the document itself).
    pub fn line_of(&self, field: &str) -> u32 {
        if field.is_empty() {
            return self.line;
        }
        self.lines.line_of(field)
    }
}

/// One Istio resource, parsed (and, once in a set, validated).
#[derive(Debug, Clone)]
pub struct Resource {
    /// The kind.
    pub kind: Kind,
    /// The `apiVersion` as written.
    pub api_version: String,
    /// Metadata (name, labels, annotations).
    pub meta: ObjectMeta,
    /// Effective namespace: `metadata.namespace` or the loader's default.
    pub namespace: String,
    /// The typed spec.
    pub spec: Spec,
    /// Where it came from.
    pub source: Source,
}

impl Resource {
    /// `Kind namespace/name`, for diagnostics.
    pub fn reference(&self) -> ResourceRef {
        ResourceRef {
            kind: self.kind.as_str().to_owned(),
            namespace: self.namespace.clone(),
            name: self.meta.name.clone(),
        }
    }

    /// Places a validation issue in the resource's file.
    pub fn diagnostic(&self, issue: Issue) -> Diagnostic {
        Diagnostic {
            severity: issue.severity,
            file: self.source.file.clone(),
            line: self.source.line_of(&issue.field),
            resource: Some(self.reference()),
            field: issue.field,
            message: issue.message,
        }
    }
}

macro_rules! typed_iter {
    ($fn:ident, $variant:ident, $ty:ty) => {
        /// Every resource of this kind with its typed spec.
        pub fn $fn(&self) -> impl Iterator<Item = (&Resource, &$ty)> + '_ {
            self.resources.iter().filter_map(|r| match &r.spec {
                Spec::$variant(s) => Some((r, s)),
                _ => None,
            })
        }
    };
}

/// A set of valid resources: the input of compilation.
#[derive(Debug, Clone, Default)]
pub struct ResourceSet {
    /// The resources, in load order.
    pub resources: Vec<Resource>,
}

impl ResourceSet {
    typed_iter!(gateways, Gateway, Gateway);
    typed_iter!(virtual_services, VirtualService, VirtualService);
    typed_iter!(destination_rules, DestinationRule, DestinationRule);
    typed_iter!(service_entries, ServiceEntry, ServiceEntry);
    typed_iter!(sidecars, Sidecar, Sidecar);
    typed_iter!(workload_entries, WorkloadEntry, WorkloadEntry);
    typed_iter!(workload_groups, WorkloadGroup, WorkloadGroup);
    typed_iter!(peer_authentications, PeerAuthentication, PeerAuthentication);
    typed_iter!(
        request_authentications,
        RequestAuthentication,
        RequestAuthentication
    );
    typed_iter!(
        authorization_policies,
        AuthorizationPolicy,
        AuthorizationPolicy
    );
    typed_iter!(wasm_plugins, WasmPlugin, WasmPlugin);
}
