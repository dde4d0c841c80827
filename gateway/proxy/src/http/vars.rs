//! `%VARIABLE%` values in VirtualService header edits: Istio hands header values to Envoy
//! unchanged, so Envoy's header formatters work in them (`%DOWNSTREAM_REMOTE_ADDRESS%`,
//! `%REQ(x-user)%`, `%PROTOCOL%`, ...). This module expands the ones a gateway knows: those
//! `meshgate validate` accepts (`HEADER_VARIABLES` in the config crate, where the list lives).
//!
//! A value without `%` is used as it is; expansion allocates only for values that have one.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::SocketAddr;

use http::HeaderMap;

/// What variables can refer to, for one request.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    /// The client's address.
    pub peer: SocketAddr,
    /// The address the connection was accepted on.
    pub local: SocketAddr,
    /// `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'static str,
    /// The route's name.
    pub route: &'a str,
    /// The cluster, once chosen.
    pub cluster: Option<&'a str>,
    /// The endpoint that answered (response side).
    pub upstream: Option<SocketAddr>,
}

/// `value` with its variables expanded; `request` answers `%REQ(name)%` (absent: empty).
pub fn expand<'v>(value: &'v str, vars: &Vars<'_>, request: Option<&HeaderMap>) -> Cow<'v, str> {
    if !value.contains('%') {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 16);
    let mut rest = value;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('%') {
            out.push('%');
            rest = tail;
            continue;
        }
        let Some(end) = after.find('%') else {
            // An unterminated `%`: the rest is literal.
            out.push_str(&rest[i..]);
            return Cow::Owned(out);
        };
        let name = &after[..end];
        if !variable(&mut out, name, vars, request) {
            out.push('%');
            out.push_str(name);
            out.push('%');
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Writes variable `name`; false when meshgate does not know it.
fn variable(out: &mut String, name: &str, v: &Vars<'_>, request: Option<&HeaderMap>) -> bool {
    match name {
        "DOWNSTREAM_REMOTE_ADDRESS" | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS" => {
            let _ = write!(out, "{}", v.peer);
        }
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT"
        | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT" => {
            let _ = write!(out, "{}", v.peer.ip());
        }
        "DOWNSTREAM_REMOTE_PORT" => {
            let _ = write!(out, "{}", v.peer.port());
        }
        "DOWNSTREAM_LOCAL_ADDRESS" => {
            let _ = write!(out, "{}", v.local);
        }
        "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => {
            let _ = write!(out, "{}", v.local.ip());
        }
        "DOWNSTREAM_LOCAL_PORT" => {
            let _ = write!(out, "{}", v.local.port());
        }
        "UPSTREAM_REMOTE_ADDRESS" => {
            if let Some(u) = v.upstream {
                let _ = write!(out, "{u}");
            }
        }
        "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => {
            if let Some(u) = v.upstream {
                let _ = write!(out, "{}", u.ip());
            }
        }
        "UPSTREAM_CLUSTER" => out.push_str(v.cluster.unwrap_or("")),
        "ROUTE_NAME" => out.push_str(v.route),
        "PROTOCOL" => out.push_str(v.protocol),
        "HOSTNAME" => out.push_str(hostname()),
        _ => {
            let Some(header) = name.strip_prefix("REQ(").and_then(|n| n.strip_suffix(')')) else {
                return false;
            };
            // `%REQ(a?b)%`: the first of two headers that is present.
            let value = header.split('?').find_map(|h| {
                request
                    .and_then(|r| r.get(h.trim().to_ascii_lowercase().as_str()))
                    .and_then(|x| x.to_str().ok())
            });
            out.push_str(value.unwrap_or(""));
        }
    }
    true
}

/// This machine's host name (as Envoy's `%HOSTNAME%`), read once.
fn hostname() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars<'static> {
        Vars {
            peer: "10.1.2.3:4567".parse().expect("addr"),
            local: "127.0.0.1:8080".parse().expect("addr"),
            protocol: "HTTP/2",
            route: "r1",
            cluster: Some("outbound|80||a.b"),
            upstream: None,
        }
    }

    #[test]
    fn every_variable_validate_accepts_is_expanded() {
        let mut out = String::new();
        for name in meshgate_config::validate::virtual_service::HEADER_VARIABLES {
            assert!(variable(&mut out, name, &vars(), None), "{name}");
        }
    }

    #[test]
    fn literal_values_are_borrowed() {
        assert!(matches!(
            expand("plain", &vars(), None),
            Cow::Borrowed("plain")
        ));
    }

    #[test]
    fn variables_expand() {
        let mut h = HeaderMap::new();
        h.insert("x-user", http::HeaderValue::from_static("ann"));
        let v = vars();
        assert_eq!(
            expand(
                "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%:%DOWNSTREAM_REMOTE_PORT%",
                &v,
                None
            ),
            "10.1.2.3:4567"
        );
        assert_eq!(
            expand("%PROTOCOL% via %ROUTE_NAME%", &v, None),
            "HTTP/2 via r1"
        );
        assert_eq!(expand("u=%REQ(X-User)%", &v, Some(&h)), "u=ann");
        assert_eq!(expand("u=%REQ(x-none?x-user)%", &v, Some(&h)), "u=ann");
        assert_eq!(expand("100%% sure", &v, None), "100% sure");
        assert_eq!(expand("%UPSTREAM_REMOTE_ADDRESS%", &v, None), "");
        assert_eq!(
            expand("%NOT_A_THING% and 5%", &v, None),
            "%NOT_A_THING% and 5%"
        );
    }
}
