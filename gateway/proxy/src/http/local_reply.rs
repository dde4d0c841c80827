//! Responses the gateway makes itself (no route, no upstream, redirects, direct responses),
//! shaped as Envoy shapes its local replies.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{self, Body};

/// A plain-text local reply; an empty `text` gives an empty body (Envoy's 404 for no route).
/// A body gets `content-length` ahead of `content-type`, the order Envoy writes them in for the
/// replies it makes itself.
pub fn text(status: StatusCode, text: &'static str) -> Response<Body> {
    if text.is_empty() {
        let mut r = Response::new(body::empty());
        *r.status_mut() = status;
        return r;
    }
    plain(status, Bytes::from_static(text.as_bytes()))
}

/// A plain-text local reply with an owned body (headers as [`text`]).
pub fn owned(status: StatusCode, text: String) -> Response<Body> {
    plain(status, Bytes::from(text))
}

fn plain(status: StatusCode, text: Bytes) -> Response<Body> {
    let len = text.len();
    let mut r = Response::new(body::full(text));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}
