//! The upstream side of a forwarding route: the request as the upstream gets it (edge rules,
//! rewrites, header edits), then attempts on endpoints of the chosen cluster with the route's
//! retry policy (Istio's default when it sets none), per-try and whole-request timeouts, and
//! Envoy's local replies and response flags when attempts fail.
//!
//! Runs on a worker; a request body is buffered only as far as a retry needs (`replay`).

use std::rc::Rc;
use std::sync::atomic::Ordering;

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use meshgate_config::snapshot::route::{Forward, Route};

use super::attempts::{AttemptHead, Attempts};
use super::headers;
use super::local_reply;
use super::mirror;
use super::proxy::Outcome;
use super::vars::Vars;
use super::ConnInfo;
use crate::access_log;
use crate::body::{self, Body};
use crate::router;
use crate::upstream::pool::Proto;
use crate::wasm::filter::Chain;
use crate::worker::WorkerCtx;

/// Forwards a request on a matched route and returns the response the client gets.
#[allow(clippy::too_many_arguments)]
pub(super) async fn forward(
    req: Request<Body>,
    fwd: &Forward,
    route: &Route,
    matched_prefix: Option<&str>,
    authority: &str,
    conn: ConnInfo,
    ctx: &Rc<WorkerCtx>,
    live: &crate::live::Live,
    hash: Option<u64>,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    chain: Option<&Chain>,
) -> (Response<Body>, Outcome) {
    let wc = router::pick_cluster(fwd);
    let Some(cluster) = live.cluster(&wc.cluster) else {
        if let Some(c) = chain {
            c.record_request_of(&req);
        }
        return (
            local_reply::text(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
            Outcome::local("NC", "cluster_not_found"),
        );
    };
    let upgrade = on_upgrade.is_some();
    let mut vars = Vars {
        peer: conn.peer,
        local: conn.local,
        protocol: super::protocol_name(req.version()),
        route: &route.name,
        cluster: Some(&wc.cluster),
        upstream: None,
    };
    let downstream = req.version();
    let (mut parts, body) = req.into_parts();
    let proto = cluster.wire_protocol(downstream);
    if let Err(reason) = upstream_request(
        &mut parts,
        fwd,
        route,
        wc,
        matched_prefix,
        authority,
        proto,
        upgrade,
        &vars,
    ) {
        if let Some(c) = chain {
            c.record_request(&parts);
        }
        return (
            local_reply::text(StatusCode::BAD_REQUEST, reason),
            Outcome {
                service: cluster.host.clone(),
                flags: "DPE",
                details: "-",
                cluster: Some(wc.cluster.clone()),
                upstream_host: None,
            },
        );
    }
    // Istio's route timeout (none by default) bounds all attempts; the per-try timeout each.
    let route_timeout = route
        .timeout
        .and_then(|t| t.to_std())
        .filter(|t| !t.is_zero());
    // An upgraded connection cannot be replayed.
    let policy = route.retries.as_ref().filter(|_| !upgrade);
    let per_try = policy.and_then(|p| p.per_try_timeout);
    let expected = match (route_timeout, per_try) {
        (Some(g), Some(p)) => Some(g.min(p)),
        (g, p) => g.or(p),
    };
    if let Some(t) = expected {
        let ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
        parts.headers.insert(
            super::names::X_ENVOY_EXPECTED_RQ_TIMEOUT_MS,
            HeaderValue::from(ms),
        );
    }
    let mut body = match parts.extensions.get::<access_log::Received>() {
        Some(r) => access_log::Counted::wrap(body, r.clone()),
        None => body,
    };
    if !route.mirrors.is_empty() && !upgrade {
        let host = fwd.authority_rewrite.as_deref().unwrap_or(authority);
        let timeout = route_timeout.unwrap_or(mirror::DEFAULT_MIRROR_TIMEOUT);
        let mut tee: Option<mirror::Tee> = None;
        let hint = http_body::Body::size_hint(&body);
        for name in mirror::chosen(&route.mirrors) {
            let Some(target) = live.cluster(name) else {
                continue;
            };
            let mirror_body = if http_body::Body::is_end_stream(&body) {
                body::empty()
            } else {
                Box::pin(tee.get_or_insert_with(mirror::Tee::default).mirror(hint))
            };
            let target = target.clone();
            mirror::send(ctx, target, &parts, downstream, host, mirror_body, timeout);
        }
        if let Some(t) = tee {
            body = Box::pin(body::Watched::new(body, t));
        }
    }
    let attempts = Attempts {
        cluster,
        ctx,
        proto,
        hash,
        policy,
        per_try,
        deadline: route_timeout.map(|t| tokio::time::Instant::now() + t),
        last_host: std::cell::Cell::new(None),
    };
    // With plugins, the head goes into one shared copy: they read it later, and the attempts
    // are built from it (a retry needs the head again anyway).
    let head = match chain {
        Some(c) => {
            let (head, extensions) = AttemptHead::share(parts, c);
            c.share_request(head.clone());
            AttemptHead::Shared(head, Some(extensions))
        }
        None => AttemptHead::Owned(parts),
    };
    let result = attempts.run(head, body).await;
    let service = cluster.host.clone();
    let (resp, sent, flags) = match result {
        Ok(ok) => ok,
        Err(f) => {
            cluster.stats.rq_5xx.fetch_add(1, Ordering::Relaxed);
            let mut reply = local_reply::owned(f.status, f.body);
            if f.overloaded {
                reply.headers_mut().insert(
                    super::names::X_ENVOY_OVERLOADED,
                    HeaderValue::from_static("true"),
                );
            }
            return (
                reply,
                Outcome {
                    service,
                    flags: f.flags,
                    details: f.details,
                    cluster: Some(wc.cluster.clone()),
                    upstream_host: attempts.last_host.get(),
                },
            );
        }
    };
    let (mut parts, body) = resp.into_parts();
    if parts.status.is_server_error() {
        cluster.stats.rq_5xx.fetch_add(1, Ordering::Relaxed);
    }
    let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    headers::strip_hop_by_hop(&mut parts.headers, switching && upgrade);
    let ms = u64::try_from(sent.elapsed().as_millis()).unwrap_or(u64::MAX);
    parts.headers.insert(
        super::names::X_ENVOY_UPSTREAM_SERVICE_TIME,
        millis_value(ms),
    );
    vars.upstream = attempts.last_host.get();
    router::apply_headers(&mut parts.headers, &route.response_headers, &vars, false);
    router::apply_headers(&mut parts.headers, &wc.response_headers, &vars, false);
    let mut resp = Response::from_parts(parts, body);
    if switching {
        if let Some(down) = on_upgrade {
            let up = hyper::upgrade::on(&mut resp);
            tokio::task::spawn_local(async move {
                if let (Ok(down), Ok(up)) = (down.await, up.await) {
                    let mut down = TokioIo::new(down);
                    let mut up = TokioIo::new(up);
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                }
            });
        }
    }
    let outcome = Outcome {
        service,
        flags,
        details: "via_upstream",
        cluster: Some(wc.cluster.clone()),
        upstream_host: attempts.last_host.get(),
    };
    (resp, outcome)
}

/// `ms` as a header value. Service times are mostly small numbers, so the worker keeps the
/// values below 1000 once made: a response then takes a reference, not an allocation.
fn millis_value(ms: u64) -> HeaderValue {
    const CACHED: u64 = 1000;
    thread_local! {
        static SMALL: std::cell::RefCell<Vec<Option<HeaderValue>>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    if ms >= CACHED {
        return HeaderValue::from(ms);
    }
    let i = ms as usize;
    SMALL.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() <= i {
            s.resize(i + 1, None);
        }
        s[i].get_or_insert_with(|| {
            // Shared bytes, so each clone is a reference count.
            let v = HeaderValue::from(ms);
            let _ = v.clone();
            v
        })
        .clone()
    })
}

/// The request target for `proto`: the origin form for HTTP/1.1, the absolute form with
/// `host` for HTTP/2 (`None`: not a valid URI).
pub(crate) fn target_uri(proto: Proto, host: &str, path_and_query: &str) -> Option<Uri> {
    match proto {
        Proto::Http2 => format!("http://{host}{path_and_query}").parse().ok(),
        Proto::Http1 => path_and_query.parse().ok(),
    }
}

/// The version and `Host` header `proto` wants: HTTP/1.1 carries `host` in `Host` (the
/// client's own header is kept when it already says so), HTTP/2 in the URI only.
pub(crate) fn set_protocol(
    version: &mut Version,
    headers: &mut HeaderMap,
    proto: Proto,
    host: &str,
) {
    match proto {
        Proto::Http1 => {
            *version = Version::HTTP_11;
            let same = headers
                .get(header::HOST)
                .is_some_and(|v| v.as_bytes() == host.as_bytes());
            if !same {
                if let Ok(v) = HeaderValue::from_str(host) {
                    headers.insert(header::HOST, v);
                }
            }
        }
        Proto::Http2 => {
            *version = Version::HTTP_2;
            headers.remove(header::HOST);
        }
    }
}

/// Turns the client's request head into the upstream's: edge rules, header edits, rewrites,
/// the URI and `Host` the upstream protocol wants. Err: the body of a 400 local reply (the
/// rewrite produced an invalid path).
#[allow(clippy::too_many_arguments)]
fn upstream_request(
    parts: &mut Parts,
    fwd: &Forward,
    route: &Route,
    wc: &meshgate_config::snapshot::route::WeightedCluster,
    matched_prefix: Option<&str>,
    authority: &str,
    proto: Proto,
    upgrade: bool,
    vars: &Vars<'_>,
) -> Result<(), &'static str> {
    // The connection manager's edge rules (x-forwarded-for, request id) ran before routing.
    headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    router::apply_headers(&mut parts.headers, &route.request_headers, vars, true);
    router::apply_headers(&mut parts.headers, &wc.request_headers, vars, true);
    let host = fwd.authority_rewrite.as_deref().unwrap_or(authority);
    // Envoy records what the client asked for when a rewrite changes it.
    if fwd.authority_rewrite.is_some() {
        if let Ok(v) = HeaderValue::from_str(authority) {
            parts.headers.insert(super::names::X_ENVOY_ORIGINAL_HOST, v);
        }
    }
    let rewritten = fwd.path_rewrite.as_ref().map(|rw| {
        let old = router::path_and_query(&parts.uri);
        if let Ok(v) = HeaderValue::from_str(old) {
            parts.headers.insert(super::names::X_ENVOY_ORIGINAL_PATH, v);
        }
        router::rewrite_path(old, rw, matched_prefix)
    });
    // Rebuild the URI only when something changes: HTTP/1.1 upstreams get the origin form,
    // HTTP/2 upstreams the absolute form with the (possibly rewritten) authority.
    let same_target = rewritten.is_none()
        && match proto {
            Proto::Http1 => parts.uri.scheme().is_none(),
            Proto::Http2 => {
                fwd.authority_rewrite.is_none()
                    && parts.uri.authority().is_some_and(|a| a.as_str() == host)
            }
        };
    if !same_target && rewritten.is_none() && proto == Proto::Http1 {
        // The origin form of the client's own target: its bytes are shared, not copied.
        if let Some(pq) = parts.uri.path_and_query().cloned() {
            parts.uri = Uri::from(pq);
        } else {
            parts.uri = Uri::from_static("/");
        }
    } else if !same_target {
        let path = rewritten
            .as_deref()
            .unwrap_or_else(|| router::path_and_query(&parts.uri));
        let Some(uri) = target_uri(proto, host, path) else {
            return Err("invalid path after rewrite");
        };
        parts.uri = uri;
    }
    set_protocol(&mut parts.version, &mut parts.headers, proto, host);
    Ok(())
}
