//! Responses the gateway makes itself (no route, no upstream, redirects, direct responses),
//! shaped as Envoy shapes its local replies.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{self, Body};

/// A plain-text local reply; an empty `text` gives an empty body (Envoy's 404 for no route).
pub fn text(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(if text.is_empty() {
        body::empty()
    } else {
        body::full(text)
    });
    *r.status_mut() = status;
    if !text.is_empty() {
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    r
}

/// A plain-text local reply with an owned body.
pub fn owned(status: StatusCode, text: String) -> Response<Body> {
    let mut r = Response::new(body::full(text));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// A plain-text local reply with `content-length` set ahead of `content-type`, the order
/// Envoy's filter manager writes them in for the replies it makes itself (such as 413).
pub fn sized(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(body::full(text));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}
