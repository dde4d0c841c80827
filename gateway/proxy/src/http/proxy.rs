//! One request through the gateway: route lookup on the current snapshot, the route's action,
//! and for forwarding routes the upstream exchange with Envoy's edge rules and error replies.
//!
//! Runs on a worker thread; reads shared state only through one `ArcSwap` load per request.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use meshgate_config::snapshot::route::{Forward, Route, RouteAction};

use super::headers;
use super::local_reply;
use super::ConnInfo;
use crate::access_log;
use crate::body::{self, Body};
use crate::router::{self, View};
use crate::telemetry::RequestKey;
use crate::upstream::lb::{hash_of, HashPolicy};
use crate::wasm::filter::Chain;
use crate::worker::WorkerCtx;

/// What the request became, for metrics and logs.
pub(super) struct Outcome {
    /// The destination service (`unknown` when the request went nowhere).
    pub service: Arc<str>,
    /// Envoy's response flags (`-` for none).
    pub flags: &'static str,
    /// Envoy's response code details (`via_upstream`, `route_not_found`, ...).
    pub details: &'static str,
    /// The cluster the request went to.
    pub cluster: Option<Arc<str>>,
    /// The endpoint of the last attempt.
    pub upstream_host: Option<std::net::SocketAddr>,
}

impl Outcome {
    /// A request answered by the gateway itself.
    pub(super) fn local(flags: &'static str, details: &'static str) -> Outcome {
        Outcome {
            service: unknown(),
            flags,
            details,
            cluster: None,
            upstream_host: None,
        }
    }

    /// Whether the gateway answered itself (every answer but an upstream's is a local reply).
    fn is_local(&self) -> bool {
        self.details != "via_upstream"
    }

    /// Tells the request's plugins what became of it (for `response.*` and `upstream.*`
    /// properties read in their response phase and after).
    fn tell(&self, c: &Chain) {
        let (upstream, details, flags) = (self.upstream_host, self.details, self.flags);
        c.update(|i| {
            i.upstream = upstream;
            i.response_code_details = Some(details);
            i.response_flags = Some(flags);
        });
    }
}

/// Handles one downstream request and always produces a response.
pub async fn handle(
    mut req: Request<Incoming>,
    conn: ConnInfo,
    ctx: Rc<WorkerCtx>,
) -> Response<Body> {
    let start = Instant::now();
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let log = ctx.shared.settings.access_log.clone();
    let mut entry = log.as_ref().map(|_| {
        let received = access_log::Received::default();
        req.extensions_mut().insert(received.clone());
        access_log::Entry::new(start, conn.local, conn.peer, received)
    });
    let (mut resp, outcome) = route_and_forward(req, conn, &ctx, &mut entry, None).await;
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
    if let (Some(log), Some(mut e)) = (log, entry) {
        e.status = resp.status().as_u16();
        e.flags = outcome.flags;
        e.details = outcome.details;
        e.cluster = outcome.cluster.or(e.cluster);
        e.upstream_host = outcome.upstream_host;
        e.upstream_service_time = resp.headers().get("x-envoy-upstream-service-time").cloned();
        return resp.map(|b| access_log::Logged::wrap(b, e, log));
    }
    resp
}

/// The `unknown` service name, shared.
pub(super) fn unknown() -> Arc<str> {
    thread_local! {
        static UNKNOWN: Arc<str> = Arc::from("unknown");
    }
    UNKNOWN.with(Arc::clone)
}

/// The connection manager's checks and edge rules, before routing: the reply when they refuse
/// the request.
fn edge(
    req: &mut Request<Incoming>,
    conn: &ConnInfo,
    ctx: &WorkerCtx,
    entry: &mut Option<access_log::Entry>,
) -> Option<(Response<Body>, Outcome)> {
    // Envoy's max_request_headers_kb (60 KiB of header names and values).
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if header_bytes > super::MAX_HEADER_BYTES {
        return Some((
            local_reply::text(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, ""),
            Outcome::local("DPE", "request_headers_too_large"),
        ));
    }
    // The connection manager's edge rules, before routing as in Envoy: headers only Envoy may
    // set are dropped, the client joins x-forwarded-for, the request gets its id.
    headers::strip_internal(req.headers_mut());
    headers::forwarded(req.headers_mut(), conn.peer.ip(), "http");
    headers::request_id(
        req.headers_mut(),
        ctx.shared.settings.preserve_external_request_id,
    );
    if let Some(e) = entry.as_mut() {
        e.request(req);
    }
    None
}

/// Routes a request and carries out the route. `ran` is the plugin chain a request no route
/// matched went through already: it is routed again as the plugins left it (as Envoy does once
/// a plugin's edit has cleared its route cache), and its plugins do not run a second time.
/// One function, edge rules included: a future built by a separate call would be moved
/// (kilobytes of state) for every request.
async fn route_and_forward(
    mut req: Request<Incoming>,
    conn: ConnInfo,
    ctx: &Rc<WorkerCtx>,
    entry: &mut Option<access_log::Entry>,
    ran: Option<Rc<Chain>>,
) -> (Response<Body>, Outcome) {
    if ran.is_none() {
        if let Some(refused) = edge(&mut req, &conn, ctx, entry) {
            return refused;
        }
    }
    let live = &ctx.shared.live.load_full();
    let no_route = || {
        (
            local_reply::text(StatusCode::NOT_FOUND, ""),
            Outcome::local("NR", "route_not_found"),
        )
    };
    // Cheap clones (shared bytes), so the request can be consumed later.
    let Some(authority_value) = router::authority_value(&req) else {
        return (
            local_reply::text(StatusCode::BAD_REQUEST, "missing host header"),
            Outcome::local("DPE", "missing_host_header"),
        );
    };
    let authority = authority_value.as_str();
    let Some(listener) = live.listener(conn.local_port) else {
        return no_route();
    };
    // Boxed: a rare path, whose state would otherwise make every request's future bigger.
    let Some(vhost) = listener.routes.lookup(authority) else {
        return Box::pin(unrouted(req, conn, ctx, live, entry, ran)).await;
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
    if let Some(e) = entry.as_mut() {
        e.path.clear();
        e.path.push_str(&path);
    }
    let (host, port) = router::split_authority(authority);
    if vhost.require_tls && scheme == "http" {
        let mut r = local_reply::text(StatusCode::MOVED_PERMANENTLY, "");
        if let Ok(v) = HeaderValue::from_str(&format!("https://{host}{path}")) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return (r, Outcome::local("-", "direct_response"));
    }
    let method = req.method().clone();
    let view = View {
        method: method.as_str(),
        scheme,
        authority,
        path: &path,
        headers: req.headers(),
    };
    let Some((mut route, mut matched_prefix)) = router::select(&vhost.routes, &view) else {
        return Box::pin(unrouted(req, conn, ctx, live, entry, ran)).await;
    };
    // WasmPlugins run on the routed request, before CORS, faults and the router's action; the
    // route is chosen again after them, since they may have changed what it matched on (as
    // Envoy clears its route cache when a plugin edits request headers).
    // No allocation when no plugin applies: the list is walked, not collected.
    let mut plugins = live
        .plugins_for(Some(&route.name), conn.local_port)
        .peekable();
    let mut chain = None;
    let mut path = path;
    let req = if let Some(c) = ran {
        // Routed by what the plugins left: nothing to run or choose again.
        let (parts, body) = req.into_parts();
        let req = Request::from_parts(parts, c.request_body(body::boxed(body)));
        chain = Some(c);
        req
    } else if plugins.peek().is_none() {
        req.map(body::boxed)
    } else {
        // request_plugins, written out here: its future, built by a call, would be moved
        // into this one's state for every request.
        let (c, opened) = {
            let facts = stream_facts(&conn, req.version());
            let cluster = match &route.action {
                RouteAction::Forward(f) => f.clusters.first().map(|c| &c.cluster),
                _ => None,
            };
            Chain::open(ctx, plugins, move |i| {
                facts(i);
                i.route_name = Some(route.name.clone());
                i.cluster_name = cluster.cloned();
            })
        };
        log_plugins(ctx, entry, &c);
        if let Err((r, details)) = opened {
            return (c.response(r, true).await, Outcome::local("-", details));
        }
        let (parts, body) = req.into_parts();
        let end_of_stream = http_body::Body::is_end_stream(&body);
        let parts = match c.request_headers(parts, end_of_stream).await {
            Ok(parts) => parts,
            Err((r, details)) => {
                return (c.response(r, true).await, Outcome::local("-", details));
            }
        };
        let req = Request::from_parts(parts, c.request_body(body::boxed(body)));
        // Chosen again only if the plugins' edits could change the choice: the same inputs
        // choose the same route.
        let edits = c.request_edits();
        if edits.pseudo || (edits.headers && router::headers_matter(&vhost.routes, route)) {
            let authority = router::authority_value(&req);
            let view = View {
                method: req.method().as_str(),
                scheme,
                authority: authority.as_ref().map_or("", |a| a.as_str()),
                path: req.uri().path_and_query().map_or("/", |p| p.as_str()),
                headers: req.headers(),
            };
            match router::select(&vhost.routes, &view) {
                Some((r, m)) => (route, matched_prefix) = (r, m),
                None => {
                    c.record_request_of(&req);
                    return (
                        c.response(no_route().0, true).await,
                        Outcome::local("NR", "route_not_found"),
                    );
                }
            }
            if view.path != path {
                path = view.path.to_owned().into();
            }
        }
        chain = Some(c);
        req
    };
    if let Some(c) = chain.as_ref().filter(|_| !shares_head_later(route)) {
        c.record_request_of(&req);
    }
    let path: &str = &path;
    if let Some(e) = entry.as_mut() {
        e.route = Some(route.name.clone());
        // Envoy logs the cluster the route chose and the authority after a rewrite, even
        // when a filter answers before the upstream is reached.
        if let RouteAction::Forward(f) = &route.action {
            e.cluster = f.clusters.first().map(|c| c.cluster.clone());
            if let Some(a) = f.authority_rewrite.as_deref() {
                e.authority = HeaderValue::from_str(a).ok();
            }
        }
    }
    // CORS comes after the plugins, as istiod orders Envoy's filters: its preflight answer and
    // the headers it adds to a response go back through the plugins' response phase.
    if let Some(cors) = &route.cors {
        if let Some(r) = super::cors::preflight(cors, &method, req.headers()) {
            // Boxed: a rare path, whose state would otherwise make every request's future bigger.
            return Box::pin(preflight_answered(chain, r)).await;
        }
    }
    let origin = route
        .cors
        .as_ref()
        .and_then(|_| req.headers().get(header::ORIGIN).cloned());
    let (mut resp, mut outcome) = act(
        req,
        route,
        matched_prefix,
        live,
        conn,
        ctx,
        authority,
        host,
        port,
        listener.service_port,
        scheme,
        path,
        chain.as_deref(),
    )
    .await;
    if let Some(cors) = &route.cors {
        super::cors::decorate(cors, origin.as_ref(), resp.headers_mut());
    }
    if let Some(c) = chain {
        // A plugin buffered more request body than the limit: Envoy's 413, whatever the
        // upstream exchange (cut off with the body) came to.
        if c.request_too_large() {
            resp = local_reply::text(StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large");
            (outcome.flags, outcome.details) = ("-", "request_payload_too_large");
        }
        outcome.tell(&c);
        resp = c.response(resp, outcome.is_local()).await;
        Chain::recycle(c);
    }
    (resp, outcome)
}

/// A CORS preflight answer, back through the request's plugins (if any).
async fn preflight_answered(
    chain: Option<Rc<Chain>>,
    r: Response<Body>,
) -> (Response<Body>, Outcome) {
    let outcome = Outcome::local("-", "cors_response");
    let Some(c) = chain else {
        return (r, outcome);
    };
    outcome.tell(&c);
    (c.response(r, true).await, outcome)
}

/// Whether forward() will share the head it sends upstream with the plugins (they read it after
/// their phase); a request that ends otherwise (or is held up first) gets a copy instead.
fn shares_head_later(route: &Route) -> bool {
    matches!(route.action, RouteAction::Forward(_)) && route.fault.is_none() && route.cors.is_none()
}

/// Keeps the request's plugin chain for the access log, when its format shows the plugins.
fn log_plugins(ctx: &WorkerCtx, entry: &mut Option<access_log::Entry>, c: &Rc<Chain>) {
    let wants = |l: &Arc<access_log::AccessLog>| l.wants_plugins();
    if let Some(e) = entry
        .as_mut()
        .filter(|_| ctx.shared.settings.access_log.as_ref().is_some_and(wants))
    {
        e.plugins = Some(c.clone());
    }
}

/// What the plugins learn of a stream when it opens, written into each plugin's facts of it
/// (the same arrival time for all).
fn stream_facts(
    conn: &ConnInfo,
    version: http::Version,
) -> impl Fn(&mut meshgate_wasm::StreamInfo) + Copy {
    let (source, destination) = (conn.peer, conn.local);
    let start = std::time::SystemTime::now();
    let protocol = super::protocol_name(version);
    move |i| {
        i.source = Some(source);
        i.destination = Some(destination);
        i.start = Some(start);
        i.protocol = protocol;
    }
}

/// A request no route matches. As in Envoy, whose router answers 404 at the end of the filter
/// chain, the plugins that are not scoped to routes see the request first (and may answer it
/// themselves), and the 404 goes back through their response phase. A request their edits
/// move onto a route is routed after all (Envoy's route cache, cleared by a plugin's edit).
/// `ran`: the plugins ran already and the request still matches no route.
async fn unrouted(
    req: Request<Incoming>,
    conn: ConnInfo,
    ctx: &Rc<WorkerCtx>,
    live: &Arc<crate::live::Live>,
    entry: &mut Option<access_log::Entry>,
    ran: Option<Rc<Chain>>,
) -> (Response<Body>, Outcome) {
    let not_found = || local_reply::text(StatusCode::NOT_FOUND, "");
    let outcome = || Outcome::local("NR", "route_not_found");
    let c = match ran {
        // The plugins ran and the request still matches no route.
        Some(c) => c,
        None => {
            let mut plugins = live.plugins_for(None, conn.local_port).peekable();
            if plugins.peek().is_none() {
                return (not_found(), outcome());
            }
            let facts = stream_facts(&conn, req.version());
            let (c, parts, body) = match request_plugins(ctx, entry, plugins, facts, req).await {
                Ok(opened) => opened,
                Err(reply) => return reply,
            };
            // Routed again as the plugins left it.
            let req = Request::from_parts(parts, body);
            return Box::pin(route_and_forward(req, conn, ctx, entry, Some(c))).await;
        }
    };
    // The body is not read (dropped with the request): the answer does not depend on it.
    let (parts, _body) = req.into_parts();
    c.record_request(&parts);
    let outcome = outcome();
    outcome.tell(&c);
    (c.response(not_found(), true).await, outcome)
}

/// Opens the request's plugin chain and runs the request head through it: the chain, the head
/// as the plugins left it and the body; or the reply (through the plugins' response phase)
/// that ends the request. For a request no route matched; `route_and_forward` has the same
/// steps written out.
async fn request_plugins<'a>(
    ctx: &Rc<WorkerCtx>,
    entry: &mut Option<access_log::Entry>,
    plugins: impl Iterator<Item = &'a Arc<crate::wasm::LoadedPlugin>>,
    facts: impl Fn(&mut meshgate_wasm::StreamInfo),
    req: Request<Incoming>,
) -> Result<(Rc<Chain>, http::request::Parts, Incoming), (Response<Body>, Outcome)> {
    let (c, opened) = Chain::open(ctx, plugins, facts);
    log_plugins(ctx, entry, &c);
    if let Err((r, details)) = opened {
        return Err((r, Outcome::local("-", details)));
    }
    let (parts, body) = req.into_parts();
    let end_of_stream = http_body::Body::is_end_stream(&body);
    match c.request_headers(parts, end_of_stream).await {
        Ok(parts) => Ok((c, parts, body)),
        Err((r, details)) => Err((c.response(r, true).await, Outcome::local("-", details))),
    }
}

/// Carries out a matched route's action.
#[allow(clippy::too_many_arguments)]
async fn act(
    mut req: Request<Body>,
    route: &Route,
    matched_prefix: Option<&str>,
    live: &Arc<crate::live::Live>,
    conn: ConnInfo,
    ctx: &Rc<WorkerCtx>,
    authority: &str,
    host: &str,
    port: Option<u16>,
    service_port: u16,
    scheme: &str,
    path: &str,
    chain: Option<&Chain>,
) -> (Response<Body>, Outcome) {
    let done = |resp, flags, details| (resp, Outcome::local(flags, details));
    let vars = super::vars::Vars {
        peer: conn.peer,
        local: conn.local,
        protocol: super::protocol_name(req.version()),
        route: &route.name,
        cluster: None,
        upstream: None,
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
            router::apply_headers(r.headers_mut(), &route.response_headers, &vars, false);
            done(r, "-", "direct_response")
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
            router::apply_headers(r.headers_mut(), &route.response_headers, &vars, false);
            done(r, "-", "direct_response")
        }
        RouteAction::Forward(fwd) => {
            let mut fault_flags = "-";
            if let Some(fault) = &route.fault {
                let injected = super::fault::inject(fault).await;
                if let Some(mut r) = injected.abort {
                    router::apply_headers(r.headers_mut(), &route.response_headers, &vars, false);
                    return done(r, injected.flags, "fault_filter_abort");
                }
                fault_flags = injected.flags;
            }
            let upgrade = headers::is_upgrade(req.headers());
            let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
            let (hash, set_cookie) = hash_key(&req, conn.peer, fwd, live);
            // Boxed: the upstream exchange is most of the request's state, and hyper moves the
            // request future around (into its stream task) before it runs; a pointer moves
            // faster than the whole state machine.
            let (mut resp, outcome) = Box::pin(super::forward::forward(
                req,
                fwd,
                route,
                matched_prefix,
                authority,
                conn,
                ctx,
                live,
                hash,
                on_upgrade,
                chain,
            ))
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
    req: &Request<Body>,
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

/// `base` with its path and query replaced by those of `path` (scheme and authority kept).
fn merge_path(base: &Uri, path: Uri) -> Uri {
    let mut p = base.clone().into_parts();
    p.path_and_query = path.into_parts().path_and_query;
    Uri::from_parts(p).unwrap_or_else(|_| base.clone())
}
