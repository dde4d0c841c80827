//! A whole response through a plugin in one entry into the guest: the response headers, the
//! body (its data, then its end) and the stream's last three callbacks.
//!
//! Most responses arrive with their body; a gateway with one plugin then runs six callbacks in
//! a row with nothing to wait for. As with the stream's end ([`super::ending`]), a tiny module
//! of the host's own, instantiated beside the plugin in its store, calls them wasm to wasm and
//! calls back into the host ([`next`]) after each one but the last. There the host does what it
//! does between separate entries: it reads what the callback returned and stops the sequence
//! where the stream cannot go on at once (a pause, a reply, a bad return value, a body held
//! past the limit), moves the body in and out of the plugin's buffer, arms the next callback's
//! own deadline, points the effective context at the stream again and notes which callback
//! runs (for the blame of a trap and for the latency histograms). Where it stopped, the caller
//! goes on as the separate callbacks would have. After the last callback there is nothing left
//! to decide: [`super::PluginVm::respond_whole`] times it, if it was picked, once the entry
//! returns.

use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use wasmtime::{AsContextMut, Caller, Extern, Func, Instance, Module, Store, TypedFunc};

use super::exports::F;
use crate::context::Action;
use crate::state::VmState;

/// The callbacks in the order the module calls them.
pub(crate) const CALLBACKS: [&str; 6] = [
    "proxy_on_response_headers",
    "proxy_on_response_body",
    "proxy_on_response_body",
    "proxy_on_log",
    "proxy_on_done",
    "proxy_on_delete",
];

/// `respond(context, headers)` returns how many callbacks ran to their end and let the stream
/// go on (6: all of them). `next` returns the next callback's argument, or -1 to stop.
pub(crate) const WAT: &str = r#"
(module
  (import "plugin" "headers" (func $headers (param i32 i32 i32) (result i32)))
  (import "plugin" "body" (func $body (param i32 i32 i32) (result i32)))
  (import "plugin" "log" (func $log (param i32)))
  (import "plugin" "done" (func $done (param i32) (result i32)))
  (import "plugin" "delete" (func $delete (param i32)))
  (import "host" "next" (func $next (param i32 i32 i32) (result i32)))
  (func (export "respond") (param $id i32) (param $n i32) (result i32)
    (local $a i32)
    (local.set $a (call $next (local.get $id) (i32.const 0)
      (call $headers (local.get $id) (local.get $n) (i32.const 0))))
    (if (i32.lt_s (local.get $a) (i32.const 0)) (then (return (i32.const 0))))
    (local.set $a (call $next (local.get $id) (i32.const 1)
      (call $body (local.get $id) (local.get $a) (i32.const 0))))
    (if (i32.lt_s (local.get $a) (i32.const 0)) (then (return (i32.const 1))))
    (local.set $a (call $next (local.get $id) (i32.const 2)
      (call $body (local.get $id) (local.get $a) (i32.const 1))))
    (if (i32.lt_s (local.get $a) (i32.const 0)) (then (return (i32.const 2))))
    (call $log (local.get $id))
    (drop (call $next (local.get $id) (i32.const 3) (i32.const 0)))
    (drop (call $done (local.get $id)))
    (drop (call $next (local.get $id) (i32.const 4) (i32.const 0)))
    (call $delete (local.get $id))
    (i32.const 6)))
"#;

/// The state of one run, kept in the store while it runs.
#[derive(Debug, Default)]
pub(crate) struct Run {
    /// The callback running (its index in [`CALLBACKS`]).
    pub(crate) stage: usize,
    /// What the last callback that returned gave back.
    pub(crate) result: i32,
    /// The body, until the first body callback gets it.
    pub(crate) body: Option<Bytes>,
    /// What the plugin let through of the body so far.
    pub(crate) passed: Bytes,
    /// How much body the plugin may hold.
    pub(crate) limit: usize,
    /// Which callbacks are timed for the latency histograms.
    pub(crate) timed: [bool; 6],
    /// When the running callback started, if it is timed.
    pub(crate) started: Option<Instant>,
}

impl Run {
    fn pass(&mut self, chunk: Bytes) {
        if self.passed.is_empty() {
            self.passed = chunk;
        } else if !chunk.is_empty() {
            let mut all = BytesMut::with_capacity(self.passed.len() + chunk.len());
            all.extend_from_slice(&self.passed);
            all.extend_from_slice(&chunk);
            self.passed = all.freeze();
        }
    }
}

/// The module's `respond(context_id, headers)`, for a VM whose plugin exports what it calls.
pub(super) fn instantiate(
    store: &mut Store<VmState>,
    module: &Module,
    headers: &TypedFunc<(i32, i32, i32), i32>,
    body: &TypedFunc<(i32, i32, i32), i32>,
    log: &TypedFunc<i32, ()>,
    done: &TypedFunc<i32, i32>,
    delete: &TypedFunc<i32, ()>,
) -> wasmtime::Result<F<(i32, i32), i32>> {
    let next = Func::wrap(&mut *store, next);
    let imports: [Extern; 6] = [
        (*headers.func()).into(),
        (*body.func()).into(),
        (*log.func()).into(),
        (*done.func()).into(),
        (*delete.func()).into(),
        next.into(),
    ];
    let instance = Instance::new(&mut *store, module, &imports)?;
    Ok(Rc::new(instance.get_typed_func::<(i32, i32), i32>(
        &mut *store,
        "respond",
    )?))
}

/// Runs after callback `stage` returned `result`: the next callback's argument (the body
/// size for a body callback), or -1 to stop here.
fn next(mut caller: Caller<'_, VmState>, context: i32, stage: i32, result: i32) -> i32 {
    let st = caller.data_mut();
    let stage = (stage as usize).min(CALLBACKS.len() - 1);
    let run = &mut st.whole;
    run.result = result;
    if let Some(t) = run.started.take() {
        st.plugin
            .stats
            .latency
            .record(CALLBACKS[stage], t.elapsed());
    }
    let id = context as u32;
    let Some(s) = st.streams.get_mut(&id) else {
        return -1;
    };
    let action = Action::from_guest(result);
    let arg = match stage {
        // The head went on: the plugin may read it from now on, not change it.
        0 => {
            if action != Some(Action::Continue) || s.local_response.is_some() {
                return -1;
            }
            s.response_gone = true;
            s.append_body(true, run.body.take().unwrap_or_default())
        }
        // The data: passed on, or held (within the limit) until the end.
        1 => {
            match action {
                Some(Action::Continue) => run.pass(s.response_body.take()),
                Some(Action::Pause) if s.response_body.len() <= run.limit => {}
                _ => return -1,
            }
            s.response_body.len()
        }
        // The end: all of the body goes on, and the stream is over.
        2 => {
            if action != Some(Action::Continue) {
                return -1;
            }
            run.pass(s.response_body.take());
            s.ended = true;
            0
        }
        _ => 0,
    };
    if stage + 1 < CALLBACKS.len() {
        run.stage = stage + 1;
        if run.timed[stage + 1] {
            run.started = Some(Instant::now());
        }
        st.effective = id;
        let ticks = st.callback_budget.ticks;
        caller.as_context_mut().set_epoch_deadline(ticks);
    }
    i32::try_from(arg).unwrap_or(i32::MAX)
}
