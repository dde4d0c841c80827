//! Plugin callouts (`proxy_http_call`): sent to an Istio cluster by name, or to the cluster of
//! a host, through the worker's upstream pools; the answer (or the failure: no headers) goes
//! back to the context that asked, which may resume its stream or send more callouts.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::BodyExt;
use meshgate_wasm::{CallResponse, HttpCall};

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

/// Sends each of `calls` on its own task.
pub(super) fn dispatch(ctx: &Rc<WorkerCtx>, vm: &SharedVm, calls: Vec<HttpCall>) {
    for call in calls {
        let ctx = ctx.clone();
        let weak = Rc::downgrade(vm);
        tokio::task::spawn_local(async move {
            let response = send(&ctx, &call).await;
            if let Err(e) = &response {
                tracing::debug!(upstream = %call.upstream, error = %e, "wasm callout failed");
            }
            let Some(vm) = weak.upgrade() else {
                return;
            };
            let more = {
                let mut v = vm.borrow_mut();
                let _ = v.on_http_call_response(&call, response.ok());
                v.take_calls()
            };
            dispatch(&ctx, &vm, more);
        });
    }
}

async fn send(ctx: &Rc<WorkerCtx>, call: &HttpCall) -> Result<CallResponse, String> {
    let live = ctx.shared.live.load_full();
    let cluster = resolve(&live, &call.upstream).ok_or("unknown upstream")?;
    let mut method = Method::GET;
    let mut path = "/".to_owned();
    let mut authority = String::new();
    let mut headers = http::HeaderMap::new();
    for (k, v) in &call.headers {
        match k.as_str() {
            ":method" => method = Method::from_bytes(v).map_err(|e| e.to_string())?,
            ":path" => path = String::from_utf8_lossy(v).into_owned(),
            ":authority" => authority = String::from_utf8_lossy(v).into_owned(),
            k if k.starts_with(':') => {}
            k => {
                let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?;
                headers.append(name, HeaderValue::from_bytes(v).map_err(|e| e.to_string())?);
            }
        }
    }
    let proto = cluster.wire_protocol(http::Version::HTTP_11);
    let uri = crate::http::target_uri(proto, &authority, &path).ok_or("bad :path or :authority")?;
    let (mut head, ()) = Request::new(()).into_parts();
    head.method = method;
    head.uri = uri;
    head.headers = headers;
    crate::http::set_protocol(&mut head.version, &mut head.headers, proto, &authority);
    let body = if call.body.is_empty() {
        body::empty()
    } else {
        body::full(call.body.clone())
    };
    let req = Request::from_parts(head, body);
    let ep = cluster.pick(None).ok_or("no healthy upstream")?;
    let _active = ClusterState::start(&ep);
    let timeout = if call.timeout.is_zero() {
        std::time::Duration::from_secs(60)
    } else {
        call.timeout
    };
    let exchange = async {
        let resp = ctx
            .pools
            .send(ep.addr, proto, req, &cluster.circuit)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let collected = http_body_util::Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let body: Bytes = collected.to_bytes();
        let mut out = Vec::with_capacity(parts.headers.len() + 1);
        out.push((
            ":status".to_owned(),
            Bytes::copy_from_slice(parts.status.as_str().as_bytes()),
        ));
        for (k, v) in &parts.headers {
            out.push((k.as_str().to_owned(), Bytes::copy_from_slice(v.as_bytes())));
        }
        Ok::<_, String>(CallResponse {
            headers: out,
            body,
            trailers: trailers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), Bytes::copy_from_slice(v.as_bytes())))
                .collect(),
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| "timed out".to_owned())?
}
