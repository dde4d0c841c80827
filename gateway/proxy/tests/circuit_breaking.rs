//! DestinationRule `connectionPool` through the real gateway: circuit breakers (active
//! requests, connections with pending requests), their 503 `UO` replies and counters, and the
//! per-connection settings (requests per connection, idle timeout, connection lifetime,
//! `useClientProtocol`), with the overflow cases also run through real Envoy.
//!
//! Requests that must overlap are held at the upstream with `/delay/MS`; every wait is a
//! bounded poll, and no assertion is about speed.

mod support;

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::client::Resp;
use support::{envoy, Client, Gateway, Upstream};

const HOST: &str = "cb.example.com";
const CLUSTER: &str = "outbound|80||cb.test.svc.cluster.local";
const OVERFLOW: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow";

/// One service `cb` on `up` (port protocol `proto`) with `pool` as its `connectionPool`.
fn config(up: &Upstream, proto: &str, pool: &str) -> String {
    let mut y = support::fixtures::base(&[("cb.test.svc.cluster.local", &[(up, "v1")], proto)]);
    y.push_str(&format!(
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: cb, namespace: test}}\n\
         spec:\n  host: cb.test.svc.cluster.local\n  trafficPolicy:\n    connectionPool: {pool}\n\
         ---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: cb, namespace: test}}\n\
         spec:\n  hosts: [{HOST}]\n  gateways: [istio-system/gw]\n  http:\n  - route: [{{destination: {{host: cb}}}}]\n"
    ));
    y
}

/// One worker, so connection counts do not depend on which worker took a client.
fn start(up: &Upstream, proto: &str, pool: &str) -> Gateway {
    Gateway::start_with(&config(up, proto, pool), &["--concurrency", "1"])
}

/// GET `path` on a thread of its own (its own client), for requests that must overlap.
fn spawn_get(port: u16, path: &'static str) -> JoinHandle<Resp> {
    std::thread::spawn(move || Client::http1(port).get(HOST, path))
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn prometheus(gw: &Gateway) -> String {
    String::from_utf8_lossy(
        &Client::http1(gw.stats)
            .get("localhost", "/stats/prometheus")
            .body,
    )
    .into_owned()
}

/// A per-cluster value on `/stats/prometheus`.
fn stat(gw: &Gateway, name: &str) -> u64 {
    gw.cluster_stat(CLUSTER, name)
}

/// A cluster value on Envoy's admin `/stats` (`cluster.NAME.STAT: N`).
fn envoy_stat(ev: &envoy::Envoy, name: &str) -> u64 {
    ev.cluster_stat(CLUSTER, name)
}

fn assert_overflow(r: &Resp) {
    assert_eq!(r.status, 503);
    assert_eq!(String::from_utf8_lossy(&r.body), OVERFLOW);
    assert_eq!(r.header("x-envoy-overloaded"), Some("true"));
}

/// `http2MaxRequests: 1` on an HTTP/1.1 upstream: while one request is active a second one
/// is refused once it has a connection. What the client and the upstream saw.
fn max_requests_case(port: u16, up: &Upstream) -> (Resp, usize, usize) {
    let slow = spawn_get(port, "/delay/3000");
    wait_until("the slow request upstream", || up.count() == 1);
    let refused = Client::http1(port).get(HOST, "/");
    let seen = up.count();
    let slow = slow.join().expect("slow request");
    assert_eq!(slow.status, 200, "the admitted request is served");
    let after = Client::http1(port).get(HOST, "/");
    assert_eq!(after.status, 200, "the slot came back");
    (refused, seen, up.accepted())
}

/// `maxConnections: 1`, `http1MaxPendingRequests: 1`: one request on the connection, one
/// pending, the third refused; the pending one is served on the same connection after.
fn pending_case(port: u16, up: &Upstream, pending: impl Fn() -> u64) -> (Resp, usize) {
    let first = spawn_get(port, "/delay/3000");
    wait_until("the first request upstream", || up.count() == 1);
    let second = spawn_get(port, "/second");
    wait_until("one pending request", || pending() == 1);
    let refused = Client::http1(port).get(HOST, "/third");
    assert_eq!(first.join().expect("first").status, 200);
    let second = second.join().expect("second");
    assert_eq!(second.status, 200, "the pending request is served");
    assert_eq!(up.last().path, "/second");
    (refused, up.accepted())
}

#[test]
fn max_requests_overflow_is_503_uo_and_counted() {
    let up = Upstream::echo("cb");
    let gw = start(&up, "HTTP", "{http: {http2MaxRequests: 1}}");
    let (refused, seen, accepted) = max_requests_case(gw.port, &up);
    assert_overflow(&refused);
    assert_eq!(seen, 1, "the refused request never reached the upstream");
    // Like Envoy: the refused request had a new connection opened for it first.
    assert_eq!(accepted, 2);
    assert_eq!(stat(&gw, "upstream_rq_active_overflow"), 1);
    assert_eq!(stat(&gw, "upstream_rq_pending_overflow"), 0);
    assert_eq!(stat(&gw, "upstream_cx_overflow"), 0);
    assert_eq!(stat(&gw, "upstream_rq_active"), 0);
    assert_eq!(stat(&gw, "circuit_breakers_default_remaining_rq"), 1);
    let text = prometheus(&gw);
    assert!(
        text.lines().any(|l| l.starts_with("istio_requests_total{")
            && l.contains("response_code=\"503\"")
            && l.contains("response_flags=\"UO\"")),
        "{text}"
    );
    assert!(text.contains("# TYPE envoy_cluster_upstream_rq_active gauge"));
    let clusters =
        String::from_utf8_lossy(&Client::http1(gw.admin).get("localhost", "/clusters").body)
            .into_owned();
    assert!(clusters.contains(&format!("{CLUSTER}::default_priority::max_requests::1\n")));
    assert!(clusters.contains(&format!(
        "{CLUSTER}::default_priority::max_connections::4294967295\n"
    )));
    assert!(clusters.contains(&format!("{CLUSTER}::upstream_rq_active_overflow::1\n")));
}

#[test]
fn max_requests_on_http2_refuses_without_a_new_connection() {
    let up = Upstream::echo("cb");
    let gw = start(&up, "HTTP2", "{http: {http2MaxRequests: 1}}");
    let (refused, seen, accepted) = max_requests_case(gw.port, &up);
    assert_overflow(&refused);
    assert_eq!(seen, 1);
    assert_eq!(accepted, 1, "one multiplexed connection");
    assert_eq!(stat(&gw, "upstream_rq_active_overflow"), 1);
}

#[test]
fn pending_requests_wait_for_a_connection_and_overflow_beyond_the_limit() {
    let up = Upstream::echo("cb");
    let gw = start(
        &up,
        "HTTP",
        "{tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}",
    );
    let (refused, accepted) =
        pending_case(gw.port, &up, || stat(&gw, "upstream_rq_pending_active"));
    assert_overflow(&refused);
    assert_eq!(accepted, 1, "never more than one connection");
    assert_eq!(
        up.count(),
        2,
        "the refused request never reached the upstream"
    );
    assert_eq!(stat(&gw, "upstream_rq_pending_overflow"), 1);
    assert_eq!(stat(&gw, "upstream_rq_active_overflow"), 0);
    assert!(stat(&gw, "upstream_cx_overflow") >= 1);
    assert_eq!(stat(&gw, "upstream_rq_pending_active"), 0);
    assert_eq!(
        stat(&gw, "upstream_cx_active"),
        1,
        "the connection stays pooled"
    );
}

#[test]
fn max_requests_per_connection_opens_new_connections() {
    let up = Upstream::echo("cb");
    let gw = start(&up, "HTTP", "{http: {maxRequestsPerConnection: 2}}");
    let c = Client::http1(gw.port);
    for _ in 0..5 {
        assert_eq!(c.get(HOST, "/").status, 200);
    }
    assert_eq!(up.accepted(), 3, "2 + 2 + 1 requests");
    assert_eq!(stat(&gw, "upstream_cx_max_requests"), 2);
    wait_until("the drained connections closed", || {
        up.open_connections() == 1
    });
}

#[test]
fn idle_upstream_connections_are_closed_after_idle_timeout() {
    let up = Upstream::echo("cb");
    let gw = start(&up, "HTTP", "{http: {idleTimeout: 0.4s}}");
    let c = Client::http1(gw.port);
    assert_eq!(c.get(HOST, "/").status, 200);
    assert_eq!(up.accepted(), 1);
    wait_until("the idle connection closed", || up.open_connections() == 0);
    assert_eq!(stat(&gw, "upstream_cx_idle_timeout"), 1);
    assert_eq!(stat(&gw, "upstream_cx_active"), 0);
    assert_eq!(c.get(HOST, "/").status, 200, "a new connection after");
    assert_eq!(up.accepted(), 2);
}

#[test]
fn default_idle_timeout_keeps_connections_and_busy_ones_are_not_cut() {
    let up = Upstream::echo("cb");
    // Idle 0.3s, but a request lasting longer than that on the connection is not cut.
    let gw = start(&up, "HTTP", "{http: {idleTimeout: 0.3s}}");
    assert_eq!(Client::http1(gw.port).get(HOST, "/delay/800").status, 200);
    // No connectionPool: Envoy's 1h default keeps the connection.
    let up2 = Upstream::echo("cb2");
    let gw2 = start(&up2, "HTTP", "{}");
    let c = Client::http1(gw2.port);
    assert_eq!(c.get(HOST, "/").status, 200);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(up2.open_connections(), 1);
    assert_eq!(c.get(HOST, "/").status, 200);
    assert_eq!(up2.accepted(), 1, "reused");
}

#[test]
fn max_connection_duration_drains_after_the_request() {
    let up = Upstream::echo("cb");
    let gw = start(&up, "HTTP", "{tcp: {maxConnectionDuration: 0.3s}}");
    let r = Client::http1(gw.port).get(HOST, "/delay/800");
    assert_eq!(r.status, 200, "the request in flight finishes");
    wait_until("the old connection closed", || up.open_connections() == 0);
    assert_eq!(stat(&gw, "upstream_cx_max_duration_reached"), 1);
}

#[test]
fn overflow_matches_envoy() {
    let Some(bin) = envoy::required() else {
        return;
    };
    for (proto, pool) in [
        ("HTTP", "{http: {http2MaxRequests: 1}}"),
        ("HTTP2", "{http: {http2MaxRequests: 1}}"),
        (
            "HTTP",
            "{tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}",
        ),
    ] {
        let (ours, theirs) = (Upstream::echo("cb"), Upstream::echo("cb"));
        let gw = start(&ours, proto, pool);
        // Envoy gets the same config with its own upstream.
        let mut dump = Client::http1(gw.admin)
            .get("localhost", "/config_dump")
            .json();
        dump["clusters"][0]["endpoints"][0]["port"] = theirs.port().into();
        let ev = envoy::Envoy::start(&bin, &dump);
        let what = format!("{proto} {pool}");
        let pending = pool.contains("maxConnections");
        let (a, b, counts) = if pending {
            let (a, na) = pending_case(gw.port, &ours, || stat(&gw, "upstream_rq_pending_active"));
            let (b, nb) = pending_case(ev.port, &theirs, || {
                envoy_stat(&ev, "upstream_rq_pending_active")
            });
            (a, b, ((0, na), (0, nb)))
        } else {
            let (a, sa, na) = max_requests_case(gw.port, &ours);
            let (b, sb, nb) = max_requests_case(ev.port, &theirs);
            (a, b, ((sa, na), (sb, nb)))
        };
        assert_eq!(a.status, b.status, "{what}: status");
        assert_eq!(a.body, b.body, "{what}: body");
        for h in ["x-envoy-overloaded", "content-type"] {
            assert_eq!(a.header(h), b.header(h), "{what}: header {h}");
        }
        assert_eq!(
            counts.0, counts.1,
            "{what}: (requests, connections) upstream"
        );
        for s in [
            "upstream_rq_pending_overflow",
            "upstream_rq_active_overflow",
            "upstream_cx_overflow",
        ] {
            let (x, y) = (stat(&gw, s), envoy_stat(&ev, s));
            if pending && s == "upstream_cx_overflow" {
                // Each attempt to open a connection counts; both only promise one or more.
                assert!(x >= 1 && y >= 1, "{what}: {s} meshgate {x}, envoy {y}");
            } else {
                assert_eq!(x, y, "{what}: {s}");
            }
        }
    }
}

#[test]
fn http2_connections_follow_idle_timeout_and_requests_per_connection() {
    let up = Upstream::echo("cb");
    let gw = start(
        &up,
        "HTTP2",
        "{http: {idleTimeout: 0.4s, maxRequestsPerConnection: 2}}",
    );
    let c = Client::http1(gw.port);
    for _ in 0..3 {
        assert_eq!(c.get(HOST, "/").status, 200);
    }
    assert_eq!(up.accepted(), 2, "2 + 1 requests");
    assert_eq!(stat(&gw, "upstream_cx_max_requests"), 1);
    wait_until("both connections closed", || up.open_connections() == 0);
    assert_eq!(stat(&gw, "upstream_cx_idle_timeout"), 1);
    assert_eq!(stat(&gw, "upstream_cx_active"), 0);
}

#[test]
fn use_client_protocol_keeps_the_clients_http_version() {
    let up = Upstream::echo("up");
    // An HTTP/1.1 port: without the setting every request goes upstream as HTTP/1.1.
    let plain = start(&up, "HTTP", "{http: {maxRequestsPerConnection: 0}}");
    assert_eq!(
        Client::h2c(plain.port).get(HOST, "/").json()["version"],
        "HTTP/1.1"
    );
    drop(plain);
    let gw = start(&up, "HTTP", "{http: {useClientProtocol: true}}");
    assert_eq!(
        Client::h2c(gw.port).get(HOST, "/").json()["version"],
        "HTTP/2.0"
    );
    assert_eq!(
        Client::http1(gw.port).get(HOST, "/").json()["version"],
        "HTTP/1.1"
    );
}

#[test]
fn max_concurrent_streams_opens_more_http2_connections() {
    // Three overlapping requests to an HTTP/2 upstream: one connection carries them all,
    // unless each connection may carry one stream.
    for (pool, connections) in [
        ("{http: {maxRequestsPerConnection: 0}}", 1),
        ("{http: {maxConcurrentStreams: 1}}", 3),
    ] {
        let up = Upstream::echo("up");
        let gw = start(&up, "HTTP2", pool);
        // One request first, so the connection is set up before the overlapping ones come.
        assert_eq!(Client::http1(gw.port).get(HOST, "/").status, 200);
        let clients: Vec<_> = (0..3).map(|_| spawn_get(gw.port, "/delay/400")).collect();
        for c in clients {
            let r = c.join().expect("client");
            assert_eq!(r.status, 200, "{pool}");
            assert_eq!(r.json()["version"], "HTTP/2.0");
        }
        assert_eq!(up.accepted(), connections, "{pool}");
    }
}
