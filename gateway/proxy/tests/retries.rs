//! Retries through the real gateway with upstreams that fail and recover on cue: another
//! endpoint on retry, request bodies replayed (and not past the buffer limit), the route
//! timeout covering every attempt, and the retry counters. Statuses and attempt counts of the
//! common cases are compared with Envoy in `envoy_parity.rs`.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use support::upstream::Behaviour;
use support::{fixtures, Client, Gateway, Upstream};

/// One service `svc` with the given endpoints, and a VirtualService for `app.example.com`
/// with these HTTP routes (YAML list items, indented by two spaces).
fn gateway(endpoints: &[&Upstream], routes: &str) -> Gateway {
    gateway_with(endpoints, routes, "")
}

/// Like [`gateway`], with extra YAML documents (each starting with `---`).
fn gateway_with(endpoints: &[&Upstream], routes: &str, extra: &str) -> Gateway {
    let eps: Vec<(&Upstream, &str)> = endpoints.iter().map(|u| (*u, "v1")).collect();
    let mut y = fixtures::base(&[("svc.test.svc.cluster.local", &eps, "HTTP")]);
    y.push_str(extra);
    y.push_str(&format!(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: app, namespace: test}}\n\
         spec:\n  hosts: [app.example.com]\n  gateways: [istio-system/gw]\n  http:\n{routes}"
    ));
    Gateway::start(&y)
}

const CLUSTER: &str = "outbound|80||svc.test.svc.cluster.local";

fn cluster_stat(gw: &Gateway, name: &str) -> u64 {
    gw.cluster_stat(CLUSTER, name)
}

#[test]
fn a_failed_attempt_is_retried_on_the_other_endpoint() {
    let a = Upstream::echo("a");
    let b = Upstream::echo("b");
    let gw = gateway(
        &[&a, &b],
        "  - retries: {attempts: 3, retryOn: 5xx}\n    route: [{destination: {host: svc}}]\n",
    );
    let c = Client::http1(gw.port);
    a.set_behaviour(Behaviour::Status(500));
    for _ in 0..20 {
        let r = c.get("app.example.com", "/x");
        assert_eq!(r.status, 200);
        assert_eq!(r.upstream(), "b");
    }
    // Every request that tried `a` first went to `b` next, never back to `a`.
    let retried_on_b = b
        .seen()
        .iter()
        .filter(|s| s.headers["x-envoy-attempt-count"] == "2")
        .count();
    assert_eq!(retried_on_b, a.count(), "one retry per failure on a");
    assert!(b
        .seen()
        .iter()
        .all(|s| s.headers["x-envoy-attempt-count"] != "3"));
    assert_eq!(cluster_stat(&gw, "upstream_rq_retry"), a.count() as u64);
    assert_eq!(
        cluster_stat(&gw, "upstream_rq_retry_success"),
        a.count() as u64
    );
}

#[test]
fn request_bodies_are_replayed_up_to_the_buffer_limit() {
    let a = Upstream::echo("a");
    let gw = gateway(
        &[&a],
        "  - retries: {attempts: 2, retryOn: reset}\n    route: [{destination: {host: svc}}]\n",
    );
    for client in [Client::http1(gw.port), Client::h2c(gw.port)] {
        // A small body: the reset first attempt is replayed in full.
        a.set_behaviour(Behaviour::ResetNext { n: 1 });
        let before = a.count();
        let body = Bytes::from(vec![b'x'; 20_000]);
        let r = client.send(Method::POST, "app.example.com", "/echo", &[], body);
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["bodyBytes"], 20_000);
        assert_eq!(r.json()["headers"]["x-envoy-attempt-count"], "2");
        assert_eq!(a.count() - before, 2);

        // Past the 32 KiB buffer limit: no retry, the reset reaches the client as a 503.
        a.set_behaviour(Behaviour::ResetNext { n: 1 });
        let before = a.count();
        let body = Bytes::from(vec![b'y'; 100_000]);
        let r = client.send(Method::POST, "app.example.com", "/echo", &[], body);
        assert_eq!(r.status, 503);
        assert_eq!(
            a.count() - before,
            1,
            "a body past the limit is not retried"
        );
        a.set_behaviour(Behaviour::Normal);
    }
}

#[test]
fn failing_then_recovering_upstream_and_the_route_timeout() {
    let a = Upstream::echo("a");
    let gw = gateway(
        &[&a],
        "  - match: [{uri: {prefix: /bounded}}]\n    timeout: 0.5s\n    retries: {attempts: 50, perTryTimeout: 0.1s, retryOn: 5xx}\n    route: [{destination: {host: svc}}]\n\
         \x20 - retries: {attempts: 3, retryOn: gateway-error}\n    route: [{destination: {host: svc}}]\n",
    );
    let c = Client::http1(gw.port);
    // Two failures, then the upstream recovers: the third attempt answers.
    a.set_behaviour(Behaviour::FailNext { n: 2, status: 502 });
    let r = c.get("app.example.com", "/x");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["headers"]["x-envoy-attempt-count"], "3");
    // Failing for longer than the attempts allow: the last answer reaches the client.
    a.set_behaviour(Behaviour::FailNext { n: 10, status: 503 });
    let before = a.count();
    let r = c.get("app.example.com", "/x");
    assert_eq!(r.status, 503);
    assert_eq!(a.count() - before, 4);
    assert_eq!(cluster_stat(&gw, "upstream_rq_retry_limit_exceeded"), 1);
    a.set_behaviour(Behaviour::Normal);

    // A hanging upstream: per-try timeouts retry until the route timeout ends it all.
    a.set_behaviour(Behaviour::Hang);
    let before = a.count();
    let started = Instant::now();
    let r = c.get("app.example.com", "/bounded");
    assert_eq!(r.status, 504);
    assert_eq!(&r.body[..], b"upstream request timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Each attempt the upstream saw ended by its per-try timeout, except perhaps the last, which
    // the route timeout may have cut (or a backoff, or an attempt not arrived yet).
    let attempts = (a.count() - before) as u64;
    assert!(attempts >= 3, "{attempts} attempts in 0.5 s of 0.1 s tries");
    let per_try = cluster_stat(&gw, "upstream_rq_per_try_timeout");
    assert!(
        per_try == attempts || per_try + 1 == attempts,
        "{per_try} per-try timeouts for {attempts} attempts"
    );
    assert_eq!(cluster_stat(&gw, "upstream_rq_timeout"), 1);
}

#[test]
fn default_retries_hide_a_failing_endpoint_until_outlier_detection_ejects_it() {
    let a = Upstream::echo("a");
    let b = Upstream::echo("b");
    let gw = gateway_with(
        &[&a, &b],
        "  - route: [{destination: {host: svc}}]\n",
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: svc, namespace: test}\n\
         spec:\n  host: svc.test.svc.cluster.local\n  trafficPolicy:\n    outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 50}\n",
    );
    let c = Client::http1(gw.port);
    a.set_behaviour(Behaviour::Status(503));
    // Istio's default policy retries the 503 on the other endpoint: clients never see it.
    for _ in 0..30 {
        let r = c.get("app.example.com", "/x");
        assert_eq!(r.status, 200);
        assert_eq!(r.upstream(), "b");
    }
    // Three 503s ejected `a`: it got at most those (and any in flight), then nothing.
    assert_eq!(a.count(), 3, "a is ejected after three consecutive 503s");
    assert_eq!(cluster_stat(&gw, "upstream_rq_retry"), 3);
}

#[test]
fn max_retries_bounds_the_retries_in_flight() {
    let a = Upstream::echo("a");
    let gw = gateway_with(
        &[&a],
        "  - route: [{destination: {host: svc}}]\n",
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: svc, namespace: test}\n\
         spec:\n  host: svc.test.svc.cluster.local\n  trafficPolicy:\n    connectionPool: {http: {maxRetries: 1}}\n",
    );
    // Every answer is a slow 503: both requests want their retries at the same time, and only
    // one retry may be in flight.
    a.set_behaviour(Behaviour::Status(503));
    let port = gw.port;
    let clients: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                Client::http1(port)
                    .get("app.example.com", "/delay/300")
                    .status
            })
        })
        .collect();
    for c in clients {
        assert_eq!(c.join().expect("client"), 503);
    }
    assert!(cluster_stat(&gw, "upstream_rq_retry_overflow") >= 1);
    // Two first attempts and fewer than the four retries the policy would allow.
    assert!(a.count() < 6, "{} attempts", a.count());
}
