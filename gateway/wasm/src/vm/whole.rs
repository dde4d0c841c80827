//! A whole response through a plugin in one entry into the guest: the response headers, the
//! body (its data, then its end) and the stream's last three callbacks.
//!
//! Most responses arrive with their body; a gateway with one plugin then runs six callbacks in
//! a row with nothing to wait for. As with the stream's end ([`super::ending`]), a tiny module
//! of the host's own, instantiated beside the plugin in its store, calls them wasm to wasm
//! (see [`super::fused`] for the stage it notes and the deadline each callback gets).
//!
//! Where a callback returned `Continue` and nothing happened that needs the host, the module
//! goes straight on, and what the host would have done in between (the head goes on
//! downstream, the body moves into the plugin's buffer and out again) is done when it is next
//! looked at: by a host call of the plugin, which first calls [`catch_up`], and at the end of
//! the entry. Otherwise the module calls back into the host ([`next`]), which reads what the
//! callback returned and stops the sequence where the stream cannot go on at once (a pause, a
//! reply, a bad return value, a body held past the limit), points the effective context at
//! the stream again and times the next callback if it is sampled. Where it stopped, the caller
//! goes on as the separate callbacks would have. [`super::PluginVm::respond_whole`] times the
//! last callback, if it was picked, once the entry returns.

use std::rc::Rc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use wasmtime::{Caller, Extern, Func, Instance, Module, Store, TypedFunc};

use super::exports::F;
use super::fused::Fused;
use crate::context::Action;
use crate::state::{StreamData, VmState};

/// The callbacks in the order the module calls them.
pub(crate) const CALLBACKS: [&str; 6] = [
    "proxy_on_response_headers",
    "proxy_on_response_body",
    "proxy_on_response_body",
    "proxy_on_log",
    "proxy_on_done",
    "proxy_on_delete",
];

/// `respond(context, headers, body size, ask)` returns how many callbacks ran to their end and
/// let the stream go on (6: all of them), and leaves the stage at 6 when all did. Bit `k` of
/// `ask` makes it call `next` after callback `k` in any case (for a callback timed there). `next` returns the
/// next callback's argument, or -1 to stop.
pub(crate) const WAT: &str = r#"
(module
  (import "plugin" "headers" (func $headers (param i32 i32 i32) (result i32)))
  (import "plugin" "body" (func $body (param i32 i32 i32) (result i32)))
  (import "plugin" "log" (func $log (param i32)))
  (import "plugin" "done" (func $done (param i32) (result i32)))
  (import "plugin" "delete" (func $delete (param i32)))
  (import "host" "next" (func $next (param i32 i32 i32) (result i32)))
  (import "host" "fused" (memory 1 1))
  (func (export "respond") (param $id i32) (param $n i32) (param $size i32) (param $ask i32) (result i32)
    (local $r i32) (local $a i32)
    (i32.store (i32.const 4) (i32.const 0))
    (i32.store (i32.const 0) (i32.const 0))
    (local.set $r (call $headers (local.get $id) (local.get $n) (i32.const 0)))
    (local.set $a (local.get $size))
    (if (i32.or (local.get $r) (i32.or (i32.load (i32.const 4)) (i32.and (local.get $ask) (i32.const 1)))) (then
      (local.set $a (call $next (local.get $id) (i32.const 0) (local.get $r)))
      (if (i32.lt_s (local.get $a) (i32.const 0)) (then (return (i32.const 0))))))
    (i32.store (i32.const 0) (i32.const 1))
    (local.set $r (call $body (local.get $id) (local.get $a) (i32.const 0)))
    (local.set $a (i32.const 0))
    (if (i32.or (local.get $r) (i32.or (i32.load (i32.const 4)) (i32.and (local.get $ask) (i32.const 2)))) (then
      (local.set $a (call $next (local.get $id) (i32.const 1) (local.get $r)))
      (if (i32.lt_s (local.get $a) (i32.const 0)) (then (return (i32.const 1))))))
    (i32.store (i32.const 0) (i32.const 2))
    (local.set $r (call $body (local.get $id) (local.get $a) (i32.const 1)))
    (if (i32.or (local.get $r) (i32.or (i32.load (i32.const 4)) (i32.and (local.get $ask) (i32.const 4)))) (then
      (if (i32.lt_s (call $next (local.get $id) (i32.const 2) (local.get $r)) (i32.const 0))
        (then (return (i32.const 2))))))
    (i32.store (i32.const 0) (i32.const 3))
    (call $log (local.get $id))
    (if (i32.or (i32.load (i32.const 4)) (i32.and (local.get $ask) (i32.const 8))) (then (drop (call $next (local.get $id) (i32.const 3) (i32.const 0)))))
    (i32.store (i32.const 0) (i32.const 4))
    (drop (call $done (local.get $id)))
    (if (i32.or (i32.load (i32.const 4)) (i32.and (local.get $ask) (i32.const 16))) (then (drop (call $next (local.get $id) (i32.const 4) (i32.const 0)))))
    (i32.store (i32.const 0) (i32.const 5))
    (call $delete (local.get $id))
    (i32.store (i32.const 0) (i32.const 6))
    (i32.const 6)))
"#;

/// The state of one run, kept in the store while it runs.
#[derive(Debug, Default)]
pub(crate) struct Run {
    /// A run is under way.
    pub(crate) active: bool,
    /// Its stream.
    pub(crate) context: u32,
    /// How many callbacks' outcomes the stream's state shows (see [`catch_up`]).
    pub(crate) applied: usize,
    /// What the last callback that went through [`next`] returned.
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

    /// What follows for the stream when callback `stage` let it go on.
    fn went_on(&mut self, s: &mut StreamData, stage: usize) {
        match stage {
            // The head went on: the plugin may read it from now on, not change it; the body
            // is the plugin's to see.
            0 => {
                s.response_gone = true;
                s.append_body(true, self.body.take().unwrap_or_default());
            }
            // The data went on.
            1 => self.pass(s.response_body.take()),
            // The end: all of the body goes on, and the stream is over.
            2 => {
                self.pass(s.response_body.take());
                s.ended = true;
            }
            _ => {}
        }
        self.applied = stage + 1;
    }
}

/// The callbacks whose `Continue` changes the stream's state: the head and the body's two.
const CHANGING: usize = 3;

/// Brings the stream's state up to callback `stage` running: the callbacks before it that the
/// module went past by itself let the stream go on.
pub(crate) fn catch_up(st: &mut VmState, stage: usize) {
    let run = &mut st.whole;
    let upto = stage.min(CHANGING);
    if !run.active || run.applied >= upto {
        return;
    }
    let Some(s) = st.streams.get_mut(&run.context) else {
        return;
    };
    while run.applied < upto {
        let k = run.applied;
        run.went_on(s, k);
    }
}

/// The module's `respond(context_id, headers, size, ask)`, for a VM whose plugin exports what it
/// calls.
#[allow(clippy::too_many_arguments)]
pub(super) fn instantiate(
    store: &mut Store<VmState>,
    module: &Module,
    fused: &Fused,
    headers: &TypedFunc<(i32, i32, i32), i32>,
    body: &TypedFunc<(i32, i32, i32), i32>,
    log: &TypedFunc<i32, ()>,
    done: &TypedFunc<i32, i32>,
    delete: &TypedFunc<i32, ()>,
) -> wasmtime::Result<F<(i32, i32, i32, i32), i32>> {
    let next = Func::wrap(&mut *store, next);
    let imports: [Extern; 7] = [
        (*headers.func()).into(),
        (*body.func()).into(),
        (*log.func()).into(),
        (*done.func()).into(),
        (*delete.func()).into(),
        next.into(),
        fused.memory.into(),
    ];
    let instance = Instance::new(&mut *store, module, &imports)?;
    Ok(Rc::new(
        instance.get_typed_func::<(i32, i32, i32, i32), i32>(&mut *store, "respond")?,
    ))
}

/// Which callbacks the module must ask [`next`] after, for those of `timed` to be timed: the
/// one before a timed callback (which starts its clock) and the timed one (which reads it).
pub(crate) fn ask(timed: &[bool; 6]) -> i32 {
    (0..CALLBACKS.len() - 1)
        .filter(|&k| timed[k] || timed[k + 1])
        .fold(0, |bits, k| bits | 1 << k)
}

/// Runs after callback `stage` returned `result`, where the module cannot go on by itself:
/// the next callback's argument (the body size for a body callback), or -1 to stop here.
fn next(mut caller: Caller<'_, VmState>, context: i32, stage: i32, result: i32) -> i32 {
    let st = caller.data_mut();
    let stage = (stage as usize).min(CALLBACKS.len() - 1);
    catch_up(st, stage);
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
        0 => {
            if action != Some(Action::Continue) || s.local_response.is_some() {
                return -1;
            }
            run.went_on(s, 0);
            s.response_body.len()
        }
        // The data: passed on, or held (within the limit) until the end.
        1 => {
            match action {
                Some(Action::Continue) => run.went_on(s, 1),
                Some(Action::Pause) if s.response_body.len() <= run.limit => run.applied = 2,
                _ => return -1,
            }
            s.response_body.len()
        }
        2 => {
            if action != Some(Action::Continue) {
                return -1;
            }
            run.went_on(s, 2);
            0
        }
        _ => 0,
    };
    if stage + 1 < CALLBACKS.len() {
        if run.timed[stage + 1] {
            run.started = Some(Instant::now());
        }
        st.effective = id;
    }
    i32::try_from(arg).unwrap_or(i32::MAX)
}
