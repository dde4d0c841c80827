//! A stream's first two callbacks (`proxy_on_context_create`, `proxy_on_request_headers`) in
//! one entry into the guest, for a stream opened with [`super::PluginVm::open_stream`].
//!
//! As at the stream's end ([`super::ending`]): a tiny module of the host's own, beside the
//! plugin in its store, calls the two wasm to wasm, and between them calls back into the host
//! ([`super::ending::between`]), which arms the second callback's own deadline, points the
//! effective context at the stream again and notes which callback runs, for the blame of a trap.

use std::rc::Rc;

use wasmtime::{Extern, Func, Instance, Module, Store, TypedFunc};

use super::exports::F;
use crate::state::VmState;

/// The callbacks in the order the module calls them.
pub(crate) const CALLBACKS: [&str; 2] = ["proxy_on_context_create", "proxy_on_request_headers"];

/// `start(context, root, headers, end_of_stream)` returns what the headers callback returned.
pub(crate) const WAT: &str = r#"
(module
  (import "plugin" "create" (func $create (param i32 i32)))
  (import "plugin" "headers" (func $headers (param i32 i32 i32) (result i32)))
  (import "host" "between" (func $between (param i32 i32)))
  (func (export "start") (param $id i32) (param $root i32) (param $n i32) (param $eos i32) (result i32)
    (call $create (local.get $id) (local.get $root))
    (call $between (local.get $id) (i32.const 1))
    (call $headers (local.get $id) (local.get $n) (local.get $eos))))
"#;

/// The module's `start`, for a VM whose plugin exports both callbacks.
pub(super) fn instantiate(
    store: &mut Store<VmState>,
    module: &Module,
    create: &TypedFunc<(i32, i32), ()>,
    headers: &TypedFunc<(i32, i32, i32), i32>,
) -> wasmtime::Result<F<(i32, i32, i32, i32), i32>> {
    let between = Func::wrap(&mut *store, super::ending::between);
    let imports: [Extern; 3] = [
        (*create.func()).into(),
        (*headers.func()).into(),
        between.into(),
    ];
    let instance = Instance::new(&mut *store, module, &imports)?;
    Ok(Rc::new(
        instance.get_typed_func::<(i32, i32, i32, i32), i32>(&mut *store, "start")?,
    ))
}
