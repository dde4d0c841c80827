//! Checks that span resources: name conflicts and references between kinds.
//!
//! Runs once over a loaded set, after the per-kind rules. Conflicts are errors (the later
//! resource is dropped); dangling references are warnings, as `istioctl analyze` reports them
//! (ReferencedResourceNotFound): Istio accepts such documents.

use std::collections::{HashMap, HashSet};

use crate::compile::hosts::{covers, resolve_fqdn, resolve_gateway_ref};
use crate::diag::{Diagnostic, Issue, Severity};
use crate::model::virtual_service::Destination;
use crate::resource::{Kind, Resource, Spec};

/// Cluster domain suffix assumed when resolving short names for reference checks.
const DOMAIN_SUFFIX: &str = "cluster.local";

/// Returns the diagnostics and the indices of resources to drop from the set.
pub fn check(resources: &[Resource]) -> (Vec<Diagnostic>, Vec<usize>) {
    let mut diags = Vec::new();
    let mut drop = Vec::new();
    let mut seen: HashMap<(Kind, &str, &str), usize> = HashMap::new();
    for (i, r) in resources.iter().enumerate() {
        let key = (r.kind, r.namespace.as_str(), r.meta.name.as_str());
        if let Some(first) = seen.get(&key) {
            let f = &resources[*first];
            diags.push(r.diagnostic(Issue {
                severity: Severity::Error,
                field: "metadata.name".into(),
                message: format!(
                    "name conflict: {} {}/{} is already defined at {}:{}",
                    r.kind, r.namespace, r.meta.name, f.source.file, f.source.line
                ),
            }));
            drop.push(i);
        } else {
            seen.insert(key, i);
        }
    }
    references(resources, &mut diags);
    (diags, drop)
}

/// Subsets and gateways named by VirtualServices must exist (warnings).
fn references(resources: &[Resource], diags: &mut Vec<Diagnostic>) {
    let gateways: HashSet<String> = resources
        .iter()
        .filter(|r| r.kind == Kind::Gateway)
        .map(|r| format!("{}/{}", r.namespace, r.meta.name))
        .collect();
    // (DR host FQDN, subset names)
    let subsets: Vec<(String, HashSet<&str>)> = resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::DestinationRule(dr) => Some((
                resolve_fqdn(&dr.host, &r.namespace, DOMAIN_SUFFIX),
                dr.subsets.iter().map(|s| s.name.as_str()).collect(),
            )),
            _ => None,
        })
        .collect();
    for r in resources {
        let Spec::VirtualService(vs) = &r.spec else {
            continue;
        };
        let mut warn = |field: String, message: String| {
            diags.push(r.diagnostic(Issue {
                severity: Severity::Warning,
                field,
                message,
            }));
        };
        for (i, g) in vs.gateways.iter().enumerate() {
            let id = resolve_gateway_ref(g, &r.namespace);
            if id != "mesh" && !gateways.contains(&id) {
                warn(
                    format!("spec.gateways[{i}]"),
                    format!("referenced gateway not found: {id}"),
                );
            }
        }
        let mut check_subset = |d: &Destination, field: String| {
            if d.subset.is_empty() {
                return;
            }
            let host = resolve_fqdn(&d.host, &r.namespace, DOMAIN_SUFFIX);
            let found = subsets
                .iter()
                .any(|(h, names)| covers(h, &host) && names.contains(d.subset.as_str()));
            if !found {
                warn(
                    field,
                    format!(
                        "referenced subset not found: no DestinationRule for {host} defines subset {:?}",
                        d.subset
                    ),
                );
            }
        };
        for (i, h) in vs.http.iter().enumerate() {
            for (j, rd) in h.route.iter().enumerate() {
                if let Some(d) = &rd.destination {
                    check_subset(d, format!("spec.http[{i}].route[{j}].destination.subset"));
                }
            }
        }
        for (i, t) in vs.tls.iter().enumerate() {
            for (j, rd) in t.route.iter().enumerate() {
                if let Some(d) = &rd.destination {
                    check_subset(d, format!("spec.tls[{i}].route[{j}].destination.subset"));
                }
            }
        }
        for (i, t) in vs.tcp.iter().enumerate() {
            for (j, rd) in t.route.iter().enumerate() {
                if let Some(d) = &rd.destination {
                    check_subset(d, format!("spec.tcp[{i}].route[{j}].destination.subset"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::load::{load_text, LoadOptions, Loaded};

    fn load(y: &str) -> Loaded {
        let mut l = Loaded::default();
        load_text("x.yaml", y, &LoadOptions::default(), &mut l);
        l.finish();
        l
    }

    const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: ns}\nspec:\n  hosts: [reviews]\n  gateways: [gw, ns2/missing]\n  http: [{route: [{destination: {host: reviews, subset: v1}, weight: 50}, {destination: {host: reviews, subset: v3}, weight: 50}]}]\n";
    const DR: &str = "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r, namespace: ns}\nspec:\n  host: reviews.ns.svc.cluster.local\n  subsets: [{name: v1, labels: {version: v1}}]\n";
    const GW: &str = "---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: ns}\nspec:\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]\n";

    #[test]
    fn dangling_subsets_and_gateways_warn() {
        let l = load(&format!("{VS}{DR}{GW}"));
        assert!(!l.has_errors(), "{:?}", l.diagnostics);
        let warnings: Vec<String> = l
            .diagnostics
            .iter()
            .map(|d| format!("{}: {}", d.field, d.message))
            .collect();
        assert!(
            warnings.iter().any(|w| w.starts_with(
                "spec.http[0].route[1].destination.subset: referenced subset not found"
            )),
            "{warnings:?}"
        );
        assert!(
            !warnings
                .iter()
                .any(|w| w.starts_with("spec.http[0].route[0]")),
            "v1 exists: {warnings:?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w == "spec.gateways[1]: referenced gateway not found: ns2/missing"),
            "{warnings:?}"
        );
        assert_eq!(l.set.resources.len(), 3);
    }

    #[test]
    fn name_conflicts_reject_the_second_resource() {
        let l = load(&format!("{DR}{DR}"));
        let e: Vec<_> = l.diagnostics.iter().filter(|d| d.is_error()).collect();
        assert_eq!(e.len(), 1);
        assert!(
            e[0].message
                .starts_with("name conflict: DestinationRule ns/r is already defined at x.yaml:2"),
            "{}",
            e[0]
        );
        assert_eq!(
            e[0].line, 11,
            "points at the second document's metadata.name"
        );
        assert_eq!(l.set.resources.len(), 1);
    }
}
