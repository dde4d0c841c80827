//! Fault injection (VirtualService `fault`), applied before the request goes upstream, as
//! Envoy's fault filter does under Istio: a fixed delay and/or an abort, each for a percentage
//! of requests (all of them when no percentage is given).

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use meshgate_config::model::common::Percent;
use meshgate_config::model::virtual_service::HttpFaultInjection;

use super::local_reply;
use crate::body::{self, Body};

/// What the fault filter did.
pub struct Injected {
    /// The abort reply, when the request was aborted.
    pub abort: Option<Response<Body>>,
    /// Envoy's response flags: `DI` (delayed), `FI` (aborted), or both.
    pub flags: &'static str,
}

/// The share of requests (0-100) a fault applies to: `percentage`, else the deprecated integer
/// `percent`, else all.
fn share(percentage: Option<Percent>, percent: i32) -> f64 {
    match (percentage, percent) {
        (Some(p), _) => p.value,
        (None, p) if p > 0 => f64::from(p),
        _ => 100.0,
    }
}

fn hit(pct: f64) -> bool {
    pct >= 100.0 || fastrand::f64() * 100.0 < pct
}

/// gRPC status codes by name (what `grpcStatus` takes).
fn grpc_code(name: &str) -> u16 {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES
        .iter()
        .position(|n| *n == name)
        .map_or(2, |i| i as u16)
}

/// Applies `fault`: sleeps for a delay, then builds the abort reply if one hits.
pub async fn inject(fault: &HttpFaultInjection) -> Injected {
    let mut delayed = false;
    if let Some(d) = &fault.delay {
        let wait = d
            .fixed_delay
            .and_then(|d| d.to_std())
            .unwrap_or(Duration::ZERO);
        if !wait.is_zero() && hit(share(d.percentage, d.percent)) {
            tokio::time::sleep(wait).await;
            delayed = true;
        }
    }
    let abort = fault
        .abort
        .as_ref()
        .filter(|a| hit(share(a.percentage, 0)))
        .and_then(|a| {
            if !a.grpc_status.is_empty() {
                let mut r = Response::new(body::empty());
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/grpc"),
                );
                r.headers_mut()
                    .insert("grpc-status", HeaderValue::from(grpc_code(&a.grpc_status)));
                r.headers_mut().insert(
                    "grpc-message",
                    HeaderValue::from_static("fault filter abort"),
                );
                return Some(r);
            }
            let status = u16::try_from(a.http_status)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())?;
            Some(local_reply::text(status, "fault filter abort"))
        });
    let flags = match (delayed, abort.is_some()) {
        (true, true) => "DI,FI",
        (true, false) => "DI",
        (false, true) => "FI",
        (false, false) => "-",
    };
    Injected { abort, flags }
}
