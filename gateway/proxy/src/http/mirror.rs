//! Request mirroring (VirtualService `mirror`/`mirrors` with their percentages), as Envoy's
//! shadowing does it under Istio: a fire-and-forget copy of the upstream request to another
//! cluster, its authority suffixed `-shadow`, its response thrown away.
//!
//! The copy never holds the main request back: the request body is teed frame by frame into a
//! bounded buffer per mirror; a mirror that falls behind by more than that is cut off (its
//! request fails), the main request goes on. Runs on the worker (`Rc`, `spawn_local`).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::request::Parts;
use http::{Request, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use super::forward::{set_protocol, target_uri};
use crate::body::{Body, BoxError, Watch};
use crate::router;
use crate::upstream::cluster::ClusterState;
use crate::worker::WorkerCtx;

/// Bytes of request body a mirror may lag behind the main request before it is cut off.
const MIRROR_LAG_LIMIT: usize = 256 * 1024;
/// How long a mirrored request may take when its route sets no timeout.
pub const DEFAULT_MIRROR_TIMEOUT: Duration = Duration::from_secs(30);

/// Which mirrors of a route this request goes to (each rolls its own percentage).
pub fn chosen<'a>(mirrors: &'a [(Arc<str>, f64)]) -> impl Iterator<Item = &'a Arc<str>> + 'a {
    mirrors
        .iter()
        .filter(|(_, pct)| *pct >= 100.0 || fastrand::f64() * 100.0 < *pct)
        .map(|(c, _)| c)
}

/// Sends a copy of the upstream request head `main` (body from `body`) to `cluster`, in the
/// background. `downstream` is the client's protocol, `host` the authority the main request
/// goes to.
pub fn send(
    ctx: &Rc<WorkerCtx>,
    cluster: Arc<ClusterState>,
    main: &Parts,
    downstream: Version,
    host: &str,
    body: Body,
    timeout: Duration,
) {
    let proto = cluster.wire_protocol(downstream);
    let shadow = shadow_authority(host);
    let Some(uri) = target_uri(proto, &shadow, router::path_and_query(&main.uri)) else {
        return;
    };
    let (mut head, ()) = Request::new(()).into_parts();
    head.method = main.method.clone();
    head.uri = uri;
    head.headers = main.headers.clone();
    // As Envoy's shadow (an internal request of its async client): first attempt, internal.
    head.headers.insert(
        super::names::X_ENVOY_ATTEMPT_COUNT,
        HeaderValue::from_static("1"),
    );
    head.headers.insert(
        super::names::X_ENVOY_INTERNAL,
        HeaderValue::from_static("true"),
    );
    set_protocol(&mut head.version, &mut head.headers, proto, &shadow);
    let req = Request::from_parts(head, body);
    let ctx = ctx.clone();
    tokio::task::spawn_local(async move {
        let Some(ep) = cluster.pick(None) else {
            return;
        };
        let _active = ClusterState::start(&ep);
        cluster
            .stats
            .rq_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let exchange = ctx.pools.send(ep.addr, proto, req, &cluster.circuit);
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(resp)) => {
                // Read the answer to its end (bounded by the same timeout) so an HTTP/1.1
                // connection can be reused; its content goes nowhere.
                let mut body = resp.into_body();
                let drain = async { while let Some(Ok(_)) = body.frame().await {} };
                let _ = tokio::time::timeout(timeout, drain).await;
            }
            Ok(Err(e)) => {
                tracing::debug!(cluster = %cluster.config.name, error = %e, "mirrored request failed");
            }
            Err(_) => {
                tracing::debug!(cluster = %cluster.config.name, "mirrored request timed out");
            }
        }
    });
}

/// `host` with Envoy's `-shadow` suffix on the host part (before a port, if any).
pub fn shadow_authority(host: &str) -> String {
    let (name, port) = router::split_authority(host);
    match port {
        Some(p) => format!("{name}-shadow:{p}"),
        None => format!("{name}-shadow"),
    }
}

/// What the main body and one mirror's body share.
#[derive(Default)]
struct Tap {
    frames: VecDeque<Frame<Bytes>>,
    bytes: usize,
    ended: bool,
    cut: bool,
    waker: Option<Waker>,
}

impl Tap {
    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// Watches the main request body and copies every frame to the mirrors' bodies.
#[derive(Default)]
pub struct Tee {
    taps: Vec<Rc<RefCell<Tap>>>,
}

/// The body of one mirrored request, fed by a [`Tee`].
pub struct MirrorBody {
    tap: Rc<RefCell<Tap>>,
    hint: SizeHint,
}

impl Tee {
    /// A body that receives a copy of every frame the main body yields from now on; `hint`
    /// is the main body's size hint.
    pub fn mirror(&mut self, hint: SizeHint) -> MirrorBody {
        let tap = Rc::new(RefCell::new(Tap::default()));
        self.taps.push(tap.clone());
        MirrorBody { tap, hint }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("mirror fell behind the main request and was cut off")]
struct CutOff;

impl Watch for Tee {
    fn frame(&mut self, frame: &Frame<Bytes>) {
        for tap in &self.taps {
            let mut t = tap.borrow_mut();
            if t.cut {
                continue;
            }
            let copy = if let Some(d) = frame.data_ref() {
                t.bytes += d.len();
                Frame::data(d.clone())
            } else if let Some(tr) = frame.trailers_ref() {
                Frame::trailers(tr.clone())
            } else {
                continue;
            };
            if t.bytes > MIRROR_LAG_LIMIT {
                t.cut = true;
                t.frames.clear();
            } else {
                t.frames.push_back(copy);
            }
            t.wake();
        }
    }

    /// A main body that failed or was dropped before its end leaves the mirrors with an
    /// incomplete body: they fail rather than send a truncated one.
    fn end(&mut self, complete: bool) {
        for tap in &self.taps {
            let mut t = tap.borrow_mut();
            if complete {
                t.ended = true;
            } else {
                t.cut = true;
            }
            t.wake();
        }
    }
}

impl HttpBody for MirrorBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut t = self.tap.borrow_mut();
        if t.cut {
            return Poll::Ready(Some(Err(Box::new(CutOff))));
        }
        if let Some(f) = t.frames.pop_front() {
            if let Some(d) = f.data_ref() {
                t.bytes -= d.len();
            }
            return Poll::Ready(Some(Ok(f)));
        }
        if t.ended {
            return Poll::Ready(None);
        }
        t.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_suffix_goes_before_the_port() {
        assert_eq!(
            shadow_authority("app.example.com"),
            "app.example.com-shadow"
        );
        assert_eq!(
            shadow_authority("app.example.com:8080"),
            "app.example.com-shadow:8080"
        );
    }

    #[test]
    fn percentages_choose_mirrors() {
        let always: Vec<(Arc<str>, f64)> = vec![(Arc::from("a"), 100.0), (Arc::from("b"), 0.0)];
        let picked: Vec<&Arc<str>> = chosen(&always).collect();
        assert_eq!(picked.len(), 1);
        assert_eq!(&**picked[0], "a");
        let half: Vec<(Arc<str>, f64)> = vec![(Arc::from("h"), 50.0)];
        let n = (0..10_000).filter(|_| chosen(&half).count() == 1).count();
        // 50% of 10,000: sd 50; +-6 sd.
        assert!((4700..=5300).contains(&n), "{n}");
    }
}
