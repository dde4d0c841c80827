//! Test headers to the `http` heads the runtime holds, and back, with pseudo-headers shown as
//! the runtime shows them to the guest (`:authority`, `:path`, `:method`, `:scheme`; `:status`).

use http::header::{HeaderName, HeaderValue, HOST};
use http::uri::PathAndQuery;
use http::HeaderMap;

use crate::{Error, Headers};

fn invalid(name: &str, reason: impl std::fmt::Display) -> Error {
    Error::InvalidHeader {
        name: name.to_owned(),
        reason: reason.to_string(),
    }
}

/// A header map of the regular (non-pseudo) entries of `pairs`.
pub(crate) fn map(pairs: &[(&str, &str)]) -> Result<HeaderMap, Error> {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if name.starts_with(':') {
            return Err(invalid(name, "pseudo-headers are only allowed in a head"));
        }
        append(&mut map, name, value)?;
    }
    Ok(map)
}

fn append(map: &mut HeaderMap, name: &str, value: &str) -> Result<(), Error> {
    let n = HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(name, e))?;
    let v = HeaderValue::from_str(value).map_err(|e| invalid(name, e))?;
    map.append(n, v);
    Ok(())
}

/// A request head: `:method` (default GET), `:path` (default `/`), `:scheme` (default http)
/// and `:authority` (else a `host` header) make the method and URI; the rest are headers.
pub(crate) fn request(pairs: &[(&str, &str)]) -> Result<http::request::Parts, Error> {
    let (mut method, mut path, mut scheme, mut authority) = ("GET", "/", "http", None);
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        match *name {
            ":method" => method = value,
            ":path" => path = value,
            ":scheme" => scheme = value,
            ":authority" => authority = Some(*value),
            n if n.starts_with(':') => return Err(invalid(n, "unknown request pseudo-header")),
            n => append(&mut headers, n, value)?,
        }
    }
    let uri = match authority {
        Some(a) => format!("{scheme}://{a}{path}"),
        None => path.to_owned(),
    };
    let (mut parts, ()) = http::Request::builder()
        .method(method)
        .uri(uri.as_str())
        .body(())
        .map_err(|e| invalid(":path", format!("{uri:?} with method {method:?}: {e}")))?
        .into_parts();
    parts.headers = headers;
    Ok(parts)
}

/// A response head: `:status` (default 200) and headers.
pub(crate) fn response(pairs: &[(&str, &str)]) -> Result<http::response::Parts, Error> {
    let mut status = 200u16;
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        match *name {
            ":status" => {
                status = value
                    .parse()
                    .map_err(|_| invalid(":status", format!("{value:?} is not a status code")))?;
            }
            n if n.starts_with(':') => return Err(invalid(n, "unknown response pseudo-header")),
            n => append(&mut headers, n, value)?,
        }
    }
    let (mut parts, ()) = http::Response::builder()
        .status(status)
        .body(())
        .map_err(|e| invalid(":status", e))?
        .into_parts();
    parts.headers = headers;
    Ok(parts)
}

/// A request head as the guest sees it: pseudo-headers first, then the headers (`host` is
/// shown as `:authority` when the URI has none).
pub(crate) fn request_headers(head: &http::request::Parts) -> Headers {
    let mut h = Headers::default();
    let authority = match head.uri.authority() {
        Some(a) => a.as_str().as_bytes().to_vec(),
        None => head
            .headers
            .get(HOST)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default(),
    };
    h.push(":authority", &authority);
    let path = head.uri.path_and_query().map_or("/", PathAndQuery::as_str);
    h.push(":path", path.as_bytes());
    h.push(":method", head.method.as_str().as_bytes());
    h.push(
        ":scheme",
        head.uri.scheme_str().unwrap_or("http").as_bytes(),
    );
    let skip_host = head.uri.authority().is_none();
    for (k, v) in &head.headers {
        if skip_host && k == HOST {
            continue;
        }
        h.push(k.as_str(), v.as_bytes());
    }
    h
}

/// A response head as the guest sees it: `:status`, then the headers.
pub(crate) fn response_headers(head: &http::response::Parts) -> Headers {
    let mut h = Headers::default();
    h.push(":status", head.status.as_str().as_bytes());
    h.extend_map(&head.headers);
    h
}
