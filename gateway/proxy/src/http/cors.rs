//! CORS (VirtualService `corsPolicy`), as Envoy's CORS filter applies Istio's translation:
//! preflights from allowed origins are answered at the gateway; actual requests from allowed
//! origins get the CORS response headers; everything else passes through untouched.
//!
//! The policy is compiled in the snapshot (matchers and joined header values): no allocation
//! beyond the header values inserted.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use meshgate_config::snapshot::cors::Cors;

use crate::body::{self, Body};

fn put(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(HeaderName::from_static(name), v);
    }
}

/// The preflight answer for a request, when it is a preflight the gateway answers.
pub fn preflight(p: &Cors, method: &Method, headers: &HeaderMap) -> Option<Response<Body>> {
    if method != Method::OPTIONS || !headers.contains_key("access-control-request-method") {
        return None;
    }
    let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
    let mut r = Response::new(body::empty());
    *r.status_mut() = StatusCode::OK;
    if !p.origin_allowed(origin) {
        // Istio's `unmatchedPreflights: IGNORE` answers without CORS headers; FORWARD (the
        // default) lets the upstream see the preflight.
        return (!p.forward_unmatched_preflights).then_some(r);
    }
    let h = r.headers_mut();
    put(h, "access-control-allow-origin", origin);
    if p.allow_credentials {
        put(h, "access-control-allow-credentials", "true");
    }
    for (name, value) in [
        ("access-control-allow-methods", &p.allow_methods),
        ("access-control-allow-headers", &p.allow_headers),
        // Envoy sends the exposed headers on preflights too.
        ("access-control-expose-headers", &p.expose_headers),
        ("access-control-max-age", &p.max_age),
    ] {
        if let Some(v) = value {
            put(h, name, v);
        }
    }
    Some(r)
}

/// Adds the CORS headers to a response to an allowed origin's actual request.
pub fn decorate(p: &Cors, origin: Option<&HeaderValue>, resp: &mut HeaderMap) {
    let Some(origin) = origin.and_then(|o| o.to_str().ok()) else {
        return;
    };
    if !p.origin_allowed(origin) {
        return;
    }
    put(resp, "access-control-allow-origin", origin);
    if p.allow_credentials {
        put(resp, "access-control-allow-credentials", "true");
    }
    if let Some(v) = &p.expose_headers {
        put(resp, "access-control-expose-headers", v);
    }
}
