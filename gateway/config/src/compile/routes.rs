//! VirtualService HTTP routes to compiled [`Route`]s: matchers (regexes compiled once),
//! actions, header edits, delegation. Match blocks that cannot apply to a listener (other port,
//! other gateway) are pruned here, as Istio prunes them when it builds Envoy routes.

use std::sync::Arc;

use regex::Regex;

use super::hosts::{resolve_fqdn, resolve_gateway_ref};
use crate::model::common::StringMatch;
use crate::model::virtual_service::{
    CorsPolicy, Destination, HeaderOperations, Headers, HttpMatchRequest, HttpRoute,
    RedirectPortSelection, UnmatchedPreflights,
};
use crate::snapshot::cors::Cors;
use crate::snapshot::retry::RetryPolicy;
use crate::snapshot::route::{
    Forward, HeaderOps, Matcher, PathRewrite, Redirect, RedirectPort, Route, RouteAction,
    RouteMatch, WeightedCluster,
};

/// Where routes are being compiled: the listener and the VirtualService.
pub struct RouteScope<'a> {
    /// The gateway's `namespace/name`.
    pub gateway: &'a str,
    /// The listener's service port (what `match.port` compares with).
    pub port: u16,
    /// The VirtualService's namespace (for short names and gateway references).
    pub vs_namespace: &'a str,
    /// The VirtualService's `namespace/name`.
    pub vs_id: &'a str,
    /// Cluster domain suffix.
    pub domain_suffix: &'a str,
}

/// A destination a route needs a cluster for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterKey {
    /// FQDN of the service.
    pub host: String,
    /// Explicit port, if the destination names one.
    pub port: Option<u16>,
    /// Subset, may be empty.
    pub subset: String,
}

/// Resolves cluster keys to names; implemented by the cluster builder.
pub trait ClusterNamer {
    /// The cluster name for `key` (registering the cluster).
    fn name(&mut self, key: ClusterKey) -> Arc<str>;
}

/// Errors compiling a route (only regexes can fail; validation already checked them).
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RouteError {
    /// Field path inside the VirtualService.
    pub field: String,
    /// Reason.
    pub message: String,
}

/// Compiles route `idx` of a VirtualService for one listener; `Ok(None)` when none of its
/// match blocks applies here. `parent` carries a delegating route's match blocks.
pub fn compile_route(
    r: &HttpRoute,
    idx: usize,
    parent: Option<&[HttpMatchRequest]>,
    scope: &RouteScope<'_>,
    clusters: &mut dyn ClusterNamer,
) -> Result<Option<Route>, RouteError> {
    let field = format!("spec.http[{idx}]");
    let merged;
    let blocks: &[HttpMatchRequest] = match parent {
        Some(p) if !p.is_empty() => {
            merged = merge_delegate_matches(p, &r.match_);
            if merged.is_empty() {
                return Ok(None);
            }
            &merged
        }
        _ => &r.match_,
    };
    let mut matches = Vec::with_capacity(blocks.len());
    for (i, m) in blocks.iter().enumerate() {
        if !applies(m, scope) {
            continue;
        }
        matches.push(compile_match(m).map_err(|message| RouteError {
            field: format!("{field}.match[{i}]"),
            message,
        })?);
    }
    if !blocks.is_empty() && matches.is_empty() {
        return Ok(None);
    }
    let action = compile_action(r, scope, clusters).map_err(|message| RouteError {
        field: field.clone(),
        message,
    })?;
    let (request_headers, response_headers) = header_ops(r.headers.as_ref());
    let mut mirrors = Vec::new();
    if let Some(d) = &r.mirror {
        let pct = r
            .mirror_percentage
            .map(|p| p.value)
            .or(r.mirror_percent.map(f64::from))
            .unwrap_or(100.0);
        mirrors.push((clusters.name(cluster_key(d, scope)), pct));
    }
    for m in &r.mirrors {
        if let Some(d) = &m.destination {
            let pct = m.percentage.map(|p| p.value).unwrap_or(100.0);
            mirrors.push((clusters.name(cluster_key(d, scope)), pct));
        }
    }
    let name = if r.name.is_empty() {
        format!("{}#{idx}", scope.vs_id)
    } else {
        r.name.clone()
    };
    Ok(Some(Route {
        name: Arc::from(name),
        virtual_service: Arc::from(scope.vs_id),
        matches,
        action,
        request_headers,
        response_headers,
        timeout: r.timeout,
        retries: RetryPolicy::from_istio(r.retries.as_ref()),
        fault: r.fault.clone(),
        mirrors,
        cors: r
            .cors_policy
            .as_ref()
            .map(compile_cors)
            .transpose()
            .map_err(|message| RouteError {
                field: format!("http[{idx}].corsPolicy"),
                message,
            })?,
    }))
}

/// Does a match block apply on this listener (its `port` and `gateways` conditions)?
fn applies(m: &HttpMatchRequest, scope: &RouteScope<'_>) -> bool {
    if m.port != 0 && m.port != u32::from(scope.port) {
        return false;
    }
    m.gateways.is_empty()
        || m.gateways
            .iter()
            .any(|g| resolve_gateway_ref(g, scope.vs_namespace) == scope.gateway)
}

/// A delegate's match blocks combined with the delegating route's (Istio: each pair is
/// merged, the delegate's own conditions win where both set one; an empty side passes the
/// other through).
fn merge_delegate_matches(
    root: &[HttpMatchRequest],
    child: &[HttpMatchRequest],
) -> Vec<HttpMatchRequest> {
    if child.is_empty() {
        return root.to_vec();
    }
    let mut out = Vec::new();
    for r in root {
        for c in child {
            let mut m = c.clone();
            m.uri = m.uri.or_else(|| r.uri.clone());
            m.scheme = m.scheme.or_else(|| r.scheme.clone());
            m.method = m.method.or_else(|| r.method.clone());
            m.authority = m.authority.or_else(|| r.authority.clone());
            for (k, v) in &r.headers {
                m.headers.entry(k.clone()).or_insert_with(|| v.clone());
            }
            for (k, v) in &r.query_params {
                m.query_params.entry(k.clone()).or_insert_with(|| v.clone());
            }
            for (k, v) in &r.without_headers {
                m.without_headers
                    .entry(k.clone())
                    .or_insert_with(|| v.clone());
            }
            if m.port == 0 {
                m.port = r.port;
            }
            if m.gateways.is_empty() {
                m.gateways = r.gateways.clone();
            }
            m.ignore_uri_case |= r.ignore_uri_case;
            out.push(m);
        }
    }
    out
}

thread_local! {
    /// Compiled regexes by pattern: a `Regex` clone shares its compiled program, so routes
    /// that repeat a pattern (common in generated configs) compile it once.
    static REGEXES: std::cell::RefCell<std::collections::HashMap<String, Regex>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

fn cached_regex(pattern: &str) -> Result<Regex, regex::Error> {
    REGEXES.with(|c| {
        if let Some(r) = c.borrow().get(pattern) {
            return Ok(r.clone());
        }
        let r = Regex::new(pattern)?;
        let mut map = c.borrow_mut();
        if map.len() > 4096 {
            map.clear();
        }
        map.insert(pattern.to_owned(), r.clone());
        Ok(r)
    })
}

/// Compiles a `corsPolicy`.
fn compile_cors(c: &CorsPolicy) -> Result<Cors, String> {
    let mut allow_origins = Vec::new();
    for m in &c.allow_origins {
        if let Some(m) = matcher(m, false)? {
            allow_origins.push(m);
        }
    }
    allow_origins.extend(
        c.allow_origin
            .iter()
            .map(|o| Matcher::Exact(o.as_str().into())),
    );
    let joined = |v: &[String]| (!v.is_empty()).then(|| v.join(",").into_boxed_str());
    Ok(Cors {
        allow_origins,
        allow_methods: joined(&c.allow_methods),
        allow_headers: joined(&c.allow_headers),
        expose_headers: joined(&c.expose_headers),
        max_age: c
            .max_age
            .and_then(|d| d.to_std())
            .map(|d| d.as_secs().to_string().into_boxed_str()),
        allow_credentials: c.allow_credentials == Some(true),
        forward_unmatched_preflights: c.unmatched_preflights != UnmatchedPreflights::Ignore,
    })
}

/// Compiles one `StringMatch`. `None` for an empty match (matches anything).
pub fn matcher(m: &StringMatch, ignore_case: bool) -> Result<Option<Matcher>, String> {
    if let Some(e) = &m.exact {
        return Ok(Some(Matcher::Exact(e.as_str().into())));
    }
    if let Some(p) = &m.prefix {
        return Ok(Some(Matcher::Prefix(p.as_str().into())));
    }
    if let Some(re) = &m.regex {
        let flags = if ignore_case { "(?i)" } else { "" };
        return cached_regex(&format!("{flags}^(?:{re})$"))
            .map(|r| Some(Matcher::Regex(r)))
            .map_err(|e| format!("regex {re:?}: {e}"));
    }
    Ok(None)
}

fn compile_match(m: &HttpMatchRequest) -> Result<RouteMatch, String> {
    let opt = |s: &Option<StringMatch>, ic: bool| -> Result<Option<Matcher>, String> {
        match s {
            Some(s) => matcher(s, ic),
            None => Ok(None),
        }
    };
    let named = |map: &std::collections::BTreeMap<String, StringMatch>, lower: bool| {
        map.iter()
            .map(|(k, v)| {
                let k = if lower {
                    k.to_ascii_lowercase()
                } else {
                    k.clone()
                };
                Ok((
                    k.into_boxed_str(),
                    matcher(v, false)?.unwrap_or(Matcher::Present),
                ))
            })
            .collect::<Result<Vec<_>, String>>()
    };
    Ok(RouteMatch {
        name: m.name.clone(),
        uri: opt(&m.uri, m.ignore_uri_case)?,
        scheme: opt(&m.scheme, false)?,
        method: opt(&m.method, false)?,
        authority: opt(&m.authority, false)?,
        headers: named(&m.headers, true)?,
        without_headers: named(&m.without_headers, true)?,
        query_params: named(&m.query_params, false)?,
        ignore_uri_case: m.ignore_uri_case,
    })
}

fn cluster_key(d: &Destination, scope: &RouteScope<'_>) -> ClusterKey {
    ClusterKey {
        host: resolve_fqdn(&d.host, scope.vs_namespace, scope.domain_suffix),
        port: d
            .port
            .and_then(|p| u16::try_from(p.number).ok())
            .filter(|p| *p != 0),
        subset: d.subset.clone(),
    }
}

fn compile_action(
    r: &HttpRoute,
    scope: &RouteScope<'_>,
    clusters: &mut dyn ClusterNamer,
) -> Result<RouteAction, String> {
    if let Some(d) = &r.direct_response {
        let body = d.body.as_ref().and_then(|b| {
            b.string
                .as_ref()
                .map(|s| Arc::from(s.as_bytes()))
                .or_else(|| {
                    b.bytes
                        .as_ref()
                        .map(|s| Arc::from(decode_base64(s).as_slice()))
                })
        });
        return Ok(RouteAction::DirectResponse {
            status: u16::try_from(d.status).map_err(|_| "status out of range".to_owned())?,
            body,
        });
    }
    if let Some(rd) = &r.redirect {
        let port = match (rd.port, rd.derive_port) {
            (Some(p), _) => RedirectPort::Fixed(u16::try_from(p).unwrap_or(0)),
            (None, Some(RedirectPortSelection::FromProtocolDefault)) => {
                RedirectPort::FromProtocolDefault
            }
            (None, Some(RedirectPortSelection::FromRequestPort)) => RedirectPort::FromRequestPort,
            (None, _) => RedirectPort::Keep,
        };
        let non_empty = |s: &str| (!s.is_empty()).then(|| Box::from(s));
        return Ok(RouteAction::Redirect(Redirect {
            path: non_empty(&rd.uri),
            authority: non_empty(&rd.authority),
            scheme: non_empty(&rd.scheme),
            port,
            code: if rd.redirect_code == 0 {
                301
            } else {
                u16::try_from(rd.redirect_code).unwrap_or(301)
            },
        }));
    }
    let single = r.route.len() == 1;
    let mut out = Vec::with_capacity(r.route.len());
    for d in &r.route {
        let Some(dest) = &d.destination else { continue };
        // Istio: a lone destination takes all traffic whatever its weight.
        let weight = if single {
            100
        } else {
            u32::try_from(d.weight).unwrap_or(0)
        };
        if weight == 0 {
            continue;
        }
        let (request_headers, response_headers) = header_ops(d.headers.as_ref());
        out.push(WeightedCluster {
            cluster: clusters.name(cluster_key(dest, scope)),
            weight,
            request_headers,
            response_headers,
        });
    }
    if out.is_empty() {
        return Err("route has no destination with a weight".into());
    }
    let total_weight = out.iter().map(|c| c.weight).sum();
    let rw = r.rewrite.as_ref();
    let path_rewrite = match rw {
        Some(w) if !w.uri.is_empty() => Some(PathRewrite::Prefix(w.uri.as_str().into())),
        Some(w) => match &w.uri_regex_rewrite {
            Some(rr) => Some(PathRewrite::Regex {
                pattern: Regex::new(&rr.match_).map_err(|e| format!("uriRegexRewrite: {e}"))?,
                substitution: envoy_substitution(&rr.rewrite).into(),
            }),
            None => None,
        },
        None => None,
    };
    let authority_rewrite = rw
        .filter(|w| !w.authority.is_empty())
        .map(|w| Box::from(w.authority.as_str()));
    Ok(RouteAction::Forward(Forward {
        clusters: out,
        total_weight,
        path_rewrite,
        authority_rewrite,
    }))
}

/// RE2/Envoy substitutions use `\1`; the regex crate uses `${1}`.
fn envoy_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push_str("${");
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    out.push(d);
                    chars.next();
                }
                out.push('}');
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

fn ops(h: Option<&HeaderOperations>) -> HeaderOps {
    let Some(h) = h else {
        return HeaderOps::default();
    };
    let pairs = |m: &std::collections::BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| (k.to_ascii_lowercase().into_boxed_str(), v.as_str().into()))
            .collect()
    };
    HeaderOps {
        set: pairs(&h.set),
        add: pairs(&h.add),
        remove: h
            .remove
            .iter()
            .map(|k| k.to_ascii_lowercase().into_boxed_str())
            .collect(),
    }
}

fn header_ops(h: Option<&Headers>) -> (HeaderOps, HeaderOps) {
    (
        ops(h.and_then(|h| h.request.as_ref())),
        ops(h.and_then(|h| h.response.as_ref())),
    )
}

/// Standard base64 (padding optional); invalid input decodes to what could be read.
fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in s.bytes().map_while(val) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutions_and_base64() {
        assert_eq!(envoy_substitution("/v2/\\1/x\\12"), "/v2/${1}/x${12}");
        assert_eq!(envoy_substitution("a$b"), "a$$b");
        assert_eq!(decode_base64("aGVsbG8="), b"hello");
        assert_eq!(decode_base64("aGk"), b"hi");
    }

    #[test]
    fn matchers() {
        let m = |e: Option<&str>, p: Option<&str>, r: Option<&str>| StringMatch {
            exact: e.map(Into::into),
            prefix: p.map(Into::into),
            regex: r.map(Into::into),
        };
        let ex = matcher(&m(Some("/a"), None, None), false).ok().flatten();
        assert!(ex
            .as_ref()
            .is_some_and(|x| x.matches("/a", false) && !x.matches("/ab", false)));
        let pre = matcher(&m(None, Some("/API"), None), true).ok().flatten();
        assert!(pre.is_some_and(|x| x.matches("/api/v1", true) && !x.matches("/ap", true)));
        let re = matcher(&m(None, None, Some("/v[0-9]+")), false)
            .ok()
            .flatten();
        assert!(re.as_ref().is_some_and(|x| x.matches("/v12", false)));
        // Envoy's regex matches the whole value, not a substring.
        assert!(re.is_some_and(|x| !x.matches("/v12/extra", false)));
        assert!(matcher(&StringMatch::default(), false)
            .ok()
            .flatten()
            .is_none());
    }
}
