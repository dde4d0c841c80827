//! claims-transformer (`plugins/claims-transformer`) in meshgate's runtime: claims to headers,
//! forged copies stripped, header rules both ways, tokens that do not decode.

mod support;

use meshgate_testkit::{Error, Harness, Headers};

macro_rules! plugin {
    ($config:expr) => {
        match support::plugin("claims-transformer") {
            Some(p) => Harness::load(&p, $config).expect("harness"),
            None => return,
        }
    };
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, x| acc << 8 | u32::from(*x)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn jwt(payload: &str) -> String {
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b64url(br#"{"alg":"RS256"}"#),
        b64url(payload.as_bytes())
    )
}

const PAYLOAD: &str = r#"{"sub":"alice","iss":"https://idp.example","realm_access":{"roles":["barista","admin"]},"org":{"team":{"name":"beans"}},"https://example.com/tier":"gold","age":42,"crlf":"x\r\nx-admin: 1","obj":{"a":1}}"#;

const CONFIG: &str = r#"{
  "claims": [
    {"claim": "sub", "header": "x-user"},
    {"claim": "realm_access.roles", "header": "x-roles", "separator": " "},
    {"claim": "org.team.name", "header": "x-team"},
    {"claim": "https://example.com/tier", "header": "x-tier"},
    {"claim": "age", "header": "x-age"},
    {"claim": "crlf", "header": "x-crlf"},
    {"claim": "obj", "header": "x-obj"},
    {"claim": "missing.claim", "header": "x-missing"}
  ],
  "request": {"remove": ["x-debug"], "rename": {"x-old": "x-new"}, "set": {"x-via": "claims"}, "append": {"x-tags": "gw"}},
  "response": {"remove": ["server"], "rename": {"x-internal": "x-public"}, "set": {"x-frame-options": "DENY"}, "append": {"vary": "authorization"}}
}"#;

/// The request as forwarded after the plugin ran on `headers`.
fn forwarded(h: &Harness, headers: &[(&str, &str)]) -> Headers {
    let mut s = h.stream();
    let out = s.request_headers(headers, true).expect("request headers");
    assert!(out.is_continue(), "{out:?}");
    let f = s.forwarded_request();
    s.end().expect("test step");
    f
}

#[test]
fn claims_become_headers_and_forged_copies_are_dropped() {
    let h = plugin!(CONFIG);
    let bearer = format!("Bearer {}", jwt(PAYLOAD));
    let f = forwarded(
        &h,
        &[
            ("authorization", &bearer),
            ("x-user", "root"),
            ("x-missing", "forged"),
            ("x-crlf", "forged"),
            ("x-roles", "superuser"),
        ],
    );
    assert_eq!(f.get_all("x-user"), ["alice"]);
    assert_eq!(f.get_all("x-roles"), ["barista admin"]);
    assert_eq!(f.get("x-team"), Some("beans"));
    assert_eq!(
        f.get("x-tier"),
        Some("gold"),
        "a claim name with dots and slashes"
    );
    assert_eq!(f.get("x-age"), Some("42"));
    assert_eq!(f.get("x-obj"), Some(r#"{"a":1}"#));
    assert!(
        !f.contains("x-crlf"),
        "CR LF in a claim is not a header value"
    );
    assert!(
        !f.contains("x-missing"),
        "a claim the token lacks: the forged copy is gone too"
    );
    assert_eq!(
        f.get("authorization"),
        Some(bearer.as_str()),
        "kept unless configured"
    );
    assert_eq!(h.counter("claims_transformer_tokens_total"), Some(1));
    assert_eq!(h.counter("claims_transformer_claims_set_total"), Some(6));
    assert!(h.logged("\"crlf\" is not a header value"));
}

#[test]
fn without_a_usable_token_the_output_headers_are_still_stripped() {
    let h = plugin!(CONFIG);
    for auth in [
        None,
        Some("Bearer not-a-jwt"),
        Some("Bearer a.!!!.c"),
        Some("Bearer a.b.c.d"),
        Some("Basic YWxpY2U6cHc="),
        Some("Bearer"),
        Some(""),
    ] {
        let mut headers = vec![("x-user", "root"), ("x-team", "ops"), ("x-roles", "admin")];
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        let f = forwarded(&h, &headers);
        for n in ["x-user", "x-team", "x-roles"] {
            assert!(!f.contains(n), "{auth:?}: {n} forwarded: {f:?}");
        }
    }
    // Bearer tokens that are not JWTs were counted as invalid; the rest had no token.
    assert_eq!(
        h.counter("claims_transformer_invalid_tokens_total"),
        Some(3)
    );
    assert_eq!(h.counter("claims_transformer_tokens_total"), Some(0));
    // A JSON payload that is not an object, and a huge one: invalid, no trap.
    let arr = format!("Bearer {}", jwt("[1,2]"));
    let huge = format!(
        "Bearer {}",
        jwt(&format!("{{\"sub\":\"{}\"}}", "a".repeat(20_000)))
    );
    for a in [&arr, &huge] {
        assert!(!forwarded(&h, &[("authorization", a)]).contains("x-user"));
    }
    assert_eq!(
        h.counter("claims_transformer_invalid_tokens_total"),
        Some(5)
    );
}

#[test]
fn request_and_response_rules_run_in_order() {
    let h = plugin!(CONFIG);
    let mut s = h.stream();
    s.request_headers(
        &[
            ("x-debug", "1"),
            ("x-old", "a"),
            ("x-old", "b"),
            ("x-new", "replaced"),
            ("x-via", "client"),
            ("x-tags", "client"),
        ],
        true,
    )
    .expect("test step");
    let f = s.forwarded_request();
    assert!(!f.contains("x-debug"));
    assert!(!f.contains("x-old"));
    assert_eq!(f.get_all("x-new"), ["a", "b"]);
    assert_eq!(f.get_all("x-via"), ["claims"]);
    assert_eq!(f.get_all("x-tags"), ["client", "gw"]);
    s.response_headers(
        &[
            (":status", "200"),
            ("server", "app"),
            ("x-internal", "v"),
            ("vary", "accept"),
        ],
        true,
    )
    .expect("test step");
    let r = s.forwarded_response();
    assert!(!r.contains("server"));
    assert!(!r.contains("x-internal"));
    assert_eq!(r.get("x-public"), Some("v"));
    assert_eq!(r.get("x-frame-options"), Some("DENY"));
    assert_eq!(r.get_all("vary"), ["accept", "authorization"]);
}

#[test]
fn the_payload_can_come_from_istios_output_header() {
    let h = plugin!(
        r#"{"source": {"type": "payloadHeader", "name": "x-jwt-payload"},
            "claims": [{"claim": "sub", "header": "x-user"}],
            "removeAuthorization": true}"#
    );
    let payload = b64url(PAYLOAD.as_bytes());
    let f = forwarded(
        &h,
        &[
            ("x-jwt-payload", &payload),
            ("authorization", "Bearer whatever"),
            ("x-user", "root"),
        ],
    );
    assert_eq!(f.get_all("x-user"), ["alice"]);
    assert!(!f.contains("authorization"));
    // Padded base64url decodes too.
    let padded = format!("{payload}{}", "=".repeat((4 - payload.len() % 4) % 4));
    assert_eq!(
        forwarded(&h, &[("x-jwt-payload", &padded)]).get("x-user"),
        Some("alice")
    );
    assert!(!forwarded(&h, &[("x-jwt-payload", "%%%"), ("x-user", "root")]).contains("x-user"));
}

#[test]
fn bad_configurations_are_refused_with_a_reason() {
    let Some(p) = support::plugin("claims-transformer") else {
        return;
    };
    for (config, why) in [
        (
            r#"{"claims": [{"claim": "sub", "header": "X-User"}]}"#,
            "lowercase header name",
        ),
        (
            r#"{"claims": [{"claim": "", "header": "x-user"}]}"#,
            "must not be empty",
        ),
        (
            r#"{"claims": [{"claim": "sub"}]}"#,
            "missing field `header`",
        ),
        (
            r#"{"request": {"set": {":path": "/admin"}}}"#,
            "pseudo-headers",
        ),
        (
            r#"{"response": {"set": {"x-a": "1\r\nx-b: 2"}}}"#,
            "control characters",
        ),
        (r#"{"source": {"type": "cookie"}}"#, "unknown variant"),
        (r#"{"claim": []}"#, "unknown field"),
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
