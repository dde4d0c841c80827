//! A stream's last three callbacks (`proxy_on_log`, `proxy_on_done`, `proxy_on_delete`) in one
//! entry into the guest.
//!
//! Every call from the host into wasm costs the same fixed work (trap handler set-up, the
//! store's entry state, the deadline), which for a small plugin is as much as its callback. A
//! tiny module, instantiated beside the plugin in the same store, imports the three callbacks
//! and calls them in Envoy's order; wasm-to-wasm calls cost next to nothing. Before each it
//! notes the callback's index as the stage, so each gets its own deadline and a trap
//! or a deadline hit is blamed on the right one ([`super::fused`]). Only if the plugin set
//! another effective context (or the host asked for it) does it call back into the host
//! between two callbacks ([`between`]), which points the effective context at the stream
//! again, as a separate entry would. A trap ends the whole sequence, as it would end the
//! separate calls: the VM has failed and runs nothing more.

use std::rc::Rc;

use wasmtime::{Caller, Extern, Func, Instance, Module, Store};

use super::exports::F;
use super::fused::Fused;
use crate::state::VmState;

/// The callbacks in the order the module calls them.
pub(crate) const CALLBACKS: [&str; 3] = ["proxy_on_log", "proxy_on_done", "proxy_on_delete"];

pub(crate) const WAT: &str = r#"
(module
  (import "plugin" "log" (func $log (param i32)))
  (import "plugin" "done" (func $done (param i32) (result i32)))
  (import "plugin" "delete" (func $delete (param i32)))
  (import "host" "between" (func $between (param i32)))
  (import "host" "fused" (memory 1 1))
  (func (export "end") (param $id i32)
    (i32.store (i32.const 4) (i32.const 0))
    (i32.store (i32.const 0) (i32.const 0))
    (call $log (local.get $id))
    (if (i32.load (i32.const 4)) (then (call $between (local.get $id))))
    (i32.store (i32.const 0) (i32.const 1))
    (drop (call $done (local.get $id)))
    (if (i32.load (i32.const 4)) (then (call $between (local.get $id))))
    (i32.store (i32.const 0) (i32.const 2))
    (call $delete (local.get $id))))
"#;

/// The module's `end(context_id)` for a VM whose plugin exports the three callbacks.
pub(super) fn instantiate(
    store: &mut Store<VmState>,
    module: &Module,
    fused: &Fused,
    log: &wasmtime::TypedFunc<i32, ()>,
    done: &wasmtime::TypedFunc<i32, i32>,
    delete: &wasmtime::TypedFunc<i32, ()>,
) -> wasmtime::Result<F<i32, ()>> {
    let between = Func::wrap(&mut *store, between);
    let imports: [Extern; 5] = [
        (*log.func()).into(),
        (*done.func()).into(),
        (*delete.func()).into(),
        between.into(),
        fused.memory.into(),
    ];
    let instance = Instance::new(&mut *store, module, &imports)?;
    Ok(Rc::new(
        instance.get_typed_func::<i32, ()>(&mut *store, "end")?,
    ))
}

/// Runs between two of the callbacks when the module was told to ask: the next one starts
/// with the stream as the effective context, as a separate entry would.
pub(super) fn between(mut caller: Caller<'_, VmState>, context: i32) {
    caller.data_mut().effective = context as u32;
}
