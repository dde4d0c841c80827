//! Compiled routes: matchers with precompiled regexes and the action a match selects.
//!
//! Read by the router on every request, so matching allocates nothing and locks nothing.
//! Built only by `compile`; the request-side view is the small [`RequestView`] trait, which keeps
//! this crate free of any HTTP library.

use std::collections::BTreeMap;
use std::sync::Arc;

use regex::Regex;
use serde::{Serialize, Serializer};

use crate::model::common::Duration;
use crate::model::virtual_service::HttpFaultInjection;
use crate::snapshot::cors::Cors;
use crate::snapshot::retry::RetryPolicy;

/// What route matching needs to know about a request.
pub trait RequestView {
    /// The `:method`.
    fn method(&self) -> &str;
    /// The `:scheme` (`http` / `https`).
    fn scheme(&self) -> &str;
    /// The `:authority` / `Host`, port included when the client sent one.
    fn authority(&self) -> &str;
    /// The path and query (`/a/b?x=1`).
    fn path(&self) -> &str;
    /// A request header by lower-case name (several values joined by `,`).
    fn header(&self, name: &str) -> Option<&str>;
}

/// One string matcher (Istio `StringMatch`, Envoy `StringMatcher`).
#[derive(Debug, Clone)]
pub enum Matcher {
    /// Whole value equals.
    Exact(Box<str>),
    /// Value starts with.
    Prefix(Box<str>),
    /// RE2 regex matched against the whole value (anchored at compile time).
    Regex(Regex),
    /// The value is present, whatever it is (an empty `StringMatch` on a header).
    Present,
}

impl Matcher {
    /// Matches `v`; with `ignore_case`, exact and prefix compare ASCII case-insensitively.
    pub fn matches(&self, v: &str, ignore_case: bool) -> bool {
        match self {
            Matcher::Exact(e) if ignore_case => e.eq_ignore_ascii_case(v),
            Matcher::Exact(e) => **e == *v,
            Matcher::Prefix(p) if ignore_case => {
                v.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p))
            }
            Matcher::Prefix(p) => v.starts_with(&**p),
            Matcher::Regex(r) => r.is_match(v),
            Matcher::Present => true,
        }
    }
}

impl Serialize for Matcher {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = BTreeMap::new();
        match self {
            Matcher::Exact(e) => m.insert("exact", e.to_string()),
            Matcher::Prefix(p) => m.insert("prefix", p.to_string()),
            Matcher::Regex(r) => {
                let src = r.as_str();
                let inner = src
                    .strip_prefix("^(?:")
                    .and_then(|x| x.strip_suffix(")$"))
                    .unwrap_or(src);
                m.insert("regex", inner.to_owned())
            }
            Matcher::Present => m.insert("present", "true".to_owned()),
        };
        m.serialize(s)
    }
}

/// One `HTTPMatchRequest`: every condition set must hold (AND).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    /// Name of the match block, if given.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Path matcher (the query string is not part of it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<Matcher>,
    /// Scheme matcher.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<Matcher>,
    /// Method matcher.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<Matcher>,
    /// Authority matcher (against the whole authority, port included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<Matcher>,
    /// Header matchers, by lower-case name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(Box<str>, Matcher)>,
    /// Headers that must NOT match.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub without_headers: Vec<(Box<str>, Matcher)>,
    /// Query parameter matchers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<(Box<str>, Matcher)>,
    /// Case-insensitive `uri` matching.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ignore_uri_case: bool,
}

impl RouteMatch {
    /// True when every condition holds for `req`.
    pub fn matches(&self, req: &dyn RequestView) -> bool {
        let full = req.path();
        let (path, query) = match full.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (full, None),
        };
        if let Some(m) = &self.uri {
            if !m.matches(path, self.ignore_uri_case) {
                return false;
            }
        }
        if let Some(m) = &self.scheme {
            if !m.matches(req.scheme(), false) {
                return false;
            }
        }
        if let Some(m) = &self.method {
            if !m.matches(req.method(), false) {
                return false;
            }
        }
        if let Some(m) = &self.authority {
            if !m.matches(req.authority(), false) {
                return false;
            }
        }
        for (name, m) in &self.headers {
            match req.header(name) {
                Some(v) if m.matches(v, false) => {}
                _ => return false,
            }
        }
        // Istio translates withoutHeaders to inverted matchers that treat a missing header as
        // empty: absent passes unless the matcher accepts "" (a presence match needs it there).
        for (name, m) in &self.without_headers {
            let blocked = match (req.header(name), m) {
                (None, Matcher::Present) => false,
                (v, m) => m.matches(v.unwrap_or(""), false),
            };
            if blocked {
                return false;
            }
        }
        for (name, m) in &self.query_params {
            let found = query.and_then(|q| query_param(q, name));
            match found {
                Some(v) if m.matches(v, false) => {}
                _ => return false,
            }
        }
        true
    }
}

/// The first value of query parameter `name` in `query` (no percent-decoding, like Envoy's
/// query parameter matcher on the raw value).
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// Header edits of a route or destination, compiled from Istio `Headers`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HeaderOps {
    /// Set (replace) these headers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(Box<str>, Box<str>)>,
    /// Append these headers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<(Box<str>, Box<str>)>,
    /// Remove these headers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<Box<str>>,
}

impl HeaderOps {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// One weighted destination of a forwarding route.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightedCluster {
    /// The cluster (`outbound|PORT|SUBSET|HOST`).
    pub cluster: Arc<str>,
    /// Relative weight.
    pub weight: u32,
    /// Request header edits for this destination.
    #[serde(skip_serializing_if = "HeaderOps::is_empty")]
    pub request_headers: HeaderOps,
    /// Response header edits for this destination.
    #[serde(skip_serializing_if = "HeaderOps::is_empty")]
    pub response_headers: HeaderOps,
}

/// A path rewrite.
#[derive(Debug, Clone, Serialize)]
pub enum PathRewrite {
    /// Replace the matched prefix (or the whole path for exact/regex matches) with this.
    Prefix(Box<str>),
    /// Replace every match of the regex with the substitution.
    Regex {
        /// Compiled pattern.
        #[serde(serialize_with = "ser_regex")]
        pattern: Regex,
        /// Substitution, with `\1`-style groups turned into `${1}`.
        substitution: Box<str>,
    },
}

fn ser_regex<S: Serializer>(r: &Regex, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}

/// Forward to one or more clusters.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Forward {
    /// Destinations with weights (sum > 0).
    pub clusters: Vec<WeightedCluster>,
    /// Sum of the weights.
    pub total_weight: u32,
    /// Path rewrite, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_rewrite: Option<PathRewrite>,
    /// Authority rewrite, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority_rewrite: Option<Box<str>>,
}

/// Where a redirect takes its port from.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub enum RedirectPort {
    /// Keep the request's port (Envoy's default).
    Keep,
    /// This port.
    Fixed(u16),
    /// The default port of the (new) scheme: 80 / 443.
    FromProtocolDefault,
    /// The port the request arrived on.
    FromRequestPort,
}

/// A redirect response.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Redirect {
    /// New path (replaces the whole path), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<Box<str>>,
    /// New authority (host), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<Box<str>>,
    /// New scheme, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<Box<str>>,
    /// Port handling.
    pub port: RedirectPort,
    /// Status code (default 301).
    pub code: u16,
}

/// What a matched route does.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RouteAction {
    /// Proxy to clusters.
    Forward(Forward),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer with a fixed status and body.
    DirectResponse {
        /// Status code.
        status: u16,
        /// Body bytes, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        body: Option<Arc<[u8]>>,
    },
}

/// One compiled route: match blocks (OR), action and per-route policies.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Route name (`name` of the HTTPRoute, or `VS-namespace/VS-name#index`).
    pub name: Arc<str>,
    /// The VirtualService it came from (`namespace/name`).
    pub virtual_service: Arc<str>,
    /// Match blocks; empty matches everything.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RouteMatch>,
    /// What to do.
    pub action: RouteAction,
    /// Request header edits of the route.
    #[serde(skip_serializing_if = "HeaderOps::is_empty")]
    pub request_headers: HeaderOps,
    /// Response header edits of the route.
    #[serde(skip_serializing_if = "HeaderOps::is_empty")]
    pub response_headers: HeaderOps,
    /// Whole-request timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Retry policy (Istio's default when the route sets none; `None`: retries are off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryPolicy>,
    /// Fault injection, as configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<HttpFaultInjection>,
    /// Mirror targets: cluster and percentage (0-100).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<(Arc<str>, f64)>,
    /// CORS policy, compiled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
}

impl Route {
    /// True when any match block holds (or there are none).
    pub fn matches(&self, req: &dyn RequestView) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.matches(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Req(
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        Vec<(&'static str, &'static str)>,
    );

    impl RequestView for Req {
        fn method(&self) -> &str {
            self.0
        }
        fn scheme(&self) -> &str {
            self.1
        }
        fn authority(&self) -> &str {
            self.2
        }
        fn path(&self) -> &str {
            self.3
        }
        fn header(&self, name: &str) -> Option<&str> {
            self.4.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
        }
    }

    fn exact(s: &str) -> Matcher {
        Matcher::Exact(s.into())
    }

    #[test]
    fn every_condition_must_hold() {
        let m = RouteMatch {
            uri: Some(Matcher::Prefix("/Api".into())),
            ignore_uri_case: true,
            method: Some(exact("POST")),
            scheme: Some(exact("http")),
            authority: Some(Matcher::Regex(
                regex::Regex::new("^(?:shop\\.[a-z]+)$").expect("re"),
            )),
            headers: vec![
                ("x-tenant".into(), Matcher::Prefix("gold".into())),
                ("x-present".into(), Matcher::Present),
            ],
            without_headers: vec![("x-block".into(), exact("yes"))],
            query_params: vec![(
                "id".into(),
                Matcher::Regex(regex::Regex::new("^(?:[0-9]+)$").expect("re")),
            )],
            ..Default::default()
        };
        let base = || {
            Req(
                "POST",
                "http",
                "shop.test",
                "/api/orders?x=1&id=42",
                vec![("x-tenant", "gold-1"), ("x-present", "")],
            )
        };
        assert!(m.matches(&base()));
        let mut r = base();
        r.0 = "GET";
        assert!(!m.matches(&r), "method");
        let mut r = base();
        r.1 = "https";
        assert!(!m.matches(&r), "scheme");
        let mut r = base();
        r.2 = "shop.test:8080";
        assert!(!m.matches(&r), "authority regex is anchored");
        let mut r = base();
        r.3 = "/api/orders?id=abc";
        assert!(!m.matches(&r), "query param");
        let mut r = base();
        r.3 = "/other?id=1";
        assert!(!m.matches(&r), "uri");
        let mut r = base();
        r.4.retain(|(k, _)| *k != "x-present");
        assert!(!m.matches(&r), "present header missing");
        let mut r = base();
        r.4.push(("x-block", "yes"));
        assert!(!m.matches(&r), "without header present");
        let mut r = base();
        r.4.push(("x-block", "no"));
        assert!(m.matches(&r), "without header with another value");
    }

    #[test]
    fn without_headers_treat_missing_as_empty() {
        let empty_ok = RouteMatch {
            without_headers: vec![(
                "x-a".into(),
                Matcher::Regex(regex::Regex::new("^(?:.*)$").expect("re")),
            )],
            ..Default::default()
        };
        // `.*` matches "", so a missing header counts as matching: the route does not apply.
        assert!(!empty_ok.matches(&Req("GET", "http", "a", "/", vec![])));
        let present = RouteMatch {
            without_headers: vec![("x-a".into(), Matcher::Present)],
            ..Default::default()
        };
        assert!(present.matches(&Req("GET", "http", "a", "/", vec![])));
        assert!(!present.matches(&Req("GET", "http", "a", "/", vec![("x-a", "1")])));
    }
}
