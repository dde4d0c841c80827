//! Properties (`proxy_get_property`, `proxy_set_property`): Envoy's attribute paths, segments
//! separated by NUL, encoded as Envoy encodes them — strings as bytes, integers as 8-byte
//! little-endian, booleans as one byte, times and durations as nanoseconds, maps as header pairs.
//! `node.*` comes from the host; values a plugin set are read back from the stream's state.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Uri};
use wasmtime::{Caller, Linker};

use super::{encode_pairs, finish, hand_over, read, HostError, Status};
use crate::state::{StreamData, VmState};

fn int(v: i64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

fn text(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn addr(a: Option<SocketAddr>) -> Option<Vec<u8>> {
    a.map(|a| text(&a.to_string()))
}

fn port(a: Option<SocketAddr>) -> Option<Vec<u8>> {
    a.map(|a| int(i64::from(a.port())))
}

/// The request head a property reads: the one the plugin holds, or the copy kept after it
/// went upstream.
fn head(s: &StreamData) -> Option<(&Method, &Uri, &HeaderMap)> {
    match (&s.request, &s.sent_request) {
        (Some(h), _) => Some((&h.method, &h.uri, &h.headers)),
        (None, Some(f)) => Some((&f.method, &f.uri, &f.headers)),
        _ => None,
    }
}

fn header(h: &HeaderMap, name: &[u8]) -> Option<Vec<u8>> {
    let name = std::str::from_utf8(name).ok()?;
    h.get(name).map(|v| v.as_bytes().to_vec())
}

/// Every value of header `name`, joined with `,` (as Envoy's `request.headers.NAME`).
fn joined(h: &HeaderMap, name: &[u8]) -> Option<Vec<u8>> {
    let name = std::str::from_utf8(name).ok()?;
    let mut values = h.get_all(name).iter();
    let mut out = values.next()?.as_bytes().to_vec();
    for v in values {
        out.push(b',');
        out.extend_from_slice(v.as_bytes());
    }
    Some(out)
}

/// The header map as pairs, one per name with its values joined (as Envoy's
/// `request.headers`).
fn map(h: &HeaderMap) -> Vec<u8> {
    let joined: Vec<(&[u8], Vec<u8>)> = h
        .keys()
        .map(|k| {
            let name = k.as_str().as_bytes();
            (name, joined(h, name).unwrap_or_default())
        })
        .collect();
    let pairs: Vec<(&[u8], &[u8])> = joined.iter().map(|(k, v)| (*k, v.as_slice())).collect();
    encode_pairs(&pairs)
}

fn request(s: &StreamData, rest: &[&[u8]]) -> Option<Vec<u8>> {
    let info = &s.info;
    let field = rest.first()?;
    match (*field, rest.get(1)) {
        (b"time", None) => {
            let t = info.start?.duration_since(UNIX_EPOCH).ok()?;
            return Some(int(t.as_nanos() as i64));
        }
        // As Envoy: known once the exchange is over.
        (b"duration", None) if s.ended => {
            let d = SystemTime::now().duration_since(info.start?).ok()?;
            return Some(int(d.as_nanos() as i64));
        }
        (b"size", None) => return Some(int(info.request_body_size as i64)),
        (b"protocol", None) => return Some(text(info.protocol)),
        _ => {}
    }
    let (method, uri, headers) = head(s)?;
    Some(match (*field, rest.get(1)) {
        (b"path", None) => text(uri.path_and_query().map_or("/", PathAndQuery::as_str)),
        (b"url_path", None) => text(uri.path()),
        (b"query", None) => text(uri.query().unwrap_or("")),
        (b"host", None) => match uri.authority() {
            Some(a) => text(a.as_str()),
            None => header(headers, b"host")?,
        },
        (b"scheme", None) => text(uri.scheme_str().unwrap_or("http")),
        (b"method", None) => text(method.as_str()),
        (b"referer", None) => header(headers, b"referer")?,
        (b"useragent", None) => header(headers, b"user-agent")?,
        (b"id", None) => header(headers, b"x-request-id")?,
        (b"headers", None) => map(headers),
        (b"headers", Some(name)) if rest.len() == 2 => joined(headers, name)?,
        (b"total_size", None) => {
            let h: usize = headers
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len())
                .sum();
            int((h as u64 + info.request_body_size) as i64)
        }
        _ => return None,
    })
}

/// Envoy's response flags as its `response.flags` bitmask (`ResponseFlag`, in its order).
fn flag_bits(flags: &str) -> i64 {
    const CODES: [&str; 27] = [
        "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE",
        "DC", "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF",
    ];
    flags
        .split(',')
        .filter_map(|f| CODES.iter().position(|c| *c == f.trim()))
        .fold(0, |bits, i| bits | (1 << i))
}

/// Envoy's gRPC status for an HTTP status without `grpc-status` (`httpToGrpcStatus`).
fn http_to_grpc(code: u16) -> i64 {
    match code {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

fn response(s: &StreamData, rest: &[&[u8]]) -> Option<Vec<u8>> {
    let info = &s.info;
    // The head while the plugin holds it, or the copy kept once it went downstream.
    let headers = || -> Option<Cow<'_, HeaderMap>> {
        match (&s.response, s.sent_response.status()) {
            (Some(r), _) => Some(Cow::Borrowed(&r.headers)),
            (None, Some(_)) => Some(Cow::Owned(s.sent_response.to_map())),
            (None, None) => None,
        }
    };
    Some(match (*rest.first()?, rest.get(1)) {
        (b"code", None) => int(i64::from(info.response_code?)),
        (b"code_details", None) => text(info.response_code_details?),
        (b"flags", None) => int(info.response_flags.map_or(0, flag_bits)),
        (b"size", None) => int(info.response_body_size as i64),
        (b"headers", None) => map(&*headers()?),
        (b"headers", Some(name)) if rest.len() == 2 => joined(&*headers()?, name)?,
        (b"grpc_status", None) => {
            let h = headers()?;
            match header(&h, b"grpc-status") {
                Some(v) => int(std::str::from_utf8(&v).ok()?.parse().ok()?),
                None => int(http_to_grpc(info.response_code?)),
            }
        }
        _ => return None,
    })
}

/// The value of property `path`, encoded.
fn property(st: &mut VmState, path: &[&[u8]]) -> Option<Vec<u8>> {
    let cfg = &st.plugin.config;
    match path {
        [b"plugin_name"] => return Some(text(&cfg.name)),
        [b"plugin_root_id"] => return Some(text(&cfg.root_id)),
        [b"plugin_vm_id"] => return Some(text(&cfg.vm_id)),
        [b"node", rest @ ..] | [b"xds", b"node", rest @ ..] => return st.host.node_property(rest),
        _ => {}
    }
    let s = st.stream()?;
    if let Some(v) = s.filter_state.get(&path.join(&b'.')) {
        return Some(v.to_vec());
    }
    let info = &s.info;
    match path {
        [b"request", rest @ ..] => request(s, rest),
        [b"response", rest @ ..] => response(s, rest),
        [b"source", b"address"] => addr(info.source),
        [b"source", b"port"] => port(info.source),
        [b"destination", b"address"] => addr(info.destination),
        [b"destination", b"port"] => port(info.destination),
        [b"upstream", b"address"] => addr(info.upstream),
        [b"upstream", b"port"] => port(info.upstream),
        [b"connection", b"id"] => Some(int(info.connection_id as i64)),
        [b"connection", b"mtls"] => Some(vec![0]),
        [b"connection", b"requested_server_name"] => Some(Vec::new()),
        [b"route_name"] | [b"xds", b"route_name"] => info.route_name.as_deref().map(text),
        [b"cluster_name"] | [b"xds", b"cluster_name"] => info.cluster_name.as_deref().map(text),
        _ => None,
    }
}

fn segments(raw: &[u8]) -> Vec<&[u8]> {
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    raw.split(|b| *b == 0).collect()
}

pub(super) fn link(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: Caller<'_, VmState>,
         pp: i32,
         pl: i32,
         ret_ptr: i32,
         ret_size: i32|
         -> wasmtime::Result<i32> {
            super::sync(&mut c);
            let r = (|| -> Result<(), HostError> {
                let raw = read(&mut c, pp, pl)?;
                let v = property(c.data_mut(), &segments(&raw)).ok_or(Status::NotFound)?;
                hand_over(&mut c, &v, ret_ptr, ret_size)
            })();
            finish(r)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: Caller<'_, VmState>, pp: i32, pl: i32, vp: i32, vl: i32| -> i32 {
            super::sync(&mut c);
            let r = (|| {
                let raw = read(&mut c, pp, pl)?;
                let value = read(&mut c, vp, vl)?;
                let key = segments(&raw).join(&b'.');
                let s = c.data_mut().stream().ok_or(Status::NotFound)?;
                if s.filter_state.len() >= 1024 {
                    return Err(Status::BadArgument);
                }
                s.filter_state.insert(key, bytes::Bytes::from(value));
                Ok(())
            })();
            r.map_or_else(Status::code, |()| Status::Ok.code())
        },
    )?;
    Ok(())
}
