//! Mirroring through the real gateway: the copy never delays or fails the main request (mirror
//! target down, hanging, or slow to read a large body), `mirrorPercentage` within statistical
//! bounds, bodies streamed to both. What the mirror receives is compared with Envoy in
//! `envoy_parity.rs`.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use support::upstream::Behaviour;
use support::{fixtures, Client, Gateway, Upstream};

/// `main` and `shadow` services, and routes on `app.example.com` mirroring to `shadow`.
fn gateway(main: &Upstream, shadow_port: u16) -> Gateway {
    let mut y = fixtures::base(&[("main.test.svc.cluster.local", &[(main, "v1")], "HTTP")]);
    y.push_str(&format!(
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: shadow, namespace: test}}\n\
         spec:\n  hosts: [shadow.test.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: 80, name: http, protocol: HTTP}}\n  endpoints:\n  - address: 127.0.0.1\n    ports: {{http: {shadow_port}}}\n\
         ---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: app, namespace: test}}\n\
         spec:\n  hosts: [app.example.com]\n  gateways: [istio-system/gw]\n  http:\n\
         \x20 - match: [{{uri: {{prefix: /some}}}}]\n    route: [{{destination: {{host: main}}}}]\n    mirror: {{host: shadow}}\n    mirrorPercentage: {{value: 25}}\n\
         \x20 - route: [{{destination: {{host: main}}}}]\n    mirrors: [{{destination: {{host: shadow}}}}]\n"
    ));
    Gateway::start(&y)
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn mirrors_get_a_copy_and_never_hold_the_main_request() {
    let main = Upstream::echo("main");
    let shadow = Upstream::echo("shadow");
    let gw = gateway(&main, shadow.port());
    let c = Client::http1(gw.port);

    // A body streams to both.
    let body = Bytes::from(vec![b'z'; 200_000]);
    let r = c.send(Method::PUT, "app.example.com", "/all", &[], body);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["bodyBytes"], 200_000);
    wait_for("the mirror", || shadow.count() == 1);
    let seen = shadow.last();
    assert_eq!(seen.body_bytes, 200_000);
    assert_eq!(seen.headers["host"], "app.example.com-shadow");
    assert_eq!(seen.path, "/all");

    // A hanging mirror: the main answer does not wait for it.
    shadow.set_behaviour(Behaviour::Hang);
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(c.get("app.example.com", "/all").status, 200);
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    shadow.set_behaviour(Behaviour::Normal);
}

#[test]
fn a_dead_mirror_target_changes_nothing_and_percentages_hold() {
    let main = Upstream::echo("main");
    let shadow = Upstream::echo("shadow");
    let dead = support::free_port();
    let gw = gateway(&main, dead);
    let c = Client::h2c(gw.port);
    for _ in 0..20 {
        let r = c.get("app.example.com", "/all");
        assert_eq!(r.status, 200);
        assert_eq!(r.upstream(), "main");
    }
    drop(gw);

    let gw = gateway(&main, shadow.port());
    let c = Client::http1(gw.port);
    let n = 400;
    for _ in 0..n {
        assert_eq!(c.get("app.example.com", "/some").status, 200);
    }
    // 25% of 400: mean 100, sd 8.7; +-5 sd. Wait until the copies in flight have arrived.
    std::thread::sleep(Duration::from_millis(300));
    let mirrored = shadow.count();
    assert!((56..=144).contains(&mirrored), "mirrored {mirrored} of {n}");
}
