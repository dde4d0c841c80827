//! The testkit driving the real test plugins (`plugins/`) in meshgate's runtime.

mod support;

use std::time::{Duration, Instant, UNIX_EPOCH};

use meshgate_testkit::{Error, Harness, HttpResponse, LogLevel, MetricKind, VmFailure};

macro_rules! plugin {
    ($name:literal) => {
        match support::plugin($name) {
            Some(p) => p,
            None => return,
        }
    };
}

#[test]
fn add_headers_adds_the_configured_headers_both_ways() {
    let path = plugin!("add-headers");
    let plugin = Harness::builder(&path)
        .config(r#"{"request": {"x-req": "1"}, "response": {"x-resp": "2"}}"#)
        .build()
        .expect("harness");
    let mut stream = plugin.stream();
    let out = stream
        .request_headers(
            &[
                (":method", "GET"),
                (":path", "/a?b=c"),
                (":authority", "example.com"),
                ("x-in", "v"),
            ],
            true,
        )
        .expect("request headers");
    assert!(out.is_continue(), "{out:?}");
    let req = stream.forwarded_request();
    assert_eq!(req.get(":path"), Some("/a?b=c"));
    assert_eq!(req.get(":authority"), Some("example.com"));
    assert_eq!(req.get("x-in"), Some("v"));
    assert_eq!(req.get("x-req"), Some("1"));
    assert!(stream
        .response_headers(&[(":status", "204")], true)
        .expect("response headers")
        .is_continue());
    let resp = stream.forwarded_response();
    assert_eq!(resp.get(":status"), Some("204"));
    assert_eq!(resp.get("x-resp"), Some("2"));
    stream.end().expect("end");
    assert!(stream.is_ended());
    assert!(matches!(
        stream.request_headers(&[], true),
        Err(Error::StreamEnded)
    ));
}

#[test]
fn a_configuration_the_plugin_refuses_fails_the_build_with_its_log() {
    let path = plugin!("add-headers");
    let err = Harness::builder(&path)
        .config("[1]")
        .build()
        .expect_err("refused");
    match &err {
        Error::Start { logs, .. } => assert!(
            logs.iter()
                .any(|l| l.level == LogLevel::Error && l.message.contains("JSON object")),
            "{logs:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("proxy_on_configure"), "{err}");
}

#[test]
fn a_local_reply_is_reported_with_status_headers_and_body() {
    let path = plugin!("abi-probe");
    let plugin = Harness::load(&path, "").expect("harness");
    let mut stream = plugin.stream();
    let out = stream
        .request_headers(&[(":path", "/"), ("x-probe", "local")], true)
        .expect("request headers");
    let reply = out.local_reply().expect("a local reply");
    assert_eq!(reply.status, 418);
    assert_eq!(reply.headers.get("x-probe-local"), Some("yes"));
    assert_eq!(reply.body_text(), "teapot");
    assert_eq!(reply.grpc_status, None);
    assert_eq!(stream.local_reply().as_ref(), Some(reply));
    // Nothing went upstream.
    assert!(stream.forwarded_request().is_empty());
}

#[test]
fn header_mutations_show_in_the_forwarded_request() {
    let path = plugin!("abi-probe");
    let plugin = Harness::load(&path, "").expect("harness");
    let mut stream = plugin.stream();
    let out = stream
        .request_headers(
            &[
                (":path", "/"),
                ("x-probe", "mutate"),
                ("x-probe-replaced", "old"),
                ("x-probe-remove", "gone"),
            ],
            true,
        )
        .expect("request headers");
    assert!(out.is_continue());
    let req = stream.forwarded_request();
    assert_eq!(req.get("x-probe-added"), Some("1"));
    assert_eq!(req.get_all("x-probe-replaced"), vec!["new"]);
    assert!(!req.contains("x-probe-remove"));
    stream
        .response_headers(&[(":status", "200")], true)
        .expect("response");
    assert_eq!(stream.forwarded_response().get("x-probe-resp"), Some("1"));
}

#[test]
fn an_http_callout_pauses_the_stream_until_it_is_answered() {
    let path = plugin!("abi-probe");
    let plugin = Harness::load(&path, "").expect("harness");
    let mut stream = plugin.stream();
    let out = stream
        .request_headers(
            &[
                (":path", "/"),
                ("x-probe", "callout"),
                (
                    "x-probe-cluster",
                    "outbound|80||auth.default.svc.cluster.local",
                ),
                ("x-probe-callout-path", "/check"),
            ],
            true,
        )
        .expect("request headers");
    assert!(out.is_paused(), "{out:?}");
    assert!(stream.is_paused());
    let call = plugin.http_callout().expect("a callout");
    assert_eq!(call.upstream, "outbound|80||auth.default.svc.cluster.local");
    assert_eq!(call.method(), Some("GET"));
    assert_eq!(call.path(), Some("/check"));
    assert_eq!(call.authority(), Some("callout"));
    assert_eq!(call.timeout, Duration::from_secs(5));
    assert_eq!(Some(call.context_id), stream.id());
    plugin
        .respond_http(
            call.token,
            HttpResponse::new(200).header("x-a", "b").body("ok"),
        )
        .expect("respond");
    assert!(!stream.is_paused());
    assert!(plugin.http_callouts().is_empty());
    let req = stream.forwarded_request();
    assert_eq!(req.get("x-callout-status"), Some("200"));
    assert_eq!(req.get("x-callout-body-len"), Some("2"));
    assert!(matches!(
        plugin.respond_http(call.token, HttpResponse::new(200)),
        Err(Error::NoSuchCallout(_))
    ));
}

#[test]
fn a_failed_callout_reaches_the_plugin_without_headers() {
    let path = plugin!("abi-probe");
    let plugin = Harness::load(&path, "").expect("harness");
    let mut stream = plugin.stream();
    stream
        .request_headers(&[("x-probe", "callout"), ("x-probe-cluster", "c")], true)
        .expect("request headers");
    let call = plugin.http_callout().expect("a callout");
    plugin.fail_http(call.token).expect("fail");
    assert_eq!(
        stream.forwarded_request().get("x-callout-status"),
        Some("none")
    );
}

#[test]
fn a_callout_to_an_unknown_upstream_is_refused() {
    let path = plugin!("abi-probe");
    let plugin = Harness::builder(&path)
        .upstreams(["known"])
        .build()
        .expect("harness");
    let mut stream = plugin.stream();
    let out = stream
        .request_headers(
            &[("x-probe", "callout"), ("x-probe-cluster", "unknown")],
            true,
        )
        .expect("request headers");
    let reply = out.local_reply().expect("the plugin's error reply");
    assert_eq!(reply.status, 500);
    assert_eq!(reply.body_text(), "BadArgument");
    assert!(plugin.http_callouts().is_empty());
}

#[test]
fn grpc_callouts_are_inspected_and_answered() {
    let path = plugin!("abi-probe");
    let plugin = Harness::load(&path, "").expect("harness");
    let mut stream = plugin.stream();
    let out = stream
        .request_headers(
            &[("x-probe", "grpc"), ("x-probe-cluster", "grpc-upstream")],
            true,
        )
        .expect("request headers");
    assert!(out.is_paused());
    let call = plugin.grpc_callouts().pop().expect("a gRPC callout");
    assert_eq!(call.service, "test.Echo");
    assert_eq!(call.method, "Say");
    assert_eq!(&call.message[..], b"ping");
    assert_eq!(call.metadata.get("x-probe-md"), Some("1"));
    plugin.respond_grpc(call.token, "pong").expect("respond");
    let req = stream.forwarded_request();
    assert_eq!(req.get("x-grpc-status"), Some("0"));
    assert_eq!(req.get("x-grpc-message"), Some("pong"));

    let mut failed = plugin.stream();
    failed
        .request_headers(
            &[("x-probe", "grpc"), ("x-probe-cluster", "grpc-upstream")],
            true,
        )
        .expect("request headers");
    let call = plugin.grpc_callouts().pop().expect("a gRPC callout");
    plugin
        .fail_grpc(call.token, 14, "unavailable")
        .expect("fail");
    let req = failed.forwarded_request();
    assert_eq!(req.get("x-grpc-status"), Some("14"));
    assert_eq!(req.get("x-grpc-status-message"), Some("unavailable"));
}

#[test]
fn metrics_are_read_by_name_and_kind() {
    let path = plugin!("abi-probe");
    let plugin = Harness::load(&path, "").expect("harness");
    for _ in 0..2 {
        let mut s = plugin.stream();
        s.request_headers(&[("x-probe", "metrics")], true)
            .expect("metrics");
    }
    assert_eq!(plugin.counter("probe_requests"), Some(2));
    assert_eq!(plugin.gauge("probe_gauge"), Some(42));
    let h = plugin.histogram("probe_hist").expect("histogram");
    assert_eq!((h.count, h.sum), (2, 14));
    assert_eq!(h.buckets.iter().sum::<u64>(), 2);
    assert_eq!(
        plugin.counter("probe_gauge"),
        None,
        "a gauge is not a counter"
    );
    assert_eq!(plugin.counter("nope"), None);
    let kinds: Vec<_> = plugin
        .metrics()
        .into_iter()
        .map(|m| (m.name, m.kind))
        .collect();
    assert!(
        kinds.contains(&("probe_requests".into(), MetricKind::Counter)),
        "{kinds:?}"
    );
    // Another harness of the same module starts from zero.
    let other = Harness::load(&path, "").expect("harness");
    assert_eq!(other.counter("probe_requests"), None);
}

#[test]
fn shared_data_and_queues_are_read_and_fed() {
    let path = plugin!("abi-probe");
    let plugin = Harness::builder(&path)
        .vm_id("probe-vm")
        .build()
        .expect("harness");
    plugin.set_shared_data("probe-key", "a");
    let mut s = plugin.stream();
    s.request_headers(&[("x-probe", "shared")], true)
        .expect("shared");
    assert_eq!(plugin.shared_data("probe-key").as_deref(), Some(&b"ax"[..]));
    let (_, cas) = plugin.shared_data_with_cas("probe-key").expect("cas");
    assert!(cas > 1);

    plugin.enqueue("probe-queue", "hello").expect("enqueue");
    assert_eq!(
        plugin.shared_data("queue-last").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(
        plugin.shared_data("queue-ready-calls").as_deref(),
        Some(&b"1"[..])
    );
    assert!(matches!(
        plugin.enqueue("no-such", "x"),
        Err(Error::NoSuchQueue(_))
    ));

    // The plugin enqueues on its own queue; the test takes the item before delivery.
    let mut s = plugin.stream();
    s.request_headers(&[("x-probe", "queue"), ("x-probe-value", "v1")], true)
        .expect("queue");
    assert_eq!(plugin.dequeue("probe-queue").as_deref(), Some(&b"v1"[..]));
    assert_eq!(plugin.dequeue("probe-queue"), None);
}

#[test]
fn ticks_fire_on_the_simulated_clock() {
    let path = plugin!("abi-probe");
    let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let plugin = Harness::builder(&path)
        .config(r#"{"tick_ms": 100}"#)
        .start_time(start)
        .build()
        .expect("harness");
    assert_eq!(plugin.tick_period(), Some(Duration::from_millis(100)));
    assert_eq!(
        plugin.advance(Duration::from_millis(99)).expect("advance"),
        0
    );
    assert_eq!(
        plugin.advance(Duration::from_millis(251)).expect("advance"),
        3
    );
    assert_eq!(plugin.shared_data("ticks").as_deref(), Some(&b"3"[..]));
    assert_eq!(plugin.now(), start + Duration::from_millis(350));
    plugin.tick().expect("tick");
    assert_eq!(plugin.shared_data("ticks").as_deref(), Some(&b"4"[..]));

    // The plugin reads the harness clock.
    let mut s = plugin.stream();
    let out = s
        .request_headers(&[("x-probe", "time")], true)
        .expect("time");
    let body = out.local_reply().expect("reply").body_text();
    let nanos = (start + Duration::from_millis(350))
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    assert!(body.contains(&nanos.to_string()), "{body} vs {nanos}");
}

#[test]
fn logs_are_captured_by_level() {
    let path = plugin!("abi-probe");
    let plugin = Harness::load(&path, "").expect("harness");
    let mut s = plugin.stream();
    s.request_headers(&[("x-probe", "log")], true).expect("log");
    assert_eq!(plugin.logs_at(LogLevel::Warn), vec!["abi-probe log warn"]);
    assert_eq!(
        plugin.logs_at(LogLevel::Critical),
        vec!["abi-probe log critical"]
    );
    assert!(plugin.logged("abi-probe log trace"));
    let mut s = plugin.stream();
    s.request_headers(&[("x-probe", "env")], true).expect("env");
    assert!(plugin
        .logs_at(LogLevel::Info)
        .contains(&"abi-probe stdout line".to_owned()));
    assert!(plugin
        .logs_at(LogLevel::Error)
        .contains(&"abi-probe stderr line".to_owned()));
    assert!(!plugin.take_logs().is_empty());
    assert!(plugin.logs().is_empty());
}

#[test]
fn bodies_are_buffered_while_paused_and_forwarded_as_the_plugin_left_them() {
    let path = plugin!("abi-probe");
    let plugin = Harness::load(&path, "").expect("harness");
    let mut s = plugin.stream();
    s.request_headers(
        &[
            (":method", "POST"),
            ("x-probe", "body-req"),
            ("x-probe-append", "!"),
        ],
        false,
    )
    .expect("headers");
    assert!(s.request_body("hel", false).expect("chunk").is_paused());
    assert!(s.forwarded_request_body().is_empty());
    assert!(s.request_body("lo", true).expect("chunk").is_continue());
    assert_eq!(&s.forwarded_request_body()[..], b"HELLO!");
    assert!(s
        .request_trailers(&[("x-t", "1")])
        .expect("trailers")
        .is_continue());
    assert_eq!(
        s.forwarded_request_trailers()
            .and_then(|t| t.get("x-t").map(str::to_owned)),
        Some("1".into())
    );
}

#[test]
fn the_end_of_a_stream_runs_log_and_done() {
    let path = plugin!("abi-probe");
    let plugin = Harness::load(&path, "").expect("harness");
    {
        let mut s = plugin.stream();
        s.request_headers(&[("x-probe", "order")], true)
            .expect("headers");
        s.response_headers(&[], true).expect("response");
        // Dropped: ended.
    }
    let order = plugin.shared_data("order-last").expect("order saved");
    let order = String::from_utf8_lossy(&order);
    let log = order.find("\"log\"").expect("log ran");
    let done = order.find("\"done\"").expect("done ran");
    assert!(log < done, "{order}");
}

#[test]
fn a_trapping_plugin_fails_the_vm() {
    let path = plugin!("hostile");
    let plugin = Harness::builder(&path)
        .config(r#"{"callback": "request_headers", "kind": "panic"}"#)
        .build()
        .expect("harness");
    let mut s = plugin.stream();
    let r = s.request_headers(&[(":path", "/")], true);
    assert!(matches!(r, Err(Error::Vm(VmFailure::Trap { .. }))), "{r:?}");
    assert!(matches!(plugin.failure(), Some(VmFailure::Trap { .. })));
    assert!(matches!(
        plugin.stream().request_headers(&[], true),
        Err(Error::Vm(VmFailure::Failed))
    ));
}

#[test]
fn a_harness_is_cheap_once_the_module_is_compiled() {
    let path = plugin!("abi-probe");
    drop(Harness::load(&path, "").expect("harness"));
    let t = Instant::now();
    for _ in 0..10 {
        let plugin = Harness::load(&path, "").expect("harness");
        let mut s = plugin.stream();
        s.request_headers(&[("x-probe", "mutate")], true)
            .expect("headers");
    }
    let each = t.elapsed() / 10;
    eprintln!("harness build + one stream: {each:?}");
    assert!(each < Duration::from_millis(500), "{each:?}");
}

#[test]
fn a_wat_module_and_invalid_headers() {
    let plugin = Harness::builder_from_bytes(
        r#"(module
  (import "env" "proxy_send_local_response"
    (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "denied")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $reply (i32.const 403) (i32.const 0) (i32.const 0)
      (i32.const 16) (i32.const 6) (i32.const 0) (i32.const 0) (i32.const 7)))
    (i32.const 1)))"#,
    )
    .build()
    .expect("harness");
    let mut s = plugin.stream();
    assert!(matches!(
        s.request_headers(&[("bad header", "x")], true),
        Err(Error::InvalidHeader { .. })
    ));
    let out = s.request_headers(&[(":path", "/")], true).expect("headers");
    let reply = out.local_reply().expect("reply");
    assert_eq!((reply.status, reply.grpc_status), (403, Some(7)));
    assert_eq!(reply.body_text(), "denied");
}
