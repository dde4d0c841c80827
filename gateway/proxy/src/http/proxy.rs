//! One request through the gateway: route lookup on the current snapshot, the route's action,
//! and for forwarding routes the upstream exchange with Envoy's edge rules and error replies.
//!
//! Runs on a worker thread; reads shared state only through one `ArcSwap` load per request.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use meshgate_config::snapshot::cluster::UpstreamProtocol;
use meshgate_config::snapshot::route::{Forward, Route, RouteAction};

use super::headers;
use super::local_reply;
use super::ConnInfo;
use crate::body::{self, Body};
use crate::router::{self, View};
use crate::telemetry::RequestKey;
use crate::upstream::cluster::ClusterState;
use crate::upstream::lb::{hash_of, HashPolicy};
use crate::upstream::pool::Proto;
use crate::worker::WorkerCtx;

/// What the request became, for metrics and logs.
struct Outcome {
    service: Arc<str>,
    flags: &'static str,
}

/// Handles one downstream request and always produces a response.
pub async fn handle(req: Request<Incoming>, conn: ConnInfo, ctx: Rc<WorkerCtx>) -> Response<Body> {
    let start = Instant::now();
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let (mut resp, outcome) = route_and_forward(req, conn, &ctx).await;
    resp.headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("meshgate"));
    let millis = start.elapsed().as_secs_f64() * 1000.0;
    ctx.metrics.record(
        &ctx.shared.metrics,
        RequestKey {
            service: outcome.service,
            code: resp.status().as_u16(),
            grpc,
            flags: outcome.flags,
        },
        millis,
    );
    resp
}

fn unknown() -> Arc<str> {
    thread_local! {
        static UNKNOWN: Arc<str> = Arc::from("unknown");
    }
    UNKNOWN.with(Arc::clone)
}

async fn route_and_forward(
    mut req: Request<Incoming>,
    conn: ConnInfo,
    ctx: &WorkerCtx,
) -> (Response<Body>, Outcome) {
    let no_route = |flags| {
        (
            local_reply::text(StatusCode::NOT_FOUND, ""),
            Outcome {
                service: unknown(),
                flags,
            },
        )
    };
    // Envoy's max_request_headers_kb (60 KiB of header names and values).
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if header_bytes > super::MAX_HEADER_BYTES {
        return (
            local_reply::text(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, ""),
            Outcome {
                service: unknown(),
                flags: "DPE",
            },
        );
    }
    let live = ctx.shared.live.load_full();
    // Cheap clones (shared bytes), so the request can be consumed later.
    let Some(authority_value) = router::authority_value(&req) else {
        return (
            local_reply::text(StatusCode::BAD_REQUEST, "missing host header"),
            Outcome {
                service: unknown(),
                flags: "DPE",
            },
        );
    };
    let authority = authority_value.as_str();
    let Some(listener) = live.listener(conn.local_port) else {
        return no_route("NR");
    };
    let Some(vhost) = listener.routes.lookup(authority) else {
        return no_route("NR");
    };
    let scheme = "http";
    let path_and_query = req.uri().path_and_query().cloned();
    let raw_path = path_and_query.as_ref().map_or("/", |p| p.as_str());
    let path: std::borrow::Cow<'_, str> = match router::normalize_path(raw_path) {
        Some(p) => {
            // Forward the normalized path too, as Envoy does.
            if let Ok(uri) = p.parse::<Uri>() {
                *req.uri_mut() = merge_path(req.uri(), uri);
            }
            p.into()
        }
        None => raw_path.into(),
    };
    let (host, port) = router::split_authority(authority);
    if vhost.require_tls && scheme == "http" {
        let mut r = local_reply::text(StatusCode::MOVED_PERMANENTLY, "");
        if let Ok(v) = HeaderValue::from_str(&format!("https://{host}{path}")) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return (
            r,
            Outcome {
                service: unknown(),
                flags: "-",
            },
        );
    }
    let method = req.method().clone();
    let view = View {
        method: method.as_str(),
        scheme,
        authority,
        path: &path,
        headers: req.headers(),
    };
    let Some((route, matched_prefix)) = router::select(&vhost.routes, &view) else {
        return no_route("NR");
    };
    if let Some(cors) = &route.cors {
        if let Some(r) = super::cors::preflight(cors, &method, req.headers()) {
            return (
                r,
                Outcome {
                    service: unknown(),
                    flags: "-",
                },
            );
        }
    }
    let origin = route
        .cors
        .as_ref()
        .and_then(|_| req.headers().get(header::ORIGIN).cloned());
    let (mut resp, outcome) = act(
        req,
        route,
        matched_prefix,
        &live,
        conn,
        ctx,
        authority,
        host,
        port,
        listener.service_port,
        scheme,
        &path,
    )
    .await;
    if let Some(cors) = &route.cors {
        super::cors::decorate(cors, origin.as_ref(), resp.headers_mut());
    }
    (resp, outcome)
}

/// Carries out a matched route's action.
#[allow(clippy::too_many_arguments)]
async fn act(
    mut req: Request<Incoming>,
    route: &Route,
    matched_prefix: Option<&str>,
    live: &Arc<crate::live::Live>,
    conn: ConnInfo,
    ctx: &WorkerCtx,
    authority: &str,
    host: &str,
    port: Option<u16>,
    service_port: u16,
    scheme: &str,
    path: &str,
) -> (Response<Body>, Outcome) {
    let done = |resp, flags| {
        (
            resp,
            Outcome {
                service: unknown(),
                flags,
            },
        )
    };
    match &route.action {
        RouteAction::DirectResponse { status, body } => {
            let mut r = Response::new(match body {
                Some(b) => body::full(bytes::Bytes::copy_from_slice(b)),
                None => body::empty(),
            });
            *r.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            if body.is_some() {
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            }
            router::apply_headers(r.headers_mut(), &route.response_headers);
            done(r, "-")
        }
        RouteAction::Redirect(rd) => {
            let loc = router::redirect_location(rd, scheme, host, port, service_port, path);
            let mut r = local_reply::text(
                StatusCode::from_u16(rd.code).unwrap_or(StatusCode::MOVED_PERMANENTLY),
                "",
            );
            if let Ok(v) = HeaderValue::from_str(&loc) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            router::apply_headers(r.headers_mut(), &route.response_headers);
            done(r, "-")
        }
        RouteAction::Forward(fwd) => {
            let mut fault_flags = "-";
            if let Some(fault) = &route.fault {
                let injected = super::fault::inject(fault).await;
                if let Some(mut r) = injected.abort {
                    router::apply_headers(r.headers_mut(), &route.response_headers);
                    return done(r, injected.flags);
                }
                fault_flags = injected.flags;
            }
            let upgrade = headers::is_upgrade(req.headers());
            let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
            let (hash, set_cookie) = hash_key(&req, conn.peer, fwd, live);
            let (mut resp, outcome) = forward(
                req,
                fwd,
                route,
                matched_prefix.map(str::to_owned),
                authority,
                conn,
                ctx,
                live,
                hash,
                on_upgrade,
            )
            .await;
            if let Some(cookie) = set_cookie {
                resp.headers_mut().append(header::SET_COOKIE, cookie);
            }
            let outcome = if fault_flags != "-" && outcome.flags == "-" {
                Outcome {
                    flags: fault_flags,
                    ..outcome
                }
            } else {
                outcome
            };
            (resp, outcome)
        }
    }
}

/// The consistent-hash key of a request for the cluster it is likely to go to, and the
/// `Set-Cookie` value to send back when the hash cookie had to be generated.
fn hash_key(
    req: &Request<Incoming>,
    client: std::net::SocketAddr,
    fwd: &Forward,
    live: &crate::live::Live,
) -> (Option<u64>, Option<HeaderValue>) {
    let Some(cluster) = fwd.clusters.first().and_then(|c| live.cluster(&c.cluster)) else {
        return (None, None);
    };
    let key = match cluster.hash_policy.as_ref() {
        None => return (None, None),
        Some(HashPolicy::Header(name)) => req
            .headers()
            .get(name.as_str())
            .map(|v| hash_of(v.as_bytes())),
        Some(HashPolicy::SourceIp) => Some(hash_of(client.ip())),
        Some(HashPolicy::Cookie {
            name,
            path,
            ttl_secs,
        }) => {
            let found = req
                .headers()
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|kv| {
                    let (k, v) = kv.trim().split_once('=')?;
                    (k == name).then(|| hash_of(v))
                });
            if found.is_none() {
                // Like Envoy: derive a value from the client's address, hash the request by
                // it, and hand it to the client so its next requests hash the same way.
                let value = format!("{:016x}", hash_of((client, fastrand::u64(..))));
                let mut cookie = format!("{name}=\"{value}\"");
                if *ttl_secs > 0 {
                    cookie.push_str(&format!("; Max-Age={ttl_secs}"));
                }
                if !path.is_empty() {
                    cookie.push_str(&format!("; Path={path}"));
                }
                cookie.push_str("; HttpOnly");
                return (
                    Some(hash_of(format!("\"{value}\"").as_str())),
                    HeaderValue::from_str(&cookie).ok(),
                );
            }
            found
        }
        Some(HashPolicy::QueryParam(name)) => req.uri().query().and_then(|q| {
            q.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == name).then(|| hash_of(v))
            })
        }),
    };
    (key, None)
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    req: Request<Incoming>,
    fwd: &Forward,
    route: &Route,
    matched_prefix: Option<String>,
    authority: &str,
    conn: ConnInfo,
    ctx: &WorkerCtx,
    live: &crate::live::Live,
    hash: Option<u64>,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> (Response<Body>, Outcome) {
    let wc = router::pick_cluster(fwd);
    let Some(cluster) = live.cluster(&wc.cluster) else {
        return (
            local_reply::text(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
            Outcome {
                service: unknown(),
                flags: "NC",
            },
        );
    };
    let service = cluster.host.clone();
    let fail = |status, text: String, flags| {
        cluster.stats.rq_5xx.fetch_add(1, Ordering::Relaxed);
        (
            local_reply::owned(status, text),
            Outcome {
                service: service.clone(),
                flags,
            },
        )
    };
    let Some(ep) = cluster.pick(hash) else {
        cluster
            .stats
            .no_healthy_upstream
            .fetch_add(1, Ordering::Relaxed);
        return fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "no healthy upstream".into(),
            "UH",
        );
    };
    let _active = ClusterState::start(&ep);
    cluster.stats.rq_total.fetch_add(1, Ordering::Relaxed);

    let upgrade = on_upgrade.is_some();
    let (mut parts, body) = req.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    headers::strip_internal(&mut parts.headers);
    headers::forwarded(&mut parts.headers, conn.peer.ip(), "http");
    headers::request_id(
        &mut parts.headers,
        ctx.shared.settings.preserve_external_request_id,
    );
    router::apply_headers(&mut parts.headers, &route.request_headers);
    router::apply_headers(&mut parts.headers, &wc.request_headers);
    let host = fwd.authority_rewrite.as_deref().unwrap_or(authority);
    // Envoy records what the client asked for when a rewrite changes it.
    if fwd.authority_rewrite.is_some() {
        if let Ok(v) = HeaderValue::from_str(authority) {
            parts
                .headers
                .insert(HeaderName::from_static("x-envoy-original-host"), v);
        }
    }
    let rewritten = fwd.path_rewrite.as_ref().map(|rw| {
        let old = router::path_and_query(&parts.uri);
        if let Ok(v) = HeaderValue::from_str(old) {
            parts
                .headers
                .insert(HeaderName::from_static("x-envoy-original-path"), v);
        }
        router::rewrite_path(old, rw, matched_prefix.as_deref())
    });
    let proto = match cluster.protocol() {
        UpstreamProtocol::Http2 => Proto::Http2,
        _ => Proto::Http1,
    };
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
    if !same_target {
        let path = rewritten
            .as_deref()
            .unwrap_or_else(|| router::path_and_query(&parts.uri));
        let uri = match proto {
            Proto::Http2 => format!("http://{host}{path}").parse::<Uri>(),
            Proto::Http1 => path.parse::<Uri>(),
        };
        let Ok(uri) = uri else {
            return fail(
                StatusCode::BAD_REQUEST,
                "invalid path after rewrite".into(),
                "DPE",
            );
        };
        parts.uri = uri;
    }
    match proto {
        Proto::Http1 => {
            parts.version = Version::HTTP_11;
            if let Ok(v) = HeaderValue::from_str(host) {
                parts.headers.insert(header::HOST, v);
            }
        }
        Proto::Http2 => {
            parts.version = Version::HTTP_2;
            parts.headers.remove(header::HOST);
        }
    }
    // Istio's route timeout (none by default): Envoy tells the upstream how long it has.
    let route_timeout = route
        .timeout
        .and_then(|t| t.to_std())
        .filter(|t| !t.is_zero());
    if let Some(t) = route_timeout {
        let ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
        parts.headers.insert(
            HeaderName::from_static("x-envoy-expected-rq-timeout-ms"),
            HeaderValue::from(ms),
        );
    }
    let up_req = Request::from_parts(parts, body::boxed(body));
    let sent = Instant::now();
    let exchange = ctx.pools.send(ep.addr, proto, up_req, &cluster.circuit);
    let result = match route_timeout {
        Some(t) => match tokio::time::timeout(t, exchange).await {
            Ok(r) => r,
            Err(_) => {
                cluster.stats.rq_timeout.fetch_add(1, Ordering::Relaxed);
                return fail(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream request timeout".into(),
                    "UT",
                );
            }
        },
        None => exchange.await,
    };
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            if e.response_flag() == "UF" {
                cluster
                    .stats
                    .cx_connect_fail
                    .fetch_add(1, Ordering::Relaxed);
            }
            tracing::debug!(cluster = %cluster.config.name, endpoint = %ep.addr, error = %e, "upstream request failed");
            // Envoy's wording (the detail stays in the debug log, as in Envoy 1.40's reply).
            let reason = match &e {
                crate::upstream::pool::UpstreamError::Connect(d) if d == "connect timeout" => {
                    "connection timeout".to_owned()
                }
                crate::upstream::pool::UpstreamError::Connect(_) => {
                    "remote connection failure".to_owned()
                }
                crate::upstream::pool::UpstreamError::Reset(d) => d.clone(),
                crate::upstream::pool::UpstreamError::Overflow => "overflow".to_owned(),
            };
            let mut reply = fail(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("upstream connect error or disconnect/reset before headers. reset reason: {reason}"),
                e.response_flag(),
            );
            // Envoy marks requests its circuit breakers refused.
            if matches!(e, crate::upstream::pool::UpstreamError::Overflow) {
                reply.0.headers_mut().insert(
                    HeaderName::from_static("x-envoy-overloaded"),
                    HeaderValue::from_static("true"),
                );
            }
            return reply;
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
        HeaderName::from_static("x-envoy-upstream-service-time"),
        HeaderValue::from(ms),
    );
    router::apply_headers(&mut parts.headers, &route.response_headers);
    router::apply_headers(&mut parts.headers, &wc.response_headers);
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
    (
        resp,
        Outcome {
            service,
            flags: "-",
        },
    )
}

/// `base` with its path and query replaced by those of `path` (scheme and authority kept).
fn merge_path(base: &Uri, path: Uri) -> Uri {
    let mut p = base.clone().into_parts();
    p.path_and_query = path.into_parts().path_and_query;
    Uri::from_parts(p).unwrap_or_else(|_| base.clone())
}
