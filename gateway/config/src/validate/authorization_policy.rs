//! Validation of `AuthorizationPolicy`: attachment, action and provider, rule shapes, values.

use super::common::{check_policy_targets, is_ip_or_cidr};
use super::Ctx;
use crate::diag::{FieldPath, Report};
use crate::model::authorization_policy::{Action, Condition, Operation, Source};
use crate::model::AuthorizationPolicy;

/// Attribute keys Istio accepts in `when` conditions (exact names, then prefixes).
const CONDITION_KEYS: [&str; 12] = [
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "source.serviceAccount",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "destination.ip",
    "destination.port",
    "connection.sni",
    "request.auth.claims",
];
const CONDITION_PREFIXES: [&str; 3] = [
    "request.headers[",
    "request.auth.claims[",
    "experimental.envoy.filters.",
];

/// Validates an `AuthorizationPolicy` spec.
pub fn validate(spec: &AuthorizationPolicy, ctx: &Ctx<'_>, at: &FieldPath, r: &mut Report) {
    check_policy_targets(
        spec.selector.as_ref(),
        spec.target_ref.as_ref(),
        &spec.target_refs,
        ctx.namespace,
        at,
        r,
    );
    match (spec.action, &spec.provider) {
        (Action::Custom, None) => r.error(
            &at.field("provider"),
            "Required value: CUSTOM action requires a provider",
        ),
        (Action::Custom, Some(p)) if p.name.is_empty() => r.error(
            &at.field("provider.name"),
            "Required value: provider name is required",
        ),
        (a, Some(_)) if a != Action::Custom => r.error(
            &at.field("provider"),
            "provider can only be used with the CUSTOM action",
        ),
        _ => {}
    }
    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        let at = at.field("rules").index(i);
        for (j, f) in rule.from.iter().enumerate() {
            let here = at.field("from").index(j).field("source");
            match &f.source {
                Some(s) => check_source(s, &here, r),
                None => r.error(&here, "Required value: `from.source` must not be nil"),
            }
        }
        for (j, t) in rule.to.iter().enumerate() {
            let here = at.field("to").index(j).field("operation");
            match &t.operation {
                Some(o) => check_operation(o, &here, r),
                None => r.error(&here, "Required value: `to.operation` must not be nil"),
            }
        }
        for (j, c) in rule.when.iter().enumerate() {
            check_condition(c, &at.field("when").index(j), r);
        }
    }
}

fn no_empty(list: &[String], field: &str, at: &FieldPath, r: &mut Report) {
    for (i, v) in list.iter().enumerate() {
        if v.is_empty() {
            r.error(&at.field(field).index(i), "empty value is not allowed");
        }
    }
}

fn check_source(s: &Source, at: &FieldPath, r: &mut Report) {
    let sa = !s.service_accounts.is_empty() || !s.not_service_accounts.is_empty();
    let others = !s.principals.is_empty()
        || !s.not_principals.is_empty()
        || !s.namespaces.is_empty()
        || !s.not_namespaces.is_empty();
    if sa && others {
        r.error(
            at,
            "Cannot set serviceAccounts with namespaces or principals",
        );
    }
    let lists: [(&str, &Vec<String>); 14] = [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
        ("namespaces", &s.namespaces),
        ("notNamespaces", &s.not_namespaces),
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
        ("trustDomains", &s.trust_domains),
        ("notTrustDomains", &s.not_trust_domains),
    ];
    if lists.iter().all(|(_, l)| l.is_empty()) {
        r.error(at, "`from.source` must not be empty");
    }
    for (field, list) in lists {
        no_empty(list, field, at, r);
    }
    for (field, list) in [
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
    ] {
        for (i, v) in list.iter().enumerate() {
            if !v.is_empty() && !is_ip_or_cidr(v) {
                r.error(
                    &at.field(field).index(i),
                    format!("invalid IP address or CIDR range: {v:?}"),
                );
            }
        }
    }
}

fn check_operation(o: &Operation, at: &FieldPath, r: &mut Report) {
    let lists: [(&str, &Vec<String>); 8] = [
        ("hosts", &o.hosts),
        ("notHosts", &o.not_hosts),
        ("ports", &o.ports),
        ("notPorts", &o.not_ports),
        ("methods", &o.methods),
        ("notMethods", &o.not_methods),
        ("paths", &o.paths),
        ("notPaths", &o.not_paths),
    ];
    if lists.iter().all(|(_, l)| l.is_empty()) {
        r.error(at, "`to.operation` must not be empty");
    }
    for (field, list) in lists {
        no_empty(list, field, at, r);
    }
    for (field, list) in [("ports", &o.ports), ("notPorts", &o.not_ports)] {
        for (i, p) in list.iter().enumerate() {
            if !p.is_empty() && p.parse::<u16>().is_err() {
                r.error(
                    &at.field(field).index(i),
                    format!("invalid port {p:?}: must be 0-65535"),
                );
            }
        }
    }
}

fn check_condition(c: &Condition, at: &FieldPath, r: &mut Report) {
    if c.key.is_empty() {
        r.error(&at.field("key"), "Required value: key is required");
        return;
    }
    let known = CONDITION_KEYS.contains(&c.key.as_str())
        || CONDITION_PREFIXES
            .iter()
            .any(|p| c.key.starts_with(p) && (!p.ends_with('[') || c.key.ends_with(']')));
    if !known {
        r.warn(&at.field("key"), format!("unknown attribute {:?}", c.key));
    }
    if c.values.is_empty() && c.not_values.is_empty() {
        r.error(at, "at least one of values or notValues must be set");
    }
    if c.key == "destination.port" {
        for (i, v) in c.values.iter().chain(&c.not_values).enumerate() {
            if v.parse::<u16>().is_err() {
                r.error(&at.field("values").index(i), format!("invalid port {v:?}"));
            }
        }
    }
    if matches!(c.key.as_str(), "source.ip" | "remote.ip" | "destination.ip") {
        for (i, v) in c.values.iter().chain(&c.not_values).enumerate() {
            if !is_ip_or_cidr(v) {
                r.error(
                    &at.field("values").index(i),
                    format!("invalid IP address or CIDR range: {v:?}"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::tests::{errors_of, has};

    #[test]
    fn rules_and_sources() {
        let e = errors_of("AuthorizationPolicy", "rules:\n- from: [{source: {serviceAccounts: [bar/sa], namespaces: [bar]}}, {source: {}}, {}]\n  to: [{operation: {ports: ['http'], methods: ['']}}]\n  when: [{key: 'request.headers[x-a]'}, {key: bogus, values: [a]}, {key: source.ip, values: [notanip]}]");
        assert!(
            has(
                &e,
                "spec.rules[0].from[0].source",
                "Cannot set serviceAccounts with namespaces or principals"
            ),
            "{e:?}"
        );
        assert!(has(&e, "spec.rules[0].from[1].source", "must not be empty"));
        assert!(has(&e, "spec.rules[0].from[2].source", "must not be nil"));
        assert!(has(
            &e,
            "spec.rules[0].to[0].operation.ports[0]",
            "invalid port"
        ));
        assert!(has(
            &e,
            "spec.rules[0].to[0].operation.methods[0]",
            "empty value"
        ));
        assert!(has(&e, "spec.rules[0].when[0]", "values or notValues"));
        assert!(has(&e, "spec.rules[0].when[2].values[0]", "invalid IP"));
    }

    #[test]
    fn actions_and_providers() {
        assert!(has(
            &errors_of("AuthorizationPolicy", "action: CUSTOM"),
            "spec.provider",
            "requires a provider"
        ));
        assert!(has(
            &errors_of("AuthorizationPolicy", "action: DENY\nprovider: {name: x}"),
            "spec.provider",
            "only be used with the CUSTOM"
        ));
        assert!(errors_of("AuthorizationPolicy", "action: CUSTOM\nprovider: {name: ext}\nrules: [{to: [{operation: {paths: [/admin]}}]}]").is_empty());
        assert!(
            errors_of("AuthorizationPolicy", "{}").is_empty(),
            "an empty policy is valid (deny all)"
        );
    }
}
