//! Validation of `PeerAuthentication`: selector, port-level mTLS (CRD CEL rules).

use super::common::check_workload_selector;
use super::Ctx;
use crate::diag::{FieldPath, Report};
use crate::model::PeerAuthentication;

/// Validates a `PeerAuthentication` spec.
pub fn validate(spec: &PeerAuthentication, _ctx: &Ctx<'_>, at: &FieldPath, r: &mut Report) {
    if let Some(sel) = &spec.selector {
        check_workload_selector(sel, &at.field("selector"), r);
    }
    let Some(ports) = &spec.port_level_mtls else {
        return;
    };
    let here = at.field("portLevelMtls");
    if ports.is_empty() {
        r.error(
            &here,
            "portLevelMtls must not be empty when set (at least 1 property)",
        );
    }
    let has_selector = spec
        .selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty());
    if !has_selector {
        r.error(at, "portLevelMtls requires selector");
    }
    for port in ports.keys() {
        if !(1..=65535).contains(port) {
            r.error(
                &here.key(&port.to_string()),
                format!("port must be between 1-65535, got {port}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::tests::errors_of;

    #[test]
    fn port_level_rules() {
        let e = errors_of(
            "PeerAuthentication",
            "portLevelMtls: {'80': {mode: STRICT}}",
        );
        assert!(e
            .iter()
            .any(|(f, m)| f == "spec" && m == "portLevelMtls requires selector"));
        let e = errors_of(
            "PeerAuthentication",
            "selector: {matchLabels: {a: b}}\nportLevelMtls: {}",
        );
        assert!(e.iter().any(|(f, _)| f == "spec.portLevelMtls"));
        let e = errors_of(
            "PeerAuthentication",
            "selector: {matchLabels: {a: b}}\nportLevelMtls: {'0': {mode: STRICT}}",
        );
        assert!(e
            .iter()
            .any(|(_, m)| m.contains("port must be between 1-65535")));
        let e = errors_of(
            "PeerAuthentication",
            "selector: {matchLabels: {a: b}}\nportLevelMtls: {abc: {mode: STRICT}}",
        );
        assert!(e.iter().any(|(f, _)| f == "spec.portLevelMtls"), "{e:?}");
        let e = errors_of("PeerAuthentication", "mtls: {mode: BLAH}");
        assert!(e
            .iter()
            .any(|(_, m)| m.starts_with("Unsupported value: \"BLAH\"")));
        assert!(errors_of("PeerAuthentication", "selector: {matchLabels: {a: b}}\nmtls: {mode: STRICT}\nportLevelMtls: {'8080': {mode: DISABLE}}").is_empty());
    }
}
