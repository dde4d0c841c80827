//! rate-limit (`plugins/rate-limit`) in meshgate's runtime: buckets per key, refill from the
//! host clock, the 429 and its headers, the state in shared data, refused configurations.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use meshgate_testkit::{Error, Harness, LocalReply, StreamInfo};

macro_rules! plugin {
    ($config:expr) => {
        match support::plugin("rate-limit") {
            Some(p) => Harness::load(&p, $config).expect("harness"),
            None => return,
        }
    };
}

/// One request with `headers`; `None` when it went on, the reply when limited.
fn request(h: &Harness, headers: &[(&str, &str)]) -> Option<LocalReply> {
    let mut s = h.stream();
    let out = s.request_headers(headers, true).expect("request headers");
    let reply = out.local_reply().cloned();
    s.end().expect("test step");
    reply
}

fn user(h: &Harness, name: &str) -> Option<LocalReply> {
    request(h, &[(":authority", "shop"), ("x-user", name)])
}

const PER_USER: &str =
    r#"{"capacity": 2, "tokensPerSecond": 1, "key": {"type": "header", "name": "x-user"}}"#;

#[test]
fn each_key_has_its_bucket_and_an_empty_one_answers_429() {
    let h = plugin!(PER_USER);
    assert!(user(&h, "alice").is_none());
    assert!(user(&h, "alice").is_none());
    let r = user(&h, "alice").expect("third request limited");
    assert_eq!(r.status, 429);
    assert_eq!(r.body_text(), "local_rate_limited");
    assert_eq!(r.headers.get("retry-after"), Some("1"));
    assert_eq!(r.headers.get("x-ratelimit-limit"), Some("2"));
    assert_eq!(r.headers.get("x-ratelimit-remaining"), Some("0"));
    assert_eq!(r.headers.get("x-ratelimit-reset"), Some("1"));
    assert_eq!(r.headers.get("x-envoy-ratelimited"), Some("true"));
    assert!(user(&h, "bob").is_none(), "bob has his own bucket");
    assert_eq!(h.counter("rate_limit_allowed_total"), Some(3));
    assert_eq!(h.counter("rate_limit_limited_total"), Some(1));
    assert_eq!(h.counter("rate_limit_errors_total"), Some(0));
}

#[test]
fn tokens_come_back_with_the_clock_up_to_the_capacity() {
    let h = plugin!(r#"{"capacity": 2, "tokensPerSecond": 0.5, "key": {"type": "global"}}"#);
    assert!(request(&h, &[]).is_none());
    assert!(request(&h, &[]).is_none());
    assert_eq!(
        request(&h, &[])
            .expect("test step")
            .headers
            .get("retry-after"),
        Some("2")
    );
    h.advance(Duration::from_millis(1500)).expect("test step");
    assert_eq!(
        request(&h, &[])
            .expect("test step")
            .headers
            .get("retry-after"),
        Some("1")
    );
    h.advance(Duration::from_millis(500)).expect("test step");
    assert!(request(&h, &[]).is_none(), "one token after 2 s");
    assert!(request(&h, &[]).is_some());
    // A long pause fills the bucket, never beyond its capacity.
    h.advance(Duration::from_secs(3600)).expect("test step");
    assert!(request(&h, &[]).is_none());
    assert!(request(&h, &[]).is_none());
    assert!(request(&h, &[]).is_some());
}

#[test]
fn allowed_responses_carry_the_remaining_quota() {
    let h = plugin!(PER_USER);
    let mut s = h.stream();
    assert!(s
        .request_headers(&[("x-user", "alice")], true)
        .expect("test step")
        .is_continue());
    assert!(s
        .response_headers(&[(":status", "200")], true)
        .expect("test step")
        .is_continue());
    let resp = s.forwarded_response();
    assert_eq!(resp.get("x-ratelimit-limit"), Some("2"));
    assert_eq!(resp.get("x-ratelimit-remaining"), Some("1"));
    assert_eq!(resp.get("x-ratelimit-reset"), Some("0"));
    // And not with `headers: false`.
    let h = plugin!(r#"{"headers": false, "capacity": 1}"#);
    let mut s = h.stream();
    s.request_headers(&[], true).expect("test step");
    s.response_headers(&[(":status", "200")], true)
        .expect("test step");
    assert!(!s.forwarded_response().contains("x-ratelimit-limit"));
    let r = request(&h, &[]).expect("limited");
    assert!(!r.headers.contains("x-ratelimit-limit"));
    assert_eq!(r.headers.get("retry-after"), Some("1"));
}

#[test]
fn the_bucket_lives_in_shared_data_for_every_vm() {
    let h = plugin!(PER_USER);
    assert!(user(&h, "alice").is_none());
    // The harness names the plugin after its file: the key is rate-limit/<plugin>/k:<key>.
    let key = "rate-limit/rate-limit/k:alice";
    let v = h.shared_data(key).expect("bucket stored");
    assert_eq!(v.len(), 16);
    assert_eq!(
        u64::from_le_bytes(v[..8].try_into().expect("test step")),
        1_000_000
    );
    // Another VM (another worker) took the last token: this one sees it.
    let mut drained = v.to_vec();
    drained[..8].copy_from_slice(&0u64.to_le_bytes());
    h.set_shared_data(key, &drained);
    assert_eq!(user(&h, "alice").map(|r| r.status), Some(429));
    // A value this plugin did not write reads as a full bucket, and is repaired.
    h.set_shared_data(key, b"garbage");
    assert!(user(&h, "alice").is_none());
    assert_eq!(h.shared_data(key).expect("test step").len(), 16);
}

#[test]
fn keys_from_the_client_address_and_the_authority() {
    let h = plugin!(r#"{"capacity": 1, "key": {"type": "sourceAddress"}}"#);
    let from = |ip: [u8; 4], port: u16| {
        let mut s = h.stream_with(StreamInfo {
            source: Some(SocketAddr::from((ip, port))),
            protocol: "HTTP/1.1",
            ..StreamInfo::default()
        });
        let limited = s
            .request_headers(&[], true)
            .expect("test step")
            .local_reply()
            .is_some();
        s.end().expect("test step");
        limited
    };
    assert!(!from([10, 0, 0, 1], 1000));
    assert!(
        from([10, 0, 0, 1], 2000),
        "same address, other port: same bucket"
    );
    assert!(!from([10, 0, 0, 2], 1000));
    assert!(h.shared_data("rate-limit/rate-limit/k:10.0.0.1").is_some());

    let h = plugin!(r#"{"capacity": 1, "key": {"type": "authority"}}"#);
    assert!(request(&h, &[(":authority", "a.example")]).is_none());
    assert!(request(&h, &[(":authority", "a.example")]).is_some());
    assert!(request(&h, &[(":authority", "b.example")]).is_none());
}

#[test]
fn requests_without_the_key_share_a_bucket_or_go_unlimited() {
    let h = plugin!(r#"{"capacity": 1, "key": {"type": "header", "name": "x-user"}}"#);
    assert!(request(&h, &[]).is_none());
    assert!(request(&h, &[]).is_some(), "the shared bucket for no key");
    assert!(user(&h, "alice").is_none());
    // A key longer than maxKeyBytes (default 128) is no key: the shared bucket, now empty.
    assert!(user(&h, &"x".repeat(129)).is_some());
    assert!(h
        .shared_data(&format!("rate-limit/rate-limit/k:{}", "x".repeat(129)))
        .is_none());
    let h = plugin!(
        r#"{"capacity": 1, "key": {"type": "header", "name": "x-user"}, "missingKeyBucket": null}"#
    );
    for _ in 0..5 {
        assert!(request(&h, &[]).is_none());
    }
    assert_eq!(
        h.counter("rate_limit_allowed_total"),
        Some(0),
        "not limited, not counted"
    );
}

#[test]
fn bad_configurations_are_refused_with_a_reason() {
    let Some(p) = support::plugin("rate-limit") else {
        return;
    };
    for (config, why) in [
        (r#"{"capacity": 0}"#, "capacity"),
        (r#"{"tokensPerSecond": 0}"#, "tokensPerSecond"),
        (r#"{"tokensPerSecond": -1}"#, "tokensPerSecond"),
        (
            r#"{"key": {"type": "header", "name": "X-User"}}"#,
            "lowercase",
        ),
        (r#"{"key": {"type": "cookie"}}"#, "unknown variant"),
        (r#"{"onError": "maybe"}"#, "unknown variant"),
        (r#"{"metricPrefix": "a-b"}"#, "metricPrefix"),
    ] {
        match Harness::load(&p, config) {
            Err(Error::Start { logs, .. }) => assert!(
                logs.iter().any(|l| l.message.contains(why)),
                "{config}: {logs:?}"
            ),
            other => panic!("{config}: {other:?}"),
        }
    }
}
