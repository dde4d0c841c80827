//! Checks that span resources: name conflicts and references between kinds.
//!
//! Runs once over a loaded set, after the per-kind rules. Conflicts are errors (the later
//! resource is dropped); dangling references are warnings, as `istioctl analyze` reports them.

use std::collections::HashMap;

use crate::diag::{Diagnostic, Issue, Severity};
use crate::resource::{Kind, Resource};

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
    (diags, drop)
}
