//! The HTTP codec side: serve a downstream connection (HTTP/1.1 and h2c on one port, told
//! apart by the HTTP/2 preface), with Envoy-like limits, and hand each request to `proxy`.

mod attempts;
pub mod cors;

/// `HTTP/1.1`, `HTTP/2`, ... as Envoy names a request's protocol.
pub fn protocol_name(v: ::http::Version) -> &'static str {
    match v {
        ::http::Version::HTTP_2 => "HTTP/2",
        ::http::Version::HTTP_10 => "HTTP/1.0",
        ::http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}
pub mod fault;
mod forward;
mod names;
pub(crate) use forward::{set_protocol, target_uri};
pub mod headers;
pub mod local_reply;
pub mod mirror;
pub mod proxy;
pub mod replay;
pub mod vars;

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;

use crate::worker::WorkerCtx;

/// Envoy's default `max_request_headers_kb` (60 KiB), applied to the HTTP/1 read buffer.
pub const MAX_HEADER_BYTES: usize = 60 * 1024;
/// Envoy's default `max_request_headers_count`.
pub const MAX_HEADERS: usize = 100;
/// Time allowed to read request headers on a new HTTP/1 request.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs futures on the worker's own thread (the worker is a current-thread runtime with a
/// `LocalSet`), so request futures need not be `Send`.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// Facts about the downstream connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// Client address.
    pub peer: SocketAddr,
    /// The listening port (selects the listener).
    pub local_port: u16,
    /// The address the connection was accepted on.
    pub local: SocketAddr,
}

/// Serves one accepted connection until it closes; when `stop` turns true the connection
/// finishes its in-flight requests and closes (graceful shutdown).
pub async fn serve(
    stream: TcpStream,
    info: ConnInfo,
    ctx: Rc<WorkerCtx>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut builder = auto::Builder::new(LocalExec);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES.max(8192) + 8192)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size((MAX_HEADER_BYTES) as u32)
        .max_concurrent_streams(1024);
    // The request future is boxed: hyper runs each HTTP/2 stream as a task of its own, and a
    // task's future is moved whole at every change of the task's stage, so it must be small.
    let svc = service_fn(move |req| {
        let ctx = ctx.clone();
        Box::pin(
            async move { Ok::<_, std::convert::Infallible>(proxy::handle(req, info, ctx).await) },
        )
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = crate::worker::wait_true(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %info.peer, error = %e, "downstream connection ended with error");
    }
}
