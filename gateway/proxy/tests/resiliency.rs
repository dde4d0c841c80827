//! Route timeouts and fault injection through the real gateway (the first resiliency
//! policies; their Envoy parity cases are in `envoy_parity.rs`).

mod support;

use std::time::{Duration, Instant};

use support::{Client, Gateway, Upstream};

fn setup() -> (Upstream, Upstream, Gateway) {
    let v1 = Upstream::echo("v1");
    let v2 = Upstream::echo("v2");
    let gw = Gateway::start(&support::fixtures::routing(&v1, &v2));
    (v1, v2, gw)
}

#[test]
fn route_timeout_answers_504_and_tells_the_upstream() {
    let (v1, _v2, gw) = setup();
    let c = Client::http1(gw.port);
    let r = c.get("app.example.com", "/delay/1");
    assert_eq!(r.status, 200);
    assert_eq!(v1.last().headers["x-envoy-expected-rq-timeout-ms"], "250");
    let started = Instant::now();
    let r = c.get("app.example.com", "/delay/3000");
    assert_eq!(r.status, 504);
    assert_eq!(&r.body[..], b"upstream request timeout");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "the timeout cut the wait short"
    );
    let stats = String::from_utf8_lossy(
        &Client::http1(gw.stats)
            .get("localhost", "/stats/prometheus")
            .body,
    )
    .into_owned();
    assert!(
        stats.lines().any(|l| l.starts_with("istio_requests_total{")
            && l.contains("response_code=\"504\"")
            && l.contains("response_flags=\"UT\"")),
        "{stats}"
    );
    assert!(stats.contains("envoy_cluster_upstream_rq_timeout{cluster_name=\"outbound|80|v1|svc.test.svc.cluster.local\"} 1"));
}

#[test]
fn faults_abort_and_delay() {
    let (v1, _v2, gw) = setup();
    let c = Client::h2c(gw.port);
    let before = v1.seen().len();
    let r = c.get("app.example.com", "/fault-abort");
    assert_eq!(r.status, 503);
    assert_eq!(&r.body[..], b"fault filter abort");
    assert_eq!(
        v1.seen().len(),
        before,
        "an aborted request never reaches the upstream"
    );
    let started = Instant::now();
    let r = c.get("app.example.com", "/fault-delay");
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "delayed by the fault"
    );
    let stats = String::from_utf8_lossy(
        &Client::http1(gw.stats)
            .get("localhost", "/stats/prometheus")
            .body,
    )
    .into_owned();
    assert!(
        stats
            .lines()
            .any(|l| l.contains("response_code=\"503\"") && l.contains("response_flags=\"FI\"")),
        "{stats}"
    );
    assert!(
        stats.lines().any(|l| l.starts_with("istio_requests_total{")
            && l.contains("response_code=\"200\"")
            && l.contains("response_flags=\"DI\"")),
        "{stats}"
    );
}

#[test]
fn fault_percentages_and_grpc_aborts() {
    let up = Upstream::echo("up");
    let y = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: istio-system}}\n\
         spec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: {{PORT}}, name: http, protocol: HTTP}}\n    hosts: ['*/*']\n\
         ---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: up, namespace: test}}\n\
         spec:\n  hosts: [up.test.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]\n\
         ---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs, namespace: test}}\n\
         spec:\n  hosts: [f.example.com]\n  gateways: [istio-system/gw]\n  http:\n\
         \x20 - match: [{{uri: {{prefix: /grpc}}}}]\n    fault: {{abort: {{grpcStatus: UNAVAILABLE}}}}\n    route: [{{destination: {{host: up}}}}]\n\
         \x20 - fault: {{abort: {{httpStatus: 500, percentage: {{value: 25}}}}}}\n    route: [{{destination: {{host: up}}}}]\n",
        up.port()
    );
    let gw = Gateway::start(&y);
    let c = Client::http1(gw.port);
    let r = c.get("f.example.com", "/grpc/svc/Method");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status"), Some("14"));
    assert_eq!(r.header("content-type"), Some("application/grpc"));
    let n = 800;
    let aborted = (0..n)
        .filter(|_| c.get("f.example.com", "/x").status == 500)
        .count();
    // 25% of 800: mean 200, sd 12.2; +-5 sd.
    assert!((139..=261).contains(&aborted), "{aborted} of {n} aborted");
}
