//! Route selection and route actions on a request: the compiled snapshot applied to
//! `http::Request`. Picks the virtual host and route, the weighted cluster, rewrites paths and
//! builds redirects; header edits are applied here too. No I/O.

use crate::http::vars::{self, Vars};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Uri};
use meshgate_config::snapshot::route::{
    Forward, HeaderOps, Matcher, PathRewrite, Redirect, RedirectPort, RequestView, Route,
    WeightedCluster,
};

/// The request facts routing reads, borrowed from the request.
pub struct View<'a> {
    /// Method.
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Authority (Host), as sent.
    pub authority: &'a str,
    /// Path and query.
    pub path: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
}

impl RequestView for View<'_> {
    fn method(&self) -> &str {
        self.method
    }
    fn scheme(&self) -> &str {
        self.scheme
    }
    fn authority(&self) -> &str {
        self.authority
    }
    fn path(&self) -> &str {
        self.path
    }
    fn header(&self, name: &str) -> Option<&str> {
        // Several values of one header are matched as the first one; Envoy joins them with
        // ',' for matching, which only matters for repeated headers.
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The first route of `routes` that matches, with the path prefix its match replaced by a
/// prefix rewrite: the `uri` prefix (or exact path) of the matching block, `/` when the block
/// has no `uri` condition (Envoy's implicit `prefix: /`), `None` for a regex match (the whole
/// path is replaced).
pub fn select<'r>(routes: &'r [Route], view: &View<'_>) -> Option<(&'r Route, Option<&'r str>)> {
    for r in routes {
        if r.matches.is_empty() {
            return Some((r, Some("/")));
        }
        if let Some(m) = r.matches.iter().find(|m| m.matches(view)) {
            let prefix = match &m.uri {
                Some(Matcher::Prefix(p)) | Some(Matcher::Exact(p)) => Some(p.as_ref()),
                Some(_) => None,
                None => Some("/"),
            };
            return Some((r, prefix));
        }
    }
    None
}

/// Whether a change to a request's regular headers (not its pseudo-headers or `host`) could
/// change which of `routes` is chosen, when `chosen` was: only if `chosen` or a route before it
/// has a header condition.
pub fn headers_matter(routes: &[Route], chosen: &Route) -> bool {
    for r in routes {
        let by_headers = r
            .matches
            .iter()
            .any(|m| !m.headers.is_empty() || !m.without_headers.is_empty());
        if by_headers {
            return true;
        }
        if std::ptr::eq(r, chosen) {
            return false;
        }
    }
    true
}

/// Picks a weighted destination (weights are relative; the draw is uniform in the total).
pub fn pick_cluster(f: &Forward) -> &WeightedCluster {
    if f.clusters.len() == 1 || f.total_weight == 0 {
        return &f.clusters[0];
    }
    let mut n = fastrand::u32(..f.total_weight);
    for c in &f.clusters {
        if n < c.weight {
            return c;
        }
        n -= c.weight;
    }
    &f.clusters[f.clusters.len() - 1]
}

/// Applies header edits (remove, then set, then add, as Envoy orders them). Values may hold
/// `%VARIABLE%`s (see [`vars`]); `%REQ(..)%` reads `h` itself on the request side
/// (`request_side`). A value that comes out empty is not added, as in Envoy.
pub fn apply_headers(h: &mut HeaderMap, ops: &HeaderOps, vars: &Vars<'_>, request_side: bool) {
    for name in &ops.remove {
        h.remove(name.as_ref());
    }
    for (append, list) in [(false, &ops.set), (true, &ops.add)] {
        for (k, v) in list {
            let value = vars::expand(v, vars, request_side.then_some(&*h));
            if value.is_empty() {
                continue;
            }
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                if append {
                    h.append(k, v);
                } else {
                    h.insert(k, v);
                }
            }
        }
    }
}

/// The path (and query) after a route's rewrite. `matched_prefix` is the route's uri prefix
/// when it matched by prefix: Istio replaces just that prefix, otherwise the whole path.
pub fn rewrite_path(
    path_and_query: &str,
    rw: &PathRewrite,
    matched_prefix: Option<&str>,
) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let new_path = match rw {
        PathRewrite::Prefix(to) => match matched_prefix {
            Some(prefix) if path.len() >= prefix.len() => {
                // Envoy's prefix_rewrite: the matched prefix is replaced as is, so "/api" -> "/"
                // on "/api/items" gives "//items", exactly as Envoy does.
                format!("{to}{}", &path[prefix.len()..])
            }
            _ => to.to_string(),
        },
        PathRewrite::Regex {
            pattern,
            substitution,
        } => pattern
            .replace_all(path, substitution.as_ref())
            .into_owned(),
    };
    match query {
        Some(q) => format!("{new_path}?{q}"),
        None => new_path,
    }
}

/// The `location` of a redirect. `host` is the request host without port, `port` the port in
/// the request authority (if any), `listener_port` the port the request arrived on.
pub fn redirect_location(
    r: &Redirect,
    scheme: &str,
    host: &str,
    port: Option<u16>,
    listener_port: u16,
    path_and_query: &str,
) -> String {
    let new_scheme = r.scheme.as_deref().unwrap_or(scheme);
    let (new_host, authority_port) = match r.authority.as_deref() {
        Some(a) => match a.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => (h, p.parse::<u16>().ok()),
            _ => (a, None),
        },
        None => (host, port),
    };
    let default_port = if new_scheme == "https" { 443 } else { 80 };
    let out_port = match r.port {
        RedirectPort::Fixed(p) => Some(p),
        RedirectPort::FromProtocolDefault => None,
        RedirectPort::FromRequestPort => Some(listener_port),
        // Envoy keeps the original port unless the scheme changes.
        RedirectPort::Keep if r.scheme.is_some() && r.scheme.as_deref() != Some(scheme) => None,
        RedirectPort::Keep => authority_port,
    };
    let port_part = match out_port {
        Some(p) if p != default_port => format!(":{p}"),
        _ => String::new(),
    };
    let path = match r.path.as_deref() {
        Some(p) => {
            // A new path keeps the query string unless it brings its own.
            let q = path_and_query.split_once('?').map(|(_, q)| q);
            match q {
                Some(q) if !p.contains('?') => format!("{p}?{q}"),
                _ => p.to_owned(),
            }
        }
        None => path_and_query.to_owned(),
    };
    format!("{new_scheme}://{new_host}{port_part}{path}")
}

/// Host and optional port of an authority.
pub fn split_authority(authority: &str) -> (&str, Option<u16>) {
    if authority.starts_with('[') {
        if let Some(end) = authority.find(']') {
            let port = authority[end + 1..]
                .strip_prefix(':')
                .and_then(|p| p.parse().ok());
            return (&authority[..=end], port);
        }
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => match p.parse::<u16>() {
            Ok(port) => (h, Some(port)),
            Err(_) => (authority, None),
        },
        None => (authority, None),
    }
}

/// A request's authority, held without copying: the URI's (HTTP/2, absolute form) or the
/// `Host` header's bytes.
pub enum AuthorityValue {
    /// From the request URI.
    Uri(http::uri::Authority),
    /// From the `Host` header (valid UTF-8 checked when made).
    Host(HeaderValue),
}

impl AuthorityValue {
    /// The authority text.
    pub fn as_str(&self) -> &str {
        match self {
            AuthorityValue::Uri(a) => a.as_str(),
            AuthorityValue::Host(h) => h.to_str().unwrap_or(""),
        }
    }
}

/// The authority of a request, as a cheap clone of the request's own bytes.
pub fn authority_value<B>(req: &Request<B>) -> Option<AuthorityValue> {
    if let Some(a) = req.uri().authority() {
        return Some(AuthorityValue::Uri(a.clone()));
    }
    let h = req.headers().get(http::header::HOST)?;
    h.to_str().ok()?;
    Some(AuthorityValue::Host(h.clone()))
}

/// The authority of a request: `:authority` (HTTP/2 or absolute-form) or `Host`.
pub fn authority<B>(req: &Request<B>) -> Option<&str> {
    req.uri().authority().map(|a| a.as_str()).or_else(|| {
        req.headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    })
}

/// Envoy's `normalize_path` (which Istio turns on): RFC 3986 dot-segment removal on the path,
/// query untouched. Returns `None` when the path is already normal (the common case, no
/// allocation).
pub fn normalize_path(path_and_query: &str) -> Option<String> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let is_dot = |seg: &str| seg == "." || seg.eq_ignore_ascii_case("%2e");
    let is_dotdot = |seg: &str| {
        seg == ".."
            || seg.eq_ignore_ascii_case("%2e%2e")
            || seg.eq_ignore_ascii_case(".%2e")
            || seg.eq_ignore_ascii_case("%2e.")
    };
    if !path.split('/').any(|s| is_dot(s) || is_dotdot(s)) {
        return None;
    }
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let last = segs.len().saturating_sub(1);
    let mut trailing = false;
    for (i, seg) in segs.iter().enumerate() {
        if is_dot(seg) {
            trailing = i == last;
        } else if is_dotdot(seg) {
            out.pop();
            trailing = i == last;
        } else {
            out.push(seg);
            trailing = false;
        }
    }
    let mut p = String::with_capacity(path.len());
    for seg in &out {
        p.push('/');
        p.push_str(seg);
    }
    if trailing || p.is_empty() {
        p.push('/');
    }
    if let Some(q) = query {
        p.push('?');
        p.push_str(q);
    }
    Some(p)
}

/// Path and query of a URI (`/` when empty).
pub fn path_and_query(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |p| p.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(
        path: Option<&str>,
        auth: Option<&str>,
        scheme: Option<&str>,
        port: RedirectPort,
    ) -> Redirect {
        Redirect {
            path: path.map(Into::into),
            authority: auth.map(Into::into),
            scheme: scheme.map(Into::into),
            port,
            code: 301,
        }
    }

    #[test]
    fn redirects() {
        let r = redirect(Some("/new"), None, None, RedirectPort::Keep);
        assert_eq!(
            redirect_location(&r, "http", "a.com", Some(8080), 8080, "/old?x=1"),
            "http://a.com:8080/new?x=1"
        );
        let r = redirect(None, None, Some("https"), RedirectPort::Keep);
        assert_eq!(
            redirect_location(&r, "http", "a.com", Some(8080), 8080, "/p"),
            "https://a.com/p"
        );
        let r = redirect(None, Some("b.com"), None, RedirectPort::Fixed(9000));
        assert_eq!(
            redirect_location(&r, "http", "a.com", None, 80, "/p"),
            "http://b.com:9000/p"
        );
        let r = redirect(None, None, None, RedirectPort::FromRequestPort);
        assert_eq!(
            redirect_location(&r, "http", "a.com", None, 8080, "/"),
            "http://a.com:8080/"
        );
        let r = redirect(None, None, Some("https"), RedirectPort::FromProtocolDefault);
        assert_eq!(
            redirect_location(&r, "http", "a.com", Some(8080), 8080, "/"),
            "https://a.com/"
        );
    }

    #[test]
    fn rewrites() {
        let p = PathRewrite::Prefix("/v2".into());
        assert_eq!(
            rewrite_path("/v1/items?a=b", &p, Some("/v1")),
            "/v2/items?a=b"
        );
        let root = PathRewrite::Prefix("/".into());
        assert_eq!(rewrite_path("/api/items", &root, Some("/api/")), "/items");
        assert_eq!(rewrite_path("/api/items", &root, Some("/api")), "//items");
        assert_eq!(rewrite_path("/exact", &p, None), "/v2");
        let re = PathRewrite::Regex {
            pattern: regex::Regex::new("^/service/([^/]+)(/.*)$").expect("re"),
            substitution: "${2}/instance/${1}".into(),
        };
        assert_eq!(
            rewrite_path("/service/foo/v1/api?q", &re, None),
            "/v1/api/instance/foo?q"
        );
    }

    #[test]
    fn dot_segments() {
        assert_eq!(normalize_path("/a/b"), None);
        assert_eq!(normalize_path("/a/../exact").as_deref(), Some("/exact"));
        assert_eq!(normalize_path("/a/./b/.").as_deref(), Some("/a/b/"));
        assert_eq!(
            normalize_path("/../../x?y=/../").as_deref(),
            Some("/x?y=/../")
        );
        assert_eq!(normalize_path("/a/%2E%2E/b").as_deref(), Some("/b"));
        assert_eq!(normalize_path("/..").as_deref(), Some("/"));
    }

    #[test]
    fn authorities() {
        assert_eq!(split_authority("a.com:80"), ("a.com", Some(80)));
        assert_eq!(split_authority("a.com"), ("a.com", None));
        assert_eq!(split_authority("[::1]:8080"), ("[::1]", Some(8080)));
    }
}
