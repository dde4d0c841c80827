//! The admin API (Envoy-style, on `--admin-addr`) and Istio's side ports: readiness on 15021
//! (`/healthz/ready`) and Prometheus on 15090 (`/stats/prometheus`). Runs on the control
//! thread; never on a worker.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::live::Shared;
use crate::upstream::locality::Locality;
use bytes::Bytes;
use http_body_util::Full;

/// Which endpoints a port serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRole {
    /// Everything.
    Admin,
    /// Readiness only (Istio's 15021).
    Readiness,
    /// Metrics only (Istio's 15090).
    Stats,
}

/// Binds an admin-style port; returns the bound address (port 0 picks one).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves admin requests on `listener` until the process ends.
pub async fn serve(listener: TcpListener, role: AdminRole, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, role, &shared)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn reply(status: StatusCode, ctype: &'static str, text: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    r
}

fn handle(req: Request<Incoming>, role: AdminRole, shared: &Shared) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let allowed = match role {
        AdminRole::Admin => true,
        AdminRole::Readiness => path == "/healthz/ready" || path == "/ready",
        AdminRole::Stats => path == "/stats/prometheus",
    };
    if !allowed || (req.method() != Method::GET && req.method() != Method::HEAD) {
        return reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into());
    }
    match path {
        "/ready" | "/healthz/ready" => {
            if shared.is_ready() {
                reply(StatusCode::OK, "text/plain", "LIVE\n".into())
            } else if shared.draining.load(Ordering::Acquire) {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "DRAINING\n".into(),
                )
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "PRE_INITIALIZING\n".into(),
                )
            }
        }
        "/stats/prometheus" => {
            let live = shared.live.load();
            let mut text = shared.metrics.render(&live);
            crate::wasm::stats::render(&mut text, &shared.wasm, &live);
            reply(StatusCode::OK, "text/plain; version=0.0.4", text)
        }
        "/config_dump" => {
            let live = shared.live.load();
            match serde_json::to_value(&*live.snapshot)
                .map(|mut dump| {
                    crate::wasm::dump::annotate(&mut dump, &live);
                    dump
                })
                .and_then(|d| serde_json::to_string_pretty(&d))
            {
                Ok(j) => reply(StatusCode::OK, "application/json", j),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    e.to_string(),
                ),
            }
        }
        "/clusters" => reply(StatusCode::OK, "text/plain", clusters(shared)),
        "/" => reply(
            StatusCode::OK,
            "text/plain",
            "meshgate admin: /ready /healthz/ready /stats/prometheus /config_dump /clusters\n"
                .into(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// Envoy's `/clusters` text format: `cluster::host:port::stat::value`.
fn clusters(shared: &Shared) -> String {
    let live = shared.live.load();
    let mut names: Vec<_> = live.clusters.keys().collect();
    names.sort();
    let mut out = String::new();
    for name in names {
        let c = &live.clusters[name];
        let l = c.circuit.limits;
        let _ = writeln!(
            out,
            "{name}::default_priority::max_connections::{}",
            l.max_connections
        );
        let _ = writeln!(
            out,
            "{name}::default_priority::max_pending_requests::{}",
            l.max_pending_requests
        );
        let _ = writeln!(
            out,
            "{name}::default_priority::max_requests::{}",
            l.max_requests
        );
        let _ = writeln!(
            out,
            "{name}::default_priority::max_retries::{}",
            l.max_retries
        );
        let _ = writeln!(out, "{name}::discovery::{:?}", c.config.discovery);
        let (counters, gauges) = (c.circuit.counters(), c.circuit.gauges());
        for (stat, value, _) in c.stats.values().iter().chain(&counters).chain(&gauges) {
            let _ = writeln!(out, "{name}::{stat}::{value}");
        }
        for (stat, value, _, _) in c.outlier.iter().flat_map(|d| d.stats.values()) {
            let _ = writeln!(out, "{name}::outlier_detection.{stat}::{value}");
        }
        for ep in &c.endpoints.load().endpoints {
            let a = ep.addr;
            let _ = writeln!(out, "{name}::{a}::weight::{}", ep.weight);
            let loc = c
                .config
                .endpoints
                .get(ep.source)
                .map(|e| e.locality.as_str());
            let loc = Locality::parse(loc.unwrap_or_default());
            let _ = writeln!(out, "{name}::{a}::region::{}", loc.region);
            let _ = writeln!(out, "{name}::{a}::zone::{}", loc.zone);
            let _ = writeln!(out, "{name}::{a}::sub_zone::{}", loc.subzone);
            let _ = writeln!(out, "{name}::{a}::priority::{}", ep.priority);
            let _ = writeln!(
                out,
                "{name}::{a}::rq_active::{}",
                ep.active.load(Ordering::Relaxed)
            );
            let _ = writeln!(
                out,
                "{name}::{a}::rq_total::{}",
                ep.requests.load(Ordering::Relaxed)
            );
            let health = if ep.outlier.is_ejected() {
                "/failed_outlier_check"
            } else {
                "healthy"
            };
            let _ = writeln!(out, "{name}::{a}::health_flags::{health}");
        }
    }
    out
}
