//! The callbacks a module exports, looked up once per VM and typed for its ABI version.

use std::rc::Rc;

use wasmtime::{Instance, Store, TypedFunc, WasmParams, WasmResults};

use crate::error::WasmError;
use crate::state::VmState;

// Exports are kept behind `Rc`: cloning a `TypedFunc` clones its registered type, which costs
// more than the call itself on the request path.
pub(super) type F<P, R> = Rc<TypedFunc<P, R>>;
type F1 = F<i32, ()>;
type F2 = F<(i32, i32), ()>;
type F1R = F<i32, i32>;
type F2R = F<(i32, i32), i32>;
type F3R = F<(i32, i32, i32), i32>;
type F3 = F<(i32, i32, i32), ()>;
type F5 = F<(i32, i32, i32, i32, i32), ()>;

/// Header callbacks take `end_of_stream` from ABI 0.2.0 on.
#[derive(Clone)]
pub(super) enum HeadersFn {
    V1(F2R),
    V2(F3R),
}

/// The callbacks of one VM.
#[derive(Default)]
pub(super) struct Exports {
    pub(super) context_create: Option<F2>,
    pub(super) vm_start: Option<F2R>,
    pub(super) configure: Option<F2R>,
    pub(super) request_headers: Option<HeadersFn>,
    pub(super) request_body: Option<F3R>,
    pub(super) request_trailers: Option<F2R>,
    pub(super) response_headers: Option<HeadersFn>,
    pub(super) response_body: Option<F3R>,
    pub(super) response_trailers: Option<F2R>,
    pub(super) done: Option<F1R>,
    pub(super) log: Option<F1>,
    pub(super) delete: Option<F1>,
    /// `log`, `done` and `delete` in one entry (`ending`), when the module exports all three.
    pub(super) end: Option<F1>,
    /// A whole response in one entry (`whole`), when the module exports what it calls.
    pub(super) respond: Option<F<(i32, i32, i32, i32), i32>>,
    /// `context_create` and `request_headers` in one entry (`start`), when it has both.
    pub(super) start: Option<F<(i32, i32, i32, i32), i32>>,
    pub(super) tick: Option<F1>,
    pub(super) http_call_response: Option<F5>,
    pub(super) queue_ready: Option<F2>,
    pub(super) grpc_receive: Option<F3>,
    pub(super) grpc_close: Option<F3>,
    pub(super) grpc_initial_metadata: Option<F3>,
    pub(super) grpc_trailing_metadata: Option<F3>,
}

/// A typed export, or `None` when the module does not export `name`.
pub(super) fn export<P: WasmParams, R: WasmResults>(
    instance: &wasmtime::Instance,
    store: &mut Store<VmState>,
    name: &'static str,
) -> Result<Option<F<P, R>>, WasmError> {
    match instance.get_func(&mut *store, name) {
        None => Ok(None),
        Some(f) => f
            .typed::<P, R>(&*store)
            .map(|f| Some(Rc::new(f)))
            .map_err(|_| WasmError::BadExport(name)),
    }
}

impl Exports {
    /// Every callback `instance` exports (`v1`: ABI 0.1.0 header callbacks).
    pub(super) fn lookup(
        instance: &Instance,
        store: &mut Store<VmState>,
        v1: bool,
    ) -> Result<Exports, WasmError> {
        let instance = *instance;
        let headers = |store: &mut Store<VmState>, name| -> Result<Option<HeadersFn>, WasmError> {
            Ok(if v1 {
                export::<(i32, i32), i32>(&instance, store, name)?.map(HeadersFn::V1)
            } else {
                export::<(i32, i32, i32), i32>(&instance, store, name)?.map(HeadersFn::V2)
            })
        };
        Ok(Exports {
            context_create: export(&instance, &mut *store, "proxy_on_context_create")?,
            vm_start: export(&instance, &mut *store, "proxy_on_vm_start")?,
            configure: export(&instance, &mut *store, "proxy_on_configure")?,
            request_headers: headers(store, "proxy_on_request_headers")?,
            request_body: export(&instance, &mut *store, "proxy_on_request_body")?,
            request_trailers: export(&instance, &mut *store, "proxy_on_request_trailers")?,
            response_headers: headers(store, "proxy_on_response_headers")?,
            response_body: export(&instance, &mut *store, "proxy_on_response_body")?,
            response_trailers: export(&instance, &mut *store, "proxy_on_response_trailers")?,
            done: export(&instance, &mut *store, "proxy_on_done")?,
            log: export(&instance, &mut *store, "proxy_on_log")?,
            delete: export(&instance, &mut *store, "proxy_on_delete")?,
            end: None,
            respond: None,
            start: None,
            tick: export(&instance, &mut *store, "proxy_on_tick")?,
            http_call_response: export(&instance, &mut *store, "proxy_on_http_call_response")?,
            queue_ready: export(&instance, &mut *store, "proxy_on_queue_ready")?,
            grpc_receive: export(&instance, &mut *store, "proxy_on_grpc_receive")?,
            grpc_close: export(&instance, &mut *store, "proxy_on_grpc_close")?,
            grpc_initial_metadata: export(
                &instance,
                &mut *store,
                "proxy_on_grpc_receive_initial_metadata",
            )?,
            grpc_trailing_metadata: export(
                &instance,
                &mut *store,
                "proxy_on_grpc_receive_trailing_metadata",
            )?,
        })
    }
}
