//! A VM: one instance of a plugin's module on one worker, with its root context and the HTTP
//! contexts of the streams it filters. Every guest callback runs under the plugin's CPU
//! deadline and memory cap; the first failure marks the VM failed, for the filter to replace.
//!
//! Context ids are allocated per VM as Envoy does: the root context first, then one per stream.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use wasmtime::{Store, Trap, WasmParams, WasmResults};

use crate::context::{Action, Callout, LocalResponse};
use crate::engine::AbiVersion;
use crate::epoch::InGuest;
use crate::error::{VmFailure, WasmError};
use crate::host::{Host, StreamInfo};
use crate::plugin::{Plugin, PluginStats};
use crate::shared::Inbox;
use crate::state::{Limits, RequestEdits, RequestHead, StreamData, VmState};

pub(crate) mod ending;
mod events;
mod exports;
pub(crate) mod fused;
pub(crate) mod start;
pub(crate) mod whole;

use exports::{export, Exports, HeadersFn, F};

/// One callback in this many is timed for the latency histograms.
pub const LATENCY_SAMPLE: u32 = 64;

/// A stream's context in a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamId(pub u32);

/// How a paused stream went on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// The plugin resumed it.
    Continue,
    /// The plugin replied instead.
    LocalResponse(LocalResponse),
    /// The plugin closed the stream.
    Closed,
    /// The VM failed while the stream waited.
    Failed(VmFailure),
}

/// One VM of a plugin.
pub struct PluginVm {
    store: Store<VmState>,
    plugin: Plugin,
    ex: Exports,
    next_id: u32,
    failed: Option<VmFailure>,
    /// Memory size last added to the plugin's `memory_bytes`.
    counted_memory: usize,
    /// Picks the callbacks timed for the latency histograms (see [`Sampler`]).
    sampler: Sampler,
    /// Set while the VM runs guest code (the epoch clock ticks fast only then).
    in_guest: InGuest,
}

impl Drop for PluginVm {
    fn drop(&mut self) {
        self.plugin.0.stats.memory_bytes.fetch_sub(
            self.counted_memory as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

impl std::fmt::Debug for PluginVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginVm")
            .field("plugin", &self.plugin.config().name)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl PluginVm {
    /// Instantiates the plugin's module and brings up its root context: `_initialize` (or
    /// `_start`), `proxy_on_context_create`, `proxy_on_vm_start`, `proxy_on_configure`.
    pub fn start(plugin: &Plugin, host: Rc<dyn Host>) -> Result<PluginVm, WasmError> {
        let shared = plugin.0.clone();
        let cfg = &shared.config;
        let state = VmState {
            limits: Limits {
                memory: cfg.memory_limit,
                hit: false,
                grew: true,
            },
            inbox: Arc::new(Inbox::default()),
            plugin: shared.clone(),
            host,
            alloc: None,
            memory: None,
            root_id: 1,
            effective: 1,
            streams: HashMap::default(),
            spare: Vec::new(),
            spare_heads: Vec::new(),
            tick_period: None,
            tick_waker: None,
            calls: Vec::new(),
            cancelled: Vec::new(),
            grpc_message: None,
            grpc_metadata: None,
            grpc_streams: Vec::new(),
            next_token: 1,
            call_response: None,
            metrics: Vec::new(),
            queues: Vec::new(),
            status: (0, Bytes::new()),
            done: false,
            stdio: Default::default(),
            header_cache: Default::default(),
            fused: None,
            whole: whole::Run::default(),
            callback_budget: Budget::new(cfg.callback_deadline, shared.epoch_tick),
        };
        let pre = &shared.module.pre;
        let mut store = Store::new(pre.module().engine(), state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(fused::on_deadline);
        PluginStats::bump(&shared.stats.vm_starts);
        let fail = |f: VmFailure| {
            PluginStats::bump(&shared.stats.start_failures);
            WasmError::Start(f)
        };
        let start_budget = Budget::new(cfg.start_deadline, shared.epoch_tick);
        store.set_epoch_deadline(start_budget.ticks);
        let in_guest = shared.clock.register();
        in_guest.enter();
        let instantiated = pre.instantiate(&mut store);
        in_guest.leave();
        let instance = match instantiated {
            Ok(i) => i,
            Err(e) => {
                let limits = &store.data().limits;
                return Err(fail(classify("instantiate", e, limits, cfg.start_deadline)));
            }
        };
        let mut ex = Exports::lookup(
            &instance,
            &mut store,
            shared.module.abi == AbiVersion::V0_1_0,
        )?;
        let module = &shared.module;
        let fused = match (&module.ending, &module.whole, &module.start) {
            (None, None, None) => None,
            // Without them each callback is an entry of its own.
            _ => fused::Fused::new(&mut store)
                .inspect_err(|e| tracing::debug!(error = %e, "callbacks are called one by one"))
                .ok(),
        };
        store.data_mut().fused = fused;
        let fused = fused.as_ref();
        if let (Some(m), Some(fused), Some(log), Some(done), Some(delete)) =
            (&shared.module.ending, fused, &ex.log, &ex.done, &ex.delete)
        {
            // Without it the three callbacks are called one by one.
            match ending::instantiate(&mut store, m, fused, log, done, delete) {
                Ok(end) => ex.end = Some(end),
                Err(e) => {
                    tracing::debug!(error = %e, "stream ends call their callbacks one by one")
                }
            }
        }
        if let (
            Some(m),
            Some(fused),
            Some(HeadersFn::V2(headers)),
            Some(body),
            Some(log),
            Some(done),
            Some(delete),
        ) = (
            &shared.module.whole,
            fused,
            &ex.response_headers,
            &ex.response_body,
            &ex.log,
            &ex.done,
            &ex.delete,
        ) {
            // Without it a response's callbacks are called one by one.
            match whole::instantiate(&mut store, m, fused, headers, body, log, done, delete) {
                Ok(f) => ex.respond = Some(f),
                Err(e) => tracing::debug!(error = %e, "responses call their callbacks one by one"),
            }
        }
        if let (Some(m), Some(fused), Some(create), Some(HeadersFn::V2(headers))) = (
            &shared.module.start,
            fused,
            &ex.context_create,
            &ex.request_headers,
        ) {
            // Without it a stream's first callbacks are called one by one.
            match start::instantiate(&mut store, m, fused, create, headers) {
                Ok(f) => ex.start = Some(f),
                Err(e) => tracing::debug!(error = %e, "streams start one callback at a time"),
            }
        }
        let alloc = match export::<i32, i32>(&instance, &mut store, "proxy_on_memory_allocate")? {
            Some(f) => Some(f),
            None => export::<i32, i32>(&instance, &mut store, "malloc")?,
        };
        store.data_mut().alloc = alloc;
        store.data_mut().memory = instance.get_memory(&mut store, "memory");
        let init = match export::<(), ()>(&instance, &mut store, "_initialize")? {
            Some(f) => Some(f),
            None => export::<(), ()>(&instance, &mut store, "_start")?,
        };
        let mut vm = PluginVm {
            store,
            plugin: plugin.clone(),
            ex,
            next_id: 2,
            failed: None,
            counted_memory: 0,
            sampler: Sampler::default(),
            in_guest,
        };
        // Start-up callbacks are not timed for the latency histograms (`plugin_start` times
        // the whole start).
        let deadline = start_budget;
        let root = 1;
        if let Some(f) = init {
            vm.call_with(root, "_initialize", deadline, f, (), false)
                .map_err(fail)?;
        }
        if let Some(f) = vm.ex.context_create.clone() {
            vm.call_with(
                root,
                "proxy_on_context_create",
                deadline,
                f,
                (root as i32, 0),
                false,
            )
            .map_err(fail)?;
        }
        let vm_config = cfg.vm_configuration.len() as i32;
        if let Some(f) = vm.ex.vm_start.clone() {
            let ok = vm
                .call_with(
                    root,
                    "proxy_on_vm_start",
                    deadline,
                    f,
                    (root as i32, vm_config),
                    false,
                )
                .map_err(fail)?;
            if ok == 0 {
                return Err(fail(VmFailure::Refused("proxy_on_vm_start")));
            }
        }
        let plugin_config = cfg.configuration.len() as i32;
        if let Some(f) = vm.ex.configure.clone() {
            let ok = vm
                .call_with(
                    root,
                    "proxy_on_configure",
                    deadline,
                    f,
                    (root as i32, plugin_config),
                    false,
                )
                .map_err(fail)?;
            if ok == 0 {
                return Err(fail(VmFailure::Refused("proxy_on_configure")));
            }
        }
        Ok(vm)
    }

    pub(crate) fn store_mut(&mut self) -> &mut Store<VmState> {
        &mut self.store
    }

    /// The plugin this VM runs.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// Why the VM stopped serving, if it did.
    pub fn failed(&self) -> Option<&VmFailure> {
        self.failed.as_ref()
    }

    /// Bytes of linear memory the guest has.
    pub fn memory_size(&self) -> usize {
        self.store
            .data()
            .memory
            .map_or(0, |m| m.data_size(&self.store))
    }

    /// Where this VM's shared queues signal readiness.
    pub fn inbox(&self) -> Arc<Inbox> {
        self.store.data().inbox.clone()
    }

    /// The root context's tick period (`None`: no ticks). When ticks are off, `cx` is woken
    /// once the plugin sets a period.
    pub fn tick_period(&mut self, cx: &mut Context<'_>) -> Option<Duration> {
        let st = self.store.data_mut();
        if st.tick_period.is_none() {
            st.tick_waker = Some(cx.waker().clone());
        }
        st.tick_period
    }

    /// Whether the plugin dispatched callouts since the last [`PluginVm::take_calls`].
    pub fn has_calls(&self) -> bool {
        !self.store.data().calls.is_empty()
    }

    /// Callouts the plugin dispatched since the last call, for the filter to send.
    pub fn take_calls(&mut self) -> Vec<Callout> {
        std::mem::take(&mut self.store.data_mut().calls)
    }

    /// Opens an HTTP context for a new stream.
    pub fn create_stream(&mut self, info: StreamInfo) -> Result<StreamId, VmFailure> {
        self.create_stream_with(|i| *i = info)
    }

    /// [`PluginVm::create_stream`], with the stream's facts written by `fill` into a default
    /// [`StreamInfo`] where the stream keeps it (no copy of one made elsewhere).
    pub fn create_stream_with(
        &mut self,
        fill: impl FnOnce(&mut StreamInfo),
    ) -> Result<StreamId, VmFailure> {
        let id = self.open_stream_with(fill)?;
        self.announce(id.0, None)?;
        Ok(id)
    }

    /// Opens an HTTP context for a new stream whose `proxy_on_context_create` comes with its
    /// request headers ([`PluginVm::on_request_headers`], in one entry where the module has
    /// both), or at its end if the headers never come. For a stream that meets no other
    /// plugin before its request headers: the plugin cannot tell the two apart.
    pub fn open_stream(&mut self, info: StreamInfo) -> Result<StreamId, VmFailure> {
        self.open_stream_with(|i| *i = info)
    }

    /// [`PluginVm::open_stream`], with the stream's facts written by `fill` into a default
    /// [`StreamInfo`] where the stream keeps it.
    pub fn open_stream_with(
        &mut self,
        fill: impl FnOnce(&mut StreamInfo),
    ) -> Result<StreamId, VmFailure> {
        self.check()?;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(2);
        let st = self.store.data_mut();
        // A spare's facts were reset to the default when its stream ended.
        let mut data = st.spare.pop().unwrap_or_default();
        fill(&mut data.info);
        data.unannounced = true;
        st.streams.insert(id, data);
        Ok(StreamId(id))
    }

    /// `proxy_on_context_create` for a stream opened with [`PluginVm::open_stream`], if it has
    /// not had it yet; `timed` as the sampler picked it (`None`: pick now).
    fn announce(&mut self, id: u32, timed: Option<bool>) -> Result<(), VmFailure> {
        let Some(s) = self.store.data_mut().streams.get_mut(&id) else {
            return Ok(());
        };
        if !std::mem::take(&mut s.unannounced) {
            return Ok(());
        }
        let root = self.store.data().root_id;
        if let Some(f) = self.ex.context_create.clone() {
            let timed = timed.unwrap_or_else(|| self.sampler.next());
            let budget = self.store.data().callback_budget;
            let create = "proxy_on_context_create";
            self.call_with(id, create, budget, f, (id as i32, root as i32), timed)?;
        }
        Ok(())
    }

    /// The stream's facts, as the gateway last told them.
    pub fn info(&self, id: StreamId) -> Option<&StreamInfo> {
        self.store.data().streams.get(&id.0).map(|s| &s.info)
    }

    /// The stream's facts, to update as the stream goes on (upstream, response code, ...).
    pub fn info_mut(&mut self, id: StreamId) -> Option<&mut StreamInfo> {
        self.store
            .data_mut()
            .streams
            .get_mut(&id.0)
            .map(|s| &mut s.info)
    }

    /// Runs `proxy_on_request_headers` on `head`. On `Continue` take the (possibly changed)
    /// head back with [`PluginVm::take_request`]; on `Pause` wait with [`PluginVm::poll_resume`].
    pub fn on_request_headers(
        &mut self,
        id: StreamId,
        head: http::request::Parts,
        end_of_stream: bool,
    ) -> Result<Action, VmFailure> {
        let n = crate::abi::request_header_count(&head) as i32;
        let unannounced = {
            let s = self.stream(id)?;
            s.request = Some(head);
            s.unannounced
        };
        let callback = "proxy_on_request_headers";
        let f = self.ex.request_headers.clone();
        if !unannounced {
            return self.headers(id, f, callback, n, end_of_stream, None);
        }
        let timed: [bool; start::CALLBACKS.len()] = self.sampler.picks();
        match self.ex.start.clone() {
            Some(start) if timed == [false; 2] => {
                self.stream(id)?.unannounced = false;
                let root = self.store.data().root_id as i32;
                let budget = self.store.data().callback_budget;
                let r = self.guest(
                    id.0,
                    budget,
                    |store| {
                        fused::begin(store, budget.ticks);
                        start.call(store, (id.0 as i32, root, n, end_of_stream as i32))
                    },
                    |st| start::CALLBACKS[st.fused_stage().min(start::CALLBACKS.len() - 1)],
                )?;
                self.action(callback, r)
            }
            // One by one, each timed as the sampler picked.
            _ => {
                self.announce(id.0, Some(timed[0]))?;
                self.headers(id, f, callback, n, end_of_stream, Some(timed[1]))
            }
        }
    }

    /// Runs `proxy_on_response_headers` on `head` (see [`PluginVm::on_request_headers`]).
    pub fn on_response_headers(
        &mut self,
        id: StreamId,
        head: http::response::Parts,
        end_of_stream: bool,
    ) -> Result<Action, VmFailure> {
        let n = head.headers.len() as i32 + 1;
        {
            let s = self.stream(id)?;
            s.info.response_code = Some(head.status.as_u16());
            s.response = Some(head);
        }
        let f = self.ex.response_headers.clone();
        self.headers(id, f, "proxy_on_response_headers", n, end_of_stream, None)
    }

    /// A headers callback `f`, timed for the latency histograms as the sampler picked it
    /// (`None`: pick now).
    fn headers(
        &mut self,
        id: StreamId,
        f: Option<HeadersFn>,
        callback: &'static str,
        n: i32,
        end_of_stream: bool,
        timed: Option<bool>,
    ) -> Result<Action, VmFailure> {
        let Some(f) = f else {
            return Ok(Action::Continue);
        };
        let timed = timed.unwrap_or_else(|| self.sampler.next());
        let budget = self.store.data().callback_budget;
        let (id, eos) = (id.0, end_of_stream as i32);
        let r = match f {
            HeadersFn::V1(f) => self.call_with(id, callback, budget, f, (id as i32, n), timed)?,
            HeadersFn::V2(f) => {
                self.call_with(id, callback, budget, f, (id as i32, n, eos), timed)?
            }
        };
        self.action(callback, r)
    }

    /// Runs `proxy_on_request_body` (or, for the `response`, `proxy_on_response_body`) with
    /// `chunk` added to what the plugin buffered so far. On `Continue` take the whole buffered
    /// body with [`PluginVm::take_body`].
    pub fn on_body(
        &mut self,
        id: StreamId,
        response: bool,
        chunk: Bytes,
        end_of_stream: bool,
    ) -> Result<Action, VmFailure> {
        let size = self.stream(id)?.append_body(response, chunk) as i32;
        let (f, callback) = if response {
            (self.ex.response_body.clone(), "proxy_on_response_body")
        } else {
            (self.ex.request_body.clone(), "proxy_on_request_body")
        };
        let Some(f) = f else {
            return Ok(Action::Continue);
        };
        let r = self.call(id.0, callback, f, (id.0 as i32, size, end_of_stream as i32))?;
        self.action(callback, r)
    }

    /// Runs `proxy_on_request_trailers`; take them back with [`PluginVm::take_request_trailers`].
    pub fn on_request_trailers(
        &mut self,
        id: StreamId,
        trailers: http::HeaderMap,
    ) -> Result<Action, VmFailure> {
        let n = trailers.len() as i32;
        self.stream(id)?.request_trailers = Some(trailers);
        let Some(f) = self.ex.request_trailers.clone() else {
            return Ok(Action::Continue);
        };
        let r = self.call(id.0, "proxy_on_request_trailers", f, (id.0 as i32, n))?;
        self.action("proxy_on_request_trailers", r)
    }

    /// Runs `proxy_on_response_trailers`.
    pub fn on_response_trailers(
        &mut self,
        id: StreamId,
        trailers: http::HeaderMap,
    ) -> Result<Action, VmFailure> {
        let n = trailers.len() as i32;
        self.stream(id)?.response_trailers = Some(trailers);
        let Some(f) = self.ex.response_trailers.clone() else {
            return Ok(Action::Continue);
        };
        let r = self.call(id.0, "proxy_on_response_trailers", f, (id.0 as i32, n))?;
        self.action("proxy_on_response_trailers", r)
    }

    /// The request head, back from the plugin.
    pub fn take_request(&mut self, id: StreamId) -> Option<http::request::Parts> {
        let head = self.take_request_unrecorded(id)?;
        if self.plugin.module().reads_request {
            self.record_request(id, Rc::new(RequestHead::copy_of(&head)));
        }
        Some(head)
    }

    /// The request head, back from the plugin, without keeping a copy for later reads: the
    /// caller hands one over with [`PluginVm::record_request`] (the gateway shares the head
    /// it builds its upstream attempts from, rather than copying it here).
    pub fn take_request_unrecorded(&mut self, id: StreamId) -> Option<http::request::Parts> {
        self.store.data_mut().streams.get_mut(&id.0)?.request.take()
    }

    /// What the plugin changed of the stream's request head so far.
    pub fn request_edits(&self, id: StreamId) -> RequestEdits {
        self.store
            .data()
            .streams
            .get(&id.0)
            .map_or_else(RequestEdits::default, |s| s.request_edits)
    }

    /// The request head the plugin's later callbacks read (header reads, `request.*`).
    pub fn record_request(&mut self, id: StreamId, head: Rc<RequestHead>) {
        if let Some(s) = self.store.data_mut().streams.get_mut(&id.0) {
            s.sent_request = Some(head);
        }
    }

    /// `head` in a box to share between this VM's streams and the gateway's upstream
    /// attempts ([`PluginVm::record_request`]): one an ended stream left, if there is one, so
    /// that sharing allocates nothing.
    pub fn shared_head(&mut self, head: RequestHead) -> Rc<RequestHead> {
        if let Some(mut spare) = self.store.data_mut().spare_heads.pop() {
            if let Some(h) = Rc::get_mut(&mut spare) {
                *h = head;
                return spare;
            }
        }
        Rc::new(head)
    }

    /// Whether the module can read a request head once it has gone on.
    pub fn reads_request(&self) -> bool {
        self.plugin.module().reads_request
    }

    /// The response head, back from the plugin.
    pub fn take_response(&mut self, id: StreamId) -> Option<http::response::Parts> {
        let keep = self.plugin.module().reads_request;
        let s = self.store.data_mut().streams.get_mut(&id.0)?;
        let head = s.response.take()?;
        if keep {
            s.sent_response.record(head.status, &head.headers);
        }
        Some(head)
    }

    /// Lets the response head go on while the VM keeps it for the plugin's later reads (body
    /// callbacks, `on_log`): from now on the plugin can read it, not change it. Take it with
    /// [`PluginVm::take_response`] or [`PluginVm::end_stream`].
    pub fn release_response(&mut self, id: StreamId) {
        if let Some(s) = self.store.data_mut().streams.get_mut(&id.0) {
            s.response_gone = true;
        }
    }

    /// The request (or `response`) body the plugin buffered, as it left it.
    pub fn take_body(&mut self, id: StreamId, response: bool) -> Bytes {
        self.store
            .data_mut()
            .streams
            .get_mut(&id.0)
            .map_or_else(Bytes::new, |s| {
                if response {
                    s.response_body.take()
                } else {
                    s.request_body.take()
                }
            })
    }

    /// Request trailers, back from the plugin.
    pub fn take_request_trailers(&mut self, id: StreamId) -> Option<http::HeaderMap> {
        self.store
            .data_mut()
            .streams
            .get_mut(&id.0)?
            .request_trailers
            .take()
    }

    /// Response trailers, back from the plugin.
    pub fn take_response_trailers(&mut self, id: StreamId) -> Option<http::HeaderMap> {
        self.store
            .data_mut()
            .streams
            .get_mut(&id.0)?
            .response_trailers
            .take()
    }

    /// Bytes the plugin holds buffered of the request (or the response) body.
    pub fn buffered(&self, id: StreamId, response: bool) -> usize {
        self.store.data().streams.get(&id.0).map_or(0, |s| {
            if response {
                s.response_body.len()
            } else {
                s.request_body.len()
            }
        })
    }

    /// A reply the plugin asked for during the last callback.
    pub fn take_local_response(&mut self, id: StreamId) -> Option<LocalResponse> {
        self.store
            .data_mut()
            .streams
            .get_mut(&id.0)?
            .local_response
            .take()
    }

    /// Whether a paused stream may go on: resumed (`response` picks the direction), answered
    /// locally, closed, or failed with the VM. Pending until one of those.
    pub fn poll_resume(
        &mut self,
        id: StreamId,
        response: bool,
        cx: &mut Context<'_>,
    ) -> Poll<Resume> {
        if let Some(f) = &self.failed {
            return Poll::Ready(Resume::Failed(f.clone()));
        }
        let Some(s) = self.store.data_mut().streams.get_mut(&id.0) else {
            return Poll::Ready(Resume::Closed);
        };
        if let Some(r) = s.local_response.take() {
            return Poll::Ready(Resume::LocalResponse(r));
        }
        if s.closed {
            return Poll::Ready(Resume::Closed);
        }
        let resumed = if response {
            &mut s.resumed_response
        } else {
            &mut s.resumed_request
        };
        if std::mem::take(resumed) {
            return Poll::Ready(Resume::Continue);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Ends a stream: `proxy_on_log`, `proxy_on_done`, `proxy_on_delete`, in Envoy's order,
    /// then forgets its data, handing back the response head the VM still kept
    /// ([`PluginVm::release_response`]). Safe on a failed VM (the callbacks are skipped).
    pub fn end_stream(&mut self, id: StreamId) -> Option<http::response::Parts> {
        // A stream whose request headers never came still gets its context first.
        let _ = self.announce(id.0, None);
        if let Some(s) = self.store.data_mut().streams.get_mut(&id.0) {
            s.ended = true;
        }
        if self.failed.is_none() && self.store.data().streams.contains_key(&id.0) {
            // In one entry, unless one of the three is due to be timed for the latency
            // histograms (then each is timed on its own, as every other callback is).
            let timed: [bool; 3] = self.sampler.picks();
            match self.ex.end.clone() {
                Some(f) if timed == [false; 3] => {
                    let _ = self.end_in_one(id.0, f);
                }
                _ => self.end_one_by_one(id.0, timed),
            }
        }
        self.forget(id)
    }

    /// Forgets an ended stream's data (kept for the next stream), handing back the response
    /// head the VM still kept.
    fn forget(&mut self, id: StreamId) -> Option<http::response::Parts> {
        let st = self.store.data_mut();
        let mut data = st.streams.remove(&id.0)?;
        let head = data.response.take();
        // The shared request head's box is kept for the next one, once nobody else holds it;
        // what it held goes now, as it would with the box.
        if let Some(mut shared) = data.sent_request.take() {
            if let Some(h) = Rc::get_mut(&mut shared) {
                *h = RequestHead::empty();
                if st.spare_heads.len() < MAX_SPARE_STREAMS {
                    st.spare_heads.push(shared);
                }
            }
        }
        data.reset();
        if st.spare.len() < MAX_SPARE_STREAMS {
            st.spare.push(data);
        }
        head
    }

    /// Runs a whole response through the plugin in one entry (see [`whole`]): the response
    /// headers callback on `head` (`end_of_stream` false), the body callbacks on `body` (its
    /// data, then its end) and, if all let the stream go on, the stream's end. `limit`: how
    /// much body the plugin may hold. [`Whole::Unavailable`] hands `head` and `body` back when
    /// the VM cannot (its module lacks a callback, or the VM failed): then call the callbacks
    /// one by one.
    pub fn respond_whole(
        &mut self,
        id: StreamId,
        head: http::response::Parts,
        body: Bytes,
        limit: usize,
    ) -> Whole {
        let Some(f) = self.ex.respond.clone().filter(|_| self.failed.is_none()) else {
            return Whole::Unavailable { head, body };
        };
        let n = head.headers.len() as i32 + 1;
        let size = i32::try_from(body.len()).unwrap_or(i32::MAX);
        let st = self.store.data_mut();
        let Some(s) = st.streams.get_mut(&id.0) else {
            return Whole::Unavailable { head, body };
        };
        s.info.response_code = Some(head.status.as_u16());
        s.response = Some(head);
        let timed: [bool; whole::CALLBACKS.len()] = self.sampler.picks();
        st.whole = whole::Run {
            active: true,
            context: id.0,
            body: Some(body),
            limit,
            timed,
            started: timed[0].then(std::time::Instant::now),
            ..Default::default()
        };
        let budget = st.callback_budget;
        let last = whole::CALLBACKS.len() - 1;
        let r = self.guest(
            id.0,
            budget,
            |store| {
                // A timed callback is timed by `next`: the module asks it around that one.
                fused::begin(store, budget.ticks);
                f.call(store, (id.0 as i32, n, size, whole::ask(&timed)))
            },
            |st| whole::CALLBACKS[st.fused_stage().min(last)],
        );
        // Where the module went on by itself, the stream catches up (all the way when all
        // callbacks ran, stage 6).
        let st = self.store.data_mut();
        let stage = match r {
            Ok(stage) => usize::try_from(stage).unwrap_or(0),
            Err(_) => st.fused_stage(),
        };
        whole::catch_up(st, stage);
        let run = std::mem::take(&mut st.whole);
        let stage = stage.min(last);
        if let Some(t) = run.started {
            self.plugin
                .0
                .stats
                .latency
                .record(whole::CALLBACKS[stage], t.elapsed());
        }
        let result = |vm: &mut PluginVm| {
            r.clone()
                .and_then(|_| vm.action(whole::CALLBACKS[stage], run.result))
        };
        match (stage, &r) {
            // Past the body: the stream is over, whatever became of its last callbacks.
            (3.., _) | (_, Ok(6)) => Whole::Done {
                head: self.forget(id),
                body: run.passed,
            },
            (0, _) => Whole::Headers {
                result: result(self),
                body: run.body.unwrap_or_default(),
            },
            (stage, _) => Whole::Body {
                end: stage == 2,
                result: result(self),
                passed: run.passed,
            },
        }
    }

    /// `proxy_on_log`, `proxy_on_done` and `proxy_on_delete`, each in an entry of its own
    /// (`timed`: whether each is timed).
    fn end_one_by_one(&mut self, id: u32, timed: [bool; 3]) {
        let budget = self.store.data().callback_budget;
        if let Some(f) = self.ex.log.clone() {
            let _ = self.call_with(id, "proxy_on_log", budget, f, id as i32, timed[0]);
        }
        if let Some(f) = self.ex.done.clone() {
            let _ = self.call_with(id, "proxy_on_done", budget, f, id as i32, timed[1]);
        }
        if let Some(f) = self.ex.delete.clone() {
            let _ = self.call_with(id, "proxy_on_delete", budget, f, id as i32, timed[2]);
        }
    }

    /// The three in one entry (see [`ending`]): the same deadline each, the same order, and a
    /// failure blamed on the callback that was running.
    fn end_in_one(&mut self, id: u32, f: F<i32, ()>) -> Result<(), VmFailure> {
        let budget = self.store.data().callback_budget;
        self.guest(
            id,
            budget,
            |store| {
                fused::begin(store, budget.ticks);
                f.call(store, id as i32)
            },
            |st| ending::CALLBACKS[st.fused_stage().min(ending::CALLBACKS.len() - 1)],
        )
    }

    fn check(&self) -> Result<(), VmFailure> {
        match &self.failed {
            Some(_) => Err(VmFailure::Failed),
            None => Ok(()),
        }
    }

    fn stream(&mut self, id: StreamId) -> Result<&mut StreamData, VmFailure> {
        self.check()?;
        self.store
            .data_mut()
            .streams
            .get_mut(&id.0)
            .map(|s| &mut **s)
            .ok_or(VmFailure::Failed)
    }

    fn action(&mut self, callback: &'static str, r: i32) -> Result<Action, VmFailure> {
        Action::from_guest(r).ok_or_else(|| {
            let f = VmFailure::BadReturn { callback, value: r };
            self.fail(f.clone());
            f
        })
    }

    fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        context: u32,
        callback: &'static str,
        f: F<P, R>,
        params: P,
    ) -> Result<R, VmFailure> {
        let (budget, timed) = (self.store.data().callback_budget, self.sampler.next());
        self.call_with(context, callback, budget, f, params, timed)
    }

    /// Runs callback `f` under `budget` (`timed`: for the latency histograms).
    fn call_with<P: WasmParams, R: WasmResults>(
        &mut self,
        context: u32,
        callback: &'static str,
        budget: Budget,
        f: F<P, R>,
        params: P,
        timed: bool,
    ) -> Result<R, VmFailure> {
        self.check()?;
        let started = timed.then(std::time::Instant::now);
        let r = self.guest(context, budget, |store| f.call(store, params), |_| callback);
        if let Some(t) = started {
            self.plugin.0.stats.latency.record(callback, t.elapsed());
        }
        r
    }

    /// Enters the guest with `call` on behalf of `context`, under `budget`; a failure marks
    /// the VM failed, blamed on the callback `blame` names.
    fn guest<R>(
        &mut self,
        context: u32,
        budget: Budget,
        call: impl FnOnce(&mut Store<VmState>) -> wasmtime::Result<R>,
        blame: impl FnOnce(&VmState) -> &'static str,
    ) -> Result<R, VmFailure> {
        self.store.set_epoch_deadline(budget.ticks);
        self.store.data_mut().effective = context;
        self.in_guest.enter();
        let r = call(&mut self.store);
        self.in_guest.leave();
        // The stage a fused entry ended in matters only for the blame of a failure (a whole
        // response's run returns where it stopped).
        fused::finish(&mut self.store, r.is_err());
        let stats = &self.plugin.0.stats;
        if std::mem::take(&mut self.store.data_mut().limits.grew) {
            use std::sync::atomic::Ordering::Relaxed;
            let memory = self.memory_size();
            stats.memory_bytes.fetch_add(memory as u64, Relaxed);
            stats
                .memory_bytes
                .fetch_sub(self.counted_memory as u64, Relaxed);
            self.counted_memory = memory;
        }
        match r {
            Ok(r) => Ok(r),
            Err(e) => {
                let callback = blame(self.store.data());
                let failure = classify(callback, e, &self.store.data().limits, budget.time);
                self.fail(failure.clone());
                Err(failure)
            }
        }
    }

    fn fail(&mut self, failure: VmFailure) {
        let stats = &self.plugin.0.stats;
        PluginStats::bump(match failure {
            VmFailure::Deadline { .. } => &stats.deadlines,
            VmFailure::Memory { .. } => &stats.memory_failures,
            _ => &stats.traps,
        });
        tracing::warn!(plugin = %self.plugin.config().name, %failure, "wasm VM failed");
        self.failed = Some(failure);
        for s in self.store.data_mut().streams.values_mut() {
            s.wake();
        }
    }
}

/// What became of a whole response run through a plugin in one entry
/// ([`PluginVm::respond_whole`]).
#[derive(Debug)]
pub enum Whole {
    /// The VM cannot run it: `head` and `body` back, untouched.
    Unavailable {
        head: http::response::Parts,
        body: Bytes,
    },
    /// Every callback let the stream go on, and the stream has ended (its data is forgotten):
    /// the head and the body as the plugin left them.
    Done {
        head: Option<http::response::Parts>,
        body: Bytes,
    },
    /// The response headers callback stopped the run (as [`PluginVm::on_response_headers`]
    /// returns it; the VM holds the head): `body` has not reached the plugin yet.
    Headers {
        result: Result<Action, VmFailure>,
        body: Bytes,
    },
    /// A body callback stopped the run (the head went on, and the VM keeps it): the data
    /// call, or the end call (`end`), as [`PluginVm::on_body`] returns it, and what the plugin
    /// had let through before.
    Body {
        end: bool,
        result: Result<Action, VmFailure>,
        passed: Bytes,
    },
}

/// Ended streams' data kept per VM for reuse: as many as an HTTP/2 client's concurrent streams
/// commonly reach (a kilobyte each, so at most about 280 KiB per VM, once that many were open).
const MAX_SPARE_STREAMS: usize = 256;

/// Picks one callback in [`LATENCY_SAMPLE`] to be timed: two clock reads per call, and the
/// host call a fused entry makes around a timed callback, would cost a small plugin a good
/// part of its time. The pick is pseudo-random (xorshift), not every 64th call: a plugin makes
/// the same number of calls per request, and a fixed stride would time the same callback of
/// every request and never the others.
#[derive(Debug, Clone, Copy)]
struct Sampler(u64);

impl Default for Sampler {
    fn default() -> Sampler {
        Sampler(0x9e37_79b9_7f4a_7c15)
    }
}

/// Bits of one generator step each callback's pick takes (the sample rate is a power of two:
/// a pick is those bits all zero).
const PICK_BITS: u32 = LATENCY_SAMPLE.trailing_zeros();
const _: () = assert!(LATENCY_SAMPLE.is_power_of_two());

impl Sampler {
    /// Whether the next callback is timed.
    fn next(&mut self) -> bool {
        let [timed] = self.picks();
        timed
    }

    /// Whether each of the next `N` callbacks (at most 8) of one entry is timed, from one step
    /// of the generator (xorshift64): each gets [`PICK_BITS`] bits of its own, high to low
    /// (the high bits are the best mixed). Over the generator's period every such field takes
    /// each value equally often, so each position is timed one time in [`LATENCY_SAMPLE`].
    fn picks<const N: usize>(&mut self) -> [bool; N] {
        const { assert!(N as u32 * PICK_BITS <= 64) };
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        let mask = u64::from(LATENCY_SAMPLE - 1);
        std::array::from_fn(|k| (x >> (64 - PICK_BITS * (k as u32 + 1))) & mask == 0)
    }
}

/// How long a guest call may run: the deadline, and the epoch ticks it comes to (worked out
/// once per VM, not per call).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub(crate) time: Duration,
    pub(crate) ticks: u64,
}

impl Budget {
    /// `time` in ticks of `tick` (at least one whole tick beyond the current one).
    pub(crate) fn new(time: Duration, tick: Duration) -> Budget {
        let ticks = (time.as_nanos() / tick.as_nanos().max(1)) as u64 + 1;
        Budget { time, ticks }
    }
}

/// What a failed guest call means.
fn classify(
    callback: &'static str,
    e: wasmtime::Error,
    limits: &Limits,
    deadline: Duration,
) -> VmFailure {
    if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return VmFailure::Deadline {
            callback,
            deadline_ms: deadline.as_millis() as u64,
        };
    }
    if limits.hit {
        return VmFailure::Memory {
            callback,
            limit: limits.memory,
        };
    }
    let text = format!("{e:#}");
    let message = text.lines().take(3).collect::<Vec<_>>().join(" ");
    VmFailure::Trap { callback, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sampler_times_one_call_in_64_at_every_position_of_a_request() {
        // A plugin that makes 8 calls per request: each of the 8 gets its share.
        let mut s = Sampler::default();
        let mut per_position = [0u32; 8];
        for i in 0..8 * 64 * 1000 {
            if s.next() {
                per_position[i % 8] += 1;
            }
        }
        let total: u32 = per_position.iter().sum();
        assert!((7_000..=9_000).contains(&total), "{total} of 512000");
        for (pos, n) in per_position.iter().enumerate() {
            assert!((800..=1_200).contains(n), "position {pos}: {n} of 64000");
        }
    }

    #[test]
    fn one_pick_per_entry_times_each_of_its_callbacks_one_time_in_64() {
        let mut s = Sampler::default();
        let mut per_position = [0u32; 8];
        let mut pairs = 0u32;
        for _ in 0..64_000 {
            let timed: [bool; 8] = s.picks();
            for (n, t) in per_position.iter_mut().zip(timed) {
                *n += u32::from(t);
            }
            pairs += u32::from(timed[0] && timed[1]);
        }
        for (pos, n) in per_position.iter().enumerate() {
            assert!((800..=1_200).contains(n), "position {pos}: {n} of 64000");
        }
        // The fields of one step are not tied together: two at once are about as rare as
        // independent picks make them (64^-2 of entries: about 16 in 64000).
        assert!(
            pairs <= 40,
            "{pairs} entries timed both of their first two callbacks"
        );
    }
}
