//! Validation rules shared by several kinds: hosts, ports, durations, regexes, selectors.
//!
//! Each helper records issues on a [`Report`] at the given field path and never panics.
//! Messages follow the wording of Istio's `pkg/config/validation` where it has one.

use std::net::IpAddr;

use crate::diag::{FieldPath, Report};
use std::collections::BTreeMap;

use crate::model::common::{
    Duration, LabelSelector, Percent, PolicyTargetReference, StringMatch, WorkloadSelector,
};

/// Longest accepted regex program, like Envoy's default `max_program_size` guard.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Istio's limit on regex length (a proxy for Envoy's RE2 program size limit).
const MAX_REGEX_LEN: usize = 1024;

thread_local! {
    /// Verdicts of regexes already checked: configs repeat the same patterns across many
    /// routes, and compiling a regex costs far more than a hash lookup.
    static REGEX_VERDICTS: std::cell::RefCell<std::collections::HashMap<String, Option<String>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Compiles `re` with RE2 semantics (the `regex` crate), for validation only.
pub fn check_regex(re: &str, at: &FieldPath, r: &mut Report) {
    if re.len() > MAX_REGEX_LEN {
        r.error(
            at,
            format!("regex is too large, max length allowed is {MAX_REGEX_LEN}"),
        );
        return;
    }
    let verdict = REGEX_VERDICTS.with(|v| {
        if let Some(found) = v.borrow().get(re) {
            return found.clone();
        }
        let verdict = regex::RegexBuilder::new(re)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .err()
            .map(|e| {
                let text = e.to_string();
                text.lines()
                    .last()
                    .unwrap_or("invalid regex")
                    .trim()
                    .to_owned()
            });
        let mut map = v.borrow_mut();
        if map.len() > 4096 {
            map.clear();
        }
        map.insert(re.to_owned(), verdict.clone());
        verdict
    });
    if let Some(e) = verdict {
        r.error(
            at,
            format!("\"{re}\" is not a valid regex: {e}; RE2 syntax is required"),
        );
    }
}

/// A `StringMatch` sets exactly one of exact/prefix/regex, and a regex compiles.
pub fn check_string_match(m: &StringMatch, at: &FieldPath, r: &mut Report) {
    let set = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if set > 1 {
        r.error(at, "only one of exact, prefix or regex may be set");
    }
    if let Some(re) = &m.regex {
        if re.is_empty() {
            r.error(&at.field("regex"), "regex string match should not be empty");
        } else {
            check_regex(re, &at.field("regex"), r);
        }
    }
}

/// A port number in 1..=65535 (Istio: "port number N must be in the range 1..65535").
pub fn check_port(port: u32, at: &FieldPath, r: &mut Report) {
    if !(1..=65535).contains(&port) {
        r.error(
            at,
            format!("port number {port} must be in the range 1..65535"),
        );
    }
}

/// A duration of at least one millisecond (Istio's `ValidateDuration`).
pub fn check_duration(d: Duration, at: &FieldPath, r: &mut Report) {
    if d.as_nanos() < 1_000_000 {
        r.error(at, "duration must be greater than 1ms");
    }
}

/// A duration that is not negative (zero allowed, e.g. "disabled").
pub fn check_non_negative(d: Duration, at: &FieldPath, r: &mut Report) {
    if d.as_nanos() < 0 {
        r.error(at, "duration must not be negative");
    }
}

/// A percentage in [0, 100].
pub fn check_percent(p: &Percent, at: &FieldPath, r: &mut Report) {
    if !(0.0..=100.0).contains(&p.value) || p.value.is_nan() {
        r.error(at, "percentage must be in range [0.0, 100.0]");
    }
}

/// A DNS-1123 label: lower-case alphanumerics and '-', 1-63 chars, alphanumeric at both ends.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Istio's `ValidateDNS1123Labels`: dot-separated DNS-1123 labels (lower case), the last one
/// may be empty (a trailing dot), and the top-level label is not all digits.
fn dns1123_labels_error(domain: &str, whole: &str) -> Option<String> {
    let parts: Vec<&str> = domain.split('.').collect();
    if let Some(tld) = parts.last() {
        if !tld.is_empty() && tld.bytes().all(|b| b.is_ascii_digit()) {
            return Some(format!(
                "domain name {whole:?} invalid (top level domain {tld:?} cannot be all-numeric)"
            ));
        }
    }
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() {
            return None;
        }
        if !is_dns1123_label(label) {
            return Some(format!(
                "domain name {whole:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    None
}

/// Istio's `ValidateFQDN`: at most 255 characters of DNS-1123 labels.
pub fn fqdn_error(host: &str) -> Option<String> {
    if host.is_empty() {
        return Some("empty domain name not allowed".into());
    }
    if host.len() > 255 {
        return Some(format!("domain name {host:?} too long (max 255)"));
    }
    dns1123_labels_error(host, host)
}

/// A first label that may carry a wildcard: `*`, `*foo`, `*-foo` or a plain label.
fn is_wildcard_label(l: &str) -> bool {
    if l == "*" {
        return true;
    }
    let rest = l
        .strip_prefix("*-")
        .or_else(|| l.strip_prefix('*'))
        .unwrap_or(l);
    l.len() <= 63 && is_dns1123_label(rest)
}

/// Istio's `ValidateWildcardDomain`: a wildcard only in the first label (`*`, `*.x`, `*x.y`).
pub fn wildcard_domain_error(host: &str) -> Option<String> {
    if host.is_empty() {
        return Some("empty domain name not allowed".into());
    }
    if host.len() > 255 {
        return Some(format!("domain name {host:?} too long (max 255)"));
    }
    let (first, rest) = match host.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (host, None),
    };
    if !is_wildcard_label(first) {
        return Some(format!(
            "domain name {host:?} invalid (label {first:?} invalid)"
        ));
    }
    rest.and_then(|r| dns1123_labels_error(r, host))
}

/// Records an error when `host` is not an FQDN or wildcard domain.
pub fn check_wildcard_domain(host: &str, at: &FieldPath, r: &mut Report) {
    if let Some(e) = wildcard_domain_error(host) {
        r.error(at, e);
    }
}

/// True for an IPv4 or IPv6 address.
pub fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// True for `ADDR/LEN` with a prefix length valid for the address family.
pub fn is_cidr(s: &str) -> bool {
    let Some((addr, len)) = s.split_once('/') else {
        return false;
    };
    let Ok(len) = len.parse::<u8>() else {
        return false;
    };
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => len <= 32,
        Ok(IpAddr::V6(_)) => len <= 128,
        Err(_) => false,
    }
}

/// True for an IP address or a CIDR block.
pub fn is_ip_or_cidr(s: &str) -> bool {
    is_ip(s) || is_cidr(s)
}

/// Kubernetes label key syntax: optional DNS prefix and `/`, then a name of up to 63 chars.
pub fn label_key_error(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() || p.len() > 253 || p.split('.').any(|l| !is_dns1123_label(l)) {
            return Some(format!("invalid label key {key:?}: bad prefix"));
        }
    }
    if !is_label_value(name) || name.is_empty() {
        return Some(format!("invalid label key {key:?}"));
    }
    None
}

/// Kubernetes label value syntax: up to 63 alphanumerics, '-', '_', '.', alphanumeric at ends.
pub fn is_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && v.as_bytes()[0].is_ascii_alphanumeric()
            && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric())
}

/// A workload selector: label keys and values are valid and contain no wildcard.
pub fn check_workload_selector(sel: &WorkloadSelector, at: &FieldPath, r: &mut Report) {
    let at = at.field("matchLabels");
    for (k, v) in &sel.match_labels {
        let here = at.key(k);
        if k.is_empty() {
            r.error(&here, "key must not be empty");
            continue;
        }
        if k.contains('*') {
            r.error(&here, "wildcard not allowed in label key match");
        } else if let Some(e) = label_key_error(k) {
            r.error(&here, e);
        }
        if v.contains('*') {
            r.error(&here, "wildcard not allowed in label value match");
        } else if !is_label_value(v) {
            r.error(&here, format!("invalid label value {v:?}"));
        }
    }
}

/// A policy target reference: name and kind required and well formed, group a DNS subdomain,
/// namespace (when set) the policy's own (the CRD's rules).
pub fn check_target_ref(
    t: &PolicyTargetReference,
    own_namespace: &str,
    at: &FieldPath,
    r: &mut Report,
) {
    if t.name.is_empty() {
        r.error(&at.field("name"), "Required value: name is required");
    }
    if t.kind.is_empty() {
        r.error(&at.field("kind"), "Required value: kind is required");
    } else {
        let b = t.kind.as_bytes();
        let ok = t.kind.len() <= 63
            && b[0].is_ascii_alphabetic()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && b[b.len() - 1].is_ascii_alphanumeric();
        if !ok {
            r.error(
                &at.field("kind"),
                "kind should match '^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$'",
            );
        }
    }
    if !t.namespace.is_empty() && t.namespace != own_namespace {
        r.error(
            &at.field("namespace"),
            "cross namespace referencing is not currently supported",
        );
    }
    let group_ok =
        t.group.is_empty() || (t.group.len() <= 253 && t.group.split('.').all(is_dns1123_label));
    if !group_ok {
        r.error(
            &at.field("group"),
            "group should match DNS subdomain syntax",
        );
    }
}

/// Records each message whose condition holds, all at `at` (for lists of exclusive options).
pub fn error_each(r: &mut Report, at: &FieldPath, checks: &[(bool, &str)]) {
    for (set, message) in checks {
        if *set {
            r.error(at, *message);
        }
    }
}

/// A port in 1..=65535, in the CRD's own words.
pub fn check_port_range(port: u32, at: &FieldPath, r: &mut Report) {
    if !(1..=65535).contains(&port) {
        r.error(at, format!("port must be between 1-65535, got {port}"));
    }
}

/// Kubernetes label syntax for every key and value of a label map.
pub fn check_labels(labels: &BTreeMap<String, String>, at: &FieldPath, r: &mut Report) {
    for (k, v) in labels {
        let here = at.key(k);
        if let Some(e) = label_key_error(k) {
            r.error(&here, e);
        }
        if !is_label_value(v) {
            r.error(&here, format!("invalid label value {v:?}"));
        }
    }
}

/// A `labels` selector (ServiceEntry, Sidecar): valid labels, no wildcards.
pub fn check_label_selector(sel: &LabelSelector, at: &FieldPath, r: &mut Report) {
    let at = at.field("labels");
    for (k, v) in &sel.labels {
        let here = at.key(k);
        if k.contains('*') || v.contains('*') {
            r.error(&here, "wildcard is not supported in selector");
            continue;
        }
        if let Some(e) = label_key_error(k) {
            r.error(&here, e);
        }
        if !is_label_value(v) {
            r.error(&here, format!("invalid label value {v:?}"));
        }
    }
}

/// `exportTo`: `.`, `*`, `~` or namespace names; `*` and `~` stand alone; no duplicates.
pub fn check_export_to(export_to: &[String], at: &FieldPath, r: &mut Report) {
    let mut seen = std::collections::HashSet::new();
    for (i, e) in export_to.iter().enumerate() {
        let here = at.index(i);
        if !seen.insert(e.as_str()) {
            r.error(&here, format!("duplicate entry {e:?} in exportTo"));
        }
        match e.as_str() {
            "." | "*" | "~" => {}
            ns if is_dns1123_label(ns) => {}
            other => r.error(
                &here,
                format!("invalid exportTo value {other:?}: must be '.', '*', '~' or a namespace"),
            ),
        }
    }
    if export_to.len() > 1 && export_to.iter().any(|e| e == "*" || e == "~") {
        r.error(
            at,
            "exportTo '*' or '~' cannot be combined with other values",
        );
    }
}

/// Policy attachment: at most one of `selector`, `targetRef`, `targetRefs`, and each target
/// reference well formed.
pub fn check_policy_targets(
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
    own_namespace: &str,
    at: &FieldPath,
    r: &mut Report,
) {
    let set = usize::from(selector.is_some())
        + usize::from(target_ref.is_some())
        + usize::from(!target_refs.is_empty());
    if set > 1 {
        r.error(at, "only one of targetRefs or selector can be set");
    }
    if let Some(sel) = selector {
        check_workload_selector(sel, &at.field("selector"), r);
    }
    if let Some(t) = target_ref {
        check_target_ref(t, own_namespace, &at.field("targetRef"), r);
    }
    for (i, t) in target_refs.iter().enumerate() {
        check_target_ref(t, own_namespace, &at.field("targetRefs").index(i), r);
    }
}

/// HTTP header names: RFC 7230 tokens (Istio lower-cases and checks them the same way).
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(f: impl FnOnce(&mut Report)) -> Vec<String> {
        let mut r = Report::new();
        f(&mut r);
        r.into_issues().into_iter().map(|i| i.message).collect()
    }

    #[test]
    fn wildcard_domains() {
        for ok in [
            "*",
            "*.example.com",
            "reviews",
            "a.b.c",
            "example.com.",
            "*-foo.com",
            "*x",
            "*.",
        ] {
            assert_eq!(wildcard_domain_error(ok), None, "{ok}");
        }
        for bad in [
            "",
            "a.*.com",
            "foo..com",
            "-a.com",
            "a b.com",
            "Upper.com",
            "a.123",
        ] {
            assert!(wildcard_domain_error(bad).is_some(), "{bad}");
        }
        let long = "a".repeat(64);
        assert!(fqdn_error(&long).is_some());
    }

    #[test]
    fn ports_durations_percent() {
        let at = FieldPath::root("p");
        assert!(errs(|r| check_port(0, &at, r))[0].contains("1..65535"));
        assert!(errs(|r| check_port(65536, &at, r))[0].contains("1..65535"));
        assert!(errs(|r| check_port(80, &at, r)).is_empty());
        assert!(!errs(|r| check_duration(Duration::from_nanos(10), &at, r)).is_empty());
        assert!(errs(|r| check_duration(Duration::from_millis(1), &at, r)).is_empty());
        assert!(!errs(|r| check_percent(&Percent { value: 101.0 }, &at, r)).is_empty());
    }

    #[test]
    fn string_match_and_regex() {
        let at = FieldPath::root("m");
        let two = StringMatch {
            exact: Some("a".into()),
            prefix: Some("b".into()),
            regex: None,
        };
        assert_eq!(errs(|r| check_string_match(&two, &at, r)).len(), 1);
        let bad_re = StringMatch {
            regex: Some("(a".into()),
            ..Default::default()
        };
        assert!(errs(|r| check_string_match(&bad_re, &at, r))[0].contains("not a valid regex"));
        // RE2 has no backreferences or lookaround: rejected like Envoy rejects them.
        assert!(!errs(|r| check_regex("(a)\\1", &at, r)).is_empty());
        assert!(!errs(|r| check_regex("a(?=b)", &at, r)).is_empty());
    }

    #[test]
    fn cidrs_and_labels() {
        assert!(is_cidr("10.0.0.0/8") && is_cidr("2001:db8::/32") && !is_cidr("10.0.0.0/33"));
        assert!(is_ip_or_cidr("1.2.3.4") && !is_ip_or_cidr("host"));
        let mut sel = WorkloadSelector::default();
        sel.match_labels.insert("app".into(), "*".into());
        sel.match_labels.insert("*".into(), "x".into());
        let e = errs(|r| check_workload_selector(&sel, &FieldPath::root("s"), r));
        assert!(e.iter().any(|m| m.contains("label value")));
        assert!(e.iter().any(|m| m.contains("label key")));
    }
}
