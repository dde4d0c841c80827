//! Envoy's edge header rules: hop-by-hop removal, `x-forwarded-*`, `x-request-id`, internal
//! `x-envoy-*` headers from untrusted clients. Applied to every proxied request and response.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Connection-specific headers that never cross a proxy (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    super::names::KEEP_ALIVE,
    super::names::PROXY_CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    header::PROXY_AUTHENTICATE,
];

/// Removes hop-by-hop headers (and any listed in `Connection`). `keep_upgrade` keeps
/// `connection: upgrade` + `upgrade` for a WebSocket-style handshake.
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    // One look at the names finds which hop-by-hop headers are there: most heads carry none
    // (HTTP/2 forbids them) or only `connection`, and only those present are removed.
    let mut present = 0u8;
    for k in h.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|n| n == k) {
            present |= 1 << i;
        }
    }
    if present == 0 && !keep_upgrade {
        return;
    }
    if present & 1 != 0 {
        // Names listed in `Connection` beyond the fixed set (`keep-alive` and `close` are the
        // usual tokens and need no parsing).
        let listed: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| {
                !t.eq_ignore_ascii_case("close")
                    && !HOP_BY_HOP
                        .iter()
                        .any(|n| t.eq_ignore_ascii_case(n.as_str()))
            })
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for n in listed {
            h.remove(n);
        }
    }
    let te_trailers = h
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    for (i, n) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) == 0
            || (keep_upgrade && (n == header::UPGRADE || n == header::CONNECTION))
        {
            continue;
        }
        h.remove(n);
    }
    if keep_upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if te_trailers {
        // gRPC needs `te: trailers` end to end; Envoy keeps exactly that value.
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// True for a request asking for a protocol upgrade (WebSocket).
pub fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Removes Envoy-internal request headers a client must not set (`x-envoy-*` that steer
/// routing, retries and timeouts), as Envoy does for external requests.
pub fn strip_internal(h: &mut HeaderMap) {
    // The common case has none: check before allocating the list.
    if !h.keys().any(|k| k.as_str().starts_with("x-envoy-")) {
        return;
    }
    let internal: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("x-envoy-"))
        .cloned()
        .collect();
    for k in internal {
        h.remove(k);
    }
}

/// Appends the client address to `x-forwarded-for`, sets `x-forwarded-proto` and
/// `x-envoy-external-address` (every client of a gateway is external to the mesh).
pub fn forwarded(h: &mut HeaderMap, client: IpAddr, scheme: &str) {
    let xff = super::names::X_FORWARDED_FOR;
    let ip = client_value(client);
    let joined = match h.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.is_empty() => {
            HeaderValue::from_str(&format!("{prev},{}", ip.to_str().unwrap_or(""))).ok()
        }
        _ => None,
    };
    h.insert(xff, joined.unwrap_or_else(|| ip.clone()));
    // Envoy's order: x-forwarded-proto, then x-envoy-external-address.
    h.insert(
        super::names::X_FORWARDED_PROTO,
        HeaderValue::from_static(if scheme == "https" { "https" } else { "http" }),
    );
    h.insert(super::names::X_ENVOY_EXTERNAL_ADDRESS, ip);
}

/// The client address as a header value. Clients come back (keep-alive, connection reuse),
/// so the worker keeps the last few: a request then copies a reference, not the text, and a
/// retry's copy of the request head does not copy it either.
fn client_value(ip: IpAddr) -> HeaderValue {
    thread_local! {
        static RECENT: std::cell::RefCell<Vec<(IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    RECENT.with(|r| {
        let mut r = r.borrow_mut();
        if let Some((_, v)) = r.iter().find(|(a, _)| *a == ip) {
            return v.clone();
        }
        let text = ip.to_string();
        // Shared bytes: clones are reference counts from the start.
        let v = HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
            .unwrap_or_else(|_| HeaderValue::from_static("-"));
        let _shared = v.clone();
        if r.len() >= 16 {
            r.remove(0);
        }
        r.push((ip, v.clone()));
        v
    })
}

/// Sets `x-request-id` to a fresh UUIDv4; a client's id is kept only with `preserve`
/// (clients of a gateway are external, and Envoy regenerates external request ids unless
/// `preserve_external_request_id` is set, which Istio leaves off).
pub fn request_id(h: &mut HeaderMap, preserve: bool) {
    let name = super::names::X_REQUEST_ID;
    if preserve && h.contains_key(&name) {
        return;
    }
    if let Ok(v) = HeaderValue::from_bytes(&uuid4_bytes()) {
        h.insert(name, v);
    }
}

/// A random UUID version 4 in its canonical text form, written without allocating.
pub fn uuid4_bytes() -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b = fastrand::u128(..).to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = [b'-'; 36];
    let mut o = 0;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            o += 1; // leave the '-'
        }
        out[o] = HEX[usize::from(byte >> 4)];
        out[o + 1] = HEX[usize::from(byte & 0xf)];
        o += 2;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_listed() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers, deflate"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("x-secret").is_none() && h.get("keep-alive").is_none());
        assert!(h.get("connection").is_none());
        assert_eq!(h.get("te").map(|v| v.as_bytes()), Some(&b"trailers"[..]));
        assert!(h.get("x-keep").is_some());
    }

    #[test]
    fn uuids_are_canonical_v4() {
        let u = uuid4_bytes();
        let text = std::str::from_utf8(&u).expect("ascii");
        let dashes: Vec<usize> = text.match_indices('-').map(|(i, _)| i).collect();
        assert_eq!(dashes, [8, 13, 18, 23]);
        assert_eq!(&text[14..15], "4");
        assert!(matches!(&text[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(uuid4_bytes(), u);
    }

    #[test]
    fn forwarded_headers_and_ids() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        forwarded(&mut h, "127.0.0.1".parse().expect("ip"), "http");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1,127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-envoy-external-address"], "127.0.0.1");
        request_id(&mut h, false);
        let id = h["x-request-id"].to_str().expect("ascii").to_owned();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        request_id(&mut h, true);
        assert_eq!(h["x-request-id"], id.as_str());
        request_id(&mut h, false);
        assert_ne!(h["x-request-id"], id.as_str());
    }
}
