//! Validation of `RequestAuthentication`: attachment and JWT rules (webhook + CEL rules).

use super::common::check_policy_targets;
use super::Ctx;
use crate::diag::{FieldPath, Report};
use crate::model::request_authentication::JwtRule;
use crate::model::RequestAuthentication;

/// Validates a `RequestAuthentication` spec.
pub fn validate(spec: &RequestAuthentication, ctx: &Ctx<'_>, at: &FieldPath, r: &mut Report) {
    check_policy_targets(
        spec.selector.as_ref(),
        spec.target_ref.as_ref(),
        &spec.target_refs,
        ctx.namespace,
        at,
        r,
    );
    for (i, rule) in spec.jwt_rules.iter().enumerate() {
        check_rule(rule, &at.field("jwtRules").index(i), r);
    }
}

fn header_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn check_rule(rule: &JwtRule, at: &FieldPath, r: &mut Report) {
    if rule.issuer.is_empty() {
        r.error(&at.field("issuer"), "Required value: issuer is required");
    }
    for (i, a) in rule.audiences.iter().enumerate() {
        if a.is_empty() {
            r.error(
                &at.field("audiences").index(i),
                "audience must not be empty (at least 1 chars long)",
            );
        }
    }
    if !rule.jwks_uri.is_empty() {
        let scheme_ok = ["http://", "https://"].iter().any(|p| {
            rule.jwks_uri.len() > p.len() && rule.jwks_uri[..p.len()].eq_ignore_ascii_case(p)
        });
        if !scheme_ok {
            r.error(
                &at.field("jwksUri"),
                "url must have scheme http:// or https://",
            );
        }
    }
    if !rule.jwks_uri.is_empty() && !rule.jwks.is_empty() {
        r.error(at, "only one of jwks or jwksUri can be set");
    }
    for (i, h) in rule.from_headers.iter().enumerate() {
        if h.name.is_empty() {
            r.error(
                &at.field("fromHeaders").index(i).field("name"),
                "Required value: header name must not be empty",
            );
        }
    }
    for (field, list) in [
        ("fromParams", &rule.from_params),
        ("fromCookies", &rule.from_cookies),
        ("spaceDelimitedClaims", &rule.space_delimited_claims),
    ] {
        for (i, v) in list.iter().enumerate() {
            if v.is_empty() {
                r.error(
                    &at.field(field).index(i),
                    format!("{field} entries must not be empty (at least 1 chars long)"),
                );
            }
        }
    }
    for (i, c) in rule.output_claim_to_headers.iter().enumerate() {
        let here = at.field("outputClaimToHeaders").index(i);
        if c.claim.is_empty() {
            r.error(
                &here.field("claim"),
                "Required value: claim must not be empty",
            );
        }
        if c.header.is_empty() {
            r.error(
                &here.field("header"),
                "Required value: header must not be empty",
            );
        } else if !header_token(&c.header) {
            r.error(
                &here.field("header"),
                "header should match '^[-_A-Za-z0-9]+$'",
            );
        }
    }
    if !rule.output_payload_to_header.is_empty() && !header_token(&rule.output_payload_to_header) {
        r.error(
            &at.field("outputPayloadToHeader"),
            "header should match '^[-_A-Za-z0-9]+$'",
        );
    }
    if let Some(t) = rule.timeout {
        if t.as_nanos() < 1_000_000 {
            r.error(
                &at.field("timeout"),
                "must be a valid duration greater than 1ms",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::tests::{errors_of, has};

    #[test]
    fn jwt_rules() {
        let e = errors_of("RequestAuthentication", "jwtRules:\n- audiences: ['']\n  jwksUri: 'ftp:x'\n  jwks: '{}'\n  fromHeaders: [{prefix: x}]\n  fromParams: ['']\n  fromCookies: ['']\n  outputClaimToHeaders: [{header: 'bad header', claim: ''}]\n  timeout: 0s\n  spaceDelimitedClaims: ['']");
        for (f, m) in [
            ("spec.jwtRules[0].issuer", "Required value"),
            ("spec.jwtRules[0].audiences[0]", "at least 1 chars"),
            ("spec.jwtRules[0].jwksUri", "url must have scheme"),
            ("spec.jwtRules[0]", "only one of jwks or jwksUri"),
            ("spec.jwtRules[0].fromHeaders[0].name", "Required value"),
            ("spec.jwtRules[0].fromParams[0]", "at least 1 chars"),
            ("spec.jwtRules[0].fromCookies[0]", "at least 1 chars"),
            (
                "spec.jwtRules[0].outputClaimToHeaders[0].header",
                "should match",
            ),
            (
                "spec.jwtRules[0].outputClaimToHeaders[0].claim",
                "Required value",
            ),
            ("spec.jwtRules[0].timeout", "greater than 1ms"),
            (
                "spec.jwtRules[0].spaceDelimitedClaims[0]",
                "at least 1 chars",
            ),
        ] {
            assert!(has(&e, f, m), "{f}: {m} in {e:?}");
        }
        let e = errors_of(
            "RequestAuthentication",
            "jwtRules: [{issuer: a, presence: MANDATORY}]",
        );
        assert!(e
            .iter()
            .any(|(_, m)| m.contains("Unsupported value: \"MANDATORY\"")));
    }

    #[test]
    fn attachment() {
        let e = errors_of(
            "RequestAuthentication",
            "selector: {matchLabels: {a: b}}\ntargetRefs: [{kind: Gateway, name: g}]",
        );
        assert!(has(&e, "spec", "only one of targetRefs or selector"));
        let e = errors_of(
            "RequestAuthentication",
            "targetRef: {kind: 'Bad_Kind', group: 'UPPER', namespace: other}",
        );
        assert!(has(&e, "spec.targetRef.name", "Required value"));
        assert!(has(&e, "spec.targetRef.kind", "should match"), "{e:?}");
        assert!(has(&e, "spec.targetRef.group", "should match"));
        assert!(has(&e, "spec.targetRef.namespace", "cross namespace"));
        assert!(errors_of("RequestAuthentication", "targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]\njwtRules: [{issuer: https://a, jwksUri: https://a/keys, audiences: [x]}]").is_empty());
    }
}
