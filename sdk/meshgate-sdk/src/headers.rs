//! The request and response as a plugin usually wants them: method, path without the query,
//! query parameters, authority and status, and every value of a repeated header.
//!
//! The traits are implemented for every [`HttpContext`], so `use meshgate_sdk::prelude::*`
//! makes `self.method()`, `self.query_param("page")` and friends available in a stream.
//!
//! **Never traps on client bytes.** proxy-wasm's own text getters (`get_http_request_header`,
//! `get_http_request_headers` and their response twins) panic, which traps the plugin, when a
//! header value is not UTF-8, and any client can send such a value (HTTP allows bytes 0x80-0xff
//! in values; both hosts pass them on). Everything here reads bytes instead: a value that is not
//! UTF-8 reads as absent from the text getters and is there as it is from the `_bytes` ones.

use proxy_wasm::traits::HttpContext;
use proxy_wasm::types::Bytes;

/// Reading the request headers.
pub trait RequestHeaders: HttpContext {
    /// The first value of request header `name` as text; `None` when absent or not UTF-8.
    fn request_header(&self, name: &str) -> Option<String> {
        text(self.get_http_request_header_bytes(name)?)
    }

    /// `:method`.
    fn method(&self) -> Option<String> {
        self.request_header(":method")
    }

    /// `:path` as sent, query included.
    fn path_and_query(&self) -> Option<String> {
        self.request_header(":path")
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
        self.request_header(":authority")
    }

    /// Every UTF-8 value of request header `name`, in order (names compare case-insensitively).
    fn request_header_values(&self, name: &str) -> Vec<String> {
        values(self.get_http_request_headers_bytes(), name)
    }

    /// Every value of request header `name` as bytes, in order.
    fn request_header_values_bytes(&self, name: &str) -> Vec<Bytes> {
        values_bytes(self.get_http_request_headers_bytes(), name)
    }
}

impl<T: HttpContext + ?Sized> RequestHeaders for T {}

/// Reading the response headers.
pub trait ResponseHeaders: HttpContext {
    /// The first value of response header `name` as text; `None` when absent or not UTF-8.
    fn response_header(&self, name: &str) -> Option<String> {
        text(self.get_http_response_header_bytes(name)?)
    }

    /// `:status`, as a number.
    fn status(&self) -> Option<u16> {
        self.response_header(":status")?.parse().ok()
    }

    /// Every UTF-8 value of response header `name`, in order.
    fn response_header_values(&self, name: &str) -> Vec<String> {
        values(self.get_http_response_headers_bytes(), name)
    }

    /// Every value of response header `name` as bytes, in order.
    fn response_header_values_bytes(&self, name: &str) -> Vec<Bytes> {
        values_bytes(self.get_http_response_headers_bytes(), name)
    }
}

impl<T: HttpContext + ?Sized> ResponseHeaders for T {}

fn text(b: Bytes) -> Option<String> {
    String::from_utf8(b).ok()
}

fn values(pairs: Vec<(String, Bytes)>, name: &str) -> Vec<String> {
    values_bytes(pairs, name)
        .into_iter()
        .filter_map(text)
        .collect()
}

fn values_bytes(pairs: Vec<(String, Bytes)>, name: &str) -> Vec<Bytes> {
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
    fn values_that_are_not_utf8_are_skipped_as_text_and_kept_as_bytes() {
        let pairs = || {
            vec![
                ("x-a".to_owned(), b"one".to_vec()),
                ("X-A".to_owned(), vec![0xff, 0xfe]),
                ("x-b".to_owned(), b"other".to_vec()),
                ("x-a".to_owned(), b"two".to_vec()),
            ]
        };
        assert_eq!(values(pairs(), "x-a"), ["one", "two"]);
        assert_eq!(
            values_bytes(pairs(), "x-a"),
            [b"one".to_vec(), vec![0xff, 0xfe], b"two".to_vec()]
        );
        assert_eq!(text(vec![0xc3]), None);
        assert_eq!(text("é".as_bytes().to_vec()).as_deref(), Some("é"));
    }

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
