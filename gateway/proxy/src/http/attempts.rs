//! The attempts of one forwarded request: an endpoint per attempt (another one on a retry),
//! one timer per attempt (the per-try timeout or what is left of the route's), the retry
//! decision and its jittered backoff, and Envoy's replies and flags when attempts run out.
//!
//! Runs on a worker; reports every attempt to outlier detection and keeps the retry budget.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::rc::Rc;

use http::header::{HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use meshgate_config::snapshot::retry::RetryPolicy;

use super::replay::{Replay, RETRY_BUFFER_LIMIT};
use crate::body::{self, Body};
use crate::upstream::cluster::{ClusterState, LiveEndpoint};
use crate::upstream::outlier::AttemptResult;
use crate::upstream::pool::{ConnectFailure, Proto, UpstreamError};
use crate::worker::WorkerCtx;
use meshgate_wasm::RequestHead;

/// Envoy's `host_selection_retry_max_attempts` under Istio: picks made to find an endpoint that
/// has not been tried yet.
const HOST_SELECTION_ATTEMPTS: usize = 5;

/// Why the last attempt produced no upstream response: the local reply and its flags.
pub(super) struct Failure {
    pub status: StatusCode,
    pub body: String,
    pub flags: &'static str,
    /// Envoy's response code details.
    pub details: &'static str,
    /// A circuit breaker refused the request (Envoy adds `x-envoy-overloaded: true`).
    pub overloaded: bool,
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
pub(super) struct Attempts<'a> {
    /// The cluster the route chose.
    pub cluster: &'a Arc<ClusterState>,
    /// The worker (its connection pools).
    pub ctx: &'a WorkerCtx,
    /// The wire protocol towards the cluster.
    pub proto: Proto,
    /// The request's consistent-hash key.
    pub hash: Option<u64>,
    /// The route's retry policy (`None`: one attempt).
    pub policy: Option<&'a RetryPolicy>,
    /// The per-try timeout.
    pub per_try: Option<Duration>,
    /// When the route timeout ends the request, all attempts and backoffs included.
    pub deadline: Option<tokio::time::Instant>,
    /// The endpoint of the latest attempt (for the access log).
    pub last_host: std::cell::Cell<Option<SocketAddr>>,
}

/// The response, when the final attempt was sent, and the response flags.
pub(super) type Answer = (Response<Body>, Instant, &'static str);

impl Attempts<'_> {
    pub(super) async fn run(&self, parts: AttemptHead, body: Body) -> Result<Answer, Failure> {
        let cluster = self.cluster;
        let max_attempts = self.policy.map_or(1, |p| p.num_retries.saturating_add(1));
        // A body that is already complete (most GETs) needs no copy to be sent again.
        let (mut single, replay) =
            if self.policy.is_some() && !http_body::Body::is_end_stream(&body) {
                (None, Some(Replay::new(body, RETRY_BUFFER_LIMIT)))
            } else {
                (Some(body), None)
            };
        let avoid_previous =
            self.policy.is_some_and(|p| p.avoid_previous_hosts) && cluster.hash_policy.is_none();
        let mut tried: Vec<SocketAddr> = Vec::new();
        let remote = self.policy.is_some_and(|p| p.retry_remote_localities);
        let mut tried_levels: Vec<usize> = Vec::new();
        let mut attempt: u32 = 1;
        let mut head = Some(parts);
        let mut _retry_guard = None;
        loop {
            let Some(ep) = self.pick(avoid_previous.then_some(&tried[..]), &tried_levels) else {
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
                if remote {
                    tried_levels.extend(cluster.level_of(ep.addr));
                }
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
    fn pick(&self, avoid: Option<&[SocketAddr]>, levels: &[usize]) -> Option<Arc<LiveEndpoint>> {
        // `retryRemoteLocalities`: a retry goes to a priority level not tried yet, if any.
        if !levels.is_empty() {
            if let Some(ep) = self.cluster.pick_other_level(levels, self.hash) {
                return Some(ep);
            }
        }
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

/// The head the attempts of a request are built from.
pub(super) enum AttemptHead {
    /// The gateway's alone: moved into the last attempt, copied for the others.
    Owned(Parts),
    /// Shared with the request's plugins (they read it after the request phase): every attempt
    /// gets a copy; the last one also gets the extensions.
    Shared(Rc<RequestHead>, Option<http::Extensions>),
}

impl AttemptHead {
    /// `parts` as a head to share with `chain`'s plugins, and its extensions.
    pub(super) fn share(
        mut parts: Parts,
        chain: &crate::wasm::filter::Chain,
    ) -> (Rc<RequestHead>, http::Extensions) {
        let extensions = std::mem::take(&mut parts.extensions);
        // The first attempt's count goes in now: the plugins see it, as in Envoy, and a copy
        // then replaces the value in place instead of growing its map.
        parts.headers.insert(
            super::names::X_ENVOY_ATTEMPT_COUNT,
            HeaderValue::from_static("1"),
        );
        (
            chain.shared_head(RequestHead::from_parts(parts)),
            extensions,
        )
    }
}

/// The request of attempt number `attempt` (see [`AttemptHead`]). `None` only if an owned head
/// is already gone.
fn attempt_request(
    head: &mut Option<AttemptHead>,
    attempt: u32,
    last: bool,
    body: Body,
) -> Option<Request<Body>> {
    // Istio sets include_request_attempt_count: the upstream learns the attempt number.
    const COUNTS: [&str; 9] = ["1", "2", "3", "4", "5", "6", "7", "8", "9"];
    let count = match COUNTS.get((attempt as usize).wrapping_sub(1)) {
        Some(c) => HeaderValue::from_static(c),
        None => HeaderValue::from(attempt),
    };
    let copy = |method: &http::Method, uri: &http::Uri, version, headers: &HeaderMap, body| {
        let mut req = Request::new(body);
        *req.method_mut() = method.clone();
        *req.uri_mut() = uri.clone();
        *req.version_mut() = version;
        *req.headers_mut() = headers.clone();
        req
    };
    match head.as_mut()? {
        AttemptHead::Owned(p) => {
            // Into the kept head, which has room for it: a copy's map is full to capacity and
            // would grow for one more header.
            p.headers.insert(super::names::X_ENVOY_ATTEMPT_COUNT, count);
            if !last {
                return Some(copy(&p.method, &p.uri, p.version, &p.headers, body));
            }
            match head.take() {
                Some(AttemptHead::Owned(p)) => Some(Request::from_parts(p, body)),
                _ => None,
            }
        }
        AttemptHead::Shared(h, extensions) => {
            let mut req = copy(&h.method, &h.uri, h.version, &h.headers, body);
            if last {
                if let Some(x) = extensions.take() {
                    *req.extensions_mut() = x;
                }
            }
            // The shared head already says 1; a later attempt's count replaces it in place.
            if attempt != 1 {
                req.headers_mut()
                    .insert(super::names::X_ENVOY_ATTEMPT_COUNT, count);
            }
            Some(req)
        }
    }
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
        UpstreamError::Connect(ConnectFailure::Timeout) => (
            "connection timeout",
            "upstream_reset_before_response_started{connection_timeout}",
        ),
        UpstreamError::Connect(ConnectFailure::Refused) => (
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
        .get(super::names::GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Did the upstream refuse the HTTP/2 stream (REFUSED_STREAM)?
fn is_refused_stream(e: &UpstreamError) -> bool {
    matches!(e, UpstreamError::Reset(d) if d.contains("refused"))
}
