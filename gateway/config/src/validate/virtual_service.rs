//! Validation of `VirtualService`: hosts and gateways, then every HTTP, TLS and TCP route with
//! its matches, actions and policies (Istio's `ValidateVirtualService` and the CRD rules).

use std::collections::BTreeMap;

use super::common::{
    check_duration, check_export_to, check_labels, check_percent, check_port, check_regex,
    check_string_match, error_each, is_dns1123_label, is_header_name, is_ip_or_cidr,
    wildcard_domain_error,
};
use super::Ctx;
use crate::compile::hosts::covers;
use crate::diag::{FieldPath, Report};
use crate::model::common::StringMatch;
use crate::model::virtual_service::{
    CorsPolicy, Destination, HeaderOperations, Headers, HttpFaultInjection, HttpMatchRequest,
    HttpRetry, HttpRoute, RouteDestination,
};
use crate::model::VirtualService;

/// `retryOn` conditions Envoy's router and gRPC retry policies accept (besides status codes).
pub const RETRY_ON: [&str; 16] = [
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// gRPC status names accepted by `fault.abort.grpcStatus`.
pub const GRPC_STATUSES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Validates a `VirtualService` spec.
pub fn validate(spec: &VirtualService, ctx: &Ctx<'_>, at: &FieldPath, r: &mut Report) {
    let relaxed = ctx.gateway_semantics;
    let delegate = spec.hosts.is_empty();
    if delegate {
        if !spec.gateways.is_empty() {
            r.error(
                &at.field("gateways"),
                "delegate virtual service must have no gateways specified",
            );
        }
        if !spec.tls.is_empty() {
            r.error(
                &at.field("tls"),
                "delegate virtual service must have no tls route specified",
            );
        }
        if !spec.tcp.is_empty() {
            r.error(
                &at.field("tcp"),
                "delegate virtual service must have no tcp route specified",
            );
        }
    }
    // Istio: a VirtualService applies to gateways when it names some and none is `mesh`.
    let applies_to_gateway =
        !spec.gateways.is_empty() && !spec.gateways.iter().any(|g| g == "mesh");
    let mut hosts_valid = true;
    for (i, h) in spec.hosts.iter().enumerate() {
        let here = at.field("hosts").index(i);
        if let Some(e) = wildcard_domain_error(h) {
            if !super::common::is_ip(h) {
                r.error(&here, e);
                hosts_valid = false;
            }
        } else if !applies_to_gateway && h == "*" {
            r.error(
                &here,
                "wildcard host * is not allowed for virtual services bound to the mesh gateway",
            );
            hosts_valid = false;
        }
    }
    if hosts_valid {
        for (i, a) in spec.hosts.iter().enumerate() {
            for b in &spec.hosts[i + 1..] {
                if covers(a, b) || covers(b, a) {
                    r.error(
                        &at.field("hosts"),
                        format!("duplicate hosts in virtual service: {a} & {b}"),
                    );
                }
            }
        }
    }
    for (i, g) in spec.gateways.iter().enumerate() {
        if let Some(e) = gateway_name_error(g, relaxed) {
            r.error(&at.field("gateways").index(i), e);
        }
    }
    if !applies_to_gateway {
        for (i, h) in spec.http.iter().enumerate() {
            for (j, m) in h.match_.iter().enumerate() {
                for key in m.headers.keys().chain(m.without_headers.keys()) {
                    if key.starts_with(JWT_CLAIM_PREFIX) {
                        r.error(
                            &at.field("http").index(i).field("match").index(j),
                            format!("JWT claim based routing (key: {key}) is only supported for gateway"),
                        );
                    }
                }
            }
        }
    }
    if spec.http.is_empty() && spec.tls.is_empty() && spec.tcp.is_empty() {
        r.error(at, "http, tcp or tls must be provided in virtual service");
    }
    let mut catch_all = None;
    for (i, route) in spec.http.iter().enumerate() {
        check_http_route(route, delegate, relaxed, &at.field("http").index(i), r);
        if let Some(first) = catch_all {
            r.warn(
                &at.field("http").index(i),
                format!("virtualService rule #{i} not used (route #{first} without matches defined before)"),
            );
        } else if route.match_.is_empty() {
            catch_all = Some(i);
        }
    }
    for (i, t) in spec.tls.iter().enumerate() {
        let here = at.field("tls").index(i);
        if t.match_.is_empty() {
            r.error(
                &here.field("match"),
                "Required value: TLS route must have at least one match condition",
            );
        }
        if t.route.is_empty() {
            r.error(
                &here.field("route"),
                "Required value: TLS route is required",
            );
        }
        for (j, m) in t.match_.iter().enumerate() {
            let mh = here.field("match").index(j);
            if m.sni_hosts.is_empty() {
                r.error(
                    &mh.field("sniHosts"),
                    "Required value: TLS match must have at least one SNI host",
                );
            }
            for (k, sni) in m.sni_hosts.iter().enumerate() {
                let sh = mh.field("sniHosts").index(k);
                if let Some(e) = wildcard_domain_error(sni) {
                    if super::common::is_ip(sni) {
                        r.warn(
                            &sh,
                            format!("using an IP address ({sni:?}) goes against SNI spec"),
                        );
                    } else {
                        r.error(&sh, e);
                    }
                } else if !relaxed && !spec.hosts.iter().any(|h| covers(h, sni)) {
                    r.error(
                        &sh,
                        format!("SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: [{}]", spec.hosts.join(", ")),
                    );
                }
            }
            check_subnets(&m.destination_subnets, &mh.field("destinationSubnets"), r);
            check_match_port(m.port, &mh.field("port"), r);
            check_labels(&m.source_labels, &mh.field("sourceLabels"), r);
            check_gateways(&m.gateways, &mh.field("gateways"), r);
        }
        check_l4_destinations(&t.route, relaxed, &here.field("route"), r);
    }
    for (i, t) in spec.tcp.iter().enumerate() {
        let here = at.field("tcp").index(i);
        for (j, m) in t.match_.iter().enumerate() {
            let mh = here.field("match").index(j);
            check_subnets(&m.destination_subnets, &mh.field("destinationSubnets"), r);
            if !m.source_subnet.is_empty() && !is_ip_or_cidr(&m.source_subnet) {
                r.error(
                    &mh.field("sourceSubnet"),
                    format!("invalid IP address or CIDR {:?}", m.source_subnet),
                );
            }
            check_match_port(m.port, &mh.field("port"), r);
            check_labels(&m.source_labels, &mh.field("sourceLabels"), r);
            check_gateways(&m.gateways, &mh.field("gateways"), r);
        }
        if t.route.is_empty() {
            r.error(
                &here.field("route"),
                "Required value: TCP route is required",
            );
        }
        check_l4_destinations(&t.route, relaxed, &here.field("route"), r);
    }
    check_export_to(&spec.export_to, &at.field("exportTo"), r);
}

/// `mesh`, `namespace/name`, or a legacy FQDN (`name.namespace.svc.<suffix>`), as Istio's
/// `validateGatewayNames` reads them. Generated names (`gw~...`) pass with gateway semantics.
fn gateway_name_error(g: &str, relaxed: bool) -> Option<String> {
    if g == "mesh" {
        return None;
    }
    match g.split_once('/') {
        None => super::common::fqdn_error(g),
        Some((ns, name)) => {
            if ns.is_empty() || name.is_empty() {
                return Some("config namespace and gateway name cannot be empty".into());
            }
            if !is_dns1123_label(ns) {
                return Some(format!("invalid value for namespace: {ns:?}"));
            }
            if !is_dns1123_label(name) && !relaxed {
                return Some(format!("invalid value for gateway name: {name:?}"));
            }
            None
        }
    }
}

/// Header names that route on JWT claims (gateways only).
const JWT_CLAIM_PREFIX: &str = "@request.auth.claims.";

fn check_gateways(gws: &[String], at: &FieldPath, r: &mut Report) {
    for (i, g) in gws.iter().enumerate() {
        if let Some(e) = gateway_name_error(g, false) {
            r.error(&at.index(i), e);
        }
    }
}

fn check_subnets(subnets: &[String], at: &FieldPath, r: &mut Report) {
    for (i, s) in subnets.iter().enumerate() {
        if !is_ip_or_cidr(s) {
            r.error(&at.index(i), format!("invalid IP address or CIDR {s:?}"));
        }
    }
}

fn check_match_port(port: u32, at: &FieldPath, r: &mut Report) {
    if port != 0 {
        check_port(port, at, r);
    }
}

fn check_destination(d: &Destination, at: &FieldPath, r: &mut Report) {
    if d.host.is_empty() {
        r.error(
            &at.field("host"),
            "Required value: destination.host is required",
        );
    } else if d.host == "*" {
        r.error(&at.field("host"), "invalid destination host *");
    } else if let Some(e) = wildcard_domain_error(&d.host) {
        r.error(&at.field("host"), e);
    }
    if !d.subset.is_empty() && !is_dns1123_label(&d.subset) {
        r.error(
            &at.field("subset"),
            format!("subset {:?} is invalid: must be a DNS-1123 label", d.subset),
        );
    }
    if let Some(p) = d.port {
        check_port(p.number, &at.field("port.number"), r);
    }
}

fn check_l4_destinations(
    routes: &[RouteDestination],
    relaxed: bool,
    at: &FieldPath,
    r: &mut Report,
) {
    let weights: Vec<i32> = routes.iter().map(|d| d.weight).collect();
    for (i, d) in routes.iter().enumerate() {
        let here = at.index(i);
        match &d.destination {
            Some(dest) if !relaxed => check_destination(dest, &here.field("destination"), r),
            Some(_) => {}
            None => r.error(
                &here.field("destination"),
                "Required value: destination is required",
            ),
        }
    }
    check_weights(&weights, at, r);
}

fn check_weights(weights: &[i32], at: &FieldPath, r: &mut Report) {
    for (i, w) in weights.iter().enumerate() {
        if *w < 0 {
            r.error(&at.index(i).field("weight"), format!("weight {w} < 0"));
        }
    }
    if weights.len() > 1 && weights.iter().all(|w| *w == 0) {
        r.error(
            at,
            "total destination weight = 0: at least one destination needs a weight",
        );
    }
}

fn check_http_route(
    route: &HttpRoute,
    in_delegate: bool,
    relaxed: bool,
    at: &FieldPath,
    r: &mut Report,
) {
    let has_route = !route.route.is_empty();
    if let Some(d) = &route.delegate {
        // A root route: only the delegate may be given.
        if in_delegate {
            r.error(
                &at.field("delegate"),
                "delegate HTTP route cannot contain delegate",
            );
        }
        if d.name.is_empty() {
            r.error(
                &at.field("delegate.name"),
                "Required value: delegate name is required",
            );
        }
        if route.redirect.is_some() {
            r.error(
                at,
                format!("root HTTP route {} must not specify redirect", route.name),
            );
        }
        if has_route {
            r.error(
                at,
                format!("root HTTP route {} must not specify route", route.name),
            );
        }
    } else if route.redirect.is_some() {
        error_each(
            r,
            at,
            &[
                (
                    has_route,
                    "HTTP route cannot contain both route and redirect",
                ),
                (
                    route.fault.is_some(),
                    "HTTP route cannot contain both fault and redirect",
                ),
                (
                    route.rewrite.is_some(),
                    "HTTP route rule cannot contain both rewrite and redirect",
                ),
                (
                    route.direct_response.is_some(),
                    "HTTP route rule cannot contain both direct_response and redirect",
                ),
            ],
        );
    } else if route.direct_response.is_some() {
        error_each(
            r,
            at,
            &[
                (
                    has_route,
                    "HTTP route cannot contain both route and direct_response",
                ),
                (
                    route.fault.is_some(),
                    "HTTP route cannot contain both fault and direct_response",
                ),
                (
                    route.rewrite.is_some(),
                    "HTTP route rule cannot contain both rewrite and direct_response",
                ),
            ],
        );
    } else if !has_route {
        r.error(at, "HTTP route, redirect or direct_response is required");
    }
    if route.mirror.is_some() && !route.mirrors.is_empty() {
        r.error(at, "HTTP route cannot contain both mirror and mirrors");
    }
    let authority_sets = route
        .headers
        .as_ref()
        .and_then(|h| h.request.as_ref())
        .map_or(0, |ops| {
            ops.set
                .keys()
                .chain(ops.add.keys())
                .filter(|k| is_authority(k))
                .count()
        })
        + usize::from(
            route
                .rewrite
                .as_ref()
                .is_some_and(|rw| !rw.authority.is_empty()),
        );
    if authority_sets > 1 {
        r.error(at, "authority header cannot be set multiple times");
    }
    for (i, m) in route.match_.iter().enumerate() {
        check_match(m, &at.field("match").index(i), r);
    }
    let weights: Vec<i32> = route.route.iter().map(|d| d.weight).collect();
    for (i, d) in route.route.iter().enumerate() {
        let here = at.field("route").index(i);
        match &d.destination {
            Some(dest) if !relaxed => check_destination(dest, &here.field("destination"), r),
            Some(_) => {}
            None => r.error(
                &here.field("destination"),
                "Required value: destination is required",
            ),
        }
        check_headers(d.headers.as_ref(), &here.field("headers"), r);
    }
    check_weights(&weights, &at.field("route"), r);
    if let Some(rd) = &route.redirect {
        let here = at.field("redirect");
        if rd.uri.is_empty()
            && rd.authority.is_empty()
            && rd.scheme.is_empty()
            && rd.port.is_none()
            && rd.derive_port.is_none()
        {
            r.error(
                &here,
                "redirect must specify URI, authority, scheme, or port",
            );
        }
        if rd.port.is_some() && rd.derive_port.is_some() {
            r.error(&here, "only one of port or derivePort may be set");
        }
        if let Some(p) = rd.port {
            check_port(p, &here.field("port"), r);
        }
        if rd.redirect_code != 0 && !(300..=399).contains(&rd.redirect_code) {
            r.error(
                &here.field("redirectCode"),
                format!(
                    "{} is not a valid redirect code, must be 3xx",
                    rd.redirect_code
                ),
            );
        }
        if !rd.scheme.is_empty() && rd.scheme != "http" && rd.scheme != "https" {
            r.error(
                &here.field("scheme"),
                "invalid redirect scheme, must be \"http\" or \"https\"",
            );
        }
        if !rd.uri.is_empty() && rd.prefix_rewrite.is_some() {
            r.error(&here, "only one of uri or prefixRewrite may be set");
        }
    }
    if let Some(d) = &route.direct_response {
        let here = at.field("directResponse");
        if !(200..=600).contains(&d.status) {
            r.error(
                &here.field("status"),
                format!("HTTP status {} is not in range 200-599", d.status),
            );
        }
        if let Some(b) = &d.body {
            match (&b.string, &b.bytes) {
                (Some(_), Some(_)) => r.error(
                    &here.field("body"),
                    "only one of string or bytes may be set",
                ),
                (None, Some(bytes)) if !is_base64(bytes) => {
                    r.error(&here.field("body.bytes"), "bytes must be valid base64")
                }
                _ => {}
            }
            let len =
                b.string.as_ref().map_or(0, String::len) + b.bytes.as_ref().map_or(0, String::len);
            if len > 1024 * 1024 {
                r.error(&here.field("body"), "large direct_responses may impact control plane performance, must be less than 1MB");
            } else if len > 100 * 1024 {
                r.warn(
                    &here.field("body"),
                    "large direct_responses may impact control plane performance",
                );
            }
        }
    }
    if let Some(rw) = &route.rewrite {
        let here = at.field("rewrite");
        if !rw.uri.is_empty() && rw.uri_regex_rewrite.is_some() {
            r.error(
                &here,
                "rewrite may only contain one of uri or uriRegexRewrite",
            );
        }
        if let Some(rr) = &rw.uri_regex_rewrite {
            if rr.match_.is_empty() {
                r.error(
                    &here.field("uriRegexRewrite.match"),
                    "Required value: regex match is required",
                );
            } else {
                check_regex(&rr.match_, &here.field("uriRegexRewrite.match"), r);
            }
        }
        if !rw.authority.is_empty() && !rw.authority.bytes().all(|b| b.is_ascii_graphic()) {
            r.error(&here.field("authority"), "invalid authority");
        }
    }
    if let Some(t) = route.timeout {
        check_duration(t, &at.field("timeout"), r);
    }
    if let Some(rt) = &route.retries {
        check_retries(rt, &at.field("retries"), r);
    }
    if let Some(f) = &route.fault {
        check_fault(f, &at.field("fault"), r);
    }
    if let Some(m) = &route.mirror {
        check_destination(m, &at.field("mirror"), r);
    }
    if let Some(p) = route.mirror_percent {
        if p > 100 {
            r.error(
                &at.field("mirrorPercent"),
                format!("mirror_percent must have a max value of 100 (it has {p})"),
            );
        }
        r.warn(
            &at.field("mirrorPercent"),
            "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
        );
    }
    if let Some(p) = &route.mirror_percentage {
        check_percent(p, &at.field("mirrorPercentage"), r);
    }
    for (i, m) in route.mirrors.iter().enumerate() {
        let here = at.field("mirrors").index(i);
        match &m.destination {
            Some(d) => check_destination(d, &here.field("destination"), r),
            None => r.error(
                &here.field("destination"),
                "Required value: destination is required",
            ),
        }
        if let Some(p) = &m.percentage {
            check_percent(p, &here.field("percentage"), r);
        }
    }
    if let Some(c) = &route.cors_policy {
        check_cors(c, &at.field("corsPolicy"), r);
    }
    check_headers(route.headers.as_ref(), &at.field("headers"), r);
}

/// Status codes Go's `http.StatusText` knows (what Istio accepts in `retryOn`).
fn is_authority(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

fn is_http_status(c: u16) -> bool {
    matches!(c, 100..=103 | 200..=208 | 226 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428 | 429 | 431 | 451 | 500..=508 | 510 | 511)
}

fn is_base64(s: &str) -> bool {
    let t = s.trim_end_matches('=');
    s.len() - t.len() <= 2
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

fn check_match(m: &HttpMatchRequest, at: &FieldPath, r: &mut Report) {
    for (field, sm) in [
        ("uri", &m.uri),
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(sm) = sm {
            check_string_match(sm, &at.field(field), r);
            if field != "uri" && sm.prefix.as_deref() == Some("") {
                r.error(
                    &at.field(field).field("prefix"),
                    "prefix string match should not be empty",
                );
            }
        }
    }
    check_header_matches(&m.headers, &at.field("headers"), r);
    check_header_matches(&m.without_headers, &at.field("withoutHeaders"), r);
    for (name, sm) in &m.query_params {
        let here = at.field("queryParams").key(name);
        if name.is_empty() {
            r.error(&here, "query parameter name cannot be empty");
        }
        check_string_match(sm, &here, r);
        if sm.prefix.as_deref() == Some("") {
            r.error(
                &here.field("prefix"),
                "prefix string match should not be empty",
            );
        }
    }
    check_match_port(m.port, &at.field("port"), r);
    check_labels(&m.source_labels, &at.field("sourceLabels"), r);
    check_gateways(&m.gateways, &at.field("gateways"), r);
    if !m.source_namespace.is_empty() && !is_dns1123_label(&m.source_namespace) {
        r.error(
            &at.field("sourceNamespace"),
            format!("invalid namespace {:?}", m.source_namespace),
        );
    }
}

fn check_header_matches(headers: &BTreeMap<String, StringMatch>, at: &FieldPath, r: &mut Report) {
    for (name, sm) in headers {
        let here = at.key(name);
        if name.is_empty() {
            r.error(&here, "header name cannot be empty");
            continue;
        }
        if name.starts_with(JWT_CLAIM_PREFIX) {
            check_string_match(sm, &here, r);
            continue;
        }
        let plain = name.strip_prefix(':').unwrap_or(name);
        if !is_header_name(plain) {
            r.error(
                &here,
                format!("header name {name:?} is not a valid HTTP header name"),
            );
        }
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            r.warn(
                &here,
                format!("header name {name:?} is matched lower-cased"),
            );
        }
        check_string_match(sm, &here, r);
    }
}

fn check_header_ops(ops: &HeaderOperations, request: bool, at: &FieldPath, r: &mut Report) {
    for (field, names) in [
        ("set", ops.set.keys().collect::<Vec<_>>()),
        ("add", ops.add.keys().collect()),
    ] {
        for name in names {
            let here = at.field(field).key(name);
            let authority =
                name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host");
            if request && authority {
                continue;
            }
            if name.starts_with(':') {
                r.error(
                    &here,
                    format!("invalid header {name:?}: pseudo-headers cannot be modified"),
                );
            } else if !is_header_name(name) {
                r.error(&here, format!("invalid header name {name:?}"));
            }
        }
    }
    for (i, name) in ops.remove.iter().enumerate() {
        let here = at.field("remove").index(i);
        if name.starts_with(':') || name.eq_ignore_ascii_case("host") {
            r.error(&here, format!("invalid header {name:?}: cannot be removed"));
        } else if !is_header_name(name) {
            r.error(&here, format!("invalid header name {name:?}"));
        }
    }
}

/// Envoy header variables meshgate expands in header values (`%REQ(name)%` too).
pub const HEADER_VARIABLES: &[&str] = &[
    "DOWNSTREAM_REMOTE_ADDRESS",
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_REMOTE_PORT",
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS",
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_LOCAL_ADDRESS",
    "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_LOCAL_PORT",
    "UPSTREAM_REMOTE_ADDRESS",
    "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
    "UPSTREAM_CLUSTER",
    "ROUTE_NAME",
    "PROTOCOL",
    "HOSTNAME",
];

/// `%NAME%` variables in a header value that meshgate does not expand.
fn unknown_variables(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(i) = rest.find('%') {
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('%') {
            rest = tail;
            continue;
        }
        let Some(end) = after.find('%') else { break };
        let name = &after[..end];
        let req = name.starts_with("REQ(") && name.ends_with(')');
        if !req && !HEADER_VARIABLES.contains(&name) {
            out.push(name);
        }
        rest = &after[end + 1..];
    }
    out
}

fn check_header_values(ops: &HeaderOperations, at: &FieldPath, r: &mut Report) {
    for (field, map) in [("set", &ops.set), ("add", &ops.add)] {
        for (name, value) in map {
            for var in unknown_variables(value) {
                r.warn(
                    &at.field(field).key(name),
                    format!("header variable %{var}% is not one meshgate expands: the value is sent as written"),
                );
            }
        }
    }
}

fn check_headers(h: Option<&Headers>, at: &FieldPath, r: &mut Report) {
    let Some(h) = h else { return };
    if let Some(ops) = &h.request {
        check_header_ops(ops, true, &at.field("request"), r);
        check_header_values(ops, &at.field("request"), r);
    }
    if let Some(ops) = &h.response {
        check_header_ops(ops, false, &at.field("response"), r);
        check_header_values(ops, &at.field("response"), r);
    }
}

fn check_retries(rt: &HttpRetry, at: &FieldPath, r: &mut Report) {
    if rt.attempts < 0 {
        r.error(&at.field("attempts"), "attempts cannot be negative");
    }
    if rt.attempts == 0
        && (rt.per_try_timeout.is_some()
            || !rt.retry_on.is_empty()
            || rt.retry_remote_localities.is_some())
    {
        r.error(
            at,
            "http retry policy configured when attempts are set to 0 (disabled)",
        );
    }
    if let Some(t) = rt.per_try_timeout {
        check_duration(t, &at.field("perTryTimeout"), r);
    }
    if let Some(b) = rt.backoff {
        check_duration(b, &at.field("backoff"), r);
    }
    // Istio splits on ',' without trimming: "5xx, reset" is rejected for " reset".
    for cond in rt.retry_on.split(',').filter(|_| !rt.retry_on.is_empty()) {
        let code_ok = cond.parse::<u16>().is_ok_and(is_http_status);
        if !RETRY_ON.contains(&cond) && !code_ok {
            r.error(
                &at.field("retryOn"),
                format!("{cond:?} is not a valid retryOn policy"),
            );
        }
    }
}

fn check_fault(f: &HttpFaultInjection, at: &FieldPath, r: &mut Report) {
    if f.delay.is_none() && f.abort.is_none() {
        r.error(at, "HTTP fault injection must have an abort and/or a delay");
    }
    if let Some(a) = &f.abort {
        let here = at.field("abort");
        if !a.http2_error.is_empty() {
            r.error(
                &here.field("http2Error"),
                "HTTP/2 abort fault injection not supported yet",
            );
        }
        if !a.grpc_status.is_empty() {
            if !GRPC_STATUSES.contains(&a.grpc_status.as_str()) {
                r.error(
                    &here.field("grpcStatus"),
                    format!("invalid gRPC status {:?}", a.grpc_status),
                );
            }
        } else if a.http2_error.is_empty() && a.http_status == 0 {
            r.warn(&here, "abort configured, but error type not set");
        } else if a.http2_error.is_empty() && !(200..=600).contains(&a.http_status) {
            r.error(
                &here.field("httpStatus"),
                format!("HTTP status {} is not in range 200-599", a.http_status),
            );
        }
        if let Some(p) = &a.percentage {
            check_percent(p, &here.field("percentage"), r);
        }
    }
    if let Some(d) = &f.delay {
        let here = at.field("delay");
        match (d.fixed_delay, d.exponential_delay) {
            (Some(fd), _) => check_duration(fd, &here.field("fixedDelay"), r),
            (None, Some(_)) => r.error(
                &here.field("exponentialDelay"),
                "exponentialDelay not supported yet",
            ),
            (None, None) => {}
        }
        if let Some(p) = &d.percentage {
            check_percent(p, &here.field("percentage"), r);
        }
        if !(0..=100).contains(&d.percent) {
            r.error(&here.field("percent"), "percent must be in range [0, 100]");
        }
    }
}

fn check_cors(c: &CorsPolicy, at: &FieldPath, r: &mut Report) {
    for (i, o) in c.allow_origins.iter().enumerate() {
        let here = at.field("allowOrigins").index(i);
        let value = o
            .exact
            .as_deref()
            .or(o.prefix.as_deref())
            .or(o.regex.as_deref());
        if value.is_none_or(str::is_empty) {
            r.error(&here, "'' is not a valid match type for CORS allow origins");
        }
        check_string_match(o, &here, r);
    }
    for (i, m) in c.allow_methods.iter().enumerate() {
        if !METHODS.contains(&m.as_str()) {
            r.error(
                &at.field("allowMethods").index(i),
                format!("{m:?} is not a supported HTTP method"),
            );
        }
    }
    for (field, list) in [
        ("allowHeaders", &c.allow_headers),
        ("exposeHeaders", &c.expose_headers),
    ] {
        for (i, h) in list.iter().enumerate() {
            if h != "*" && !is_header_name(h) {
                r.error(
                    &at.field(field).index(i),
                    format!("invalid header name {h:?}"),
                );
            }
        }
    }
    if let Some(a) = c.max_age {
        check_duration(a, &at.field("maxAge"), r);
        if a.as_nanos() % 1_000_000_000 != 0 {
            r.error(
                &at.field("maxAge"),
                "max_age duration is accurate only to seconds precision",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::tests::{errors_of, has, warnings_of};

    #[test]
    fn unknown_header_variables_warn() {
        let w = warnings_of(
            "VirtualService",
            "hosts: [a]\nhttp:\n- route: [{destination: {host: b}}]\n  headers: {request: {set: {x-a: '%DOWNSTREAM_REMOTE_ADDRESS% %REQ(x-b)% 100%%', x-c: '%START_TIME%'}}}",
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].0, "spec.http[0].headers.request.set[x-c]");
        assert!(w[0].1.contains("%START_TIME%"), "{w:?}");
    }

    #[test]
    fn hosts_gateways_and_delegates() {
        let e = errors_of(
            "VirtualService",
            "hosts: ['*']\nhttp: [{route: [{destination: {host: a}}]}]",
        );
        assert!(has(&e, "spec.hosts[0]", "mesh gateway"));
        assert!(errors_of(
            "VirtualService",
            "hosts: ['*']\ngateways: [gw]\nhttp: [{route: [{destination: {host: a}}]}]"
        )
        .is_empty());
        let e = errors_of(
            "VirtualService",
            "hosts: [a.com, 'b.*.com']\ngateways: ['Bad/gw', 'ns/ok', mesh]",
        );
        assert!(has(&e, "spec.hosts[1]", "label \"*\" invalid"));
        assert!(has(&e, "spec.gateways[0]", "invalid value for namespace"));
        assert!(has(&e, "spec", "http, tcp or tls must be provided"));
        let e = errors_of(
            "VirtualService",
            "gateways: [gw]\nhttp: [{delegate: {name: other}}]",
        );
        assert!(has(
            &e,
            "spec.gateways",
            "delegate virtual service must have no gateways"
        ));
        assert!(has(&e, "spec.http[0].delegate", "cannot contain delegate"));
        let e = errors_of("VirtualService", "hosts: [a]\ngateways: [gw]\nhttp: [{delegate: {name: d}, route: [{destination: {host: b}}]}, {fault: {abort: {httpStatus: 500}}}]");
        assert!(
            has(
                &e,
                "spec.http[0]",
                "root HTTP route  must not specify route"
            ),
            "{e:?}"
        );
        assert!(has(
            &e,
            "spec.http[1]",
            "route, redirect or direct_response is required"
        ));
    }

    #[test]
    fn actions_are_exclusive_and_checked() {
        let e = errors_of("VirtualService", "hosts: [a]\nhttp:\n- route: [{destination: {host: b}}]\n  redirect: {uri: /x, redirectCode: 200}\n  directResponse: {status: 100, body: {string: a, bytes: YQ==}}\n  rewrite: {uri: /y, uriRegexRewrite: {match: '(', rewrite: x}}\n- {}\n- redirect: {}");
        for (f, m) in [
            ("spec.http[0]", "both route and redirect"),
            ("spec.http[0]", "both direct_response and redirect"),
            ("spec.http[0]", "both rewrite and redirect"),
            (
                "spec.http[0].redirect.redirectCode",
                "not a valid redirect code",
            ),
            ("spec.http[0].directResponse.status", "not in range 200-599"),
            (
                "spec.http[0].directResponse.body",
                "only one of string or bytes",
            ),
            (
                "spec.http[0].rewrite",
                "only contain one of uri or uriRegexRewrite",
            ),
            (
                "spec.http[0].rewrite.uriRegexRewrite.match",
                "not a valid regex",
            ),
            (
                "spec.http[1]",
                "route, redirect or direct_response is required",
            ),
            (
                "spec.http[2].redirect",
                "must specify URI, authority, scheme, or port",
            ),
        ] {
            assert!(has(&e, f, m), "{f}: {m} in {e:?}");
        }
    }

    #[test]
    fn destinations_matches_and_headers() {
        let e = errors_of("VirtualService", "hosts: [a]\nhttp:\n- match:\n  - uri: {exact: /a, prefix: /b}\n    headers: {'bad header': {exact: x}, x-re: {regex: '('}}\n    queryParams: {q: {regex: '[a-'}}\n    port: 70000\n  route:\n  - {destination: {host: b, subset: Bad_Subset}, weight: -1}\n  - {destination: {subset: v1}, weight: 0}\n  - {weight: 10}\n  headers:\n    request: {set: {':path': x}, remove: [host]}\n    response: {add: {'bad name': y}}");
        for (f, m) in [
            (
                "spec.http[0].match[0].uri",
                "only one of exact, prefix or regex",
            ),
            (
                "spec.http[0].match[0].headers[bad header]",
                "not a valid HTTP header name",
            ),
            (
                "spec.http[0].match[0].headers[x-re].regex",
                "not a valid regex",
            ),
            (
                "spec.http[0].match[0].queryParams[q].regex",
                "not a valid regex",
            ),
            ("spec.http[0].match[0].port", "1..65535"),
            ("spec.http[0].route[0].destination.subset", "DNS-1123"),
            ("spec.http[0].route[0].weight", "< 0"),
            ("spec.http[0].route[1].destination.host", "Required value"),
            ("spec.http[0].route[2].destination", "Required value"),
            ("spec.http[0].headers.request.set[:path]", "pseudo-headers"),
            (
                "spec.http[0].headers.request.remove[0]",
                "cannot be removed",
            ),
            (
                "spec.http[0].headers.response.add[bad name]",
                "invalid header name",
            ),
        ] {
            assert!(has(&e, f, m), "{f}: {m} in {e:?}");
        }
        let e = errors_of("VirtualService", "hosts: [a]\nhttp: [{route: [{destination: {host: b}, weight: 0}, {destination: {host: c}}]}]");
        assert!(has(
            &e,
            "spec.http[0].route",
            "total destination weight = 0"
        ));
        let w = warnings_of("VirtualService", "hosts: [a]\nhttp: [{match: [{headers: {X-Up: {exact: a}}}], route: [{destination: {host: b}}]}]");
        assert!(has(
            &w,
            "spec.http[0].match[0].headers[X-Up]",
            "lower-cased"
        ));
    }

    #[test]
    fn policies() {
        let e = errors_of("VirtualService", "hosts: [a]\nhttp:\n- route: [{destination: {host: b}}]\n  timeout: 0s\n  retries: {attempts: -1, perTryTimeout: 0s, retryOn: '5xx,bogus,503'}\n  fault: {abort: {httpStatus: 700, percentage: {value: 120}}, delay: {exponentialDelay: 1s}}\n  mirror: {host: m}\n  mirrors: [{destination: {host: n}}]\n  mirrorPercent: 150\n  corsPolicy: {allowMethods: [FETCH], allowHeaders: ['bad header'], allowOrigins: [{regex: '('}], maxAge: 0s}");
        for (f, m) in [
            ("spec.http[0].timeout", "1ms"),
            ("spec.http[0].retries.attempts", "negative"),
            ("spec.http[0].retries.perTryTimeout", "1ms"),
            (
                "spec.http[0].retries.retryOn",
                "\"bogus\" is not a valid retryOn policy",
            ),
            (
                "spec.http[0].fault.abort.httpStatus",
                "not in range 200-599",
            ),
            ("spec.http[0].fault.abort.percentage", "range"),
            ("spec.http[0].fault.delay.exponentialDelay", "not supported"),
            ("spec.http[0]", "both mirror and mirrors"),
            ("spec.http[0].mirrorPercent", "max value of 100"),
            (
                "spec.http[0].corsPolicy.allowMethods[0]",
                "not a supported HTTP method",
            ),
            (
                "spec.http[0].corsPolicy.allowHeaders[0]",
                "invalid header name",
            ),
            (
                "spec.http[0].corsPolicy.allowOrigins[0].regex",
                "not a valid regex",
            ),
            ("spec.http[0].corsPolicy.maxAge", "1ms"),
        ] {
            assert!(has(&e, f, m), "{f}: {m} in {e:?}");
        }
        let ok = "hosts: [a]\nhttp:\n- route: [{destination: {host: b}}]\n  timeout: 1.5s\n  retries: {attempts: 3, perTryTimeout: 100ms, retryOn: 'gateway-error,connect-failure,refused-stream,unavailable,503'}\n  fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 1.5}}, delay: {fixedDelay: 5s, percentage: {value: 10}}}\n  mirror: {host: m}\n  mirrorPercentage: {value: 50}";
        assert!(
            errors_of("VirtualService", ok).is_empty(),
            "{:?}",
            errors_of("VirtualService", ok)
        );
    }

    #[test]
    fn tls_and_tcp_routes() {
        let e = errors_of("VirtualService", "hosts: ['*.a.com']\ngateways: [gw]\ntls:\n- match: [{sniHosts: [x.b.com], port: 0}, {destinationSubnets: [bad]}]\n  route: [{destination: {host: svc}}]\ntcp:\n- match: [{sourceSubnet: nope}]\n  route: []");
        assert!(has(
            &e,
            "spec.tls[0].match[0].sniHosts[0]",
            "not a compatible subset"
        ));
        assert!(has(
            &e,
            "spec.tls[0].match[1].sniHosts",
            "at least one SNI host"
        ));
        assert!(has(
            &e,
            "spec.tls[0].match[1].destinationSubnets[0]",
            "CIDR"
        ));
        assert!(has(&e, "spec.tcp[0].match[0].sourceSubnet", "CIDR"));
        assert!(has(&e, "spec.tcp[0].route", "TCP route is required"));
    }
}
