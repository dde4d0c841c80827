//! A small real HTTP client (hyper): one request per call over HTTP/1.1 or h2c prior
//! knowledge, with a bounded wait.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// Trailers, if any.
    pub trailers: Option<HeaderMap>,
}

impl Resp {
    /// The body as JSON (the echo upstream's description of the request).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// A response header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Which upstream answered (`x-upstream`).
    pub fn upstream(&self) -> &str {
        self.header("x-upstream").unwrap_or("")
    }
}

/// A client for one gateway port.
#[derive(Clone)]
pub struct Client {
    port: u16,
    h2: bool,
    rt: std::sync::Arc<tokio::runtime::Runtime>,
}

impl Client {
    /// HTTP/1.1 client to `127.0.0.1:port`.
    pub fn http1(port: u16) -> Client {
        Self::new(port, false)
    }

    /// h2c (prior knowledge) client to `127.0.0.1:port`.
    pub fn h2c(port: u16) -> Client {
        Self::new(port, true)
    }

    fn new(port: u16, h2: bool) -> Client {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Client {
            port,
            h2,
            rt: std::sync::Arc::new(rt),
        }
    }

    /// GET `path` with `Host: host`.
    pub fn get(&self, host: &str, path: &str) -> Resp {
        self.send(Method::GET, host, path, &[], Bytes::new())
    }

    /// GET with extra headers.
    pub fn get_h(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.send(Method::GET, host, path, headers, Bytes::new())
    }

    /// Any request.
    pub fn send(
        &self,
        method: Method,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Resp {
        let port = self.port;
        let h2 = self.h2;
        let mut b = Request::builder().method(method);
        b = if h2 {
            b.uri(format!("http://{host}{path}"))
        } else {
            b.uri(path).header("host", host)
        };
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(body)).expect("request");
        self.rt.block_on(async move {
            tokio::time::timeout(Duration::from_secs(30), async move {
                let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("connect");
                let io = TokioIo::new(stream);
                let resp = if h2 {
                    let (mut s, conn) = hyper::client::conn::http2::handshake(
                        hyper_util::rt::TokioExecutor::new(),
                        io,
                    )
                    .await
                    .expect("h2 handshake");
                    tokio::spawn(conn);
                    s.send_request(req).await.expect("response")
                } else {
                    let (mut s, conn) = hyper::client::conn::http1::handshake(io)
                        .await
                        .expect("handshake");
                    tokio::spawn(conn);
                    s.send_request(req).await.expect("response")
                };
                let (parts, body) = resp.into_parts();
                let collected = body.collect().await.expect("body");
                let trailers = collected.trailers().cloned();
                Resp {
                    status: parts.status,
                    headers: parts.headers,
                    body: collected.to_bytes(),
                    trailers,
                }
            })
            .await
            .expect("response within 30s")
        })
    }
}
