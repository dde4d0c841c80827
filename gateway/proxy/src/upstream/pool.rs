//! Per-worker upstream connection pools: keep-alive HTTP/1.1 connections and one multiplexed
//! HTTP/2 connection per cluster and endpoint, under the cluster's circuit breakers.
//!
//! Owned by one worker (`Rc`, `RefCell`): no locks, no cross-thread traffic. An HTTP/1.1
//! connection goes back to its pool (or to the oldest pending request) when the response body
//! has been read to the end; a connection whose response was abandoned is closed, never reused
//! half-read. Each connection's task closes it when idle too long or drained.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};

use super::circuit::{Circuit, CxEvent, Guard, PoolSettings};
use crate::body::Body;

pub use super::circuit::DEFAULT_CONNECT_TIMEOUT;

/// Idle HTTP/1.1 connections kept per endpoint. As high as the concurrency a worker sees:
/// an HTTP/1.1 upstream needs one connection per request in flight, and a smaller cap closes
/// connections after a burst only to open them again on the next (256 streams of 16 HTTP/2
/// clients opened ~9 upstream connections per 100 requests with a cap of 128). Envoy keeps
/// every connection until its idle timeout; idle ones cost a socket and two small buffers.
const MAX_IDLE_PER_ENDPOINT: usize = 1024;

/// Why a TCP connect to an endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectFailure {
    /// `connectTimeout` passed.
    #[error("connect timeout")]
    Timeout,
    /// The endpoint refused the connection.
    #[error("connection refused")]
    Refused,
    /// Any other socket error.
    #[error("{0}")]
    Other(std::io::Error),
}

/// Why an upstream request failed before a response arrived.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect failed or timed out.
    #[error("connection failure: {0}")]
    Connect(ConnectFailure),
    /// The protocol handshake or the request failed (reset before headers).
    #[error("{0}")]
    Reset(String),
    /// A circuit breaker of the cluster refused the request (pending or active requests).
    #[error("overflow")]
    Overflow,
}

impl UpstreamError {
    /// Envoy's response flag for this failure.
    pub fn response_flag(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "UF",
            UpstreamError::Reset(_) => "UC",
            UpstreamError::Overflow => "UO",
        }
    }

    /// What this failure means for outlier detection (`None`: nothing, the request never
    /// reached the endpoint because a circuit breaker refused it).
    pub fn attempt_result(&self) -> Option<crate::upstream::outlier::AttemptResult> {
        match self {
            UpstreamError::Connect(_) => {
                Some(crate::upstream::outlier::AttemptResult::ConnectFailure)
            }
            UpstreamError::Reset(_) => Some(crate::upstream::outlier::AttemptResult::Reset),
            UpstreamError::Overflow => None,
        }
    }
}

/// Wire protocol towards an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// HTTP/1.1 with keep-alive.
    Http1,
    /// HTTP/2 (prior knowledge, h2c).
    Http2,
}

/// Pools are per cluster and endpoint, as Envoy's are: limits and counts never mix clusters.
type Key = (u64, SocketAddr);

/// What one connection's task and its requests share.
#[derive(Default)]
struct Life {
    /// Requests sent on it.
    requests: Cell<u32>,
    /// Requests in flight on it.
    active: Cell<u32>,
    /// Since when nothing has been in flight (`None` while busy).
    idle_since: Cell<Option<Instant>>,
    /// No new requests; close once idle.
    draining: Cell<bool>,
    /// Wakes the connection's task when a draining connection goes idle (so it closes now);
    /// idle timeouts need no wake-up, the task's timer checks them when it fires.
    wake: Notify,
}

impl Life {
    fn begin(&self, circuit: &Circuit) {
        let n = self.requests.get().saturating_add(1);
        self.requests.set(n);
        self.active.set(self.active.get() + 1);
        self.idle_since.set(None);
        if circuit.settings.max_requests_per_connection == Some(n) {
            self.draining.set(true);
            circuit.count(CxEvent::MaxRequests);
        }
    }

    fn end(&self) {
        let n = self.active.get().saturating_sub(1);
        self.active.set(n);
        if n == 0 {
            self.idle_since.set(Some(Instant::now()));
            if self.draining.get() {
                self.wake.notify_one();
            }
        }
    }
}

struct H1Conn {
    sender: http1::SendRequest<Body>,
    life: Rc<Life>,
}

enum Handoff {
    /// A connection freed by another request.
    Conn(H1Conn),
    /// A connection closed: try to open one.
    Retry,
}

/// One worker's HTTP/1.1 connections to one endpoint of one cluster.
#[derive(Default)]
struct H1Pool {
    idle: RefCell<Vec<H1Conn>>,
    /// Connections open or opening.
    open: Cell<usize>,
    /// Pending requests, oldest first.
    waiters: RefCell<VecDeque<oneshot::Sender<Handoff>>>,
}

impl H1Pool {
    async fn take_idle(&self) -> Option<H1Conn> {
        loop {
            let mut c = self.idle.borrow_mut().pop()?;
            if c.sender.is_closed() || c.life.draining.get() {
                continue;
            }
            if c.sender.ready().await.is_ok() {
                return Some(c);
            }
        }
    }

    /// Gives a reusable connection to the oldest pending request, or keeps it idle.
    fn put(&self, mut conn: H1Conn) {
        loop {
            let Some(tx) = self.waiters.borrow_mut().pop_front() else {
                break;
            };
            match tx.send(Handoff::Conn(conn)) {
                Ok(()) => return,
                Err(Handoff::Conn(c)) => conn = c,
                Err(Handoff::Retry) => return,
            }
        }
        let mut idle = self.idle.borrow_mut();
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push(conn);
        }
    }

    /// A connection went away: the oldest pending request may open one now.
    fn wake_one(&self) {
        while let Some(tx) = self.waiters.borrow_mut().pop_front() {
            if tx.send(Handoff::Retry).is_ok() {
                return;
            }
        }
    }
}

/// Counts a connection as open in its pool; on drop wakes a pending request.
struct Open(Weak<H1Pool>);

impl Open {
    fn new(pool: &Rc<H1Pool>) -> Open {
        pool.open.set(pool.open.get() + 1);
        Open(Rc::downgrade(pool))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(pool) = self.0.upgrade() {
            pool.open.set(pool.open.get().saturating_sub(1));
            pool.wake_one();
        }
    }
}

/// One worker's HTTP/2 connection to one endpoint of one cluster.
type H2Conn = (http2::SendRequest<Body>, Rc<Life>);

/// All pools of one worker.
#[derive(Default)]
pub struct Pools {
    h1: RefCell<HashMap<Key, Rc<H1Pool>>>,
    h2: RefCell<HashMap<Key, Vec<H2Conn>>>,
}

impl Pools {
    /// Sends `req` to `addr` for the cluster whose breakers are `circuit`, reusing a pooled
    /// connection when one is ready and waiting as a pending request when none may be opened.
    pub async fn send(
        &self,
        addr: SocketAddr,
        proto: Proto,
        req: Request<Body>,
        circuit: &Arc<Circuit>,
    ) -> Result<Response<Body>, UpstreamError> {
        match proto {
            Proto::Http1 => self.send_h1(addr, req, circuit).await,
            Proto::Http2 => self.send_h2(addr, req, circuit).await,
        }
    }

    async fn send_h1(
        &self,
        addr: SocketAddr,
        req: Request<Body>,
        circuit: &Arc<Circuit>,
    ) -> Result<Response<Body>, UpstreamError> {
        let pool = self
            .h1
            .borrow_mut()
            .entry((circuit.id, addr))
            .or_default()
            .clone();
        let mut conn = match pool.take_idle().await {
            Some(c) => c,
            None => {
                let _pending = circuit.try_pending().ok_or(UpstreamError::Overflow)?;
                wait_h1(&pool, addr, circuit).await?
            }
        };
        // Envoy checks max_requests when the request gets its connection.
        let Some(rq) = circuit.try_request() else {
            pool.put(conn);
            return Err(UpstreamError::Overflow);
        };
        let upgrade = req.headers().contains_key(http::header::UPGRADE);
        conn.life.begin(circuit);
        let life = conn.life.clone();
        let resp = match conn.sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                life.end();
                return Err(UpstreamError::Reset(reset_reason(&e)));
            }
        };
        // An upgraded connection belongs to its tunnel from now on.
        let back = (!upgrade).then(|| (Rc::downgrade(&pool), conn));
        Ok(resp.map(|b| {
            crate::body::boxed(crate::body::Watched::new(
                b,
                Pooled {
                    back,
                    done: Some((life, rq)),
                },
            ))
        }))
    }

    async fn send_h2(
        &self,
        addr: SocketAddr,
        req: Request<Body>,
        circuit: &Arc<Circuit>,
    ) -> Result<Response<Body>, UpstreamError> {
        let key = (circuit.id, addr);
        // A connection with room for one more stream (`maxConcurrentStreams`), else a new one.
        let room = circuit.settings.max_concurrent_streams;
        let existing = self.h2.borrow_mut().get_mut(&key).and_then(|conns| {
            conns.retain(|(s, l)| !s.is_closed() && !l.draining.get());
            conns
                .iter()
                .find(|(_, l)| room.is_none_or(|n| l.active.get() < n))
                .cloned()
        });
        let (sender, life) = match existing {
            Some(c) => c,
            None => {
                let pending = circuit.try_pending().ok_or(UpstreamError::Overflow)?;
                let least_busy =
                    self.h2.borrow().get(&key).and_then(|conns| {
                        conns.iter().min_by_key(|(_, l)| l.active.get()).cloned()
                    });
                let cx = match (circuit.try_connection(), least_busy) {
                    (Some(cx), _) => cx,
                    // One connection per worker and endpoint: Envoy opens it even over the limit.
                    (None, None) => circuit.forced_connection(),
                    // At `maxConnections`: the least busy connection takes one stream more.
                    (None, Some(c)) => {
                        drop(pending);
                        return self.send_on_h2(c, req, circuit).await;
                    }
                };
                let io = connect(addr, &circuit.settings).await?;
                let (s, conn) = http2::Builder::new(crate::http::LocalExec)
                    .handshake(io)
                    .await
                    .map_err(|e| UpstreamError::Reset(format!("handshake: {e}")))?;
                let life = Rc::new(Life::default());
                life.idle_since.set(Some(Instant::now()));
                tokio::task::spawn_local(drive(conn, life.clone(), circuit.clone(), cx, None));
                self.h2
                    .borrow_mut()
                    .entry(key)
                    .or_default()
                    .push((s.clone(), life.clone()));
                (s, life)
            }
        };
        self.send_on_h2((sender, life), req, circuit).await
    }

    /// Sends `req` on an HTTP/2 connection of the pool.
    async fn send_on_h2(
        &self,
        (mut sender, life): H2Conn,
        req: Request<Body>,
        circuit: &Arc<Circuit>,
    ) -> Result<Response<Body>, UpstreamError> {
        sender
            .ready()
            .await
            .map_err(|e| UpstreamError::Reset(reset_reason(&e)))?;
        let rq = circuit.try_request().ok_or(UpstreamError::Overflow)?;
        life.begin(circuit);
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                life.end();
                return Err(UpstreamError::Reset(reset_reason(&e)));
            }
        };
        Ok(resp.map(|b| {
            crate::body::boxed(crate::body::Watched::new(
                b,
                Pooled {
                    back: None,
                    done: Some((life, rq)),
                },
            ))
        }))
    }
}

/// Waits (pending) until this request may open a connection or is handed one.
async fn wait_h1(
    pool: &Rc<H1Pool>,
    addr: SocketAddr,
    circuit: &Arc<Circuit>,
) -> Result<H1Conn, UpstreamError> {
    loop {
        // Over the limit, a pool with no connection at all still opens one (as Envoy).
        let cx = circuit
            .try_connection()
            .or_else(|| (pool.open.get() == 0).then(|| circuit.forced_connection()));
        if let Some(cx) = cx {
            return open_h1(pool, addr, circuit, cx).await;
        }
        let (tx, rx) = oneshot::channel();
        pool.waiters.borrow_mut().push_back(tx);
        if let Ok(Handoff::Conn(mut c)) = rx.await {
            if c.sender.ready().await.is_ok() {
                return Ok(c);
            }
        }
        if let Some(c) = pool.take_idle().await {
            return Ok(c);
        }
    }
}

async fn open_h1(
    pool: &Rc<H1Pool>,
    addr: SocketAddr,
    circuit: &Arc<Circuit>,
    cx: Guard,
) -> Result<H1Conn, UpstreamError> {
    let open = Open::new(pool);
    let io = connect(addr, &circuit.settings).await?;
    let (sender, conn) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|e| UpstreamError::Reset(format!("handshake: {e}")))?;
    let life = Rc::new(Life::default());
    tokio::task::spawn_local(drive(
        conn.with_upgrades(),
        life.clone(),
        circuit.clone(),
        cx,
        Some(open),
    ));
    Ok(H1Conn { sender, life })
}

/// Runs one connection until it ends, is idle for `idleTimeout`, or is drained (by
/// `maxConnectionDuration` or `maxRequestsPerConnection`) and idle. Dropping `conn` closes
/// the socket; dropping the guards frees the connection's slot and wakes a pending request.
async fn drive<F: std::future::Future>(
    conn: F,
    life: Rc<Life>,
    circuit: Arc<Circuit>,
    _cx: Guard,
    _open: Option<Open>,
) {
    let settings: PoolSettings = circuit.settings;
    let max_age = settings
        .max_connection_duration
        .map(|d| tokio::time::Instant::now() + d);
    // One timer for the connection's life, moved only when it fires: requests starting and
    // ending cost it nothing (an idle timeout is checked against `idle_since` then).
    let next = |now: tokio::time::Instant| {
        let idle = life
            .idle_since
            .get()
            .filter(|_| life.active.get() == 0)
            .map_or(now + settings.idle_timeout, |t| {
                tokio::time::Instant::from_std(t + settings.idle_timeout)
            });
        match max_age {
            Some(age) if !life.draining.get() => idle.min(age),
            _ => idle,
        }
    };
    let timer = tokio::time::sleep_until(next(tokio::time::Instant::now()));
    tokio::pin!(conn);
    tokio::pin!(timer);
    loop {
        if life.draining.get() && life.active.get() == 0 {
            break;
        }
        tokio::select! {
            _ = &mut conn => break,
            _ = life.wake.notified() => {}
            _ = &mut timer => {
                let now = tokio::time::Instant::now();
                if max_age.is_some_and(|a| now >= a) && !life.draining.get() {
                    life.draining.set(true);
                    circuit.count(CxEvent::MaxDuration);
                }
                let idle_for = life
                    .idle_since
                    .get()
                    .filter(|_| life.active.get() == 0)
                    .map(|t| t.elapsed());
                if idle_for.is_some_and(|d| d >= settings.idle_timeout) && !life.draining.get() {
                    circuit.count(CxEvent::IdleTimeout);
                    break;
                }
                timer.as_mut().reset(next(now));
            }
        }
    }
    // Locals drop before parameters: the connection closes, then `_cx` and `_open` go.
}

async fn connect(
    addr: SocketAddr,
    settings: &PoolSettings,
) -> Result<TokioIo<TcpStream>, UpstreamError> {
    let stream = tokio::time::timeout(settings.connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| UpstreamError::Connect(ConnectFailure::Timeout))?
        .map_err(|e| {
            UpstreamError::Connect(match e.kind() {
                std::io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
                _ => ConnectFailure::Other(e),
            })
        })?;
    let _ = stream.set_nodelay(true);
    if let Some(k) = settings.keepalive {
        let mut ka = socket2::TcpKeepalive::new();
        if let Some(t) = k.time {
            ka = ka.with_time(t);
        }
        if let Some(i) = k.interval {
            ka = ka.with_interval(i);
        }
        if let Some(p) = k.probes {
            ka = ka.with_retries(p);
        }
        if let Err(e) = socket2::SockRef::from(&stream).set_tcp_keepalive(&ka) {
            tracing::debug!(%addr, error = %e, "tcp keepalive not set");
        }
    }
    Ok(TokioIo::new(stream))
}

fn reset_reason(e: &hyper::Error) -> String {
    if e.is_canceled() {
        "connection termination".into()
    } else {
        format!("connection termination: {e}")
    }
}

/// A response body that holds its request's slot until the end of the stream, then returns
/// its HTTP/1.1 connection to the pool.
struct Pooled {
    back: Option<(Weak<H1Pool>, H1Conn)>,
    done: Option<(Rc<Life>, Guard)>,
}

impl crate::body::Watch for Pooled {
    /// The exchange is over; the connection is reused when the response was read to its end.
    fn end(&mut self, reuse: bool) {
        if let Some((life, _request)) = self.done.take() {
            life.end();
        }
        let back = self.back.take();
        if !reuse {
            return;
        }
        if let Some((pool, conn)) = back {
            if let Some(pool) = pool.upgrade() {
                if !conn.sender.is_closed() && !conn.life.draining.get() {
                    pool.put(conn);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::circuit::Keepalive;
    use std::time::Duration;

    #[test]
    fn keepalive_is_set_on_upstream_sockets() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = l.local_addr().expect("addr");
            let mut settings = Circuit::new(None).settings;
            settings.keepalive = Some(Keepalive {
                time: Some(Duration::from_secs(42)),
                interval: Some(Duration::from_secs(7)),
                probes: Some(4),
            });
            let io = connect(addr, &settings).await.expect("connect");
            let s = socket2::SockRef::from(io.inner());
            assert!(s.keepalive().expect("SO_KEEPALIVE"));
            assert_eq!(
                s.tcp_keepalive_time().expect("time"),
                Duration::from_secs(42)
            );
            assert_eq!(
                s.tcp_keepalive_interval().expect("interval"),
                Duration::from_secs(7)
            );
            assert_eq!(s.tcp_keepalive_retries().expect("probes"), 4);
            settings.keepalive = None;
            let io = connect(addr, &settings).await.expect("connect");
            assert!(!socket2::SockRef::from(io.inner())
                .keepalive()
                .expect("SO_KEEPALIVE"));
        });
    }
}
