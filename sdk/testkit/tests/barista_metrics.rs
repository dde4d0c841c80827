//! barista-metrics (`plugins/barista-metrics`) in meshgate's runtime: which requests count as
//! orders of which drink, the body buffering, the latency histogram, refused configurations.

mod support;

use std::time::Duration;

use meshgate_testkit::{Error, Harness, Stream};

macro_rules! plugin {
    ($config:expr) => {
        match support::plugin("barista-metrics") {
            Some(p) => Harness::load(&p, $config).expect("harness"),
            None => return,
        }
    };
}

const CONFIG: &str = r#"{"drinks": ["espresso", "latte"], "maxBodyBytes": 64}"#;

fn post<'h>(h: &'h Harness, path: &str, eos: bool) -> Stream<'h> {
    let mut s = h.stream();
    let out = s
        .request_headers(&[(":method", "POST"), (":path", path)], eos)
        .expect("request headers");
    assert!(out.is_continue(), "{out:?}");
    s
}

fn counts(h: &Harness) -> [u64; 5] {
    [
        "total",
        "espresso_total",
        "latte_total",
        "other_total",
        "unknown_total",
    ]
    .map(|n| h.counter(&format!("barista_orders_{n}")).expect(n))
}

#[test]
fn an_order_in_the_body_is_counted_once_the_whole_body_is_buffered() {
    let h = plugin!(CONFIG);
    let mut s = post(&h, "/orders", false);
    // The first part is held back: the drink may be in what follows.
    assert!(s
        .request_body(&b"{\"size\": 2, \"dri"[..], false)
        .expect("test step")
        .is_paused());
    assert_eq!(counts(&h), [0, 0, 0, 0, 0]);
    assert!(s
        .request_body(&b"nk\": \"Espresso\"}"[..], true)
        .expect("test step")
        .is_continue());
    assert_eq!(counts(&h), [1, 1, 0, 0, 0]);
    // All of it went upstream, unchanged.
    assert_eq!(
        &s.forwarded_request_body()[..],
        b"{\"size\": 2, \"drink\": \"Espresso\"}"
    );
    s.end().expect("test step");
}

#[test]
fn the_query_names_the_drink_without_reading_the_body() {
    let h = plugin!(CONFIG);
    let mut s = post(&h, "/orders?drink=latte", false);
    assert_eq!(counts(&h), [1, 0, 1, 0, 0]);
    assert!(s
        .request_body(&b"{\"drink\": \"espresso\"}"[..], true)
        .expect("test step")
        .is_continue());
    assert_eq!(counts(&h), [1, 0, 1, 0, 0], "counted once, by the query");
    let mut s = post(&h, "/orders/7?drink=mocha", true);
    assert_eq!(counts(&h), [2, 0, 1, 1, 0]);
    s.end().expect("test step");
}

#[test]
fn other_drinks_unreadable_bodies_and_non_orders() {
    let h = plugin!(CONFIG);
    for (method, path, body) in [
        ("POST", "/orders", &b"{\"drink\": \"mocha\"}"[..]),
        ("POST", "/orders", &b"espresso please"[..]),
        ("POST", "/orders", &b"{\"drink\": 3}"[..]),
        ("POST", "/orders", &b"\xff\xfe"[..]),
        ("GET", "/orders?drink=espresso", &b""[..]),
        ("POST", "/menu?drink=espresso", &b""[..]),
    ] {
        let mut s = h.stream();
        s.request_headers(&[(":method", method), (":path", path)], body.is_empty())
            .expect("test step");
        if !body.is_empty() {
            assert!(s.request_body(body, true).expect("test step").is_continue());
        }
        s.end().expect("test step");
    }
    // A POST without a body and without a query: an order of an unknown drink.
    let mut s = post(&h, "/orders", true);
    s.end().expect("test step");
    assert_eq!(counts(&h), [5, 0, 0, 1, 4]);
}

#[test]
fn a_body_over_the_limit_goes_on_unread() {
    let h = plugin!(CONFIG);
    let mut s = post(&h, "/orders", false);
    let long = format!(
        "{{\"drink\": \"espresso\", \"note\": \"{}\"}}",
        "x".repeat(80)
    );
    assert!(s
        .request_body(long.clone(), false)
        .expect("test step")
        .is_continue());
    assert_eq!(counts(&h), [1, 0, 0, 0, 1]);
    assert!(s
        .request_body(&b""[..], true)
        .expect("test step")
        .is_continue());
    assert_eq!(counts(&h), [1, 0, 0, 0, 1]);
    assert_eq!(s.forwarded_request_body(), long.as_bytes());
}

#[test]
fn a_body_ended_by_trailers_is_read_there() {
    let h = plugin!(CONFIG);
    let mut s = post(&h, "/orders", false);
    assert!(s
        .request_body(&b"{\"drink\":\"latte\"}"[..], false)
        .expect("test step")
        .is_paused());
    assert!(s
        .request_trailers(&[("x-t", "1")])
        .expect("test step")
        .is_continue());
    assert_eq!(counts(&h), [1, 0, 1, 0, 0]);
}

#[test]
fn the_latency_histogram_follows_the_host_clock() {
    let h = plugin!(CONFIG);
    let mut s = post(&h, "/orders?drink=espresso", true);
    h.advance(Duration::from_millis(250)).expect("test step");
    assert!(s
        .response_headers(&[(":status", "201")], true)
        .expect("test step")
        .is_continue());
    s.end().expect("test step");
    let hist = h
        .histogram("barista_order_duration_milliseconds")
        .expect("histogram");
    assert_eq!((hist.count, hist.sum), (1, 250));
    // A request that is no order records nothing.
    let mut s = h.stream();
    s.request_headers(&[(":method", "GET"), (":path", "/menu")], true)
        .expect("test step");
    s.response_headers(&[(":status", "200")], true)
        .expect("test step");
    assert_eq!(
        h.histogram("barista_order_duration_milliseconds")
            .expect("test step")
            .count,
        1
    );
    // Without latency: no histogram at all.
    let h = plugin!(r#"{"latency": false, "metricPrefix": "cafe"}"#);
    assert!(h.histogram("cafe_order_duration_milliseconds").is_none());
    assert_eq!(h.counter("cafe_orders_espresso_total"), Some(0));
}

#[test]
fn bad_configurations_are_refused_with_a_reason() {
    let Some(p) = support::plugin("barista-metrics") else {
        return;
    };
    for (config, why) in [
        (r#"{"drinks": ["Flat White"]}"#, "only a-z"),
        (r#"{"drinks": ["other"]}"#, "not `other`"),
        (r#"{"path": "orders"}"#, "must start with /"),
        (r#"{"metricPrefix": "1x"}"#, "metricPrefix"),
        (r#"{"maxBodyBytes": 99999999}"#, "maxBodyBytes"),
        (r#"{"drinks": "espresso"}"#, "invalid type"),
        (r#"{"drinkz": []}"#, "unknown field"),
        ("[1", "line 1"),
    ] {
        match Harness::load(&p, config) {
            Err(Error::Start { logs, .. }) => assert!(
                logs.iter().any(|l| l.message.contains(why)),
                "{config}: {logs:?}"
            ),
            other => panic!("{config}: {other:?}"),
        }
    }
    // No configuration at all: the defaults (espresso on POST /orders).
    let h = Harness::load(&p, "").expect("defaults");
    let mut s = post(&h, "/orders?drink=espresso", true);
    s.end().expect("test step");
    assert_eq!(h.counter("barista_orders_espresso_total"), Some(1));
}
