//! Routing through the real gateway: every match kind and action of a VirtualService, with
//! real upstreams and a real client over HTTP/1.1 and h2c.

mod support;

use bytes::Bytes;
use http::Method;
use support::{Client, Gateway, Upstream};

fn setup() -> (Upstream, Upstream, Gateway) {
    let v1 = Upstream::echo("v1");
    let v2 = Upstream::echo("v2");
    let gw = Gateway::start(&support::fixtures::routing(&v1, &v2));
    (v1, v2, gw)
}

#[test]
fn every_match_kind_and_action() {
    let (v1, v2, gw) = setup();
    for c in [Client::http1(gw.port), Client::h2c(gw.port)] {
        // exact + header operations at route level
        let r = c.get_h("app.example.com", "/exact", &[("x-remove-me", "1")]);
        assert_eq!(r.status, 200);
        assert_eq!(r.upstream(), "v1");
        assert_eq!(r.header("x-resp"), Some("exact"));
        let seen = v1.last();
        assert_eq!(seen.headers["x-route"], "exact");
        assert_eq!(seen.headers["x-added"], "one");
        assert!(seen.headers.get("x-remove-me").is_none());
        assert_eq!(seen.headers["host"], "app.example.com");
        assert_eq!(
            c.get("app.example.com", "/exact/more").upstream(),
            "v1",
            "exact is not prefix"
        );

        assert_eq!(c.get("app.example.com", "/re/123").upstream(), "v2");
        assert_eq!(
            c.get("app.example.com", "/re/12x").upstream(),
            "v1",
            "regex matches the whole path"
        );
        assert_eq!(c.get("app.example.com", "/nocase/x").upstream(), "v2");

        let post = |hs: &[(&str, &str)]| {
            c.send(
                Method::POST,
                "app.example.com",
                "/submit",
                hs,
                Bytes::from_static(b"body"),
            )
        };
        assert_eq!(
            post(&[("x-tenant", "gold-1"), ("x-present", "")]).upstream(),
            "v2"
        );
        assert_eq!(
            post(&[("x-tenant", "silver"), ("x-present", "1")]).upstream(),
            "v1"
        );
        assert_eq!(
            post(&[("x-tenant", "gold")]).upstream(),
            "v1",
            "x-present must be present"
        );
        assert_eq!(
            c.get_h(
                "app.example.com",
                "/submit",
                &[("x-tenant", "gold"), ("x-present", "1")]
            )
            .upstream(),
            "v1"
        );

        assert_eq!(c.get("app.example.com", "/without").upstream(), "v2");
        assert_eq!(
            c.get_h("app.example.com", "/without", &[("x-block", "yes")])
                .upstream(),
            "v1"
        );
        assert_eq!(
            c.get("app.example.com", "/query?x=1&id=42").upstream(),
            "v2"
        );
        assert_eq!(c.get("app.example.com", "/query?id=abc").upstream(), "v1");
        assert_eq!(c.get("api.wild.example.com", "/auth").upstream(), "v2");
        assert_eq!(c.get("app.example.com", "/auth").upstream(), "v1");
        assert_eq!(
            c.get("app.example.com", "/port").upstream(),
            "v1",
            "match on another port is pruned"
        );

        let r = c.get("app.example.com", "/old/path?q=1");
        assert_eq!(r.status, 308);
        assert_eq!(
            r.header("location"),
            Some("http://moved.example.com/new?q=1")
        );
        let r = c.get(&format!("app.example.com:{}", gw.port), "/secure/x");
        assert_eq!(r.status, 301);
        assert_eq!(
            r.header("location"),
            Some("https://app.example.com/secure/x")
        );

        let r = c.get("app.example.com", "/direct");
        assert_eq!(r.status, 418);
        assert_eq!(&r.body[..], b"short and stout");

        let r = c.get("app.example.com", "/api/v1/items?x=1");
        assert_eq!(r.upstream(), "v1");
        let seen = v1.last();
        assert_eq!(seen.path, "/v2/items?x=1");
        assert_eq!(seen.headers["host"], "internal.svc");
        assert_eq!(seen.headers["x-envoy-original-host"], "app.example.com");
        c.get("app.example.com", "/users/42/profile");
        assert_eq!(v1.last().path, "/u/profile/42");

        // unknown host: no virtual host -> 404 (Envoy's NR)
        let r = c.get("other.example.org", "/exact");
        assert_eq!(r.status, 404);
        assert!(r.body.is_empty());
    }
    let _ = v2;
}

#[test]
fn weighted_split_is_within_statistical_bounds() {
    let (_v1, _v2, gw) = setup();
    let c = Client::http1(gw.port);
    let n = 1000;
    let mut to_v2 = 0;
    for _ in 0..n {
        let r = c.get("app.example.com", "/split");
        match r.upstream() {
            "v2" => {
                to_v2 += 1;
                assert_eq!(r.header("x-dest"), Some("v2"));
                assert_eq!(r.json()["headers"]["x-dest-req"], "v2");
            }
            "v1" => assert_eq!(r.header("x-dest"), Some("v1")),
            other => panic!("unexpected upstream {other:?}"),
        }
    }
    // 20% of 1000: mean 200, sd 12.6; +-5 sd.
    assert!((137..=263).contains(&to_v2), "v2 got {to_v2} of {n}");
}

#[test]
fn edge_headers_follow_envoy() {
    let (v1, _v2, gw) = setup();
    let c = Client::http1(gw.port);
    let r = c.get_h(
        "app.example.com",
        "/exact",
        &[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-envoy-retry-on", "5xx"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
        ],
    );
    assert_eq!(r.status, 200);
    let seen = v1.last();
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.9,127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-request-id"].len(), 36);
    assert!(
        seen.headers.get("x-envoy-retry-on").is_none(),
        "internal headers are not trusted from clients"
    );
    assert!(
        seen.headers.get("x-hop").is_none(),
        "headers named by Connection are hop-by-hop"
    );
    assert!(r.header("x-envoy-upstream-service-time").is_some());
    // A gateway's clients are external: like Envoy under Istio, their request id is replaced.
    c.get_h("app.example.com", "/exact", &[("x-request-id", "abc-123")]);
    let id = v1.last().headers["x-request-id"]
        .to_str()
        .unwrap_or("")
        .to_owned();
    assert!(id != "abc-123" && id.len() == 36, "{id}");
    assert_eq!(v1.last().headers["x-envoy-external-address"], "127.0.0.1");
}
