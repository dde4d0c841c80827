//! The request and response as a plugin usually wants them: method, path without the query,
//! query parameters, authority and status, and every value of a repeated header.
//!
//! The traits are implemented for every [`HttpContext`], so `use meshgate_sdk::prelude::*`
//! makes `self.method()`, `self.query_param("page")` and friends available in a stream.

use proxy_wasm::traits::HttpContext;

/// Reading the request headers.
pub trait RequestHeaders: HttpContext {
    /// `:method`.
    fn method(&self) -> Option<String> {
        self.get_http_request_header(":method")
    }

    /// `:path` as sent, query included.
    fn path_and_query(&self) -> Option<String> {
        self.get_http_request_header(":path")
    }

    /// `:path` without its query string.
    fn path(&self) -> Option<String> {
        self.path_and_query().map(|p| split_path(&p).0.to_owned())
    }

    /// The first value of query parameter `name`, percent-decoded (`+` reads as a space).
    fn query_param(&self, name: &str) -> Option<String> {
        let full = self.path_and_query()?;
        query_value(split_path(&full).1?, name)
    }

    /// `:authority` (HTTP/1.1's `Host`).
    fn authority(&self) -> Option<String> {
        self.get_http_request_header(":authority")
    }

    /// Every value of request header `name`, in order (names compare case-insensitively).
    fn request_header_values(&self, name: &str) -> Vec<String> {
        values(self.get_http_request_headers(), name)
    }
}

impl<T: HttpContext + ?Sized> RequestHeaders for T {}

/// Reading the response headers.
pub trait ResponseHeaders: HttpContext {
    /// `:status`, as a number.
    fn status(&self) -> Option<u16> {
        self.get_http_response_header(":status")?.parse().ok()
    }

    /// Every value of response header `name`, in order.
    fn response_header_values(&self, name: &str) -> Vec<String> {
        values(self.get_http_response_headers(), name)
    }
}

impl<T: HttpContext + ?Sized> ResponseHeaders for T {}

fn values(pairs: Vec<(String, String)>, name: &str) -> Vec<String> {
    pairs
        .into_iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}

/// Splits a request target into its path and its query (without `?`); a fragment is dropped.
pub fn split_path(target: &str) -> (&str, Option<&str>) {
    let target = target.split('#').next().unwrap_or(target);
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

/// The first value of `name` in a query string, percent-decoded; `+` is a space. A parameter
/// without `=` has the empty value. A value that does not decode to UTF-8 is skipped.
pub fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if decode(k)? == name {
            decode(v)
        } else {
            None
        }
    })
}

/// Percent-decodes `s` (`+` as space); `None` when the result is not UTF-8.
pub fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries() {
        assert_eq!(split_path("/a/b?x=1#f"), ("/a/b", Some("x=1")));
        assert_eq!(split_path("/a"), ("/a", None));
        assert_eq!(
            query_value("a=1&b=two+words&c", "b").as_deref(),
            Some("two words")
        );
        assert_eq!(query_value("a=1&c", "c").as_deref(), Some(""));
        assert_eq!(query_value("k%20y=%41%zz", "k y").as_deref(), Some("A%zz"));
        assert_eq!(query_value("a=%", "a").as_deref(), Some("%"));
        assert_eq!(query_value("a=1", "b"), None);
        assert_eq!(query_value("a=%ff", "a"), None);
    }
}
