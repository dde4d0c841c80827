//! Hostile guests, written in WAT so each misbehaves exactly one way: a loop that never ends,
//! a memory hog, a trap, a garbage return value, bad pointers passed to host calls, missing
//! imports. Each must fail the VM (or the host call) cleanly and leave the engine serving.

use std::rc::Rc;
use std::time::{Duration, Instant};

use meshgate_wasm::{
    Action, Engine, EngineOptions, NoHost, PluginConfig, PluginVm, VmFailure, WasmError,
};

/// A module with the ABI marker, an allocator and a root context, plus `body` as extra items.
fn module(body: &str) -> String {
    module_with("", body)
}

/// [`module`] with more `imports`.
fn module_with(imports: &str, body: &str) -> String {
    format!(
        r#"(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  {imports}
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 16) "x-status")
  (data (i32.const 32) "ok")
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  {body}
)"#
    )
}

fn engine() -> std::sync::Arc<Engine> {
    Engine::new(EngineOptions::default()).expect("engine")
}

fn start(engine: &Engine, wat: &str) -> Result<PluginVm, WasmError> {
    let m = engine.load(wat.as_bytes())?;
    let mut cfg = PluginConfig::new("hostile");
    cfg.callback_deadline = Duration::from_millis(50);
    cfg.memory_limit = 4 << 20;
    let plugin = engine.plugin(cfg, m);
    PluginVm::start(&plugin, Rc::new(NoHost))
}

fn head() -> http::request::Parts {
    let (mut p, ()) = http::Request::builder()
        .uri("/x")
        .header("host", "example.com")
        .body(())
        .expect("request")
        .into_parts();
    p.headers.insert("a", http::HeaderValue::from_static("1"));
    p
}

fn request_headers(vm: &mut PluginVm) -> Result<Action, VmFailure> {
    let id = vm.create_stream(Default::default())?;
    vm.on_request_headers(id, head(), true)
}

#[test]
fn an_endless_loop_is_stopped_at_the_deadline_and_the_vm_marked_failed() {
    let e = engine();
    let mut vm = start(
        &e,
        &module(r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (loop $l (br $l)) (i32.const 0))"#),
    )
    .expect("start");
    let t = Instant::now();
    let r = request_headers(&mut vm);
    assert!(
        matches!(
            r,
            Err(VmFailure::Deadline {
                callback: "proxy_on_request_headers",
                ..
            })
        ),
        "{r:?}"
    );
    // Bounded: the deadline is 50 ms; allow generous scheduling slack on a busy machine.
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(
        vm.plugin()
            .stats()
            .deadlines
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // The failed VM refuses further streams; a fresh VM of the same plugin starts fine.
    assert_eq!(vm.create_stream(Default::default()), Err(VmFailure::Failed));
    let plugin = vm.plugin().clone();
    let fresh = PluginVm::start(&plugin, Rc::new(NoHost)).expect("fresh VM");
    assert!(fresh.failed().is_none());
}

#[test]
fn a_memory_hog_hits_the_cap() {
    let e = engine();
    let mut vm = start(
        &e,
        &module(
            r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
                 (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
                 unreachable)"#,
        ),
    )
    .expect("start");
    let r = request_headers(&mut vm);
    assert!(matches!(r, Err(VmFailure::Memory { .. })), "{r:?}");
    assert!(vm.memory_size() <= 4 << 20, "{}", vm.memory_size());
}

#[test]
fn a_trap_fails_the_callback_with_its_reason() {
    let e = engine();
    let mut vm = start(
        &e,
        &module(r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) unreachable)"#),
    )
    .expect("start");
    match request_headers(&mut vm) {
        Err(VmFailure::Trap { callback, message }) => {
            assert_eq!(callback, "proxy_on_request_headers");
            assert!(message.contains("unreachable"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_trap_in_start_up_is_a_start_error() {
    let e = engine();
    let wat = module("").replace(
        r#"(func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))"#,
        r#"(func (export "proxy_on_vm_start") (param i32 i32) (result i32) unreachable)"#,
    );
    let r = start(&e, &wat);
    assert!(
        matches!(
            r,
            Err(WasmError::Start(VmFailure::Trap {
                callback: "proxy_on_vm_start",
                ..
            }))
        ),
        "{r:?}"
    );
    let wat = module("").replace(
        r#"(func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))"#,
        r#"(func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 0))"#,
    );
    let r = start(&e, &wat);
    assert!(
        matches!(
            r,
            Err(WasmError::Start(VmFailure::Refused("proxy_on_configure")))
        ),
        "{r:?}"
    );
}

#[test]
fn a_garbage_return_value_fails_the_vm() {
    let e = engine();
    let mut vm = start(
        &e,
        &module(r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 77))"#),
    )
    .expect("start");
    let r = request_headers(&mut vm);
    assert_eq!(
        r,
        Err(VmFailure::BadReturn {
            callback: "proxy_on_request_headers",
            value: 77
        })
    );
}

#[test]
fn bad_pointers_get_invalid_memory_access_not_a_crash() {
    let e = engine();
    // Logs from far outside memory and with a negative length, then adds a header whose value
    // says whether both calls answered InvalidMemoryAccess (6).
    let mut vm = start(
        &e,
        &module(
            r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
                 (if (i32.and
                       (i32.eq (call $log (i32.const 2) (i32.const 0x7ffffff0) (i32.const 64)) (i32.const 6))
                       (i32.eq (call $log (i32.const 2) (i32.const 16) (i32.const -1)) (i32.const 6)))
                   (then (drop (call $add (i32.const 0) (i32.const 16) (i32.const 8) (i32.const 32) (i32.const 2)))))
                 (drop (call $add (i32.const 0) (i32.const 16) (i32.const 8) (i32.const 65530) (i32.const 100)))
                 (i32.const 0))"#,
        ),
    )
    .expect("start");
    let id = vm.create_stream(Default::default()).expect("stream");
    assert_eq!(
        vm.on_request_headers(id, head(), true),
        Ok(Action::Continue)
    );
    let h = vm.take_request(id).expect("head back");
    let values: Vec<_> = h.headers.get_all("x-status").iter().collect();
    assert_eq!(values, ["ok"], "only the well-formed add took effect");
}

#[test]
fn modules_that_are_not_proxy_wasm_or_need_unknown_imports_are_refused() {
    let e = engine();
    let r = e.load(br#"(module (memory (export "memory") 1))"#);
    assert!(matches!(r, Err(WasmError::NotProxyWasm)), "{r:?}");
    let r = e.load(
        br#"(module (import "env" "proxy_teleport" (func (param i32))) (func (export "proxy_abi_version_0_2_1")))"#,
    );
    match r {
        Err(WasmError::MissingImport { module, name }) => {
            assert_eq!((module.as_str(), name.as_str()), ("env", "proxy_teleport"))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        e.load(b"\0asm garbage"),
        Err(WasmError::Compile(_))
    ));
}

/// `body`, to run only in the `n`-th stream's callbacks (context ids: the root's is 1, streams'
/// from 2); nothing for an empty body.
fn on_stream(n: usize, body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(
            "(if (i32.eq (local.get $id) (i32.const {})) (then {body}))",
            n + 1
        )
    }
}

/// That the VM failed in callback `blamed`: at its deadline, or (not `deadline`) by a trap.
fn assert_blamed(failed: Option<&VmFailure>, blamed: &str, deadline: bool, what: &str) {
    match failed {
        Some(VmFailure::Trap { callback, .. }) if !deadline => {
            assert_eq!(*callback, blamed, "{what}")
        }
        Some(VmFailure::Deadline { callback, .. }) if deadline => {
            assert_eq!(*callback, blamed, "{what}")
        }
        other => panic!("{blamed}, {what}: {other:?}"),
    }
}

/// `on_log`, `on_done` and `on_delete` of a module: `log`, `done` and `delete` are their bodies.
fn stream_end(log: &str, done: &str, delete: &str) -> String {
    module_with(
        r#"(import "env" "proxy_set_effective_context" (func $ctx (param i32) (result i32)))
  (import "env" "proxy_set_property" (func $set (param i32 i32 i32 i32) (result i32)))"#,
        &format!(
            r#"(data (i32.const 48) "k")
  (global $order (mut i32) (i32.const 0))
  (func (export "proxy_on_log") (param $id i32) {log})
  (func (export "proxy_on_done") (param $id i32) (result i32) {done} (i32.const 1))
  (func (export "proxy_on_delete") (param $id i32) {delete})"#
        ),
    )
}

#[test]
fn a_stream_ends_with_log_done_and_delete_in_order_each_acting_on_the_stream() {
    // on_log moves the effective context to the root; on_done must still act on the stream
    // (setting a property needs one) and run after on_log, on_delete after on_done.
    let wat = stream_end(
        r#"(drop (call $ctx (i32.const 1))) (global.set $order (i32.const 1))"#,
        r#"(if (i32.ne (global.get $order) (i32.const 1)) (then unreachable))
           (if (i32.ne (call $set (i32.const 48) (i32.const 1) (i32.const 32) (i32.const 2)) (i32.const 0))
             (then unreachable))
           (global.set $order (i32.const 2))"#,
        r#"(if (i32.ne (global.get $order) (i32.const 2)) (then unreachable))
           (global.set $order (i32.const 0))"#,
    );
    let e = engine();
    let mut vm = start(&e, &wat).expect("start");
    // Enough streams that some end in one guest entry and some (picked for timing) call the
    // callbacks one by one.
    for _ in 0..16 {
        let id = vm.create_stream(Default::default()).expect("stream");
        vm.end_stream(id);
        assert!(vm.failed().is_none(), "{:?}", vm.failed());
    }
}

#[test]
fn a_trap_or_a_loop_at_stream_end_is_blamed_on_its_callback() {
    let trap = "unreachable";
    let spin = "(loop $l (br $l))";
    for (log, done, delete, blamed, deadline) in [
        (trap, "", "", "proxy_on_log", false),
        ("", trap, "", "proxy_on_done", false),
        ("", "", trap, "proxy_on_delete", false),
        (spin, "", "", "proxy_on_log", true),
        ("", spin, "", "proxy_on_done", true),
        ("", "", spin, "proxy_on_delete", true),
    ] {
        // The n-th stream misbehaves (context ids: the root's is 1, streams' from 2): over six
        // of them, some stream ends run in one guest entry and some (picked for timing) one
        // callback at a time, and both must blame the same callback.
        for n in 1..=6 {
            let bad = |body: &str| on_stream(n, body);
            let e = engine();
            let wat = stream_end(&bad(log), &bad(done), &bad(delete));
            let mut vm = start(&e, &wat).expect("start");
            for _ in 0..n {
                let id = vm.create_stream(Default::default()).expect("stream");
                vm.end_stream(id);
            }
            assert_blamed(vm.failed(), blamed, deadline, &format!("stream {n}"));
            // The VM serves no more; the engine does.
            assert!(vm.create_stream(Default::default()).is_err());
            assert!(start(&e, &stream_end("", "", "")).is_ok());
        }
    }
}

/// A module with a plugin's response callbacks, each a WAT body: `headers` and `body` return
/// the callback's action (the body callback sees `$size` and `$eos`), the others act only.
fn response_module(headers: &str, body: &str, log: &str, done: &str, delete: &str) -> String {
    module_with(
        "",
        &format!(
            r#"(global $order (mut i32) (i32.const 0))
  (func (export "proxy_on_response_headers") (param $id i32) (param $n i32) (param $eos i32) (result i32) {headers})
  (func (export "proxy_on_response_body") (param $id i32) (param $size i32) (param $eos i32) (result i32) {body})
  (func (export "proxy_on_log") (param $id i32) {log})
  (func (export "proxy_on_done") (param $id i32) (result i32) {done} (i32.const 1))
  (func (export "proxy_on_delete") (param $id i32) {delete})"#
        ),
    )
}

fn response_head() -> http::response::Parts {
    http::Response::builder()
        .status(200)
        .header("content-length", "5")
        .body(())
        .expect("response")
        .into_parts()
        .0
}

/// A stream whose request went through, ready for its response.
fn stream(vm: &mut PluginVm) -> meshgate_wasm::StreamId {
    vm.create_stream(Default::default()).expect("stream")
}

#[test]
fn a_whole_response_runs_its_callbacks_in_order_in_one_go() {
    // The head (its header added), the data without end_of_stream, then the end alone, then
    // the stream's end: once the head went on, the plugin may read it but not change it.
    let wat = response_module(
        r#"(if (i32.ne (global.get $order) (i32.const 0)) (then unreachable))
           (if (i32.ne (local.get $eos) (i32.const 0)) (then unreachable))
           (drop (call $add (i32.const 2) (i32.const 16) (i32.const 8) (i32.const 32) (i32.const 2)))
           (global.set $order (i32.const 1)) (i32.const 0)"#,
        r#"(if (i32.eq (global.get $order) (i32.const 1))
             (then (if (i32.or (i32.ne (local.get $size) (i32.const 5)) (local.get $eos)) (then unreachable))
                   (global.set $order (i32.const 2)) (return (i32.const 0))))
           (if (i32.ne (global.get $order) (i32.const 2)) (then unreachable))
           (if (i32.or (i32.ne (local.get $size) (i32.const 0)) (i32.eqz (local.get $eos))) (then unreachable))
           (global.set $order (i32.const 3)) (i32.const 0)"#,
        r#"(if (i32.ne (global.get $order) (i32.const 3)) (then unreachable))
           (if (i32.eqz (call $add (i32.const 2) (i32.const 16) (i32.const 8) (i32.const 32) (i32.const 2)))
             (then unreachable))
           (global.set $order (i32.const 4))"#,
        r#"(if (i32.ne (global.get $order) (i32.const 4)) (then unreachable)) (global.set $order (i32.const 5))"#,
        r#"(if (i32.ne (global.get $order) (i32.const 5)) (then unreachable)) (global.set $order (i32.const 0))"#,
    );
    let e = engine();
    let mut vm = start(&e, &wat).expect("start");
    // Enough responses that some of their callbacks are picked for timing.
    for _ in 0..16 {
        let id = stream(&mut vm);
        match vm.respond_whole(id, response_head(), "hello".into(), 1 << 20) {
            meshgate_wasm::Whole::Done {
                head: Some(head),
                body,
            } => {
                assert_eq!(
                    head.headers.get("x-status").map(|v| v.as_bytes()),
                    Some(&b"ok"[..])
                );
                assert_eq!(head.headers.get_all("x-status").iter().count(), 1);
                assert_eq!(body, "hello");
            }
            other => panic!("{other:?} ({:?})", vm.failed()),
        }
        assert!(vm.failed().is_none(), "{:?}", vm.failed());
        assert!(vm.info(id).is_none(), "the stream has ended");
    }
}

#[test]
fn a_whole_response_stops_where_the_plugin_holds_it() {
    use meshgate_wasm::Whole;
    let fine = "(i32.const 0)";
    let e = engine();
    let run = |headers: &str, body: &str, limit: usize| {
        let wat = response_module(headers, body, "", "", "");
        let mut vm = start(&e, &wat).expect("start");
        let id = stream(&mut vm);
        let r = vm.respond_whole(id, response_head(), "hello".into(), limit);
        (r, vm.info(id).is_some())
    };
    // Paused (or a reply's status) in the headers: the body has not reached the plugin.
    match run("(i32.const 1)", "unreachable", 1 << 20) {
        (
            Whole::Headers {
                result: Ok(Action::Pause),
                body,
            },
            true,
        ) => assert_eq!(body, "hello"),
        other => panic!("{other:?}"),
    }
    // A garbage status fails the VM, blamed on the headers callback.
    match run("(i32.const 77)", "unreachable", 1 << 20) {
        (
            Whole::Headers {
                result: Err(VmFailure::BadReturn { callback, .. }),
                ..
            },
            _,
        ) => assert_eq!(callback, "proxy_on_response_headers"),
        other => panic!("{other:?}"),
    }
    // The data held (within the limit) goes on with the end.
    match run(fine, "(i32.eqz (local.get $eos))", 1 << 20) {
        (Whole::Done { body, .. }, false) => assert_eq!(body, "hello"),
        other => panic!("{other:?}"),
    }
    // Held past the limit: stopped at the data.
    match run(fine, "(i32.const 1)", 4) {
        (
            Whole::Body {
                end: false,
                result: Ok(Action::Pause),
                passed,
            },
            true,
        ) => assert!(passed.is_empty()),
        other => panic!("{other:?}"),
    }
    // Held at the end: stopped there, with what went on before.
    match run(fine, "(local.get $eos)", 1 << 20) {
        (
            Whole::Body {
                end: true,
                result: Ok(Action::Pause),
                passed,
            },
            true,
        ) => assert_eq!(passed, "hello"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_trap_or_a_loop_in_a_whole_response_is_blamed_on_its_callback() {
    let trap = "unreachable";
    let spin = "(loop $l (br $l))";
    let ok = "(i32.const 0)";
    for bad in [trap, spin] {
        let deadline = bad == spin;
        // (headers, body data, body end, log, done, delete), one of them misbehaving.
        for (i, blamed) in [
            "proxy_on_response_headers",
            "proxy_on_response_body",
            "proxy_on_response_body",
            "proxy_on_log",
            "proxy_on_done",
            "proxy_on_delete",
        ]
        .into_iter()
        .enumerate()
        {
            let e = engine();
            // The n-th stream misbehaves (the root's context id is 1, streams' from 2), after
            // others that end without a response: the callbacks picked for timing differ.
            for n in 1..=4 {
                let on_nth = |at: usize| on_stream(n, if at == i { bad } else { "" });
                let body = match i {
                    1 | 2 => format!(
                        "(if (i32.eq (local.get $eos) (i32.const {})) (then {})) (i32.const 0)",
                        i - 1,
                        on_nth(i)
                    ),
                    _ => ok.to_string(),
                };
                let wat = response_module(
                    &format!("{} (i32.const 0)", on_nth(0)),
                    &body,
                    &on_nth(3),
                    &on_nth(4),
                    &on_nth(5),
                );
                let mut vm = start(&e, &wat).expect("start");
                for _ in 1..n {
                    let id = stream(&mut vm);
                    vm.end_stream(id);
                }
                let id = stream(&mut vm);
                let r = vm.respond_whole(id, response_head(), "hello".into(), 1 << 20);
                let what = format!("stage {i}, stream {n}, after {r:?}");
                assert_blamed(vm.failed(), blamed, deadline, &what);
                // Past the body, the stream is over and its head comes back all the same.
                if i >= 3 {
                    assert!(
                        matches!(r, meshgate_wasm::Whole::Done { head: Some(_), .. }),
                        "{r:?}"
                    );
                }
                assert!(vm.create_stream(Default::default()).is_err());
            }
        }
    }
}

/// A module whose `proxy_on_context_create` and `proxy_on_request_headers` have these bodies
/// (`$id` the context; the headers callback returns Continue after its body), and whose
/// `proxy_on_log` traps unless the stream's context was created.
fn stream_start(create: &str, headers: &str) -> String {
    module_with(
        "",
        &format!(
            r#"(global $created (mut i32) (i32.const 0))
  (func (export "proxy_on_context_create") (param $id i32) (param $root i32)
    (if (i32.ne (local.get $id) (i32.const 1)) (then (global.set $created (local.get $id)) {create})))
  (func (export "proxy_on_request_headers") (param $id i32) (param $n i32) (param $eos i32) (result i32)
    (if (i32.ne (global.get $created) (local.get $id)) (then unreachable)) {headers} (i32.const 0))
  (func (export "proxy_on_log") (param $id i32)
    (if (i32.ne (global.get $created) (local.get $id)) (then unreachable)))"#
        ),
    )
    // module_with exports an empty proxy_on_context_create of its own: drop it.
    .replace(
        "  (func (export \"proxy_on_context_create\") (param i32 i32))\n",
        "",
    )
}

#[test]
fn a_stream_opened_for_its_headers_gets_its_context_first_in_one_go_or_at_its_end() {
    let e = engine();
    let mut vm = start(&e, &stream_start("", "")).expect("start");
    // Enough streams that some callbacks are picked for timing (then called one by one).
    for _ in 0..16 {
        let id = vm.open_stream(Default::default()).expect("stream");
        assert_eq!(
            vm.on_request_headers(id, head(), true),
            Ok(Action::Continue)
        );
        vm.end_stream(id);
        // A stream whose headers never came is still created before its end.
        let id = vm.open_stream(Default::default()).expect("stream");
        vm.end_stream(id);
        assert!(vm.failed().is_none(), "{:?}", vm.failed());
    }
}

#[test]
fn a_trap_or_a_loop_as_a_stream_starts_is_blamed_on_its_callback() {
    let trap = "unreachable";
    let spin = "(loop $l (br $l))";
    for (create, headers, blamed, deadline) in [
        (trap, "", "proxy_on_context_create", false),
        ("", trap, "proxy_on_request_headers", false),
        (spin, "", "proxy_on_context_create", true),
        ("", spin, "proxy_on_request_headers", true),
    ] {
        // The n-th stream misbehaves, after others that went well: the callbacks picked for
        // timing differ, so both the one-entry and the one-by-one path are met.
        for n in 1..=6 {
            let on_nth = |body: &str| on_stream(n, body);
            let e = engine();
            let mut vm =
                start(&e, &stream_start(&on_nth(create), &on_nth(headers))).expect("start");
            let mut last = Ok(Action::Continue);
            for _ in 0..n {
                let id = vm.open_stream(Default::default()).expect("stream");
                last = vm.on_request_headers(id, head(), true);
            }
            assert!(last.is_err(), "stream {n}: {last:?}");
            assert_blamed(vm.failed(), blamed, deadline, &format!("stream {n}"));
        }
    }
}

/// `$spin`: a function that keeps the guest busy for `$ms` milliseconds of the host's clock.
const SPIN: &str = r#"(func $spin (param $ms i64)
    (local $end i64)
    (drop (call $now (i32.const 64)))
    (local.set $end (i64.add (i64.load (i32.const 64)) (i64.mul (local.get $ms) (i64.const 1000000))))
    (loop $l
      (drop (call $now (i32.const 64)))
      (br_if $l (i64.lt_u (i64.load (i32.const 64)) (local.get $end)))))"#;

#[test]
fn each_callback_run_in_one_entry_gets_a_whole_deadline_of_its_own() {
    // The deadline is 50 ms a callback. Each callback here is busy for 20 ms (30 ms for the
    // two of a stream's start): more than 50 ms in all, in one entry into the guest, and fine
    // for each callback on its own.
    let imports = r#"(import "env" "proxy_get_current_time_nanoseconds" (func $now (param i32) (result i32)))"#;
    let busy = "(call $spin (i64.const 20))";
    let wat = module_with(
        imports,
        &format!(
            r#"{SPIN}
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (call $spin (i64.const 30)) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) {busy} (i32.const 0))
  (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32) {busy} (i32.const 0))
  (func (export "proxy_on_log") (param i32) {busy})
  (func (export "proxy_on_done") (param i32) (result i32) {busy} (i32.const 1))
  (func (export "proxy_on_delete") (param i32) {busy})"#
        ),
    )
    .replace(
        "(func (export \"proxy_on_context_create\") (param i32 i32))",
        "(func (export \"proxy_on_context_create\") (param i32 i32) (call $spin (i64.const 30)))",
    );
    let e = engine();
    let mut vm = start(&e, &wat).expect("start");
    // A few streams: the callbacks picked for timing differ (those go through the host
    // between callbacks), the others run with no call back into the host.
    for _ in 0..3 {
        let id = vm.open_stream(Default::default()).expect("stream");
        assert_eq!(
            vm.on_request_headers(id, head(), true),
            Ok(Action::Continue)
        );
        let r = vm.respond_whole(id, response_head(), "hello".into(), 1 << 20);
        assert!(
            matches!(r, meshgate_wasm::Whole::Done { .. }),
            "{r:?} ({:?})",
            vm.failed()
        );
        let id = stream(&mut vm);
        vm.end_stream(id);
        assert!(vm.failed().is_none(), "{:?}", vm.failed());
    }
}

#[test]
fn a_whole_response_shows_each_callback_the_body_as_separate_callbacks_would() {
    // The data callback sees the five bytes in the buffer, the end (after the data went on)
    // an empty one, and the log callback an empty one too; none may change the head.
    let imports = r#"(import "env" "proxy_get_buffer_status" (func $status (param i32 i32 i32) (result i32)))"#;
    let len = "call $len";
    let may_add =
        "(i32.eqz (call $add (i32.const 2) (i32.const 16) (i32.const 8) (i32.const 32) (i32.const 2)))";
    let wat = module_with(
        imports,
        &format!(
            r#"(func $len (result i32)
    (drop (call $status (i32.const 1) (i32.const 64) (i32.const 68))) (i32.load (i32.const 64)))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (if (i32.ne ({len}) (i32.const 0)) (then unreachable)) (i32.const 0))
  (func (export "proxy_on_response_body") (param $id i32) (param $size i32) (param $eos i32) (result i32)
    (if (i32.ne ({len}) (select (i32.const 0) (i32.const 5) (local.get $eos))) (then unreachable))
    (if {may_add} (then unreachable))
    (i32.const 0))
  (func (export "proxy_on_log") (param i32) (if (i32.ne ({len}) (i32.const 0)) (then unreachable)))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32))"#
        ),
    );
    let e = engine();
    let mut vm = start(&e, &wat).expect("start");
    for _ in 0..16 {
        let id = stream(&mut vm);
        match vm.respond_whole(id, response_head(), "hello".into(), 1 << 20) {
            meshgate_wasm::Whole::Done { body, .. } => assert_eq!(body, "hello"),
            other => panic!("{other:?} ({:?})", vm.failed()),
        }
        assert!(vm.failed().is_none(), "{:?}", vm.failed());
    }
}
