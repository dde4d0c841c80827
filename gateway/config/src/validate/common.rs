//! Validation rules shared by several kinds: hosts, ports, durations, regexes, selectors.
//!
//! Each helper records issues on a [`Report`] at the given field path and never panics.
//! Messages follow the wording of Istio's `pkg/config/validation` where it has one.

use std::net::IpAddr;

use crate::diag::{FieldPath, Report};
use crate::model::common::{
    Duration, Percent, PolicyTargetReference, StringMatch, WorkloadSelector,
};

/// Longest accepted regex program, like Envoy's default `max_program_size` guard.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles `re` with RE2 semantics (the `regex` crate), for validation only.
pub fn check_regex(re: &str, at: &FieldPath, r: &mut Report) {
    if let Err(e) = regex::RegexBuilder::new(re)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
    {
        let first = e.to_string();
        let first = first.lines().last().unwrap_or("invalid regex").trim();
        r.error(at, format!("\"{re}\" is not a valid regex: {first}"));
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

/// A host name label as Istio accepts it in hosts: letters, digits, '-' (and '_', which
/// Kubernetes service names never have but Istio tolerates in FQDNs), 1-63 chars.
fn is_host_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Istio's `ValidateFQDN`: dot-separated labels, at most 255 chars; a trailing dot is allowed.
pub fn fqdn_error(host: &str) -> Option<String> {
    let h = host.strip_suffix('.').unwrap_or(host);
    if h.is_empty() {
        return Some("domain name must not be empty".into());
    }
    if host.len() > 255 {
        return Some(format!("domain name {host:?} too long (max 255)"));
    }
    for label in h.split('.') {
        if !is_host_label(label) {
            return Some(format!(
                "domain name {host:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    None
}

/// Istio's `ValidateWildcardDomain`: an FQDN, optionally with `*` or `*.` as the first label.
pub fn wildcard_domain_error(host: &str) -> Option<String> {
    if host == "*" {
        return None;
    }
    if host.len() > 255 {
        return Some(format!("domain name {host:?} too long (max 255)"));
    }
    let rest = match host.strip_prefix("*.") {
        Some(rest) => rest,
        None if host.starts_with('*') => {
            // Istio also allows `*foo.com` style partial wildcards in the first label.
            host.split_once('.').map(|(_, r)| r).unwrap_or("")
        }
        None => host,
    };
    if rest.is_empty() {
        return Some(format!("domain name {host:?} invalid"));
    }
    if rest.contains('*') {
        return Some(format!(
            "domain name {host:?} invalid (wildcard is only allowed as the first label)"
        ));
    }
    fqdn_error(rest)
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

/// A policy target reference: name required, namespace (when set) must be the policy's own.
pub fn check_target_ref(
    t: &PolicyTargetReference,
    own_namespace: &str,
    at: &FieldPath,
    r: &mut Report,
) {
    if t.name.is_empty() {
        r.error(&at.field("name"), "Required value");
    }
    if t.kind.is_empty() {
        r.error(&at.field("kind"), "Required value");
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
            "spec.targetRef.group in body should match DNS subdomain syntax",
        );
    }
    let kind_ok = !t.kind.is_empty()
        && t.kind.len() <= 63
        && t.kind.as_bytes()[0].is_ascii_alphabetic()
        && t.kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !t.kind.is_empty() && !kind_ok {
        r.error(
            &at.field("kind"),
            "spec.targetRef.kind in body should match '^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$'",
        );
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
        ] {
            assert_eq!(wildcard_domain_error(ok), None, "{ok}");
        }
        for bad in ["", "a.*.com", "foo..com", "-a.com", "*.", "a b.com"] {
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
