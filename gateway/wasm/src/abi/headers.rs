//! Header and trailer maps (`proxy_get_header_map_pairs`, `_set_`, `_get_value`, `_add_`,
//! `_replace_`, `_remove_`, `_size`). The request head shows its pseudo-headers first
//! (`:authority`, `:path`, `:method`, `:scheme`), the response head `:status`, as in Envoy;
//! writing a pseudo-header changes the URI, method or status it stands for.

use std::borrow::Cow;

use http::header::{HeaderName, HeaderValue, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, StatusCode, Uri, Version};
use wasmtime::{Caller, Linker};

use super::{
    decode_pairs, encode_pairs, finish, hand_over, memory, read, slice, write_u32, HostError,
    MapType, Status,
};
use crate::header_cache::HeaderCache;
use crate::state::{RequestEdits, VmState};

/// A map's entries as the guest sees them.
type Pairs = Vec<(Cow<'static, [u8]>, Vec<u8>)>;

/// The number of entries the guest is told a request head has.
pub(crate) fn request_header_count(head: &http::request::Parts) -> usize {
    let host = usize::from(head.uri.authority().is_none() && head.headers.contains_key(HOST));
    4 + head.headers.len() - host
}

fn authority_of(uri: &Uri, headers: &HeaderMap) -> Vec<u8> {
    match uri.authority() {
        Some(a) => a.as_str().as_bytes().to_vec(),
        None => headers
            .get(HOST)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default(),
    }
}

/// The pairs of a request head, pseudo-headers first.
fn request_pairs(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Vec<(Cow<'static, [u8]>, Vec<u8>)> {
    let mut out = Vec::with_capacity(headers.len() + 4);
    out.push((
        Cow::Borrowed(&b":authority"[..]),
        authority_of(uri, headers),
    ));
    let path = uri.path_and_query().map_or("/", PathAndQuery::as_str);
    out.push((Cow::Borrowed(&b":path"[..]), path.as_bytes().to_vec()));
    out.push((
        Cow::Borrowed(&b":method"[..]),
        method.as_str().as_bytes().to_vec(),
    ));
    let scheme = uri.scheme_str().unwrap_or("http");
    out.push((Cow::Borrowed(&b":scheme"[..]), scheme.as_bytes().to_vec()));
    let skip_host = uri.authority().is_none();
    for (k, v) in headers {
        if skip_host && k == HOST {
            continue;
        }
        out.push(pair((k, v)));
    }
    out
}

fn plain_pairs(headers: &HeaderMap) -> Pairs {
    headers.iter().map(pair).collect()
}

fn pair((k, v): (&HeaderName, &HeaderValue)) -> (Cow<'static, [u8]>, Vec<u8>) {
    (
        Cow::Owned(k.as_str().as_bytes().to_vec()),
        v.as_bytes().to_vec(),
    )
}

/// A response head's pairs: `:status`, then the headers.
fn response_pairs<'a>(
    status: StatusCode,
    headers: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Pairs {
    let mut out = Vec::with_capacity(headers.size_hint().0 + 1);
    out.push((
        Cow::Borrowed(&b":status"[..]),
        status.as_str().as_bytes().to_vec(),
    ));
    out.extend(headers.map(|(k, v)| (Cow::Owned(k.to_vec()), v.to_vec())));
    out
}

/// The pairs of map `t`, or `NotFound` when it is not available in this context.
fn pairs(st: &mut VmState, t: MapType) -> Result<Pairs, Status> {
    if let MapType::GrpcInitialMetadata | MapType::GrpcTrailingMetadata = t {
        let md = st.grpc_metadata.as_ref().ok_or(Status::NotFound)?;
        return Ok(md
            .iter()
            .map(|(k, v)| (Cow::Owned(k.as_bytes().to_vec()), v.to_vec()))
            .collect());
    }
    if let MapType::HttpCallResponseHeaders | MapType::HttpCallResponseTrailers = t {
        let r = st.call_response.as_ref().ok_or(Status::NotFound)?;
        let list = if t == MapType::HttpCallResponseHeaders {
            &r.headers
        } else {
            &r.trailers
        };
        return Ok(list
            .iter()
            .map(|(k, v)| (Cow::Owned(k.as_bytes().to_vec()), v.to_vec()))
            .collect());
    }
    let s = st.stream().ok_or(Status::NotFound)?;
    match t {
        MapType::RequestHeaders => match (&s.request, &s.sent_request) {
            (Some(h), _) => Ok(request_pairs(&h.method, &h.uri, &h.headers)),
            (None, Some(f)) => Ok(request_pairs(&f.method, &f.uri, &f.headers)),
            _ => Err(Status::NotFound),
        },
        // The head while the plugin holds it, or (body callbacks, on_log) the headers as they
        // went downstream: Envoy gives them in on_log, and meshgate in the body callbacks too
        // (docs/envoy-differences.md).
        MapType::ResponseHeaders => match (&s.response, s.sent_response.status()) {
            (Some(h), _) => Ok(response_pairs(
                h.status,
                h.headers
                    .iter()
                    .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes())),
            )),
            (None, Some(status)) => Ok(response_pairs(status, s.sent_response.headers())),
            _ => Err(Status::NotFound),
        },
        MapType::RequestTrailers => Ok(plain_pairs(
            s.request_trailers.as_ref().ok_or(Status::NotFound)?,
        )),
        MapType::ResponseTrailers => Ok(plain_pairs(
            s.response_trailers.as_ref().ok_or(Status::NotFound)?,
        )),
        _ => Err(Status::NotFound),
    }
}

/// The value of `key` in map `t` (repeated headers joined with `,`, as Envoy joins them),
/// looked up directly for a regular header rather than by listing the map.
fn value_of(st: &mut VmState, t: MapType, key: &[u8]) -> Result<Option<Vec<u8>>, Status> {
    let direct = |h: &HeaderMap, name: HeaderName| -> Option<Vec<u8>> {
        let mut it = h.get_all(name).iter();
        let mut out = it.next()?.as_bytes().to_vec();
        for v in it {
            out.push(b',');
            out.extend_from_slice(v.as_bytes());
        }
        Some(out)
    };
    if key.first() != Some(&b':') && !key.eq_ignore_ascii_case(b"host") {
        let cache = &mut st.header_cache;
        if let Some(s) = st.streams.get(&st.effective) {
            let h = match t {
                MapType::RequestHeaders => s.request.as_ref().map(|h| &h.headers),
                MapType::ResponseHeaders => s.response.as_ref().map(|h| &h.headers),
                _ => None,
            };
            if let Some(h) = h {
                return Ok(cache.name(key).ok().and_then(|n| direct(h, n)));
            }
        }
    }
    let list = pairs(st, t)?;
    let mut found: Option<Vec<u8>> = None;
    for (k, v) in &list {
        if k.as_ref().eq_ignore_ascii_case(key) {
            match &mut found {
                None => found = Some(v.clone()),
                Some(f) => {
                    f.push(b',');
                    f.extend_from_slice(v);
                }
            }
        }
    }
    Ok(found)
}

/// What a write does to a map.
enum Edit<'a> {
    Add(&'a [u8], &'a [u8]),
    Replace(&'a [u8], &'a [u8]),
    Remove(&'a [u8]),
}

fn name(k: &[u8]) -> Result<HeaderName, Status> {
    HeaderName::from_bytes(k).map_err(|_| Status::BadArgument)
}

fn value(v: &[u8]) -> Result<HeaderValue, Status> {
    HeaderValue::from_bytes(v).map_err(|_| Status::BadArgument)
}

fn edit_plain(h: &mut HeaderMap, cache: &mut HeaderCache, e: &Edit<'_>) -> Result<(), Status> {
    match *e {
        Edit::Add(k, v) => {
            let (k, v) = cache.pair(k, v).map_err(|_| Status::BadArgument)?;
            h.append(k, v);
        }
        Edit::Replace(k, v) => {
            let (k, v) = cache.pair(k, v).map_err(|_| Status::BadArgument)?;
            h.insert(k, v);
        }
        Edit::Remove(k) => {
            if let Ok(n) = cache.name(k) {
                h.remove(n);
            }
        }
    }
    Ok(())
}

/// Sets a request pseudo-header.
fn set_request_pseudo(h: &mut http::request::Parts, k: &[u8], v: &[u8]) -> Result<(), Status> {
    let text = std::str::from_utf8(v).map_err(|_| Status::BadArgument)?;
    match k {
        b":method" => h.method = Method::from_bytes(v).map_err(|_| Status::BadArgument)?,
        b":path" => {
            let pq: PathAndQuery = text.parse().map_err(|_| Status::BadArgument)?;
            let mut parts = std::mem::take(&mut h.uri).into_parts();
            parts.path_and_query = Some(pq);
            h.uri = Uri::from_parts(parts).map_err(|_| Status::BadArgument)?;
        }
        b":authority" => {
            let a: Authority = text.parse().map_err(|_| Status::BadArgument)?;
            if h.uri.authority().is_some() || h.version == Version::HTTP_2 {
                let mut parts = std::mem::take(&mut h.uri).into_parts();
                parts.authority = Some(a);
                if parts.scheme.is_none() {
                    parts.scheme = Some(Scheme::HTTP);
                }
                if parts.path_and_query.is_none() {
                    parts.path_and_query = Some(PathAndQuery::from_static("/"));
                }
                h.uri = Uri::from_parts(parts).map_err(|_| Status::BadArgument)?;
            }
            if h.version != Version::HTTP_2 || h.headers.contains_key(HOST) {
                h.headers.insert(HOST, value(v)?);
            }
        }
        b":scheme" => {
            if h.uri.scheme().is_some() {
                let mut parts = std::mem::take(&mut h.uri).into_parts();
                parts.scheme = Some(text.parse().map_err(|_| Status::BadArgument)?);
                h.uri = Uri::from_parts(parts).map_err(|_| Status::BadArgument)?;
            }
        }
        _ => return Err(Status::BadArgument),
    }
    Ok(())
}

fn edit(st: &mut VmState, t: MapType, e: Edit<'_>) -> Result<(), Status> {
    let cache = &mut st.header_cache;
    let s = st.streams.get_mut(&st.effective).ok_or(Status::NotFound)?;
    let key = match e {
        Edit::Add(k, _) | Edit::Replace(k, _) | Edit::Remove(k) => k,
    };
    match t {
        MapType::RequestHeaders => {
            let pseudo = key.first() == Some(&b':');
            if pseudo || key.eq_ignore_ascii_case(b"host") {
                s.request_edits.pseudo = true;
            } else {
                s.request_edits.headers = true;
            }
            let h = s.request.as_mut().ok_or(Status::NotFound)?;
            if pseudo {
                return match e {
                    Edit::Add(k, v) | Edit::Replace(k, v) => set_request_pseudo(h, k, v),
                    Edit::Remove(_) => Ok(()),
                };
            }
            if key.eq_ignore_ascii_case(b"host") && h.uri.authority().is_some() {
                if let Edit::Add(_, v) | Edit::Replace(_, v) = e {
                    return set_request_pseudo(h, b":authority", v);
                }
            }
            edit_plain(&mut h.headers, cache, &e)
        }
        MapType::ResponseHeaders => {
            let h = s
                .response
                .as_mut()
                .filter(|_| !s.response_gone)
                .ok_or(Status::NotFound)?;
            if key == b":status" {
                if let Edit::Add(_, v) | Edit::Replace(_, v) = e {
                    h.status = StatusCode::from_bytes(v).map_err(|_| Status::BadArgument)?;
                }
                return Ok(());
            }
            edit_plain(&mut h.headers, cache, &e)
        }
        MapType::RequestTrailers => edit_plain(
            s.request_trailers.as_mut().ok_or(Status::NotFound)?,
            cache,
            &e,
        ),
        MapType::ResponseTrailers => edit_plain(
            s.response_trailers.as_mut().ok_or(Status::NotFound)?,
            cache,
            &e,
        ),
        _ => Err(Status::BadArgument),
    }
}

/// Replaces a whole map with `new` pairs.
fn set_all(st: &mut VmState, t: MapType, new: &[(&[u8], &[u8])]) -> Result<(), Status> {
    let s = st.stream().ok_or(Status::NotFound)?;
    let mut map = HeaderMap::with_capacity(new.len());
    let mut pseudo = Vec::new();
    for (k, v) in new {
        if k.first() == Some(&b':') {
            pseudo.push((*k, *v));
        } else {
            map.append(name(k)?, value(v)?);
        }
    }
    match t {
        MapType::RequestHeaders => {
            s.request_edits = RequestEdits {
                headers: true,
                pseudo: true,
            };
            let h = s.request.as_mut().ok_or(Status::NotFound)?;
            let host = h.headers.get(HOST).cloned();
            h.headers = map;
            if let (Some(host), false) = (host, h.headers.contains_key(HOST)) {
                if h.uri.authority().is_none() {
                    h.headers.insert(HOST, host);
                }
            }
            for (k, v) in pseudo {
                set_request_pseudo(h, k, v)?;
            }
        }
        MapType::ResponseHeaders => {
            let h = s
                .response
                .as_mut()
                .filter(|_| !s.response_gone)
                .ok_or(Status::NotFound)?;
            h.headers = map;
            for (k, v) in pseudo {
                if k == b":status" {
                    h.status = StatusCode::from_bytes(v).map_err(|_| Status::BadArgument)?;
                }
            }
        }
        MapType::RequestTrailers => s.request_trailers = Some(map),
        MapType::ResponseTrailers => s.response_trailers = Some(map),
        _ => return Err(Status::BadArgument),
    }
    Ok(())
}

/// `proxy_add_header_map_value` (or, `replace`, `proxy_replace_header_map_value`): the key and
/// value are read in place from guest memory.
fn write_value(
    c: &mut Caller<'_, VmState>,
    t: i32,
    key: (i32, i32),
    value: (i32, i32),
    replace: bool,
) -> i32 {
    let r = (|| {
        let t = map_type(t)?;
        let mem = memory(c).ok_or(Status::InvalidMemoryAccess)?;
        let (data, st) = mem.data_and_store_mut(&mut *c);
        let k = slice(data, key.0, key.1).ok_or(Status::InvalidMemoryAccess)?;
        let v = slice(data, value.0, value.1).ok_or(Status::InvalidMemoryAccess)?;
        edit(
            st,
            t,
            if replace {
                Edit::Replace(k, v)
            } else {
                Edit::Add(k, v)
            },
        )
    })();
    r.map_or_else(Status::code, |()| Status::Ok.code())
}

fn map_type(t: i32) -> Result<MapType, Status> {
    MapType::from_i32(t).ok_or(Status::BadArgument)
}

pub(super) fn link(l: &mut Linker<VmState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: Caller<'_, VmState>,
         t: i32,
         ret_ptr: i32,
         ret_size: i32|
         -> wasmtime::Result<i32> {
            super::sync(&mut c);
            let r = (|| -> Result<(), HostError> {
                let list = pairs(c.data_mut(), map_type(t)?)?;
                let flat: Vec<(&[u8], &[u8])> = list
                    .iter()
                    .map(|(k, v)| (k.as_ref(), v.as_slice()))
                    .collect();
                let enc = encode_pairs(&flat);
                hand_over(&mut c, &enc, ret_ptr, ret_size)
            })();
            finish(r)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: Caller<'_, VmState>, t: i32, ptr: i32, size: i32| -> i32 {
            super::sync(&mut c);
            let r = (|| {
                let t = map_type(t)?;
                let raw = read(&mut c, ptr, size)?;
                let new = decode_pairs(&raw).ok_or(Status::SerializationFailure)?;
                set_all(c.data_mut(), t, &new)
            })();
            r.map_or_else(Status::code, |()| Status::Ok.code())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: Caller<'_, VmState>,
         t: i32,
         kp: i32,
         kl: i32,
         ret_ptr: i32,
         ret_size: i32|
         -> wasmtime::Result<i32> {
            super::sync(&mut c);
            let r = (|| -> Result<(), HostError> {
                let t = map_type(t)?;
                let key = read(&mut c, kp, kl)?;
                let found = value_of(c.data_mut(), t, &key)?;
                let v = found.ok_or(Status::NotFound)?;
                hand_over(&mut c, &v, ret_ptr, ret_size)
            })();
            finish(r)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut c: Caller<'_, VmState>, t: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> i32 {
            super::sync(&mut c);
            write_value(&mut c, t, (kp, kl), (vp, vl), false)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut c: Caller<'_, VmState>, t: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> i32 {
            super::sync(&mut c);
            write_value(&mut c, t, (kp, kl), (vp, vl), true)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: Caller<'_, VmState>, t: i32, kp: i32, kl: i32| -> i32 {
            super::sync(&mut c);
            let r = (|| {
                let t = map_type(t)?;
                let mem = memory(&mut c).ok_or(Status::InvalidMemoryAccess)?;
                let (data, st) = mem.data_and_store_mut(&mut c);
                let k = slice(data, kp, kl).ok_or(Status::InvalidMemoryAccess)?;
                edit(st, t, Edit::Remove(k))
            })();
            r.map_or_else(Status::code, |()| Status::Ok.code())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut c: Caller<'_, VmState>, t: i32, ret: i32| -> i32 {
            super::sync(&mut c);
            let r = (|| {
                let list = pairs(c.data_mut(), map_type(t)?)?;
                let size: usize = list.iter().map(|(k, v)| k.len() + v.len()).sum();
                write_u32(&mut c, ret, size as u32)
            })();
            r.map_or_else(Status::code, |()| Status::Ok.code())
        },
    )?;
    Ok(())
}
