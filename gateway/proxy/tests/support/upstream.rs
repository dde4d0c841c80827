//! A real upstream HTTP server (HTTP/1.1 and h2c) on loopback that echoes what it received.
//!
//! Paths steer it: `/status/NNN`, `/delay/MS`, `/big/BYTES` (streamed response), `/grpc` or
//! any `application/grpc` request (gRPC framing with trailers), `/ws` (WebSocket-style upgrade,
//! echoes bytes). Any other path answers 200 with a JSON description of the request. Request bodies are counted as they
//! stream, never buffered. `/reset` drops the request without an answer (HTTP/1.1: the
//! connection closes; HTTP/2: the stream is reset).
//!
//! Tests can also change what it does on cue with [`Upstream::set_behaviour`] (fail, reset or
//! hang every request, or only the next few), to play an upstream that fails and recovers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// HTTP version (`HTTP/1.1`, `HTTP/2.0`).
    pub version: String,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes received.
    pub body_bytes: u64,
}

/// What the upstream does with the requests it receives (after recording them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answer as the path says.
    Normal,
    /// Answer every request with this status (and the usual JSON body).
    Status(u16),
    /// Drop every request without an answer.
    Reset,
    /// Never answer (until the behaviour changes or the client gives up).
    Hang,
    /// Answer the next `n` requests with `status`, then go back to `Normal`.
    FailNext { n: u32, status: u16 },
    /// Drop the next `n` requests without an answer, then go back to `Normal`.
    ResetNext { n: u32 },
}

/// A running upstream; stops when dropped.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Name it reports in responses (`x-upstream` header and JSON `name`).
    pub name: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    /// Connections accepted so far, and connections open now.
    conns: Arc<(AtomicUsize, AtomicUsize)>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The request was dropped on purpose (`/reset`, [`Behaviour::Reset`]).
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dropped on purpose")
    }
}

impl std::error::Error for Dropped {}

type Body = BoxBody<Bytes, Infallible>;

impl Upstream {
    /// Starts an echo upstream called `name`.
    pub fn echo(name: &str) -> Upstream {
        let std_l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        std_l.set_nonblocking(true).expect("nonblocking");
        let addr = std_l.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(Mutex::new(Behaviour::Normal));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let s2 = seen.clone();
        let b2 = behaviour.clone();
        let n2 = name.to_owned();
        let conns = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let c2 = conns.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(std_l).expect("listener");
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        r = l.accept() => {
                            let Ok((stream, _)) = r else { continue };
                            let seen = s2.clone();
                            let name = n2.clone();
                            let behaviour = b2.clone();
                            let conns = c2.clone();
                            conns.0.fetch_add(1, Ordering::SeqCst);
                            conns.1.fetch_add(1, Ordering::SeqCst);
                            tokio::spawn(async move {
                                let svc = service_fn(move |req| {
                                    handle(req, name.clone(), seen.clone(), behaviour.clone())
                                });
                                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                                    .await;
                                conns.1.fetch_sub(1, Ordering::SeqCst);
                            });
                        }
                    }
                }
            });
        });
        Upstream {
            addr,
            name: name.to_owned(),
            seen,
            behaviour,
            conns,
            _stop: stop,
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The last request seen.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream saw a request")
    }

    /// How many requests it has seen.
    pub fn count(&self) -> usize {
        self.seen.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.conns.0.load(Ordering::SeqCst)
    }

    /// Connections open now (closed by either side once served).
    pub fn open_connections(&self) -> usize {
        self.conns.1.load(Ordering::SeqCst)
    }

    /// Changes what it does with the next requests.
    pub fn set_behaviour(&self, b: Behaviour) {
        if let Ok(mut cur) = self.behaviour.lock() {
            *cur = b;
        }
    }
}

/// The behaviour for one request, counting down the `*Next` ones.
fn next_behaviour(b: &Mutex<Behaviour>) -> Behaviour {
    let Ok(mut cur) = b.lock() else {
        return Behaviour::Normal;
    };
    let now = *cur;
    match now {
        Behaviour::FailNext { n, status } => {
            *cur = if n > 1 {
                Behaviour::FailNext { n: n - 1, status }
            } else {
                Behaviour::Normal
            };
            if n == 0 {
                Behaviour::Normal
            } else {
                Behaviour::Status(status)
            }
        }
        Behaviour::ResetNext { n } => {
            *cur = if n > 1 {
                Behaviour::ResetNext { n: n - 1 }
            } else {
                Behaviour::Normal
            };
            if n == 0 {
                Behaviour::Normal
            } else {
                Behaviour::Reset
            }
        }
        other => other,
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

async fn handle(
    req: Request<Incoming>,
    name: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    behaviour: Arc<Mutex<Behaviour>>,
) -> Result<Response<Body>, Dropped> {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    if path == "/ws" {
        return Ok(upgrade(req));
    }
    let (parts, mut body) = req.into_parts();
    let mut n = 0u64;
    let mut trailers = None;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(d) = frame.data_ref() {
            n += d.len() as u64;
        }
        if let Ok(t) = frame.into_trailers() {
            trailers = Some(t);
        }
    }
    let version = format!("{:?}", parts.version);
    if let Ok(mut v) = seen.lock() {
        v.push(Seen {
            method: parts.method.to_string(),
            path: path.clone(),
            version: version.clone(),
            headers: parts.headers.clone(),
            body_bytes: n,
        });
    }
    let mut status = StatusCode::OK;
    let p = parts.uri.path();
    let forced = match next_behaviour(&behaviour) {
        Behaviour::Reset => return Err(Dropped),
        Behaviour::Hang => std::future::pending::<Option<StatusCode>>().await,
        Behaviour::Status(code) => StatusCode::from_u16(code).ok(),
        _ => None,
    };
    if p == "/reset" {
        return Err(Dropped);
    }
    if let Some(code) = p.strip_prefix("/status/") {
        status = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::OK);
    }
    if let Some(ms) = p.strip_prefix("/delay/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
    }
    if let Some(len) = p.strip_prefix("/big/") {
        let total: u64 = len.parse().unwrap_or(0);
        return Ok(big(total, &name));
    }
    let grpc_request = parts
        .headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if p == "/grpc" || grpc_request {
        return Ok(grpc(n, trailers.is_some(), &name));
    }
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                Value::String(String::from_utf8_lossy(v.as_bytes()).into()),
            )
        })
        .collect();
    let j = json!({
        "name": name,
        "method": parts.method.as_str(),
        "path": path,
        "version": version,
        "headers": headers,
        "bodyBytes": n,
    });
    let mut r = Response::new(full(j.to_string()));
    *r.status_mut() = forced.unwrap_or(status);
    r.headers_mut()
        .insert("x-upstream", name.parse().expect("header value"));
    r.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("header value"),
    );
    r.headers_mut()
        .insert("connection", "keep-alive".parse().expect("header value"));
    Ok(r)
}

fn big(total: u64, name: &str) -> Response<Body> {
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let mut left = total;
    let body = FnBody(move || {
        if left == 0 {
            return None;
        }
        let n = left.min(chunk.len() as u64);
        left -= n;
        Some(Frame::data(chunk.slice(..n as usize)))
    });
    let mut r = Response::new(BodyExt::boxed(body));
    r.headers_mut()
        .insert("x-upstream", name.parse().expect("header value"));
    r
}

/// A body whose frames come from a closure (streamed one at a time, nothing buffered).
struct FnBody<F>(F);

impl<F> http_body::Body for FnBody<F>
where
    F: FnMut() -> Option<Frame<Bytes>> + Unpin,
{
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready((self.0)().map(Ok))
    }
}

fn grpc(received: u64, had_trailers: bool, name: &str) -> Response<Body> {
    // One length-prefixed message echoing how many bytes arrived, then trailers.
    let msg = format!("received={received} trailers={had_trailers}");
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    framed.extend_from_slice(msg.as_bytes());
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().expect("header value"));
    trailers.insert("grpc-message", "ok".parse().expect("header value"));
    let frames = vec![Frame::data(Bytes::from(framed)), Frame::trailers(trailers)];
    let mut it = frames.into_iter();
    let mut r = Response::new(BodyExt::boxed(FnBody(move || it.next())));
    r.headers_mut().insert(
        "content-type",
        "application/grpc".parse().expect("header value"),
    );
    r.headers_mut()
        .insert("x-upstream", name.parse().expect("header value"));
    r
}

fn upgrade(mut req: Request<Incoming>) -> Response<Body> {
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(up) = on.await {
            let mut io = TokioIo::new(up);
            let (mut r, mut w) = tokio::io::split(&mut io);
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    });
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    r.headers_mut()
        .insert("connection", "upgrade".parse().expect("header value"));
    r.headers_mut()
        .insert("upgrade", "echo".parse().expect("header value"));
    r
}
