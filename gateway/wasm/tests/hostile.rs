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
            let bad = |body: &str| {
                if body.is_empty() {
                    String::new()
                } else {
                    format!(
                        "(if (i32.eq (local.get $id) (i32.const {})) (then {body}))",
                        n + 1
                    )
                }
            };
            let e = engine();
            let wat = stream_end(&bad(log), &bad(done), &bad(delete));
            let mut vm = start(&e, &wat).expect("start");
            for _ in 0..n {
                let id = vm.create_stream(Default::default()).expect("stream");
                vm.end_stream(id);
            }
            match vm.failed() {
                Some(VmFailure::Trap { callback, .. }) if !deadline => {
                    assert_eq!(*callback, blamed, "stream {n}")
                }
                Some(VmFailure::Deadline { callback, .. }) if deadline => {
                    assert_eq!(*callback, blamed, "stream {n}")
                }
                other => panic!("{blamed}, stream {n}: {other:?}"),
            }
            // The VM serves no more; the engine does.
            assert!(vm.create_stream(Default::default()).is_err());
            assert!(start(&e, &stream_end("", "", "")).is_ok());
        }
    }
}
