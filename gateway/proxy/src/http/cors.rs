//! CORS (VirtualService `corsPolicy`), as Envoy's CORS filter applies Istio's translation:
//! preflights from allowed origins are answered at the gateway; actual requests from allowed
//! origins get the CORS response headers; everything else passes through untouched.

use std::cell::RefCell;
use std::collections::HashMap;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use meshgate_config::model::virtual_service::{CorsPolicy, UnmatchedPreflights};
use regex::Regex;

use crate::body::{self, Body};

thread_local! {
    /// Origin regexes by pattern, compiled once per worker.
    static ORIGIN_REGEXES: RefCell<HashMap<String, Option<Regex>>> = RefCell::new(HashMap::new());
}

fn regex_matches(pattern: &str, v: &str) -> bool {
    ORIGIN_REGEXES.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() > 1024 {
            c.clear();
        }
        c.entry(pattern.to_owned())
            .or_insert_with(|| Regex::new(&format!("^(?:{pattern})$")).ok())
            .as_ref()
            .is_some_and(|r| r.is_match(v))
    })
}

/// Is `origin` allowed by the policy (`allowOrigins`, or the deprecated `allowOrigin`)?
pub fn origin_allowed(p: &CorsPolicy, origin: &str) -> bool {
    p.allow_origins.iter().any(|m| {
        if let Some(e) = &m.exact {
            return e == "*" || e == origin;
        }
        if let Some(pre) = &m.prefix {
            return origin.starts_with(pre.as_str());
        }
        m.regex.as_deref().is_some_and(|r| regex_matches(r, origin))
    }) || p.allow_origin.iter().any(|o| o == "*" || o == origin)
}

fn put(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(HeaderName::from_static(name), v);
    }
}

/// The preflight answer for a request, when it is a preflight the gateway answers.
pub fn preflight(p: &CorsPolicy, method: &Method, headers: &HeaderMap) -> Option<Response<Body>> {
    if method != Method::OPTIONS || !headers.contains_key("access-control-request-method") {
        return None;
    }
    let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
    let mut r = Response::new(body::empty());
    *r.status_mut() = StatusCode::OK;
    if !origin_allowed(p, origin) {
        // Istio's `unmatchedPreflights: IGNORE` answers without CORS headers; FORWARD (the
        // default) lets the upstream see the preflight.
        return (p.unmatched_preflights == UnmatchedPreflights::Ignore).then_some(r);
    }
    let h = r.headers_mut();
    put(h, "access-control-allow-origin", origin);
    if p.allow_credentials == Some(true) {
        put(h, "access-control-allow-credentials", "true");
    }
    if !p.allow_methods.is_empty() {
        put(
            h,
            "access-control-allow-methods",
            &p.allow_methods.join(","),
        );
    }
    if !p.allow_headers.is_empty() {
        put(
            h,
            "access-control-allow-headers",
            &p.allow_headers.join(","),
        );
    }
    if !p.expose_headers.is_empty() {
        // Envoy sends the exposed headers on preflights too.
        put(
            h,
            "access-control-expose-headers",
            &p.expose_headers.join(","),
        );
    }
    if let Some(age) = p.max_age.and_then(|a| a.to_std()) {
        put(h, "access-control-max-age", &age.as_secs().to_string());
    }
    Some(r)
}

/// Adds the CORS headers to a response to an allowed origin's actual request.
pub fn decorate(p: &CorsPolicy, origin: Option<&HeaderValue>, resp: &mut HeaderMap) {
    let Some(origin) = origin.and_then(|o| o.to_str().ok()) else {
        return;
    };
    if !origin_allowed(p, origin) {
        return;
    }
    put(resp, "access-control-allow-origin", origin);
    if p.allow_credentials == Some(true) {
        put(resp, "access-control-allow-credentials", "true");
    }
    if !p.expose_headers.is_empty() {
        put(
            resp,
            "access-control-expose-headers",
            &p.expose_headers.join(","),
        );
    }
}
