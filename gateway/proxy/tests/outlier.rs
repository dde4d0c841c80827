//! Outlier detection through the real gateway with real upstreams that fail and recover on
//! cue: which endpoint serves each request, and Envoy's `outlier_detection.*` counters.

mod support;

use std::time::{Duration, Instant};

use support::upstream::Behaviour;
use support::{Client, Gateway, Upstream};

const CLUSTER: &str = "outbound|80||svc.test.svc.cluster.local";

/// A gateway routing `od.example.com` to `svc` with these endpoint ports (round robin) and
/// this `outlierDetection` (YAML flow mapping).
fn gateway(ports: &[u16], outlier: &str) -> Gateway {
    Gateway::start(&config(ports, outlier, ""))
}

/// The config of [`gateway`], with `routes` (VirtualService http entries) before the default.
/// The default route turns Istio's default retries off, so each request is one attempt and
/// the counts below are the detector's alone (`retries.rs` covers retries with ejections).
fn config(ports: &[u16], outlier: &str, routes: &str) -> String {
    let mut y = String::from(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\n\
         spec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: {PORT}, name: http, protocol: HTTP}\n    hosts: ['*/*']\n\
         ---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: svc, namespace: test}\n\
         spec:\n  hosts: [svc.test.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints:\n",
    );
    for p in ports {
        y.push_str(&format!(
            "  - {{address: 127.0.0.1, ports: {{http: {p}}}}}\n"
        ));
    }
    y.push_str(&format!(
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc, namespace: test}}\n\
         spec:\n  host: svc.test.svc.cluster.local\n  trafficPolicy:\n    loadBalancer: {{simple: ROUND_ROBIN}}\n    outlierDetection: {outlier}\n\
         ---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs, namespace: test}}\n\
         spec:\n  hosts: [od.example.com]\n  gateways: [istio-system/gw]\n  http:\n{routes}  - route: [{{destination: {{host: svc.test.svc.cluster.local}}}}]\n    retries: {{attempts: 0}}\n"
    ));
    y
}

/// Sends `n` requests; returns their statuses.
fn send(c: &Client, n: usize) -> Vec<u16> {
    (0..n)
        .map(|_| c.get("od.example.com", "/").status.as_u16())
        .collect()
}

/// One `outlier_detection` counter of the cluster on `/stats/prometheus`.
fn stat(gw: &Gateway, name: &str) -> u64 {
    gw.cluster_stat(CLUSTER, &format!("outlier_detection_{name}"))
}

/// Waits (bounded) until `f` holds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A loopback port where nothing listens.
fn closed_port() -> u16 {
    support::free_port()
}

#[test]
fn consecutive_5xx_ejects_and_the_endpoint_returns() {
    let (bad, good) = (Upstream::echo("bad"), Upstream::echo("good"));
    bad.set_behaviour(Behaviour::Status(503));
    let gw = gateway(
        &[bad.port(), good.port()],
        "{consecutive5xxErrors: 3, maxEjectionPercent: 50, interval: 0.2s, baseEjectionTime: 0.5s}",
    );
    let c = Client::http1(gw.port);
    let statuses = send(&c, 20);
    assert_eq!(bad.count(), 3, "ejected after its third 5xx");
    assert_eq!(good.count(), 17);
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 3);
    assert_eq!(stat(&gw, "ejections_active"), 1);
    assert_eq!(stat(&gw, "ejections_enforced_total"), 1);
    assert_eq!(stat(&gw, "ejections_enforced_consecutive_5xx"), 1);
    let clusters =
        String::from_utf8_lossy(&Client::http1(gw.admin).get("localhost", "/clusters").body)
            .into_owned();
    let flag = format!(
        "{CLUSTER}::127.0.0.1:{}::health_flags::/failed_outlier_check",
        bad.port()
    );
    assert!(clusters.contains(&flag), "{clusters}");
    // Healthy again: back in service once the ejection time is over.
    bad.set_behaviour(Behaviour::Normal);
    eventually("the ejected endpoint serves again", || {
        send(&c, 2);
        bad.count() > 3
    });
    assert_eq!(stat(&gw, "ejections_active"), 0);
    assert!(send(&c, 10).iter().all(|s| *s == 200));
}

#[test]
fn gateway_errors_count_only_502_to_504() {
    let (bad, good) = (Upstream::echo("bad"), Upstream::echo("good"));
    bad.set_behaviour(Behaviour::Status(500));
    let gw = gateway(
        &[bad.port(), good.port()],
        "{consecutive5xxErrors: 0, consecutiveGatewayErrors: 2, maxEjectionPercent: 50}",
    );
    let c = Client::http1(gw.port);
    send(&c, 12);
    assert_eq!(bad.count(), 6, "500s are not gateway errors");
    bad.set_behaviour(Behaviour::Status(502));
    send(&c, 12);
    assert_eq!(bad.count(), 8, "ejected after two 502s");
    assert_eq!(
        stat(&gw, "ejections_enforced_consecutive_gateway_failure"),
        1
    );
    assert_eq!(stat(&gw, "ejections_enforced_consecutive_5xx"), 0);
}

#[test]
fn local_origin_failures_count_as_5xx_when_not_split() {
    let good = Upstream::echo("good");
    let gw = gateway(
        &[closed_port(), good.port()],
        "{consecutive5xxErrors: 2, maxEjectionPercent: 50}",
    );
    let c = Client::http1(gw.port);
    let statuses = send(&c, 12);
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(good.count(), 10);
    assert_eq!(stat(&gw, "ejections_enforced_consecutive_5xx"), 1);
    // Resets too.
    let (bad, good) = (Upstream::echo("bad"), Upstream::echo("good"));
    bad.set_behaviour(Behaviour::Reset);
    let gw = gateway(
        &[bad.port(), good.port()],
        "{consecutive5xxErrors: 2, maxEjectionPercent: 50}",
    );
    send(&Client::http1(gw.port), 12);
    assert_eq!(bad.count(), 2);
}

#[test]
fn split_local_origin_failures_count_apart() {
    let good = Upstream::echo("good");
    let gw = gateway(
        &[closed_port(), good.port()],
        "{splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 3, consecutive5xxErrors: 1, maxEjectionPercent: 50}",
    );
    let statuses = send(&Client::http1(gw.port), 12);
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        stat(&gw, "ejections_enforced_consecutive_local_origin_failure"),
        1
    );
    assert_eq!(
        stat(&gw, "ejections_enforced_consecutive_5xx"),
        0,
        "not counted as 5xx"
    );
    // A reset after the connection was made is a local-origin failure preceded by a
    // successful connect (Envoy's accounting), so it never adds up to 3.
    let (bad, good) = (Upstream::echo("bad"), Upstream::echo("good"));
    bad.set_behaviour(Behaviour::Reset);
    let gw = gateway(
        &[bad.port(), good.port()],
        "{splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 3, maxEjectionPercent: 50}",
    );
    send(&Client::http1(gw.port), 12);
    assert_eq!(bad.count(), 6);
    assert_eq!(stat(&gw, "ejections_enforced_total"), 0);
}

#[test]
fn the_last_endpoint_ejected_means_no_healthy_upstream() {
    let only = Upstream::echo("only");
    only.set_behaviour(Behaviour::Status(503));
    let gw = gateway(
        &[only.port()],
        "{consecutive5xxErrors: 2, maxEjectionPercent: 100}",
    );
    let c = Client::http1(gw.port);
    send(&c, 2);
    let r = c.get("od.example.com", "/");
    assert_eq!(r.status, 503);
    assert_eq!(&r.body[..], b"no healthy upstream");
    assert_eq!(only.count(), 2);
    assert_eq!(stat(&gw, "ejections_active"), 1);
}

#[test]
fn max_ejection_percent_overflows() {
    // Istio's (Envoy's) default of 10% never allows ejecting one endpoint out of two.
    let (bad, good) = (Upstream::echo("bad"), Upstream::echo("good"));
    bad.set_behaviour(Behaviour::Status(503));
    let gw = gateway(&[bad.port(), good.port()], "{consecutive5xxErrors: 2}");
    send(&Client::http1(gw.port), 12);
    assert_eq!(bad.count(), 6, "never ejected");
    // Three consecutive-5xx outliers, and one gateway-failure outlier (Envoy detects those at
    // its default of 5 even when Istio does not enforce them).
    assert_eq!(stat(&gw, "ejections_overflow"), 4);
    assert_eq!(stat(&gw, "ejections_active"), 0);
}

#[test]
fn below_min_health_percent_every_endpoint_gets_traffic() {
    let (bad, good) = (Upstream::echo("bad"), Upstream::echo("good"));
    bad.set_behaviour(Behaviour::Status(503));
    let gw = gateway(
        &[bad.port(), good.port()],
        "{consecutive5xxErrors: 2, maxEjectionPercent: 100, minHealthPercent: 60}",
    );
    send(&Client::http1(gw.port), 12);
    assert_eq!(stat(&gw, "ejections_active"), 1, "ejected");
    assert_eq!(
        bad.count(),
        6,
        "but 50% healthy < 60%: the load balancer panics"
    );
}

/// Which upstream served each of `n` requests (empty: none did).
fn served(c: &Client, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| c.get("od.example.com", "/").upstream().to_owned())
        .collect()
}

#[test]
fn ejections_match_envoy() {
    let Some(bin) = support::envoy::required() else {
        return;
    };
    // Ejected and out of rotation; over maxEjectionPercent (the default 10% of two endpoints);
    // gateway errors alone; ejected but in panic (50% healthy < 60%), so still served.
    // Counts are not compared: Envoy's ejection lands a moment after the threshold is hit.
    let scenarios = [
        "{consecutive5xxErrors: 3, maxEjectionPercent: 50}",
        "{consecutive5xxErrors: 3}",
        "{consecutive5xxErrors: 0, consecutiveGatewayErrors: 2, maxEjectionPercent: 100}",
        "{consecutive5xxErrors: 2, maxEjectionPercent: 100, minHealthPercent: 60}",
    ];
    for od in scenarios {
        let (bad, good) = (Upstream::echo("bad"), Upstream::echo("good"));
        let gw = gateway(&[bad.port(), good.port()], od);
        let dump = Client::http1(gw.admin)
            .get("localhost", "/config_dump")
            .json();
        let ev = support::envoy::Envoy::start(&bin, &dump);
        // How many endpoints each proxy holds ejected now.
        let ours = || stat(&gw, "ejections_active");
        let theirs = || {
            let text = String::from_utf8_lossy(
                &Client::http1(ev.admin)
                    .get(
                        "localhost",
                        "/stats?filter=outlier_detection.ejections_active",
                    )
                    .body,
            )
            .into_owned();
            text.lines()
                .find_map(|l| {
                    l.rsplit_once(": ")
                        .and_then(|(_, v)| v.trim().parse::<u64>().ok())
                })
                .unwrap_or(0)
        };
        let mut runs = Vec::new();
        for (port, active) in [
            (gw.port, &ours as &dyn Fn() -> u64),
            (ev.port, &theirs as &dyn Fn() -> u64),
        ] {
            // Both upstreams answer normally while a connection to each is set up, then the
            // first one fails with a gateway error, and keeps failing.
            let c = Client::http1(port);
            served(&c, 2);
            bad.set_behaviour(Behaviour::Status(503));
            served(&c, 12);
            // Envoy ejects on its main thread a moment later: let each proxy settle (bounded).
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while active() == 0 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let ejected = active();
            // Who serves from then on.
            let mut tail = served(&c, 8);
            tail.sort();
            tail.dedup();
            bad.set_behaviour(Behaviour::Normal);
            runs.push((ejected, tail));
        }
        assert_eq!(
            runs[0], runs[1],
            "{od}: meshgate (left) and Envoy (right) differ (endpoints ejected, who serves)"
        );
    }
}

#[test]
fn ejections_survive_a_config_swap_that_keeps_the_cluster() {
    let (bad, good) = (Upstream::echo("bad"), Upstream::echo("good"));
    bad.set_behaviour(Behaviour::Status(503));
    let ports = [bad.port(), good.port()];
    let od = "{consecutive5xxErrors: 2, maxEjectionPercent: 50, baseEjectionTime: 60s}";
    let gw = gateway(&ports, od);
    let c = Client::http1(gw.port);
    send(&c, 6);
    assert_eq!(bad.count(), 2);
    bad.set_behaviour(Behaviour::Normal);
    // An unrelated change: the cluster's live state (and the ejection) is kept.
    let route = "  - match: [{uri: {prefix: /swapped}}]\n    directResponse: {status: 202}\n";
    gw.rewrite_config(&config(&ports, od, route));
    eventually("the new route", || {
        c.get("od.example.com", "/swapped").status == 202
    });
    send(&c, 6);
    assert_eq!(bad.count(), 2, "still ejected after the swap");
    assert_eq!(stat(&gw, "ejections_active"), 1);
    // A changed outlier policy is a new cluster state: nothing ejected any more.
    let od2 = "{consecutive5xxErrors: 3, maxEjectionPercent: 50, baseEjectionTime: 60s}";
    gw.rewrite_config(&config(&ports, od2, route));
    eventually("the new policy", || {
        send(&c, 2);
        bad.count() > 2
    });
    assert_eq!(stat(&gw, "ejections_active"), 0);
}
