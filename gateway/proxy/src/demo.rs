//! The coffee-shop demo: small upstream services on loopback and the ServiceEntries that point
//! the example's Kubernetes host names at them, so `meshgate demo` works with no cluster.

use std::convert::Infallible;
use std::net::SocketAddr;

use http::{header, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use bytes::Bytes;
use http_body_util::Full;

/// The example's config files, embedded in the binary.
pub const COFFEE_SHOP: [(&str, &str); 3] = [
    (
        "examples/coffee-shop/gateway.yaml",
        include_str!("../../../examples/coffee-shop/gateway.yaml"),
    ),
    (
        "examples/coffee-shop/virtual-service.yaml",
        include_str!("../../../examples/coffee-shop/virtual-service.yaml"),
    ),
    (
        "examples/coffee-shop/destination-rule.yaml",
        include_str!("../../../examples/coffee-shop/destination-rule.yaml"),
    ),
];

/// The demo's services: (service, version).
pub const SERVICES: [(&str, &str); 5] = [
    ("order", "v1"),
    ("payment", "v1"),
    ("inventory", "v1"),
    ("customer", "v1"),
    ("customer", "v2"),
];

/// A running demo service.
#[derive(Debug, Clone)]
pub struct DemoService {
    /// Service name.
    pub name: &'static str,
    /// Version label.
    pub version: &'static str,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// Starts every demo service on an ephemeral loopback port (on the current runtime).
pub async fn start_services() -> std::io::Result<Vec<DemoService>> {
    let mut out = Vec::new();
    for (name, version) in SERVICES {
        let l = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = l.local_addr()?;
        tokio::spawn(serve(l, name, version));
        out.push(DemoService {
            name,
            version,
            addr,
        });
    }
    Ok(out)
}

async fn serve(l: TcpListener, name: &'static str, version: &'static str) {
    loop {
        let Ok((stream, _)) = l.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let svc = service_fn(move |req| answer(req, name, version));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn answer(
    req: Request<Incoming>,
    name: &'static str,
    version: &'static str,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let received = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    let reply = serde_json::json!({
        "service": name,
        "version": version,
        "method": parts.method.as_str(),
        "path": parts.uri.to_string(),
        "bodyBytes": received,
        "headers": headers,
    });
    let mut r = Response::new(Full::new(Bytes::from(format!("{reply}\n"))));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

/// ServiceEntries that resolve the example's hosts to the running demo services.
pub fn service_entries(services: &[DemoService]) -> String {
    let mut y = String::new();
    let mut names: Vec<&str> = services.iter().map(|s| s.name).collect();
    names.dedup();
    for name in names {
        y.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: demo-{name}\n  namespace: coffee-shop\n\
             spec:\n  hosts: [{name}.coffee-shop.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n\
             \x20 ports:\n  - {{number: 8080, name: http, protocol: HTTP}}\n  endpoints:\n"
        ));
        for s in services.iter().filter(|s| s.name == name) {
            y.push_str(&format!(
                "  - address: {}\n    ports: {{http: {}}}\n    labels: {{app: {name}, version: {}}}\n",
                s.addr.ip(),
                s.addr.port(),
                s.version
            ));
        }
    }
    y
}
