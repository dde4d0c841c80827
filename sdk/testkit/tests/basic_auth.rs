//! basic-auth (`plugins/basic-auth`) in meshgate's runtime: 401 and its challenge, admitted
//! users, rules per path and method, what goes upstream, metrics, refused configurations.

mod support;

use meshgate_testkit::{Error, Harness, Headers, LocalReply, LogLevel};

macro_rules! plugin {
    ($config:expr) => {
        match support::plugin("basic-auth") {
            Some(p) => Harness::load(&p, $config).expect("harness"),
            None => return,
        }
    };
}

fn basic(credentials: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::from("Basic ");
    for chunk in credentials.as_bytes().chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, x| acc << 8 | u32::from(*x)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                A[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

// printf s3cret | sha256sum
const ALICE: &str = "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0";

fn config(extra: &str) -> String {
    format!(
        r#"{{"realm": "coffee", "users": [{{"user": "alice", "sha256": "{ALICE}"}}, {{"user": "bob", "password": "hunter2"}}]{extra}}}"#
    )
}

/// The request: `Ok(forwarded headers)` or `Err(local reply)`.
fn request(
    h: &Harness,
    method: &str,
    path: &str,
    auth: Option<&str>,
) -> Result<Headers, LocalReply> {
    let mut headers = vec![(":method", method), (":path", path), ("x-user", "forged")];
    if let Some(a) = auth {
        headers.push(("authorization", a));
    }
    let mut s = h.stream();
    let out = s.request_headers(&headers, true).expect("request headers");
    let r = match out.local_reply() {
        Some(r) => Err(r.clone()),
        None => {
            assert!(out.is_continue(), "{out:?}");
            Ok(s.forwarded_request())
        }
    };
    s.end().expect("test step");
    r
}

#[test]
fn missing_or_wrong_credentials_get_401_with_the_challenge() {
    let h = plugin!(&config(""));
    for auth in [
        None,
        Some(basic("alice:wrong")),
        Some(basic("carol:s3cret")),
        Some(basic("alice")),
        Some(basic("ALICE:s3cret")),
        Some("Bearer abc".to_owned()),
        Some("Basic !!!not-base64".to_owned()),
        Some("Basic".to_owned()),
        Some(format!("Basic {}", "QUFB".repeat(2000))),
        Some("Basic /w==".to_owned()),
    ] {
        let r = request(&h, "GET", "/", auth.as_deref()).expect_err("denied");
        assert_eq!(r.status, 401, "{auth:?}");
        assert_eq!(
            r.headers.get("www-authenticate"),
            Some(r#"Basic realm="coffee", charset="UTF-8""#)
        );
    }
    assert_eq!(h.counter("basic_auth_denied_total"), Some(10));
    assert_eq!(h.counter("basic_auth_allowed_total"), Some(0));
}

#[test]
fn a_user_gets_through_without_authorization_upstream() {
    let h = plugin!(&config(r#", "forwardUsernameHeader": "x-user""#));
    let f = request(&h, "GET", "/orders", Some(&basic("alice:s3cret"))).expect("admitted");
    assert!(!f.contains("authorization"));
    assert_eq!(
        f.get_all("x-user"),
        ["alice"],
        "the forged copy is replaced"
    );
    // Plain-text password (development), a password with a colon in it is not one of them.
    let f = request(&h, "POST", "/orders", Some(&basic("bob:hunter2"))).expect("admitted");
    assert_eq!(f.get_all("x-user"), ["bob"]);
    assert!(request(&h, "GET", "/", Some(&basic("bob:hunter2:x"))).is_err());
    assert_eq!(h.counter("basic_auth_allowed_total"), Some(2));
    // The plain password was warned about when the configuration was loaded.
    assert!(h
        .logs_at(LogLevel::Warn)
        .iter()
        .any(|l| l.contains("\"bob\" has a plain-text password")));
    // The scheme is case-insensitive.
    let lower = basic("alice:s3cret").replacen("Basic", "basic", 1);
    assert!(request(&h, "GET", "/", Some(&lower)).is_ok());
}

#[test]
fn authorization_can_be_kept_and_no_user_header_by_default() {
    let h = plugin!(&config(r#", "removeAuthorization": false"#));
    let creds = basic("alice:s3cret");
    let f = request(&h, "GET", "/", Some(&creds)).expect("admitted");
    assert_eq!(f.get("authorization"), Some(creds.as_str()));
    assert_eq!(
        f.get("x-user"),
        Some("forged"),
        "no forwardUsernameHeader: not the plugin's"
    );
}

#[test]
fn rules_pick_the_paths_methods_and_users() {
    let h = plugin!(&config(
        r#", "forwardUsernameHeader": "x-user", "rules": [
            {"prefix": "/healthz", "require": false},
            {"prefix": "/admin", "users": ["alice"]},
            {"prefix": "/orders", "methods": ["POST", "DELETE"]}
        ]"#
    ));
    // Public: no credentials needed, and the forged user header still goes.
    let f = request(&h, "GET", "/healthz", None).expect("public");
    assert!(!f.contains("x-user"));
    // Not covered by any rule: open.
    assert!(request(&h, "GET", "/menu", None).is_ok());
    assert!(request(&h, "GET", "/orders", None).is_ok());
    // Covered by method.
    assert_eq!(
        request(&h, "post", "/orders", None)
            .expect_err("denied")
            .status,
        401
    );
    assert!(request(&h, "DELETE", "/orders/1", Some(&basic("bob:hunter2"))).is_ok());
    // /admin: alice only; bob is known but not admitted.
    assert!(request(&h, "GET", "/admin/x", Some(&basic("alice:s3cret"))).is_ok());
    let r = request(&h, "GET", "/admin/x", Some(&basic("bob:hunter2"))).expect_err("denied");
    assert_eq!(r.status, 403);
    assert!(!r.headers.contains("www-authenticate"));
    assert_eq!(
        request(&h, "GET", "/admin", None)
            .expect_err("denied")
            .status,
        401
    );
}

#[test]
fn bad_configurations_are_refused_with_a_reason() {
    let Some(p) = support::plugin("basic-auth") else {
        return;
    };
    for (config, why) in [
        (
            r#"{"users": [{"user": "a", "sha256": "abc"}]}"#,
            "64 hex digits",
        ),
        (
            r#"{"users": [{"user": "a"}]}"#,
            "exactly one of sha256 and password",
        ),
        (
            &format!(r#"{{"users": [{{"user": "a", "sha256": "{ALICE}", "password": "x"}}]}}"#),
            "exactly one of",
        ),
        (r#"{"users": [{"user": "a:b", "password": "x"}]}"#, "no `:`"),
        (
            r#"{"users": [{"user": "a", "password": "x"}, {"user": "a", "password": "y"}]}"#,
            "listed twice",
        ),
        (
            r#"{"rules": [{"prefix": "/a", "users": ["zed"]}]}"#,
            "unknown user",
        ),
        (r#"{"rules": [{"prefix": "a"}]}"#, "must start with /"),
        (r#"{"realm": "a\"b"}"#, "realm"),
        (
            r#"{"forwardUsernameHeader": "X User"}"#,
            "lowercase header name",
        ),
        (r#"{"user": []}"#, "unknown field"),
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
