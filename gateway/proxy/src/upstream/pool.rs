//! Per-worker upstream connection pools: keep-alive HTTP/1.1 connections and one multiplexed
//! HTTP/2 connection per endpoint.
//!
//! Owned by one worker (`Rc`, `RefCell`): no locks, no cross-thread traffic. An HTTP/1.1
//! connection goes back to its pool when the response body has been read to the end; a
//! connection whose response was abandoned is closed, never reused half-read.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::{Body, BoxError};

/// Istio's default `connectTimeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle HTTP/1.1 connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 128;

/// Why an upstream request failed before a response arrived.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect failed or timed out.
    #[error("connection failure: {0}")]
    Connect(String),
    /// The protocol handshake or the request failed (reset before headers).
    #[error("{0}")]
    Reset(String),
}

impl UpstreamError {
    /// Envoy's response flag for this failure.
    pub fn response_flag(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "UF",
            UpstreamError::Reset(_) => "UC",
        }
    }

    /// What this failure means for outlier detection.
    pub fn attempt_result(&self) -> crate::upstream::outlier::AttemptResult {
        match self {
            UpstreamError::Connect(_) => crate::upstream::outlier::AttemptResult::ConnectFailure,
            UpstreamError::Reset(_) => crate::upstream::outlier::AttemptResult::Reset,
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

type H1Idle = RefCell<Vec<http1::SendRequest<Body>>>;

/// All pools of one worker.
#[derive(Default)]
pub struct Pools {
    h1: RefCell<HashMap<SocketAddr, Rc<H1Idle>>>,
    h2: RefCell<HashMap<SocketAddr, http2::SendRequest<Body>>>,
}

impl Pools {
    /// Sends `req` to `addr`, reusing a pooled connection when one is ready.
    pub async fn send(
        &self,
        addr: SocketAddr,
        proto: Proto,
        req: Request<Body>,
        connect_timeout: Duration,
    ) -> Result<Response<Body>, UpstreamError> {
        match proto {
            Proto::Http1 => self.send_h1(addr, req, connect_timeout).await,
            Proto::Http2 => self.send_h2(addr, req, connect_timeout).await,
        }
    }

    async fn send_h1(
        &self,
        addr: SocketAddr,
        req: Request<Body>,
        connect_timeout: Duration,
    ) -> Result<Response<Body>, UpstreamError> {
        let idle = self.h1.borrow_mut().entry(addr).or_default().clone();
        let mut sender = None;
        loop {
            let candidate = idle.borrow_mut().pop();
            let Some(mut s) = candidate else { break };
            if s.is_closed() {
                continue;
            }
            if s.ready().await.is_ok() {
                sender = Some(s);
                break;
            }
        }
        let mut sender = match sender {
            Some(s) => s,
            None => {
                let io = connect(addr, connect_timeout).await?;
                let (s, conn) = http1::Builder::new()
                    .handshake(io)
                    .await
                    .map_err(|e| UpstreamError::Reset(format!("handshake: {e}")))?;
                tokio::task::spawn_local(async move {
                    let _ = conn.with_upgrades().await;
                });
                s
            }
        };
        let upgrade = req.headers().contains_key(http::header::UPGRADE);
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| UpstreamError::Reset(reset_reason(&e)))?;
        // An upgraded connection belongs to its tunnel from now on.
        let back = (!upgrade).then(|| (Rc::downgrade(&idle), sender));
        Ok(resp.map(|b| crate::body::boxed(Pooled { inner: b, back })))
    }

    async fn send_h2(
        &self,
        addr: SocketAddr,
        req: Request<Body>,
        connect_timeout: Duration,
    ) -> Result<Response<Body>, UpstreamError> {
        let existing = self.h2.borrow().get(&addr).cloned();
        let mut sender = match existing {
            Some(s) if !s.is_closed() => s,
            _ => {
                let io = connect(addr, connect_timeout).await?;
                let (s, conn) = http2::Builder::new(crate::http::LocalExec)
                    .handshake(io)
                    .await
                    .map_err(|e| UpstreamError::Reset(format!("handshake: {e}")))?;
                tokio::task::spawn_local(async move {
                    let _ = conn.await;
                });
                self.h2.borrow_mut().insert(addr, s.clone());
                s
            }
        };
        sender
            .ready()
            .await
            .map_err(|e| UpstreamError::Reset(reset_reason(&e)))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| UpstreamError::Reset(reset_reason(&e)))?;
        Ok(resp.map(crate::body::boxed))
    }
}

async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TokioIo<TcpStream>, UpstreamError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| UpstreamError::Connect("connect timeout".into()))?
        .map_err(|e| UpstreamError::Connect(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    Ok(TokioIo::new(stream))
}

fn reset_reason(e: &hyper::Error) -> String {
    if e.is_canceled() {
        "connection termination".into()
    } else {
        format!("connection termination: {e}")
    }
}

/// A response body that returns its HTTP/1.1 connection to the pool at end of stream.
struct Pooled {
    inner: Incoming,
    back: Option<(Weak<H1Idle>, http1::SendRequest<Body>)>,
}

impl Pooled {
    fn release(&mut self) {
        if let Some((pool, sender)) = self.back.take() {
            if let Some(pool) = pool.upgrade() {
                let mut idle = pool.borrow_mut();
                if !sender.is_closed() && idle.len() < MAX_IDLE_PER_ENDPOINT {
                    idle.push(sender);
                }
            }
        }
    }
}

impl HttpBody for Pooled {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Err(_))) => self.back = None,
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            _ => {}
        }
        r.map(|o| o.map(|res| res.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
