//! Plugin callouts (`proxy_http_call`): sent to an Istio cluster by name, or to the cluster of
//! a host, through the worker's upstream pools; the answer (or the failure: no headers) goes
//! back to the context that asked, which may resume its stream or send more callouts.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::BodyExt;
use meshgate_wasm::{CallResponse, Callout, GrpcCall, GrpcEvent, GrpcStreamOpen, HttpCall};

use super::vms::SharedVm;
use crate::body;
use crate::live::Live;
use crate::upstream::cluster::ClusterState;
use crate::worker::WorkerCtx;

/// Largest callout response body handed to a plugin.
const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// The cluster `upstream` names: a cluster name (`outbound|PORT|SUBSET|HOST`), else the
/// cluster of a host (`HOST` or `HOST:PORT`, no subset).
pub(super) fn resolve(live: &Live, upstream: &str) -> Option<Arc<ClusterState>> {
    if let Some(c) = live.cluster(upstream) {
        return Some(c.clone());
    }
    let (host, port) = crate::router::split_authority(upstream);
    live.snapshot
        .clusters
        .iter()
        .find(|c| c.subset.is_empty() && c.host == host && port.is_none_or(|p| c.port == p))
        .and_then(|c| live.cluster(&c.name))
        .cloned()
}

/// Sends each of `calls` on its own task; the answer goes back to the VM (if it still runs).
/// Inline, so the usual callback that queued nothing costs its caller one length check.
#[inline]
pub(super) fn dispatch(ctx: &Rc<WorkerCtx>, vm: &SharedVm, calls: Vec<Callout>) {
    if !calls.is_empty() {
        send_all(ctx, vm, calls);
    }
}

fn send_all(ctx: &Rc<WorkerCtx>, vm: &SharedVm, calls: Vec<Callout>) {
    for call in calls {
        let call = match call {
            Callout::GrpcStream(open) => {
                grpc_stream(ctx, vm, open);
                continue;
            }
            Callout::GrpcSend {
                token,
                message,
                end_stream,
            } => {
                stream_step(vm, token, Some(message), end_stream);
                continue;
            }
            Callout::GrpcHalfClose(token) => {
                stream_step(vm, token, None, true);
                continue;
            }
            Callout::GrpcCancel(token) => {
                let key = (Rc::as_ptr(vm) as usize, token);
                if let Some((_, task)) = STREAMS.with(|s| s.borrow_mut().remove(&key)) {
                    task.abort();
                }
                continue;
            }
            other => other,
        };
        let ctx = ctx.clone();
        let weak = Rc::downgrade(vm);
        tokio::task::spawn_local(async move {
            let answer = match &call {
                Callout::Http(c) => Answer::Http(match send(&ctx, c).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!(upstream = %c.upstream, error = %e.text(), "wasm callout failed");
                        e.response()
                    }
                }),
                Callout::Grpc(c) => Answer::Grpc(send_grpc(&ctx, c).await),
                _ => return,
            };
            let Some(vm) = weak.upgrade() else {
                return;
            };
            let more = {
                let mut v = vm.borrow_mut();
                let _ = match (&call, answer) {
                    (Callout::Http(c), Answer::Http(r)) => v.on_http_call_response(c, Some(r)),
                    (Callout::Grpc(c), Answer::Grpc(r)) => v.on_grpc_response(c, r),
                    _ => Ok(()),
                };
                v.take_calls()
            };
            dispatch(&ctx, &vm, more);
        });
    }
}

/// A gRPC stream's request side: where the plugin's messages go (`None` once half-closed),
/// and the task reading the response.
type StreamSide = (
    Option<tokio::sync::mpsc::UnboundedSender<Bytes>>,
    tokio::task::AbortHandle,
);

thread_local! {
    /// This worker's open gRPC streams, by VM and token.
    static STREAMS: std::cell::RefCell<std::collections::HashMap<(usize, u32), StreamSide>> =
        std::cell::RefCell::default();
}

/// Queues a message on an open stream (length-prefixed), and/or half-closes it.
fn stream_step(vm: &SharedVm, token: u32, message: Option<Bytes>, end_stream: bool) {
    let key = (Rc::as_ptr(vm) as usize, token);
    STREAMS.with(|s| {
        let mut s = s.borrow_mut();
        let Some((tx, _)) = s.get_mut(&key) else {
            return;
        };
        if let (Some(m), Some(sender)) = (message, tx.as_ref()) {
            let _ = sender.send(frame(&m));
        }
        if end_stream {
            *tx = None;
        }
    });
}

/// A header map as the owned pairs a plugin is handed.
fn pairs(h: &http::HeaderMap) -> Vec<(String, Bytes)> {
    h.iter()
        .map(|(k, v)| (k.as_str().to_owned(), Bytes::copy_from_slice(v.as_bytes())))
        .collect()
}

/// The gRPC status in `h` (trailers, or the headers of a trailers-only answer).
fn status_of(h: &http::HeaderMap) -> Option<(u32, Bytes)> {
    let code = h.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let msg = h
        .get("grpc-message")
        .map_or_else(Bytes::new, |v| Bytes::copy_from_slice(v.as_bytes()));
    Some((code, msg))
}

/// A gRPC message with its 5-byte prefix.
fn frame(message: &[u8]) -> Bytes {
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    Bytes::from(framed)
}

/// A request body fed by the plugin's `proxy_grpc_send`s; it ends when the plugin half-closes.
struct Fed(tokio::sync::mpsc::UnboundedReceiver<Bytes>);

impl http_body::Body for Fed {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|m| m.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// Opens a gRPC stream: the request streams what the plugin sends; the response is delivered
/// as initial metadata, one event per message, trailing metadata and the close.
fn grpc_stream(ctx: &Rc<WorkerCtx>, vm: &SharedVm, open: GrpcStreamOpen) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let weak = Rc::downgrade(vm);
    let ctx2 = ctx.clone();
    let token = open.token;
    let key = (Rc::as_ptr(vm) as usize, token);
    let task = tokio::task::spawn_local(async move {
        let deliver = |event: GrpcEvent| {
            let Some(vm) = weak.upgrade() else {
                return false;
            };
            let more = {
                let mut v = vm.borrow_mut();
                let ok = v.on_grpc_stream(token, event).is_ok();
                (ok, v.take_calls())
            };
            dispatch(&ctx2, &vm, more.1);
            more.0
        };
        let close = match open_stream(&ctx2, &open, rx, &deliver).await {
            Ok(status) => status,
            Err(status) => status,
        };
        STREAMS.with(|s| s.borrow_mut().remove(&key));
        deliver(GrpcEvent::Close(close.0, close.1));
    });
    STREAMS.with(|s| s.borrow_mut().insert(key, (Some(tx), task.abort_handle())));
}

/// Runs one gRPC stream to its end; the status it closed with.
async fn open_stream(
    ctx: &Rc<WorkerCtx>,
    open: &GrpcStreamOpen,
    rx: tokio::sync::mpsc::UnboundedReceiver<Bytes>,
    deliver: &impl Fn(GrpcEvent) -> bool,
) -> Result<(u32, Bytes), (u32, Bytes)> {
    let fail = |code: u32, msg: &str| (code, Bytes::from(msg.to_owned()));
    let live = ctx.shared.live.load_full();
    let cluster =
        resolve(&live, &open.upstream).ok_or_else(|| fail(GRPC_UNAVAILABLE, "unknown upstream"))?;
    let proto = crate::upstream::pool::Proto::Http2;
    let path = format!("/{}/{}", open.service, open.method);
    let uri = crate::http::target_uri(proto, &cluster.host, &path)
        .ok_or_else(|| fail(GRPC_INTERNAL, "bad service or method name"))?;
    let mut req = Request::post(uri).version(http::Version::HTTP_2);
    for (k, v) in &open.metadata {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_bytes(v),
        ) {
            req = req.header(k, v);
        }
    }
    let req = req
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header("x-envoy-internal", "true")
        .body(crate::body::boxed(Fed(rx)))
        .map_err(|e| fail(GRPC_INTERNAL, &e.to_string()))?;
    let Some(ep) = cluster.pick(None) else {
        return Err(trailers_only(
            deliver,
            fail(GRPC_UNAVAILABLE, "no healthy upstream"),
        ));
    };
    let _active = ClusterState::start(&ep);
    let resp = match ctx.pools.send(ep.addr, proto, req, &cluster.circuit).await {
        Ok(r) => r,
        Err(e) => {
            return Err(trailers_only(
                deliver,
                fail(GRPC_UNAVAILABLE, &e.to_string()),
            ))
        }
    };
    let (parts, mut body) = resp.into_parts();
    if let Some(status) = status_of(&parts.headers) {
        // A trailers-only answer: as in Envoy, empty initial metadata, then its headers as the
        // trailing metadata.
        deliver(GrpcEvent::InitialMetadata(Vec::new()));
        deliver(GrpcEvent::TrailingMetadata(pairs(&parts.headers)));
        return Ok(status);
    }
    if !deliver(GrpcEvent::InitialMetadata(pairs(&parts.headers))) {
        return Err(fail(GRPC_INTERNAL, "the plugin failed"));
    }
    let mut pending = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| fail(GRPC_UNAVAILABLE, &e.to_string()))?;
        match frame.into_data() {
            Ok(data) => {
                pending.extend_from_slice(&data);
                while pending.len() >= 5 {
                    let len = u32::from_be_bytes([pending[1], pending[2], pending[3], pending[4]])
                        as usize;
                    if len > MAX_RESPONSE_BYTES {
                        return Err(fail(GRPC_INTERNAL, "message too large"));
                    }
                    if pending.len() < 5 + len {
                        break;
                    }
                    let msg = pending.split_to(5 + len).freeze().slice(5..);
                    if !deliver(GrpcEvent::Message(msg)) {
                        return Err(fail(GRPC_INTERNAL, "the plugin failed"));
                    }
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    deliver(GrpcEvent::TrailingMetadata(pairs(&trailers)));
                    return status_of(&trailers)
                        .ok_or_else(|| fail(GRPC_INTERNAL, "no grpc-status"));
                }
            }
        }
    }
    Err(fail(GRPC_INTERNAL, "the stream ended without a status"))
}

/// A stream that got no answer: as Envoy's async client does, the plugin gets the trailers-only
/// reply made up for it (empty initial metadata, then `:status`, `content-type`, `grpc-status`
/// and `grpc-message` as trailing metadata) before the close with `status`.
fn trailers_only(deliver: &impl Fn(GrpcEvent) -> bool, status: (u32, Bytes)) -> (u32, Bytes) {
    let header = |k: &str, v: &[u8]| (k.to_owned(), Bytes::copy_from_slice(v));
    deliver(GrpcEvent::InitialMetadata(Vec::new()));
    deliver(GrpcEvent::TrailingMetadata(vec![
        header(":status", b"200"),
        header("content-type", b"application/grpc"),
        header("grpc-status", status.0.to_string().as_bytes()),
        header("grpc-message", &status.1),
    ]));
    status
}

enum Answer {
    Http(CallResponse),
    Grpc(Result<Bytes, (u32, Bytes)>),
}

/// gRPC status codes the host reports itself.
const GRPC_DEADLINE_EXCEEDED: u32 = 4;
const GRPC_INTERNAL: u32 = 13;
const GRPC_UNAVAILABLE: u32 = 14;

/// A unary gRPC call over HTTP/2 to the call's cluster: the response message, or the status.
async fn send_grpc(ctx: &Rc<WorkerCtx>, call: &GrpcCall) -> Result<Bytes, (u32, Bytes)> {
    let fail = |code: u32, msg: &str| (code, Bytes::from(msg.to_owned()));
    let live = ctx.shared.live.load_full();
    let cluster =
        resolve(&live, &call.upstream).ok_or_else(|| fail(GRPC_UNAVAILABLE, "unknown upstream"))?;
    let path = format!("/{}/{}", call.service, call.method);
    let proto = crate::upstream::pool::Proto::Http2;
    let uri = crate::http::target_uri(proto, &cluster.host, &path)
        .ok_or_else(|| fail(GRPC_INTERNAL, "bad service or method name"))?;
    let mut req = Request::post(uri).version(http::Version::HTTP_2);
    for (k, v) in &call.metadata {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_bytes(v),
        ) {
            req = req.header(k, v);
        }
    }
    req = req
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header("x-envoy-internal", "true");
    if !call.timeout.is_zero() {
        req = req.header("grpc-timeout", format!("{}m", call.timeout.as_millis()));
    }
    let req = req
        .body(body::full(frame(&call.message)))
        .map_err(|e| fail(GRPC_INTERNAL, &e.to_string()))?;
    let ep = cluster
        .pick(None)
        .ok_or_else(|| fail(GRPC_UNAVAILABLE, "no healthy upstream"))?;
    let _active = ClusterState::start(&ep);
    let exchange = async {
        let resp = ctx
            .pools
            .send(ep.addr, proto, req, &cluster.circuit)
            .await
            .map_err(|e| fail(GRPC_UNAVAILABLE, &e.to_string()))?;
        let (parts, body) = resp.into_parts();
        let collected = http_body_util::Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| fail(GRPC_INTERNAL, &e.to_string()))?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let data = collected.to_bytes();
        // The status is in the trailers, or in the headers of a trailers-only answer.
        let (code, msg) = status_of(&trailers)
            .or_else(|| status_of(&parts.headers))
            .ok_or_else(|| fail(GRPC_INTERNAL, "no grpc-status"))?;
        if code != 0 {
            return Err((code, msg));
        }
        if data.len() < 5 {
            return Err(fail(GRPC_INTERNAL, "no response message"));
        }
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        data.get(5..5 + len)
            .map(|m| data.slice_ref(m))
            .ok_or_else(|| fail(GRPC_INTERNAL, "truncated response message"))
    };
    if call.timeout.is_zero() {
        return exchange.await;
    }
    tokio::time::timeout(call.timeout, exchange)
        .await
        .map_err(|_| fail(GRPC_DEADLINE_EXCEEDED, "deadline exceeded"))?
}

/// Why a callout got no answer from its upstream; the plugin gets the reply Envoy's async
/// client makes up for it.
enum CallError {
    /// No endpoint, or the exchange failed before a response.
    Unavailable(String),
    /// The call's timeout passed.
    Timeout,
}

impl CallError {
    fn text(&self) -> String {
        match self {
            CallError::Unavailable(e) => e.clone(),
            CallError::Timeout => "timed out".to_owned(),
        }
    }

    /// Envoy's synthetic reply: 503 with its reset text, or 504 for a timeout.
    fn response(&self) -> CallResponse {
        let (status, body): (&str, &str) = match self {
            CallError::Unavailable(_) => (
                "503",
                "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure",
            ),
            CallError::Timeout => ("504", "upstream request timeout"),
        };
        let header = |k: &str, v: &str| (k.to_owned(), Bytes::copy_from_slice(v.as_bytes()));
        CallResponse {
            headers: vec![
                header(":status", status),
                header("content-length", &body.len().to_string()),
                header("content-type", "text/plain"),
            ],
            body: Bytes::from(body.to_owned()),
            trailers: Vec::new(),
        }
    }
}

async fn send(ctx: &Rc<WorkerCtx>, call: &HttpCall) -> Result<CallResponse, CallError> {
    let live = ctx.shared.live.load_full();
    let unavailable = |e: &str| CallError::Unavailable(e.to_owned());
    let cluster = resolve(&live, &call.upstream).ok_or_else(|| unavailable("unknown upstream"))?;
    let mut method = Method::GET;
    let mut path = "/".to_owned();
    let mut authority = String::new();
    let mut headers = http::HeaderMap::new();
    for (k, v) in &call.headers {
        match k.as_str() {
            ":method" => method = Method::from_bytes(v).map_err(|e| unavailable(&e.to_string()))?,
            ":path" => path = String::from_utf8_lossy(v).into_owned(),
            ":authority" => authority = String::from_utf8_lossy(v).into_owned(),
            k if k.starts_with(':') => {}
            k => {
                let bad = |e: String| unavailable(&format!("header {k}: {e}"));
                let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| bad(e.to_string()))?;
                let value = HeaderValue::from_bytes(v).map_err(|e| bad(e.to_string()))?;
                headers.append(name, value);
            }
        }
    }
    let timeout = if call.timeout.is_zero() {
        std::time::Duration::from_secs(60)
    } else {
        call.timeout
    };
    let proto = cluster.wire_protocol(http::Version::HTTP_11);
    let uri = crate::http::target_uri(proto, &authority, &path)
        .ok_or_else(|| unavailable("bad :path or :authority"))?;
    let (mut head, ()) = Request::new(()).into_parts();
    head.method = method;
    head.uri = uri;
    head.headers = headers;
    crate::http::set_protocol(&mut head.version, &mut head.headers, proto, &authority);
    // As Envoy's async client: an internal request carrying its timeout (after the host).
    head.headers.insert(
        HeaderName::from_static("x-envoy-internal"),
        HeaderValue::from_static("true"),
    );
    head.headers.insert(
        HeaderName::from_static("x-envoy-expected-rq-timeout-ms"),
        HeaderValue::from(timeout.as_millis() as u64),
    );
    let body = if call.body.is_empty() {
        body::empty()
    } else {
        body::full(call.body.clone())
    };
    let req = Request::from_parts(head, body);
    let ep = cluster
        .pick(None)
        .ok_or_else(|| unavailable("no healthy upstream"))?;
    let _active = ClusterState::start(&ep);
    let sent = std::time::Instant::now();
    let exchange = async {
        let resp = ctx
            .pools
            .send(ep.addr, proto, req, &cluster.circuit)
            .await
            .map_err(|e| unavailable(&e.to_string()))?;
        let (parts, body) = resp.into_parts();
        let collected = http_body_util::Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| unavailable(&e.to_string()))?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let body: Bytes = collected.to_bytes();
        let mut out = Vec::with_capacity(parts.headers.len() + 1);
        out.push((
            ":status".to_owned(),
            Bytes::copy_from_slice(parts.status.as_str().as_bytes()),
        ));
        out.extend(pairs(&parts.headers));
        // As Envoy's router adds to every upstream response, callouts' included.
        out.push((
            "x-envoy-upstream-service-time".to_owned(),
            Bytes::from(sent.elapsed().as_millis().to_string()),
        ));
        Ok::<_, CallError>(CallResponse {
            headers: out,
            body,
            trailers: pairs(&trailers),
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| CallError::Timeout)?
}
