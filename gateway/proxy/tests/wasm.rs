//! WasmPlugins through the real gateway: the test plugins (built with the `proxy-wasm` crate
//! for wasm32-wasip1) on real requests to real upstreams — header and body edits, local
//! replies, callouts, metrics, and hostile plugins contained by their failStrategy.

mod support;

use bytes::Bytes;
use http::Method;
use support::{fixtures, plugins, Client, Gateway, Upstream};

/// A gateway routing every host to `svc` (the echo upstream `up`), with `callout.test` as a
/// second service for callouts, and the WasmPlugins `plugins` (YAML documents) appended.
fn config(up: &Upstream, callout: &Upstream, plugins: &str) -> String {
    let mut y = fixtures::base(&[
        ("svc.test.svc.cluster.local", &[(up, "v1")], "HTTP"),
        ("callout.test", &[(callout, "v1")], "HTTP"),
    ]);
    y.push_str(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs, namespace: test}\n\
         spec:\n  hosts: ['*']\n  gateways: [istio-system/gw]\n  http:\n\
         \x20 - name: scoped\n    match: [{uri: {prefix: /scoped}}]\n    route: [{destination: {host: svc.test.svc.cluster.local}}]\n\
         \x20 - name: main\n    route: [{destination: {host: svc.test.svc.cluster.local}}]\n",
    );
    y.push_str(plugins);
    y
}

/// `dead.test`: a service whose one endpoint is a loopback port nothing listens on.
fn dead_service(protocol: &str) -> String {
    let port = support::free_port();
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: dead, namespace: test}}\n\
         spec:\n  hosts: [dead.test]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: p, protocol: {protocol}}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{p: {port}}}}}]\n"
    )
}

/// A WasmPlugin document in `istio-system` (applies to the gateway) with extra spec lines.
fn plugin(name: &str, wasm: &std::path::Path, spec: &str) -> String {
    format!(
        "---\napiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: {name}, namespace: istio-system}}\n\
         spec:\n  url: file://{}\n{spec}",
        wasm.display()
    )
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn stats(gw: &Gateway) -> String {
    let c = Client::http1(gw.admin);
    String::from_utf8_lossy(&c.get("admin", "/stats/prometheus").body).into_owned()
}

#[test]
fn add_headers_edits_the_request_and_the_response_on_http1_and_h2c() {
    let Some(wasm) = plugins::path("add-headers") else {
        return;
    };
    let (up, co) = (Upstream::echo("up"), Upstream::echo("co"));
    let cfg = plugin(
        "add",
        &wasm,
        "  pluginConfig: {request: {x-req: one}, response: {x-resp: two}}\n",
    );
    let gw = Gateway::start(&config(&up, &co, &cfg));
    for client in [Client::http1(gw.port), Client::h2c(gw.port)] {
        let r = client.get("app.example.com", "/hello");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("x-resp"), Some("two"));
        let seen = up.last();
        assert_eq!(
            seen.headers.get("x-req").map(|v| v.as_bytes()),
            Some(&b"one"[..])
        );
    }
}

/// Services `one.test` (on `one`) and `two.test` (on `two`), a VirtualService sending what
/// matches `first` (a YAML list of match blocks) to `one` and the rest to `two`, then `plugins`.
fn two_routes(one: &Upstream, first: &str, two: &Upstream, plugins: &str) -> String {
    let mut y = fixtures::base(&[
        ("one.test", &[(one, "v1")], "HTTP"),
        ("two.test", &[(two, "v1")], "HTTP"),
    ]);
    y.push_str(&format!(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs, namespace: test}}\n\
         spec:\n  hosts: ['*']\n  gateways: [istio-system/gw]\n  http:\n\
         \x20 - name: first\n    match: {first}\n    route: [{{destination: {{host: one.test}}}}]\n\
         \x20 - name: second\n    route: [{{destination: {{host: two.test}}}}]\n"
    ));
    y.push_str(plugins);
    y
}

/// A header a plugin adds is routed on, as Envoy clears its route cache on a request header
/// edit: the request lands on the route that matches the added header. A header no route
/// matches on leaves the choice as it was.
#[test]
fn a_header_a_plugin_adds_is_routed_on() {
    let Some(wasm) = plugins::path("add-headers") else {
        return;
    };
    let (fast, slow) = (Upstream::echo("fast"), Upstream::echo("slow"));
    let lane = plugin("lane", &wasm, "  pluginConfig: {request: {x-lane: fast}}\n");
    let y = two_routes(&fast, "[{headers: {x-lane: {exact: fast}}}]", &slow, &lane);
    let gw = Gateway::start(&y);
    let c = Client::http1(gw.port);
    let r = c.get("app.example.com", "/");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!((fast.count(), slow.count()), (1, 0));
    assert_eq!(
        fast.last().headers.get("x-lane").map(|v| v.as_bytes()),
        Some(&b"fast"[..])
    );

    // A header no route looks at: the route chosen before the plugin stays.
    let (a, b) = (Upstream::echo("a"), Upstream::echo("b"));
    let other = plugin(
        "other",
        &wasm,
        "  pluginConfig: {request: {x-other: one}}\n",
    );
    let y = two_routes(&a, "[{uri: {prefix: /a}}]", &b, &other);
    let gw = Gateway::start(&y);
    let c = Client::http1(gw.port);
    assert_eq!(c.get("app.example.com", "/a/1").status, 200);
    assert_eq!(c.get("app.example.com", "/b/1").status, 200);
    assert_eq!((a.count(), b.count()), (1, 1));
    assert_eq!(
        b.last().headers.get("x-other").map(|v| v.as_bytes()),
        Some(&b"one"[..])
    );
}

/// An h2c response that went through a plugin's body hooks ends the stream on its last DATA
/// frame, as a response without plugins does, rather than with an empty frame of its own.
#[test]
fn an_h2c_response_through_a_plugin_ends_on_its_last_data_frame() {
    let Some((gw, _up, _co)) = with_plugin("add", "add-headers", "") else {
        return;
    };
    let out = std::process::Command::new("nghttp")
        .args(["-v", "-H", ":authority: app.example.com"])
        .arg(format!("http://127.0.0.1:{}/frames", gw.port))
        .output()
        .expect("nghttp (nghttp2-client) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("x-wasm-response: added"), "{text}");
    // `recv DATA frame <length=N, flags=0xF, stream_id=S>` for each frame of the response.
    let frames: Vec<(usize, u8)> = text
        .lines()
        .filter_map(|l| l.split("recv DATA frame <").nth(1))
        .filter_map(|l| {
            let field = |k: &str| l.split(k).nth(1)?.split([',', '>']).next();
            let len = field("length=")?.parse().ok()?;
            let flags = u8::from_str_radix(field("flags=0x")?, 16).ok()?;
            Some((len, flags))
        })
        .collect();
    assert!(!frames.is_empty(), "{text}");
    assert!(
        frames.iter().all(|(len, _)| *len > 0),
        "an empty DATA frame: {text}"
    );
    assert_eq!(frames.last().map(|(_, f)| f & 1), Some(1), "{text}");
}

#[test]
fn probe_replies_locally_mutates_headers_and_rewrites_bodies() {
    let Some((gw, up, _co)) = with_plugin("probe", "abi-probe", "") else {
        return;
    };
    let c = Client::http1(gw.port);

    let r = c.get_h("app.example.com", "/", &[("x-probe", "local")]);
    assert_eq!(r.status, 418);
    assert_eq!(r.header("x-probe-local"), Some("yes"));
    assert_eq!(&r.body[..], b"teapot");
    assert_eq!(up.count(), 0, "a local reply never reaches the upstream");

    let r = c.get_h(
        "app.example.com",
        "/m",
        &[
            ("x-probe", "mutate"),
            ("x-probe-replaced", "old"),
            ("x-probe-remove", "x"),
        ],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-probe-resp"), Some("1"));
    let seen = up.last();
    assert_eq!(
        seen.headers.get("x-probe-added").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert_eq!(
        seen.headers.get("x-probe-replaced").map(|v| v.as_bytes()),
        Some(&b"new"[..])
    );
    assert!(seen.headers.get("x-probe-remove").is_none());

    // The request body is buffered to its end, uppercased, and sent on.
    let r = c.send(
        Method::POST,
        "app.example.com",
        "/b",
        &[("x-probe", "body-req")],
        Bytes::from_static(b"hello wasm"),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(up.last().body_bytes, 10);
}

#[test]
fn properties_are_encoded_as_envoy_encodes_them() {
    let Some(wasm) = plugins::path("abi-probe") else {
        return;
    };
    let (up, co) = (Upstream::echo("up"), Upstream::echo("co"));
    let gw = Gateway::start(&config(
        &up,
        &co,
        &plugin("probe", &wasm, "  pluginName: probe-root\n"),
    ));
    let c = Client::http1(gw.port);
    let r = c.get_h(
        "app.example.com",
        "/p?q=1",
        &[
            ("x-probe", "properties"),
            (
                "x-probe-paths",
                "request.path,request.url_path,request.query,request.method,request.host,plugin_name,plugin_root_id,route_name,cluster_name,destination.port,no.such.thing",
            ),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let j = r.json();
    let text = |k: &str| {
        let hex = j[k].as_str().unwrap_or_else(|| panic!("{k}: {j}"));
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        bytes
    };
    assert_eq!(text("request.path"), b"/p?q=1");
    assert_eq!(text("request.url_path"), b"/p");
    assert_eq!(text("request.query"), b"q=1");
    assert_eq!(text("request.method"), b"GET");
    assert_eq!(text("request.host"), b"app.example.com");
    assert_eq!(text("plugin_name"), b"istio-system.probe");
    assert_eq!(text("plugin_root_id"), b"probe-root");
    assert_eq!(text("route_name"), b"main");
    assert_eq!(
        text("cluster_name"),
        b"outbound|80||svc.test.svc.cluster.local"
    );
    // Integers: 8 bytes, little-endian.
    assert_eq!(text("destination.port"), i64::from(gw.port).to_le_bytes());
    assert!(j["no.such.thing"].is_null());
}

#[test]
fn a_callout_reaches_its_cluster_and_resumes_the_request() {
    let Some((gw, up, co)) = with_plugin("probe", "abi-probe", "") else {
        return;
    };
    let c = Client::http1(gw.port);
    let r = c.get_h(
        "app.example.com",
        "/",
        &[
            ("x-probe", "callout"),
            ("x-probe-cluster", "outbound|80||callout.test"),
            ("x-probe-callout-path", "/from-plugin"),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(co.count(), 1);
    assert_eq!(co.last().path, "/from-plugin");
    let seen = up.last();
    assert_eq!(
        seen.headers.get("x-callout-status").map(|v| v.as_bytes()),
        Some(&b"200"[..])
    );

    // An unknown cluster: the plugin's dispatch fails (BadArgument) and it replies 500.
    let r = c.get_h(
        "app.example.com",
        "/",
        &[
            ("x-probe", "callout"),
            ("x-probe-cluster", "outbound|80||nowhere.test"),
        ],
    );
    assert_eq!(r.status, 500, "{r:?}");
}

#[test]
fn plugin_metrics_and_per_plugin_telemetry_are_exported() {
    let Some(wasm) = plugins::path("abi-probe") else {
        return;
    };
    let (up, co) = (Upstream::echo("up"), Upstream::echo("co"));
    let gw = Gateway::start_with(
        &config(&up, &co, &plugin("probe", &wasm, "")),
        &["--concurrency", "1"],
    );
    let c = Client::http1(gw.port);
    for _ in 0..3 {
        assert_eq!(
            c.get_h("app.example.com", "/", &[("x-probe", "metrics")])
                .status,
            200
        );
    }
    let s = stats(&gw);
    assert_eq!(metric(&s, "probe_requests "), Some(3.0), "{s}");
    assert_eq!(metric(&s, "probe_gauge "), Some(42.0), "{s}");
    assert_eq!(metric(&s, "probe_hist_count "), Some(3.0), "{s}");
    assert_eq!(
        metric(
            &s,
            "meshgate_wasm_plugin_loaded{plugin=\"istio-system/probe\"}"
        ),
        Some(1.0),
        "{s}"
    );
    assert_eq!(
        metric(
            &s,
            "meshgate_wasm_plugin_vm_starts_total{plugin=\"istio-system/probe\"}"
        ),
        Some(1.0),
        "{s}"
    );
    // One callback in LATENCY_SAMPLE (64) is timed: 128 more requests make over 1000 callbacks.
    for _ in 0..128 {
        assert_eq!(c.get("app.example.com", "/").status, 200);
    }
    let s = stats(&gw);
    let total = |suffix: &str| -> f64 {
        let start = format!(
            "meshgate_wasm_plugin_callback_duration_microseconds_{suffix}{{plugin=\"istio-system/probe\""
        );
        s.lines()
            .filter(|l| l.starts_with(&start))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(total("count") >= 3.0, "{s}");
    // Kept to the nanosecond: callbacks of well under a microsecond still add up.
    assert!(total("sum") > 0.0, "{s}");
    assert!(
        metric(
            &s,
            "meshgate_wasm_plugin_vm_memory_bytes{plugin=\"istio-system/probe\"}"
        )
        .unwrap_or(0.0)
            > 0.0,
        "{s}"
    );
}

/// The gateway with the WasmPlugin `name` running the test plugin `module` (`spec`: more of
/// its spec), and the two echo upstreams; `None` (the test is skipped) when the module is not
/// built.
fn with_plugin(name: &str, module: &str, spec: &str) -> Option<(Gateway, Upstream, Upstream)> {
    let wasm = plugins::path(module)?;
    let (up, co) = (Upstream::echo("up"), Upstream::echo("co"));
    let gw = Gateway::start(&config(&up, &co, &plugin(name, &wasm, spec)));
    Some((gw, up, co))
}

/// A hostile plugin (`kind` in `callback`) with this failStrategy, and a client.
fn hostile(callback: &str, kind: &str, strategy: &str) -> Option<(Gateway, Upstream, Upstream)> {
    hostile_with(callback, kind, strategy, "")
}

/// [`hostile`] with `annotations` (a YAML flow mapping's entries) on the WasmPlugin.
fn hostile_with(
    callback: &str,
    kind: &str,
    strategy: &str,
    annotations: &str,
) -> Option<(Gateway, Upstream, Upstream)> {
    let wasm = plugins::path("hostile")?;
    let (up, co) = (Upstream::echo("up"), Upstream::echo("co"));
    let spec = format!(
        "  failStrategy: {strategy}\n  pluginConfig: {{callback: {callback}, kind: {kind}}}\n"
    );
    let mut doc = plugin("hostile", &wasm, &spec);
    if !annotations.is_empty() {
        doc = doc.replace(
            "namespace: istio-system}",
            &format!("namespace: istio-system, annotations: {{{annotations}}}}}"),
        );
    }
    let gw = Gateway::start_with(&config(&up, &co, &doc), &["--concurrency", "1"]);
    Some((gw, up, co))
}

#[test]
fn an_endless_loop_is_cut_off_and_fails_closed_then_the_vm_is_replaced() {
    let Some((gw, up, _co)) = hostile("request_headers", "loop", "FAIL_CLOSE") else {
        return;
    };
    let c = Client::http1(gw.port);
    let r = c.get("app.example.com", "/");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(up.count(), 0);
    // The gateway and the plugin carry on: a stream that asks the plugin to behave passes,
    // on a new VM.
    let r = c.get_h("app.example.com", "/", &[("x-hostile", "off")]);
    assert_eq!(r.status, 200, "{r:?}");
    let s = stats(&gw);
    assert_eq!(
        metric(
            &s,
            "meshgate_wasm_plugin_deadline_exceeded_total{plugin=\"istio-system/hostile\"}"
        ),
        Some(1.0),
        "{s}"
    );
    assert_eq!(
        metric(
            &s,
            "meshgate_wasm_plugin_vm_recycles_total{plugin=\"istio-system/hostile\"}"
        ),
        Some(1.0),
        "{s}"
    );
    assert_eq!(
        metric(
            &s,
            "meshgate_wasm_plugin_vm_starts_total{plugin=\"istio-system/hostile\"}"
        ),
        Some(2.0),
        "{s}"
    );
}

#[test]
fn a_panic_fails_open_when_the_plugin_says_so() {
    let Some((gw, up, _co)) = hostile("request_headers", "panic", "FAIL_OPEN") else {
        return;
    };
    let c = Client::http1(gw.port);
    for _ in 0..3 {
        assert_eq!(c.get("app.example.com", "/").status, 200);
    }
    assert_eq!(up.count(), 3);
    assert_eq!(hostile_traps(&gw), Some(3.0), "{}", stats(&gw));
}

/// The hostile plugin's trap count.
fn hostile_traps(gw: &Gateway) -> Option<f64> {
    metric(
        &stats(gw),
        "meshgate_wasm_plugin_traps_total{plugin=\"istio-system/hostile\"}",
    )
}

#[test]
fn a_trap_in_the_response_body_or_at_the_log_fails_open_with_the_response_whole() {
    // The small echo responses come with their body, so each runs through the plugin in one
    // entry (vm/whole.rs): a trap there must leave the response as the one-by-one calls do.
    for callback in ["response_body", "log"] {
        let Some((gw, up, _co)) = hostile(callback, "panic", "FAIL_OPEN") else {
            return;
        };
        let c = Client::http1(gw.port);
        for i in 1..=3 {
            let r = c.get("app.example.com", "/");
            assert_eq!(r.status, 200, "{callback}: {r:?}");
            let len = r
                .headers
                .get("content-length")
                .and_then(|v| v.to_str().ok());
            assert_eq!(
                len,
                Some(r.body.len().to_string().as_str()),
                "{callback}: {r:?}"
            );
            assert!(!r.body.is_empty(), "{callback}: {r:?}");
            assert_eq!(up.count(), i);
        }
        assert_eq!(hostile_traps(&gw), Some(3.0), "{callback}: {}", stats(&gw));
    }
}

#[test]
fn a_memory_hog_hits_its_cap_and_the_response_phase_fails_closed() {
    // A small cap and a long deadline: on a loaded machine, growing to the default 64 MiB cap
    // could outlast the default 100 ms deadline, and the failure would count as a deadline.
    let Some((gw, up, _co)) = hostile_with(
        "response_headers",
        "alloc",
        "FAIL_CLOSE",
        "plugins.meshgate.io/memory-limit: 8Mi, plugins.meshgate.io/callback-deadline: 10s",
    ) else {
        return;
    };
    let c = Client::http1(gw.port);
    let r = c.get("app.example.com", "/");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        up.count(),
        1,
        "the request went upstream; its response was stopped"
    );
    let s = stats(&gw);
    assert_eq!(
        metric(
            &s,
            "meshgate_wasm_plugin_memory_limit_exceeded_total{plugin=\"istio-system/hostile\"}"
        ),
        Some(1.0),
        "{s}"
    );
}

#[test]
fn a_plugin_that_cannot_start_or_load_follows_its_fail_strategy() {
    let Some((gw, up, _co)) = hostile("vm_start", "panic", "FAIL_CLOSE") else {
        return;
    };
    let c = Client::http1(gw.port);
    assert_eq!(c.get("app.example.com", "/").status, 503);
    assert_eq!(up.count(), 0);
    drop(gw);
    let Some((gw, up, _co)) = hostile("configure", "refuse", "FAIL_OPEN") else {
        return;
    };
    let c = Client::http1(gw.port);
    assert_eq!(c.get("app.example.com", "/").status, 200);
    assert_eq!(up.count(), 1);
    drop(gw);

    // A module that is not there, and one whose digest does not match.
    let (up, co) = (Upstream::echo("up"), Upstream::echo("co"));
    let missing = plugin(
        "gone",
        std::path::Path::new("/nonexistent/p.wasm"),
        "  failStrategy: FAIL_CLOSE\n",
    );
    let gw = Gateway::start(&config(&up, &co, &missing));
    assert_eq!(
        Client::http1(gw.port).get("app.example.com", "/").status,
        503
    );
    let dump = Client::http1(gw.admin).get("admin", "/config_dump").json();
    let state = dump["plugins"][0]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(state.starts_with("failed: "), "{dump}");
    drop(gw);
    let Some(wasm) = plugins::path("add-headers") else {
        return;
    };
    let pinned = plugin(
        "pinned",
        &wasm,
        &format!("  failStrategy: FAIL_OPEN\n  sha256: {}\n", "ab".repeat(32)),
    );
    let gw = Gateway::start(&config(&up, &co, &pinned));
    let r = Client::http1(gw.port).get("app.example.com", "/");
    assert_eq!(r.status, 200);
    assert!(
        r.header("x-wasm-response").is_none(),
        "a plugin with the wrong digest never runs"
    );
    let dump = Client::http1(gw.admin).get("admin", "/config_dump").json();
    assert!(
        dump["plugins"][0]["state"]
            .as_str()
            .unwrap_or_default()
            .contains("sha256 mismatch"),
        "{dump}"
    );
}

#[test]
fn a_route_scoped_plugin_runs_only_on_its_routes_and_the_pipeline_is_dumped() {
    let Some(wasm) = plugins::path("add-headers") else {
        return;
    };
    let (up, co) = (Upstream::echo("up"), Upstream::echo("co"));
    let doc = format!(
        "---\napiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: scoped\n  namespace: istio-system\n  annotations: {{plugins.meshgate.io/routes: scoped}}\n\
         spec:\n  url: file://{}\n",
        wasm.display()
    );
    let gw = Gateway::start(&config(&up, &co, &doc));
    let c = Client::http1(gw.port);
    assert_eq!(
        c.get("app.example.com", "/scoped/x")
            .header("x-wasm-response"),
        Some("added")
    );
    assert_eq!(
        c.get("app.example.com", "/other").header("x-wasm-response"),
        None
    );
    let dump = Client::http1(gw.admin).get("admin", "/config_dump").json();
    let routes = &dump["listeners"][0]["routes"]["virtualHosts"][0]["routes"];
    let pipeline = |i: usize| routes[i]["pipeline"].to_string();
    assert!(
        pipeline(0).contains("istio-system/scoped") && pipeline(0).contains("router"),
        "{dump}"
    );
    assert!(!pipeline(1).contains("istio-system/scoped"), "{dump}");

    // The same, as `meshgate proxy-config plugins` prints it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args([
            "proxy-config",
            "plugins",
            "--admin",
            &format!("127.0.0.1:{}", gw.admin),
        ])
        .output()
        .expect("meshgate runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let scoped_route = text
        .split("route ")
        .find(|s| s.starts_with("scoped"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        scoped_route.contains("1. istio-system/scoped  UNSPECIFIED_PHASE  sha256:"),
        "{text}"
    );
    assert!(
        scoped_route.contains("loaded") && scoped_route.contains("2. [router]"),
        "{text}"
    );
    assert!(text.contains("1 WasmPlugin(s)"), "{text}");
}

#[test]
fn a_restart_loads_the_module_from_the_compiled_cache() {
    let Some(wasm) = plugins::path("abi-probe") else {
        return;
    };
    let cache = tempfile::tempdir().expect("tempdir");
    let dir = cache.path().to_string_lossy().into_owned();
    let (up, co) = (Upstream::echo("up"), Upstream::echo("co"));
    let cfg = config(&up, &co, &plugin("probe", &wasm, ""));
    let first = Gateway::start_with(&cfg, &["--wasm-cache", &dir]);
    assert_eq!(
        metric(&stats(&first), "meshgate_wasm_cache_hits_total"),
        Some(0.0)
    );
    drop(first);
    let second = Gateway::start_with(&cfg, &["--wasm-cache", &dir]);
    let s = stats(&second);
    assert_eq!(
        metric(&s, "meshgate_wasm_cache_hits_total"),
        Some(1.0),
        "{s}"
    );
    assert_eq!(
        metric(&s, "meshgate_wasm_cache_misses_total"),
        Some(0.0),
        "{s}"
    );
}

#[test]
fn fail_reload_retries_the_request_on_a_fresh_vm() {
    // The hostile plugin traps on every request, so the retry traps too: the request fails
    // closed, after a second VM was started for it.
    let Some((gw, up, _co)) = hostile("request_headers", "panic", "FAIL_RELOAD") else {
        return;
    };
    let c = Client::http1(gw.port);
    assert_eq!(c.get("app.example.com", "/").status, 503);
    assert_eq!(up.count(), 0);
    let s = stats(&gw);
    assert_eq!(
        metric(
            &s,
            "meshgate_wasm_plugin_vm_starts_total{plugin=\"istio-system/hostile\"}"
        ),
        Some(2.0),
        "{s}"
    );
    assert_eq!(
        metric(
            &s,
            "meshgate_wasm_plugin_traps_total{plugin=\"istio-system/hostile\"}"
        ),
        Some(2.0),
        "{s}"
    );
    // A stream the plugin lets through passes on the next fresh VM.
    assert_eq!(
        c.get_h("app.example.com", "/", &[("x-hostile", "off")])
            .status,
        200
    );
}

#[test]
fn a_failed_callout_gets_envoys_synthetic_reply() {
    let Some(wasm) = plugins::path("abi-probe") else {
        return;
    };
    let (up, co) = (Upstream::echo("up"), Upstream::echo("co"));
    let cfg = config(&up, &co, &plugin("probe", &wasm, "")) + &dead_service("HTTP");
    let gw = Gateway::start(&cfg);
    let r = Client::http1(gw.port).get_h(
        "app.example.com",
        "/",
        &[
            ("x-probe", "callout"),
            ("x-probe-cluster", "outbound|80||dead.test"),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        up.last()
            .headers
            .get("x-callout-status")
            .map(|v| v.as_bytes()),
        Some(&b"503"[..])
    );
    // The callout carried only the plugin's headers plus Envoy's internal markers.
    let r = Client::http1(gw.port).get_h(
        "app.example.com",
        "/",
        &[
            ("x-probe", "callout"),
            ("x-probe-cluster", "outbound|80||callout.test"),
        ],
    );
    assert_eq!(r.status, 200);
    let seen = co.last();
    assert_eq!(
        seen.headers.get("x-envoy-internal").map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(
        seen.headers
            .get("x-envoy-expected-rq-timeout-ms")
            .map(|v| v.as_bytes()),
        Some(&b"5000"[..])
    );
    assert!(seen.headers.get("x-request-id").is_none());
}

#[test]
fn a_unary_grpc_callout_gets_its_message_or_its_status() {
    let Some(wasm) = plugins::path("abi-probe") else {
        return;
    };
    let (up, co) = (Upstream::echo("up"), Upstream::echo("co"));
    let cfg = config(&up, &co, &plugin("probe", &wasm, "")) + &dead_service("GRPC");
    let gw = Gateway::start(&cfg);
    let c = Client::http1(gw.port);
    let r = c.get_h(
        "app.example.com",
        "/",
        &[
            ("x-probe", "grpc"),
            ("x-probe-cluster", "outbound|80||callout.test"),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let call = co.last();
    assert_eq!(call.path, "/test.Echo/Say");
    assert_eq!(call.version, "HTTP/2.0");
    assert_eq!(
        call.headers.get("x-probe-md").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert_eq!(call.body_bytes, 9, "5-byte gRPC prefix + `ping`");
    let seen = up.last();
    let h = |n: &str| {
        seen.headers
            .get(n)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    assert_eq!(h("x-grpc-status").as_deref(), Some("0"));
    assert_eq!(
        h("x-grpc-message").as_deref(),
        Some("received=9 trailers=false")
    );

    let r = c.get_h(
        "app.example.com",
        "/",
        &[
            ("x-probe", "grpc"),
            ("x-probe-cluster", "outbound|80||dead.test"),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let seen = up.last();
    assert_eq!(
        seen.headers.get("x-grpc-status").map(|v| v.as_bytes()),
        Some(&b"14"[..]),
        "UNAVAILABLE"
    );

    // An unknown cluster: the dispatch itself fails (ParseFailure) and the plugin replies 500.
    let r = c.get_h(
        "app.example.com",
        "/",
        &[
            ("x-probe", "grpc"),
            ("x-probe-cluster", "outbound|80||nowhere.test"),
        ],
    );
    assert_eq!(r.status, 500);
    assert_eq!(&r.body[..], b"ParseFailure");
}

#[test]
fn a_grpc_stream_sends_the_plugins_messages_and_delivers_the_answer() {
    let Some((gw, up, co)) = with_plugin("probe", "abi-probe", "") else {
        return;
    };
    let r = Client::http1(gw.port).get_h(
        "app.example.com",
        "/",
        &[
            ("x-probe", "grpc-stream"),
            ("x-probe-cluster", "outbound|80||callout.test"),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let call = co.last();
    assert_eq!(call.path, "/test.Echo/Chat");
    assert_eq!(call.version, "HTTP/2.0");
    assert_eq!(
        call.headers.get("x-probe-md").map(|v| v.as_bytes()),
        Some(&b"s"[..])
    );
    assert_eq!(call.body_bytes, 16, "two framed messages: `one`, `two`");
    let seen = up.last();
    let got = seen
        .headers
        .get("x-grpc-stream")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    // The echo upstream answers one message and trailers (grpc-status, grpc-message).
    assert_eq!(
        got.as_deref(),
        Some("initial:3:true;message:received=16 trailers=false;trailers:2;close:0"),
        "{seen:?}"
    );
}

#[test]
fn a_config_swap_keeps_an_unchanged_plugins_vms_and_reloads_a_changed_one() {
    let Some(wasm) = plugins::path("abi-probe") else {
        return;
    };
    let (up, co) = (Upstream::echo("up"), Upstream::echo("co"));
    let with = |v: u32, extra: &str| {
        config(
            &up,
            &co,
            &plugin("probe", &wasm, &format!("  pluginConfig: {{v: {v}}}\n")),
        ) + extra
    };
    let gw = Gateway::start_with(&with(1, ""), &["--concurrency", "1"]);
    let c = Client::http1(gw.port);
    let config_seen = || {
        let r = c.get_h("app.example.com", "/", &[("x-probe", "config")]);
        String::from_utf8_lossy(&r.body).into_owned()
    };
    assert!(config_seen().contains(r#"{\"v\":1}"#), "{}", config_seen());
    let starts = || {
        metric(
            &stats(&gw),
            "meshgate_wasm_plugin_vm_starts_total{plugin=\"istio-system/probe\"}",
        )
    };
    assert_eq!(starts(), Some(1.0));

    // An unrelated change: the plugin, its module and its VM stay.
    let extra = "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: more, namespace: test}\n\
                 spec:\n  hosts: [more.test]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints: [{address: 127.0.0.1}]\n";
    gw.rewrite_config(&with(1, extra));
    let admin = Client::http1(gw.admin);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !admin
        .get("admin", "/config_dump")
        .json()
        .to_string()
        .contains("more.test")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the swap never happened"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(config_seen().contains(r#"{\"v\":1}"#));
    assert_eq!(starts(), Some(1.0), "the unchanged plugin kept its VM");

    // A changed pluginConfig: a new plugin, whose VM sees the new configuration.
    gw.rewrite_config(&with(2, extra));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !config_seen().contains(r#"{\"v\":2}"#) {
        assert!(
            std::time::Instant::now() < deadline,
            "the new config never reached the plugin"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The access log's lines once `n` are there (bounded wait).
fn log_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{n} access log lines: got {lines:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn the_access_log_shows_each_plugins_outcome_when_its_format_asks() {
    let (Some(add), Some(probe), Some(hostile)) = (
        plugins::path("add-headers"),
        plugins::path("abi-probe"),
        plugins::path("hostile"),
    ) else {
        return;
    };
    let (up, co) = (Upstream::echo("up"), Upstream::echo("co"));
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let format = "%RESPONSE_CODE% %WASM_PLUGINS%";
    let args = |log: &std::path::Path| {
        vec![
            "--access-log".to_owned(),
            log.to_string_lossy().into_owned(),
            "--access-log-format".to_owned(),
            format.to_owned(),
        ]
    };
    // Priorities set the order: add, gone (no module: fails open), hostile (panics in request
    // headers unless told `x-hostile: off`: fails open), probe.
    let plugins = [
        plugin("add", &add, "  priority: 40\n  pluginConfig: {request: {x-req: one}}\n"),
        plugin(
            "gone",
            std::path::Path::new("/nonexistent/p.wasm"),
            "  priority: 30\n  failStrategy: FAIL_OPEN\n",
        ),
        plugin(
            "hostile",
            &hostile,
            "  priority: 20\n  failStrategy: FAIL_OPEN\n  pluginConfig: {callback: request_headers, kind: panic}\n",
        ),
        plugin("probe", &probe, "  priority: 10\n"),
    ]
    .concat();
    let a = args(&log);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let gw = Gateway::start_with(&config(&up, &co, &plugins), &a);
    let c = Client::http1(gw.port);
    assert_eq!(c.get("app.example.com", "/").status, 200);
    let r = c.get_h(
        "app.example.com",
        "/",
        &[("x-probe", "local"), ("x-hostile", "off")],
    );
    assert_eq!(r.status, 418, "{r:?}");
    let lines = log_lines(&log, 2);
    assert_eq!(
        lines,
        [
            "200 istio-system/add:continue,istio-system/gone:failed_open,\
             istio-system/hostile:failed_open,istio-system/probe:continue",
            "418 istio-system/add:continue,istio-system/gone:failed_open,\
             istio-system/hostile:continue,istio-system/probe:local_reply",
        ]
    );
    drop(gw);

    // A plugin that fails closed ends the request: the later ones are skipped. A module still
    // being fetched (its server accepts and never answers) is pending.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    let held = std::thread::spawn(move || {
        let conns: Vec<_> = silent.incoming().take(1).collect();
        std::thread::sleep(std::time::Duration::from_secs(15));
        drop(conns);
    });
    let remote = format!(
        "---\napiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {{name: slow, namespace: istio-system}}\n\
         spec:\n  url: http://127.0.0.1:{silent_port}/p.wasm\n  sha256: {}\n  priority: 50\n  failStrategy: FAIL_OPEN\n",
        "ab".repeat(32)
    );
    let plugins = [
        remote,
        plugin("add", &add, "  priority: 40\n"),
        plugin(
            "hostile",
            &hostile,
            "  priority: 20\n  failStrategy: FAIL_CLOSE\n  pluginConfig: {callback: request_headers, kind: panic}\n",
        ),
        plugin("probe", &probe, "  priority: 10\n"),
    ]
    .concat();
    let log = dir.path().join("access2.log");
    let a = args(&log);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let gw = Gateway::start_with(&config(&up, &co, &plugins), &a);
    let c = Client::http1(gw.port);
    assert_eq!(c.get("app.example.com", "/").status, 503);
    let lines = log_lines(&log, 1);
    assert_eq!(
        lines,
        ["503 istio-system/slow:pending,istio-system/add:continue,\
          istio-system/hostile:failed_closed,istio-system/probe:skipped"]
    );
    drop(gw);
    drop(held);

    // Without the format, the line is Istio's default (no plugin field).
    let log = dir.path().join("access3.log");
    let gw = Gateway::start_with(
        &config(&up, &co, &plugin("add", &add, "")),
        &["--access-log", &log.to_string_lossy()],
    );
    assert_eq!(
        Client::http1(gw.port).get("app.example.com", "/").status,
        200
    );
    let line = log_lines(&log, 1).remove(0);
    assert!(line.starts_with('[') && line.ends_with(" main"), "{line}");
    assert!(!line.contains("add:"), "{line}");
}

#[test]
fn uncompress_stops_at_the_vms_memory_limit() {
    use std::io::Write as _;
    let Some(wasm) = plugins::path("abi-probe") else {
        return;
    };
    let (up, co) = (Upstream::echo("up"), Upstream::echo("co"));
    let doc = format!(
        "---\napiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata:\n  name: probe\n  namespace: istio-system\n\
         \x20 annotations: {{plugins.meshgate.io/memory-limit: 8Mi, plugins.meshgate.io/callback-deadline: 10s}}\nspec:\n  url: file://{}\n",
        wasm.display()
    );
    let gw = Gateway::start(&config(&up, &co, &doc));
    let zlib = |n: usize| {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&vec![0u8; n]).expect("compress");
        let z = z.finish().expect("finish");
        z.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let c = Client::http1(gw.port);
    let ask = |hex: &str| {
        let r = c.get_h(
            "app.example.com",
            "/",
            &[("x-probe", "foreign"), ("x-probe-zlib", hex)],
        );
        assert_eq!(r.status, 200, "{r:?}\n{}", gw.stderr());
        r.json()["uncompress(x-probe-zlib)"].clone()
    };
    // (The long deadline: inflating 8 MiB in a debug build on a loaded machine can take longer
    // than the default 100 ms, and host calls count against the callback's deadline.)
    // 16 MiB of zeros (a 16 KiB stream) cannot be handed to a VM capped at 8 MiB: refused with
    // InternalFailure, the return words left at 0, and the VM goes on serving.
    let bomb = ask(&zlib(16 << 20));
    assert_eq!(bomb["status"], 10, "{bomb}");
    assert_eq!(
        (bomb["null"].clone(), bomb["size"].clone()),
        (true.into(), 0.into())
    );
    let fine = ask(&zlib(64 << 10));
    assert_eq!(fine["status"], 0, "{fine}");
    assert_eq!(fine["size"], 64 << 10, "{fine}");
}
