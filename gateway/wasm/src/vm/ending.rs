//! A stream's last three callbacks (`proxy_on_log`, `proxy_on_done`, `proxy_on_delete`) in one
//! entry into the guest.
//!
//! Every call from the host into wasm costs the same fixed work (trap handler set-up, the
//! store's entry state, the deadline), which for a small plugin is as much as its callback. A
//! tiny module, instantiated beside the plugin in the same store, imports the three callbacks
//! and calls them in Envoy's order; wasm-to-wasm calls cost next to nothing. Between the
//! callbacks it calls back into the host ([`between`]), which does what a separate entry would:
//! it arms the next callback's own deadline, points the effective context at the stream again
//! (a plugin may have changed it) and notes which callback runs, so a trap or a deadline hit is
//! blamed on the right one. A trap ends the whole sequence, as it would end the separate calls:
//! the VM has failed and runs nothing more.

use std::rc::Rc;

use wasmtime::{AsContextMut, Caller, Extern, Func, Instance, Module, Store};

use super::exports::F;
use crate::state::VmState;

/// The callbacks in the order the module calls them.
pub(crate) const CALLBACKS: [&str; 3] = ["proxy_on_log", "proxy_on_done", "proxy_on_delete"];

pub(crate) const WAT: &str = r#"
(module
  (import "plugin" "log" (func $log (param i32)))
  (import "plugin" "done" (func $done (param i32) (result i32)))
  (import "plugin" "delete" (func $delete (param i32)))
  (import "host" "between" (func $between (param i32 i32)))
  (func (export "end") (param $id i32)
    (call $log (local.get $id))
    (call $between (local.get $id) (i32.const 1))
    (drop (call $done (local.get $id)))
    (call $between (local.get $id) (i32.const 2))
    (call $delete (local.get $id))))
"#;

/// The module's `end(context_id)` for a VM whose plugin exports the three callbacks.
pub(super) fn instantiate(
    store: &mut Store<VmState>,
    module: &Module,
    log: &wasmtime::TypedFunc<i32, ()>,
    done: &wasmtime::TypedFunc<i32, i32>,
    delete: &wasmtime::TypedFunc<i32, ()>,
) -> wasmtime::Result<F<i32, ()>> {
    let between = Func::wrap(&mut *store, between);
    let imports: [Extern; 4] = [
        (*log.func()).into(),
        (*done.func()).into(),
        (*delete.func()).into(),
        between.into(),
    ];
    let instance = Instance::new(&mut *store, module, &imports)?;
    Ok(Rc::new(
        instance.get_typed_func::<i32, ()>(&mut *store, "end")?,
    ))
}

/// Runs between two of the callbacks: the next one (`stage`, its index in the calling
/// module's list of callbacks) starts as a separate entry would.
pub(super) fn between(mut caller: Caller<'_, VmState>, context: i32, stage: i32) {
    let st = caller.data_mut();
    st.effective = context as u32;
    st.end_stage = stage as usize;
    let ticks = st.callback_budget.ticks;
    caller.as_context_mut().set_epoch_deadline(ticks);
}
