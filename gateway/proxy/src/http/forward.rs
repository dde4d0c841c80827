//! The upstream side of a forwarding route: the request as the upstream gets it (edge rules,
//! rewrites, header edits), then attempts on endpoints of the chosen cluster with the route's
//! retry policy (Istio's default when it sets none), per-try and whole-request timeouts, and
//! Envoy's local replies and response flags when attempts fail.
//!
//! Runs on a worker; a request body is buffered only as far as a retry needs (`replay`).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use meshgate_config::snapshot::cluster::UpstreamProtocol;
use meshgate_config::snapshot::retry::RetryPolicy;
use meshgate_config::snapshot::route::{Forward, Route};

use super::headers;
use super::local_reply;
use super::mirror;
use super::proxy::Outcome;
use super::replay::{Replay, RETRY_BUFFER_LIMIT};
use super::vars::Vars;
use super::ConnInfo;
use crate::access_log;
use crate::body::{self, Body};
use crate::router;
use crate::upstream::cluster::{ClusterState, LiveEndpoint};
use crate::upstream::outlier::AttemptResult;
use crate::upstream::pool::{Proto, UpstreamError};
use crate::worker::WorkerCtx;

/// Envoy's `host_selection_retry_max_attempts` under Istio: picks made to find an endpoint that
/// has not been tried yet.
const HOST_SELECTION_ATTEMPTS: usize = 5;

/// Forwards a request on a matched route and returns the response the client gets.
#[allow(clippy::too_many_arguments)]
pub(super) async fn forward(
    req: Request<Incoming>,
    fwd: &Forward,
    route: &Route,
    matched_prefix: Option<String>,
    authority: &str,
    conn: ConnInfo,
    ctx: &Rc<WorkerCtx>,
    live: &crate::live::Live,
    hash: Option<u64>,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> (Response<Body>, Outcome) {
    let wc = router::pick_cluster(fwd);
    let Some(cluster) = live.cluster(&wc.cluster) else {
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
    let (mut parts, body) = req.into_parts();
    let proto = match cluster.protocol() {
        UpstreamProtocol::Http2 => Proto::Http2,
        _ => Proto::Http1,
    };
    if let Err(reason) = upstream_request(
        &mut parts,
        fwd,
        route,
        wc,
        matched_prefix.as_deref(),
        authority,
        proto,
        upgrade,
        &vars,
    ) {
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
            HeaderName::from_static("x-envoy-expected-rq-timeout-ms"),
            HeaderValue::from(ms),
        );
    }
    let mut body = match parts.extensions.get::<access_log::Received>() {
        Some(r) => Box::pin(access_log::Counted::new(body::boxed(body), r.clone())),
        None => body::boxed(body),
    };
    if !route.mirrors.is_empty() && !upgrade {
        let host = fwd.authority_rewrite.as_deref().unwrap_or(authority);
        let timeout = route_timeout.unwrap_or(mirror::DEFAULT_MIRROR_TIMEOUT);
        let mut tee = None;
        for name in mirror::chosen(&route.mirrors) {
            let Some(target) = live.cluster(name) else {
                continue;
            };
            let mirror_body = if http_body::Body::is_end_stream(&body) {
                body::empty()
            } else {
                let t = tee.get_or_insert_with(|| {
                    mirror::Tee::new(std::mem::replace(&mut body, body::empty()))
                });
                Box::pin(t.mirror())
            };
            mirror::send(ctx, target.clone(), &parts, host, mirror_body, timeout);
        }
        if let Some(t) = tee {
            body = Box::pin(t);
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
    let result = attempts.run(parts, body).await;
    let service = cluster.host.clone();
    let (resp, sent, flags) = match result {
        Ok(ok) => ok,
        Err(f) => {
            cluster.stats.rq_5xx.fetch_add(1, Ordering::Relaxed);
            let mut reply = local_reply::owned(f.status, f.body);
            if f.overloaded {
                reply.headers_mut().insert(
                    HeaderName::from_static("x-envoy-overloaded"),
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
        HeaderName::from_static("x-envoy-upstream-service-time"),
        HeaderValue::from(ms),
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
    if !same_target {
        let path = rewritten
            .as_deref()
            .unwrap_or_else(|| router::path_and_query(&parts.uri));
        let uri = match proto {
            Proto::Http2 => format!("http://{host}{path}").parse::<Uri>(),
            Proto::Http1 => path.parse::<Uri>(),
        };
        let Ok(uri) = uri else {
            return Err("invalid path after rewrite");
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
    Ok(())
}

/// Why the last attempt produced no upstream response: the local reply and its flags.
struct Failure {
    status: StatusCode,
    body: String,
    flags: &'static str,
    /// Envoy's response code details.
    details: &'static str,
    /// A circuit breaker refused the request (Envoy adds `x-envoy-overloaded: true`).
    overloaded: bool,
}

impl Failure {
    fn timeout(flags: &'static str, details: &'static str) -> Failure {
        Failure {
            status: StatusCode::GATEWAY_TIMEOUT,
            body: "upstream request timeout".into(),
            flags,
            details,
            overloaded: false,
        }
    }
}

/// How one attempt ended.
enum Attempt {
    Response(Response<Body>),
    Failed(UpstreamError),
    PerTryTimeout,
}

/// The attempts of one request on one cluster.
struct Attempts<'a> {
    cluster: &'a Arc<ClusterState>,
    ctx: &'a WorkerCtx,
    proto: Proto,
    hash: Option<u64>,
    policy: Option<&'a RetryPolicy>,
    per_try: Option<Duration>,
    /// When the route timeout ends the request, all attempts and backoffs included.
    deadline: Option<tokio::time::Instant>,
    /// The endpoint of the latest attempt (for the access log).
    last_host: std::cell::Cell<Option<SocketAddr>>,
}

/// The response, when the final attempt was sent, and the response flags.
type Answer = (Response<Body>, Instant, &'static str);

impl Attempts<'_> {
    async fn run(&self, parts: Parts, body: Body) -> Result<Answer, Failure> {
        let cluster = self.cluster;
        let max_attempts = self.policy.map_or(1, |p| p.num_retries.saturating_add(1));
        // A body that is already complete (most GETs) needs no copy to be sent again.
        let mut single = Some(body);
        let replay = match (&single, self.policy) {
            (Some(b), Some(_)) if !http_body::Body::is_end_stream(b) => {
                single.take().map(|b| Replay::new(b, RETRY_BUFFER_LIMIT))
            }
            _ => None,
        };
        let avoid_previous =
            self.policy.is_some_and(|p| p.avoid_previous_hosts) && cluster.hash_policy.is_none();
        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut attempt: u32 = 1;
        let mut head = Some(parts);
        let mut _retry_guard = None;
        loop {
            let Some(ep) = self.pick(avoid_previous.then_some(&tried[..])) else {
                cluster
                    .stats
                    .no_healthy_upstream
                    .fetch_add(1, Ordering::Relaxed);
                return Err(Failure {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    body: "no healthy upstream".into(),
                    flags: "UH",
                    details: "no_healthy_upstream",
                    overloaded: false,
                });
            };
            let _active = ClusterState::start(&ep);
            cluster.stats.rq_total.fetch_add(1, Ordering::Relaxed);
            self.last_host.set(Some(ep.addr));
            let last = attempt >= max_attempts;
            let req_body = match &replay {
                Some(r) => r.attempt().unwrap_or_else(body::empty),
                None => single.take().unwrap_or_else(body::empty),
            };
            let Some(req) = attempt_request(&mut head, attempt, last, req_body) else {
                return Err(Failure {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    body: String::new(),
                    flags: "-",
                    details: "-",
                    overloaded: false,
                });
            };
            let sent = Instant::now();
            let exchange = self
                .ctx
                .pools
                .send(ep.addr, self.proto, req, &cluster.circuit);
            // One timer per attempt: the per-try timeout or what is left of the route's.
            let left = self
                .deadline
                .map(|d| d.saturating_duration_since(tokio::time::Instant::now()));
            let limit = match (self.per_try, left) {
                (Some(p), Some(l)) => Some(p.min(l)),
                (p, l) => p.or(l),
            };
            let outcome = match limit {
                Some(t) => match tokio::time::timeout(t, exchange).await {
                    Ok(r) => r.map_or_else(Attempt::Failed, Attempt::Response),
                    Err(_) if self.route_timed_out() => {
                        cluster.report(&ep, AttemptResult::Timeout);
                        return Err(self.route_timeout());
                    }
                    Err(_) => {
                        cluster
                            .stats
                            .rq_per_try_timeout
                            .fetch_add(1, Ordering::Relaxed);
                        Attempt::PerTryTimeout
                    }
                },
                None => exchange
                    .await
                    .map_or_else(Attempt::Failed, Attempt::Response),
            };
            let verdict = match &outcome {
                Attempt::Response(r) => Some(AttemptResult::Response(r.status().as_u16())),
                Attempt::Failed(e) => e.attempt_result(),
                Attempt::PerTryTimeout => Some(AttemptResult::Timeout),
            };
            if let Some(v) = verdict {
                cluster.report(&ep, v);
            }
            let retryable = self.policy.is_some_and(|p| match &outcome {
                Attempt::Response(r) => p.retries_response(r.status().as_u16(), grpc_status(r)),
                // Envoy never retries what its circuit breakers refused.
                Attempt::Failed(UpstreamError::Overflow) => false,
                Attempt::Failed(e) => p.retries_failure(
                    matches!(e, UpstreamError::Connect(_)),
                    is_refused_stream(e),
                    false,
                ),
                Attempt::PerTryTimeout => p.retries_failure(false, false, true),
            });
            // `http.maxRetries` bounds the retries in flight on the cluster; the guard is held
            // through the backoff and the next attempt.
            let budget = (retryable && !last && replay.as_ref().is_none_or(Replay::replayable))
                .then(|| cluster.try_retry())
                .flatten();
            if let Some(guard) = budget {
                _retry_guard = Some(guard);
                // Make the next attempt after a jittered backoff.
                drop(outcome);
                cluster.stats.rq_retry.fetch_add(1, Ordering::Relaxed);
                if let Some(p) = self.policy {
                    let wait = p.backoff(attempt, fastrand::u64(..));
                    match self.deadline {
                        Some(d) => {
                            tokio::time::sleep_until(d.min(tokio::time::Instant::now() + wait))
                                .await
                        }
                        None => tokio::time::sleep(wait).await,
                    }
                    if self.route_timed_out() {
                        return Err(self.route_timeout());
                    }
                }
                tried.push(ep.addr);
                attempt += 1;
                continue;
            }
            if attempt > 1 && !retryable {
                cluster
                    .stats
                    .rq_retry_success
                    .fetch_add(1, Ordering::Relaxed);
            }
            let exhausted = retryable && last && self.policy.is_some_and(|p| p.num_retries > 0);
            if exhausted {
                cluster
                    .stats
                    .rq_retry_limit_exceeded
                    .fetch_add(1, Ordering::Relaxed);
            }
            return match outcome {
                Attempt::Response(r) => Ok((r, sent, if exhausted { "URX" } else { "-" })),
                Attempt::PerTryTimeout => Err(Failure::timeout(
                    if exhausted { "URX,UT" } else { "UT" },
                    "upstream_per_try_timeout",
                )),
                Attempt::Failed(e) => Err(failure(&e, &ep, cluster, attempt > 1, exhausted)),
            };
        }
    }

    /// Has the route timeout passed?
    fn route_timed_out(&self) -> bool {
        self.deadline
            .is_some_and(|d| tokio::time::Instant::now() >= d)
    }

    /// The reply when the route timeout ends the request.
    fn route_timeout(&self) -> Failure {
        self.cluster
            .stats
            .rq_timeout
            .fetch_add(1, Ordering::Relaxed);
        Failure::timeout("UT", "response_timeout")
    }

    /// An endpoint, preferring ones not in `avoid`: a few picks as Envoy's `previous_hosts`
    /// predicate makes, then (unlike Envoy, which then takes whatever came) any routable
    /// endpoint not tried yet, so a retry goes elsewhere whenever there is an elsewhere.
    fn pick(&self, avoid: Option<&[SocketAddr]>) -> Option<Arc<LiveEndpoint>> {
        let ep = self.cluster.pick(self.hash)?;
        let Some(avoid) = avoid.filter(|a| !a.is_empty()) else {
            return Some(ep);
        };
        if !avoid.contains(&ep.addr) {
            return Some(ep);
        }
        for _ in 1..HOST_SELECTION_ATTEMPTS {
            let again = self.cluster.pick(self.hash)?;
            if !avoid.contains(&again.addr) {
                return Some(again);
            }
        }
        Some(self.cluster.untried(avoid).unwrap_or(ep))
    }
}

/// The request of attempt number `attempt`: the head is moved into the last one and copied
/// for the others (a retry needs it again). `None` only if the head is already gone.
fn attempt_request(
    head: &mut Option<Parts>,
    attempt: u32,
    last: bool,
    body: Body,
) -> Option<Request<Body>> {
    // Istio sets include_request_attempt_count: the upstream learns the attempt number.
    head.as_mut()?.headers.insert(
        HeaderName::from_static("x-envoy-attempt-count"),
        HeaderValue::from(attempt),
    );
    if last {
        return head.take().map(|p| Request::from_parts(p, body));
    }
    let p = head.as_ref()?;
    let mut req = Request::new(body);
    *req.method_mut() = p.method.clone();
    *req.uri_mut() = p.uri.clone();
    *req.version_mut() = p.version;
    *req.headers_mut() = p.headers.clone();
    Some(req)
}

/// The local reply for an attempt that failed before a response, in Envoy's words.
fn failure(
    e: &UpstreamError,
    ep: &LiveEndpoint,
    cluster: &ClusterState,
    retried: bool,
    exhausted: bool,
) -> Failure {
    if e.response_flag() == "UF" {
        cluster
            .stats
            .cx_connect_fail
            .fetch_add(1, Ordering::Relaxed);
    }
    tracing::debug!(cluster = %cluster.config.name, endpoint = %ep.addr, error = %e, "upstream request failed");
    // Envoy's wording (the detail stays in the debug log, as in Envoy 1.40's reply).
    let (reason, details) = match e {
        UpstreamError::Connect(d) if d == "connect timeout" => (
            "connection timeout",
            "upstream_reset_before_response_started{connection_timeout}",
        ),
        UpstreamError::Connect(d) if d.contains("refused") => (
            "remote connection failure",
            "upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}",
        ),
        UpstreamError::Connect(_) => (
            "remote connection failure",
            "upstream_reset_before_response_started{remote_connection_failure}",
        ),
        UpstreamError::Reset(d) => (
            d.as_str(),
            "upstream_reset_before_response_started{connection_termination}",
        ),
        UpstreamError::Overflow => (
            "overflow",
            "upstream_reset_before_response_started{overflow}",
        ),
    };
    let lead = if retried {
        "retried and the latest reset reason"
    } else {
        "reset reason"
    };
    let flags = match (e.response_flag(), exhausted) {
        // Envoy writes the retry limit first.
        ("UF", true) => "URX,UF",
        ("UC", true) => "URX,UC",
        (f, _) => f,
    };
    Failure {
        status: StatusCode::SERVICE_UNAVAILABLE,
        body: format!(
            "upstream connect error or disconnect/reset before headers. {lead}: {reason}"
        ),
        flags,
        details,
        overloaded: matches!(e, UpstreamError::Overflow),
    }
}

/// The gRPC status a response carries in its headers (a trailers-only gRPC answer).
fn grpc_status(r: &Response<Body>) -> Option<u32> {
    r.headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Did the upstream refuse the HTTP/2 stream (REFUSED_STREAM)?
fn is_refused_stream(e: &UpstreamError) -> bool {
    matches!(e, UpstreamError::Reset(d) if d.contains("refused"))
}
