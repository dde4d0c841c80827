//! A stream's first two callbacks (`proxy_on_context_create`, `proxy_on_request_headers`) in
//! one entry into the guest, for a stream opened with [`super::PluginVm::open_stream`].
//!
//! As at the stream's end ([`super::ending`]): a tiny module of the host's own, beside the
//! plugin in its store, calls the two wasm to wasm, noting which runs in the host's stage word
//! (for each callback's own deadline and the blame of a trap, [`super::fused`]), and calls
//! back into the host between them ([`super::ending::between`]) only to point the effective
//! context at the stream again, if the plugin changed it.

use std::rc::Rc;

use wasmtime::{Extern, Func, Instance, Module, Store, TypedFunc};

use super::exports::F;
use super::fused::Fused;
use crate::state::VmState;

/// The callbacks in the order the module calls them.
pub(crate) const CALLBACKS: [&str; 2] = ["proxy_on_context_create", "proxy_on_request_headers"];

/// `start(context, root, headers, end_of_stream)` returns what the headers callback returned.
pub(crate) const WAT: &str = r#"
(module
  (import "plugin" "create" (func $create (param i32 i32)))
  (import "plugin" "headers" (func $headers (param i32 i32 i32) (result i32)))
  (import "host" "between" (func $between (param i32)))
  (import "host" "fused" (memory 1 1))
  (func (export "start") (param $id i32) (param $root i32) (param $n i32) (param $eos i32) (result i32)
    (i32.store (i32.const 4) (i32.const 0))
    (i32.store (i32.const 0) (i32.const 0))
    (call $create (local.get $id) (local.get $root))
    (if (i32.load (i32.const 4)) (then (call $between (local.get $id))))
    (i32.store (i32.const 0) (i32.const 1))
    (call $headers (local.get $id) (local.get $n) (local.get $eos))))
"#;

/// The module's `start`, for a VM whose plugin exports both callbacks.
pub(super) fn instantiate(
    store: &mut Store<VmState>,
    module: &Module,
    fused: &Fused,
    create: &TypedFunc<(i32, i32), ()>,
    headers: &TypedFunc<(i32, i32, i32), i32>,
) -> wasmtime::Result<F<(i32, i32, i32, i32), i32>> {
    let between = Func::wrap(&mut *store, super::ending::between);
    let imports: [Extern; 4] = [
        (*create.func()).into(),
        (*headers.func()).into(),
        between.into(),
        fused.memory.into(),
    ];
    let instance = Instance::new(&mut *store, module, &imports)?;
    Ok(Rc::new(
        instance.get_typed_func::<(i32, i32, i32, i32), i32>(&mut *store, "start")?,
    ))
}
