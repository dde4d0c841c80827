//! The chain of WasmPlugins one request runs through, in the snapshot's order: request headers
//! front to back, response headers back to front (only through the plugins that saw the
//! request), bodies streamed frame by frame (`body`), and each plugin's `on_done`/`on_log` once
//! the exchange is over. A plugin that fails is handled by its failStrategy right here.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use smallvec::SmallVec;

use http::{HeaderName, HeaderValue, Response, StatusCode};
use meshgate_config::model::wasm_plugin::FailStrategy;
use meshgate_wasm::{
    Action, LocalResponse, RequestEdits, RequestHead, Resume, StreamId, StreamInfo, VmFailure,
    Whole,
};

use super::body::FilteredBody;
use super::callout;
use super::loader::LoadedPlugin;
use super::vms::SharedVm;
use crate::body::{self, Body};
use crate::worker::WorkerCtx;

/// Largest body a plugin may hold buffered (Envoy's default buffer limit, 1 MiB).
pub(super) const BUFFER_LIMIT: usize = 1 << 20;

/// What became of one plugin in a request, for the access log's `%WASM_PLUGINS%`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginOutcome {
    /// Not run: an earlier plugin (or a failure) ended the request first.
    Skipped,
    /// Ran and let the request go on.
    Continue,
    /// Failed in request headers and ran again on a fresh VM, which let it go on (FAIL_RELOAD).
    Reloaded,
    /// Answered the request itself (`proxy_send_local_response`).
    LocalReply,
    /// Closed the stream (`proxy_close_stream`): the request got the 503.
    Closed,
    /// Failed (or had no VM to run in); skipped for the rest of the request (FAIL_OPEN).
    FailedOpen,
    /// Failed (or had no VM to run in); the request got the 503.
    FailedClosed,
    /// Its module was still being fetched (FAIL_OPEN: skipped; otherwise the 503).
    Pending,
}

impl PluginOutcome {
    /// The word the access log shows.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginOutcome::Skipped => "skipped",
            PluginOutcome::Continue => "continue",
            PluginOutcome::Reloaded => "reloaded",
            PluginOutcome::LocalReply => "local_reply",
            PluginOutcome::Closed => "closed",
            PluginOutcome::FailedOpen => "failed_open",
            PluginOutcome::FailedClosed => "failed_closed",
            PluginOutcome::Pending => "pending",
        }
    }
}

/// One plugin's part in a request.
pub(super) struct Entry {
    pub(super) loaded: Arc<LoadedPlugin>,
    /// The VM and the stream's context in it (replaced when FAIL_RELOAD retries).
    slot: std::cell::RefCell<(SharedVm, StreamId)>,
    /// False once the plugin failed open: the rest of the request skips it.
    pub(super) active: Cell<bool>,
    /// What became of it so far.
    outcome: Cell<PluginOutcome>,
    /// Its stream has ended in the VM (`on_log`, `on_done`, `on_delete` ran).
    ended: Cell<bool>,
}

impl Entry {
    pub(super) fn vm(&self) -> SharedVm {
        self.slot.borrow().0.clone()
    }

    pub(super) fn id(&self) -> StreamId {
        self.slot.borrow().1
    }
}

/// A request's plugins.
pub struct Chain {
    pub(super) ctx: Rc<WorkerCtx>,
    /// Inline for the usual one or two plugins: no allocation of their own.
    pub(super) entries: SmallVec<[Entry; 2]>,
    /// How many entries saw the request headers (the response goes back through them).
    reached: Cell<usize>,
    /// The plugins have the request head they read after the request phase.
    recorded: Cell<bool>,
    /// Plugins that got no context (not loaded, no VM, or after one that stopped the request),
    /// with the number of entries before them; empty (no allocation) when all opened.
    unopened: Vec<(usize, Arc<LoadedPlugin>, PluginOutcome)>,
    /// A plugin held more of the request body than the buffer limit (Envoy answers 413).
    request_too_large: Cell<bool>,
    /// What the plugins changed of the request head.
    edits: Cell<RequestEdits>,
    /// The request body is still streaming through the plugins.
    request_open: Cell<bool>,
}

/// How many ended chains a worker keeps for its next requests ([`Chain::recycle`]): one per
/// request in flight at once suffices; a chain of two plugins is a few hundred bytes.
const MAX_SPARE_CHAINS: usize = 64;

thread_local! {
    /// This worker's ended chains, with no plugin left in them.
    static SPARE_CHAINS: std::cell::RefCell<Vec<Rc<Chain>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A reply that ends the request early, with its response code details.
pub type Reply = (Response<Body>, &'static str);

impl Drop for Chain {
    fn drop(&mut self) {
        self.end();
    }
}

/// A context for polling a body here and now, not to be woken by it: a body found pending is
/// handed on and polled again, with a waker, by whoever reads it. (Awaiting the poll instead
/// would keep the body's state in every response's future.)
fn now() -> std::task::Context<'static> {
    std::task::Context::from_waker(std::task::Waker::noop())
}

/// The response of `head` and `body`; without a head (the VM lost it), the FAIL_CLOSE reply.
fn with_head(head: Option<http::response::Parts>, body: Body) -> Response<Body> {
    match head {
        Some(head) => Response::from_parts(head, body),
        None => fail_close().0,
    }
}

/// The reply to a request a failed plugin (FAIL_CLOSE) stops, as Envoy gives it.
fn fail_close() -> Reply {
    (
        crate::http::local_reply::text(StatusCode::SERVICE_UNAVAILABLE, ""),
        "wasm_fail_stream",
    )
}

/// The reply a plugin asked for.
pub(super) fn local_reply(lr: LocalResponse) -> Reply {
    let mut r = Response::new(if lr.body.is_empty() {
        body::empty()
    } else {
        body::full(lr.body.clone())
    });
    *r.status_mut() = StatusCode::from_u16(lr.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in &lr.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_bytes(v),
        ) {
            r.headers_mut().append(k, v);
        }
    }
    // As Envoy: the plugin's headers, then content-length and (for a body without one)
    // content-type, so the plugin's response phase sees them too.
    if !lr.body.is_empty() {
        r.headers_mut().insert(
            http::header::CONTENT_LENGTH,
            HeaderValue::from(lr.body.len()),
        );
        if !r.headers().contains_key(http::header::CONTENT_TYPE) {
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain"),
            );
        }
    }
    // Envoy logs no response code details for a plugin's reply (the Rust SDK sends none).
    (r, "-")
}

impl Chain {
    /// Opens a context for the request in each plugin's VM on this worker. A plugin that is
    /// not loaded or whose VM cannot start is skipped (FAIL_OPEN) or stops the request: then
    /// the second value is the reply (the chain is still returned, so what became of each
    /// plugin can be logged and the contexts opened so far are ended). `facts` writes what the
    /// plugins learn of the stream into each context's (default) [`StreamInfo`].
    pub fn open<'a>(
        ctx: &Rc<WorkerCtx>,
        plugins: impl Iterator<Item = &'a Arc<LoadedPlugin>>,
        facts: impl Fn(&mut StreamInfo),
    ) -> (Rc<Chain>, Result<(), Reply>) {
        let mut entries = SmallVec::new();
        let mut unopened = Vec::new();
        let mut stop = Ok(());
        let mut plugins = plugins.peekable();
        let mut first = true;
        while let Some(loaded) = plugins.next() {
            let last = plugins.peek().is_none();
            // A lone plugin's context is created with its request headers, in one entry into
            // the VM: nothing runs between the two that it could tell apart.
            let lone = std::mem::take(&mut first) && last;
            if stop.is_err() {
                unopened.push((entries.len(), loaded.clone(), PluginOutcome::Skipped));
                continue;
            }
            let opened = ctx.vms.get(ctx, loaded).and_then(|vm| {
                let id = if lone {
                    vm.borrow_mut().open_stream_with(&facts)
                } else {
                    vm.borrow_mut().create_stream_with(&facts)
                };
                id.map(|id| (vm, id)).map_err(|e| e.to_string())
            });
            match opened {
                Ok((vm, id)) => entries.push(Entry {
                    loaded: loaded.clone(),
                    slot: std::cell::RefCell::new((vm, id)),
                    active: Cell::new(true),
                    outcome: Cell::new(PluginOutcome::Skipped),
                    ended: Cell::new(false),
                }),
                Err(e) => {
                    let open = loaded.spec.fail_strategy == FailStrategy::FailOpen;
                    let outcome = match (&**loaded.load_state(), open) {
                        (super::loader::LoadState::Pending, _) => PluginOutcome::Pending,
                        (_, true) => PluginOutcome::FailedOpen,
                        (_, false) => PluginOutcome::FailedClosed,
                    };
                    unopened.push((entries.len(), loaded.clone(), outcome));
                    if open {
                        tracing::debug!(plugin = %loaded.spec.name, error = %e, "plugin skipped (FAIL_OPEN)");
                    } else {
                        tracing::debug!(plugin = %loaded.spec.name, error = %e, "request stopped (FAIL_CLOSE)");
                        stop = Err(fail_close());
                    }
                }
            }
        }
        (Chain::build(ctx, entries, unopened), stop)
    }

    /// A chain of `entries`: in a spare one of this worker's, if there is one
    /// ([`Chain::recycle`]), so a request with plugins allocates no chain of its own.
    fn build(
        ctx: &Rc<WorkerCtx>,
        entries: SmallVec<[Entry; 2]>,
        unopened: Vec<(usize, Arc<LoadedPlugin>, PluginOutcome)>,
    ) -> Rc<Chain> {
        let chain = Chain {
            ctx: ctx.clone(),
            entries,
            reached: Cell::new(0),
            recorded: Cell::new(false),
            unopened,
            request_too_large: Cell::new(false),
            edits: Cell::new(RequestEdits::default()),
            request_open: Cell::new(false),
        };
        // Spares are kept only while nothing else holds them; the one replaced here is empty.
        match SPARE_CHAINS.with_borrow_mut(Vec::pop) {
            Some(mut spare) => match Rc::get_mut(&mut spare) {
                Some(c) => {
                    *c = chain;
                    spare
                }
                None => Rc::new(chain),
            },
            None => Rc::new(chain),
        }
    }

    /// Ends the request's plugins and keeps the chain for the worker's next request, if
    /// nothing else holds it (a body still streaming through it, the access log): those drop
    /// it when they are done, as any chain is dropped.
    pub fn recycle(mut chain: Rc<Chain>) {
        let Some(c) = Rc::get_mut(&mut chain) else {
            return;
        };
        c.end();
        c.entries.clear();
        c.unopened.clear();
        // Dropped (if the worker has enough) outside the borrow.
        let _extra = SPARE_CHAINS.with_borrow_mut(|spare| {
            if spare.len() < MAX_SPARE_CHAINS {
                spare.push(chain);
                None
            } else {
                Some(chain)
            }
        });
    }

    /// Drops this worker's spare chains (and with them their hold on the worker's context),
    /// for a worker that stops: while its runtime still runs, not at the thread's end.
    pub fn drop_spares() {
        // Taken out first: dropped once the borrow has ended.
        drop(SPARE_CHAINS.with_borrow_mut(std::mem::take));
    }

    /// Ends every plugin's stream not ended yet: `on_log`, `on_done`, `on_delete`.
    fn end(&self) {
        for e in &self.entries {
            self.end_entry(e);
        }
    }

    /// Ends `e`'s stream if it has not ended yet, handing back the response head its VM kept
    /// ([`meshgate_wasm::PluginVm::release_response`]).
    fn end_entry(&self, e: &Entry) -> Option<http::response::Parts> {
        if e.ended.replace(true) {
            return None;
        }
        let vm_rc = e.vm();
        let (head, calls) = {
            let mut vm = vm_rc.try_borrow_mut().ok()?;
            (vm.end_stream(e.id()), vm.take_calls())
        };
        callout::dispatch(&self.ctx, &vm_rc, calls);
        head
    }

    /// Notes that the request body has passed through the plugins to its end.
    pub(super) fn request_ended(&self) {
        self.request_open.set(false);
    }

    /// Notes that a plugin held more of the request body than the buffer limit.
    pub(super) fn set_request_too_large(&self) {
        self.request_too_large.set(true);
    }

    /// Whether a plugin held more of the request body than the buffer limit: the request
    /// failed for that reason, and the client gets Envoy's 413 when its response has not
    /// started.
    pub fn request_too_large(&self) -> bool {
        self.request_too_large.get()
    }

    /// What the plugins changed of the request head in the request phase: whether its route
    /// may have to be chosen again.
    pub fn request_edits(&self) -> RequestEdits {
        self.edits.get()
    }

    /// Whether the request met no plugin at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.unopened.is_empty()
    }

    /// `name:outcome` for every plugin of the request, in chain order, joined by `,`.
    pub fn write_outcomes(&self, out: &mut String) {
        let mut unopened = self.unopened.iter().peekable();
        let mut first = true;
        let mut put = |out: &mut String, name: &str, o: PluginOutcome| {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(name);
            out.push(':');
            out.push_str(o.as_str());
        };
        for i in 0..=self.entries.len() {
            while let Some((_, l, o)) = unopened.next_if(|(at, _, _)| *at == i) {
                put(out, &l.spec.name, *o);
            }
            if let Some(e) = self.entries.get(i) {
                put(out, &e.loaded.spec.name, e.outcome.get());
            }
        }
    }

    /// Sends the callouts the entry's VM queued.
    pub(super) fn dispatch(&self, e: &Entry) {
        // Most callbacks queue none: then nothing is cloned, taken or dropped.
        let vm = {
            let slot = e.slot.borrow();
            if !slot.0.try_borrow().is_ok_and(|vm| vm.has_calls()) {
                return;
            }
            slot.0.clone()
        };
        let calls = vm.borrow_mut().take_calls();
        callout::dispatch(&self.ctx, &vm, calls);
    }

    /// What a plugin's failure does to the request: `None` to go on without the plugin
    /// (FAIL_OPEN), or the reply that stops it.
    pub(super) fn failed(&self, e: &Entry, f: &VmFailure) -> Option<Reply> {
        tracing::debug!(plugin = %e.loaded.spec.name, failure = %f, "wasm plugin failed");
        e.active.set(false);
        match e.loaded.spec.fail_strategy {
            FailStrategy::FailOpen => {
                e.outcome.set(PluginOutcome::FailedOpen);
                None
            }
            _ => {
                e.outcome.set(PluginOutcome::FailedClosed);
                Some(fail_close())
            }
        }
    }

    /// What a headers callback came to: a reply the plugin sent, the failure, or going on;
    /// `None` when it paused (then wait with [`Chain::resumed`]). Not async: most callbacks
    /// do not pause, and those need no future.
    fn settled(&self, e: &Entry, r: Result<Action, VmFailure>) -> Option<Resume> {
        let paused = match r {
            Err(f) => return Some(Resume::Failed(f)),
            Ok(a) => a == Action::Pause,
        };
        if let Some(lr) = e.vm().borrow_mut().take_local_response(e.id()) {
            return Some(Resume::LocalResponse(lr));
        }
        (!paused).then_some(Resume::Continue)
    }

    /// How a paused headers callback goes on, once the plugin resumes, replies or fails.
    async fn resumed(&self, e: &Entry, response: bool) -> Resume {
        std::future::poll_fn(|cx| e.vm().borrow_mut().poll_resume(e.id(), response, cx)).await
    }

    /// Runs the request head through every plugin; returns the head to send on, or the reply
    /// that ends the request.
    pub async fn request_headers(
        &self,
        mut head: http::request::Parts,
        end_of_stream: bool,
    ) -> Result<http::request::Parts, Reply> {
        for (i, e) in self.entries.iter().enumerate() {
            if !e.active.get() {
                continue;
            }
            self.reached.set(i + 1);
            let mut reloaded = false;
            loop {
                let r = e
                    .vm()
                    .borrow_mut()
                    .on_request_headers(e.id(), head, end_of_stream);
                self.dispatch(e);
                let r = match self.settled(e, r) {
                    Some(r) => r,
                    None => self.resumed(e, false).await,
                };
                let back = {
                    let vm_rc = e.vm();
                    let mut vm = vm_rc.borrow_mut();
                    self.edits
                        .set(self.edits.get().union(vm.request_edits(e.id())));
                    vm.take_request_unrecorded(e.id())
                };
                let ended = |back: Option<http::request::Parts>, reply: Reply| -> Reply {
                    // The request ends here: the head is the plugins' to read from now on.
                    if let Some(h) = back {
                        self.share_request(Rc::new(RequestHead::from_parts(h)));
                    }
                    reply
                };
                match r {
                    Resume::Continue => e.outcome.set(if reloaded {
                        PluginOutcome::Reloaded
                    } else {
                        PluginOutcome::Continue
                    }),
                    Resume::LocalResponse(lr) => {
                        e.outcome.set(PluginOutcome::LocalReply);
                        return Err(ended(back, local_reply(lr)));
                    }
                    Resume::Closed => {
                        e.outcome.set(PluginOutcome::Closed);
                        return Err(ended(back, fail_close()));
                    }
                    Resume::Failed(f) => {
                        // FAIL_RELOAD: a fresh VM gets the request once more.
                        if e.loaded.spec.fail_strategy == FailStrategy::FailReload && !reloaded {
                            tracing::debug!(plugin = %e.loaded.spec.name, failure = %f, "reloading the VM (FAIL_RELOAD)");
                            match (back, self.reload(e)) {
                                (Some(h), true) => {
                                    head = h;
                                    reloaded = true;
                                    continue;
                                }
                                (back, _) => {
                                    e.outcome.set(PluginOutcome::FailedClosed);
                                    return Err(ended(back, fail_close()));
                                }
                            }
                        }
                        if let Some(reply) = self.failed(e, &f) {
                            return Err(ended(back, reply));
                        }
                    }
                }
                head = back.ok_or_else(fail_close)?;
                break;
            }
        }
        Ok(head)
    }

    /// `head` in a box to share ([`Chain::share_request`]), from the first plugin's VM: one a
    /// stream left there, where there is one.
    pub fn shared_head(&self, head: RequestHead) -> Rc<RequestHead> {
        let slot = self.entries.first().map(|e| e.slot.borrow());
        let vm = slot.as_ref().and_then(|s| s.0.try_borrow_mut().ok());
        match vm {
            Some(mut vm) => vm.shared_head(head),
            None => Rc::new(head),
        }
    }

    /// Gives the plugins `head`, the request as it went on, for what they read of it after the
    /// request phase; the gateway keeps the same one for its upstream attempts. Once per
    /// request: a later call does nothing.
    pub fn share_request(&self, head: Rc<RequestHead>) {
        if self.recorded.replace(true) {
            return;
        }
        for e in &self.entries {
            let vm_rc = e.vm();
            let Ok(mut vm) = vm_rc.try_borrow_mut() else {
                continue;
            };
            if vm.reads_request() {
                vm.record_request(e.id(), head.clone());
            }
        }
    }

    /// As [`Chain::share_request`], with a copy of `head`: for a request that does not go
    /// upstream (or not as it is), where the gateway keeps no head of its own.
    pub fn record_request(&self, head: &http::request::Parts) {
        if !self.recorded.get() {
            self.share_request(Rc::new(RequestHead::copy_of(head)));
        }
    }

    /// [`Chain::record_request`] for a whole request.
    pub fn record_request_of<B>(&self, req: &http::Request<B>) {
        if !self.recorded.get() {
            self.share_request(Rc::new(RequestHead::copy(
                req.method(),
                req.uri(),
                req.version(),
                req.headers(),
            )));
        }
    }

    /// Moves `e` to a fresh VM of its plugin (the failed one is replaced on this worker). The
    /// new context gets the stream's facts from the failed VM, which keeps them until the
    /// stream ends there.
    fn reload(&self, e: &Entry) -> bool {
        let Some(info) = e.vm().borrow().info(e.id()).cloned() else {
            return false;
        };
        let Ok(vm) = self.ctx.vms.get(&self.ctx, &e.loaded) else {
            return false;
        };
        let Ok(id) = vm.borrow_mut().create_stream(info) else {
            return false;
        };
        let (old_vm, old_id) = std::mem::replace(&mut *e.slot.borrow_mut(), (vm, id));
        old_vm.borrow_mut().end_stream(old_id);
        true
    }

    /// Runs the response through the plugins that saw the request, last to first. `local`: a
    /// reply the gateway or a plugin made, not an upstream's; as Envoy encodes its local
    /// replies, its body reaches the plugins in one call with `end_of_stream`.
    ///
    /// A body that is all there already goes through the plugins here, and then (the request
    /// being over too) the plugins' streams end here, before the response is written, as in
    /// Envoy. A lone plugin keeps the head in its VM meanwhile (read-only once it went on), so
    /// nothing is copied for its later reads.
    pub async fn response(self: &Rc<Self>, resp: Response<Body>, local: bool) -> Response<Body> {
        let (head, mut body) = resp.into_parts();
        let mut head = Some(head);
        let end_of_stream = http_body::Body::is_end_stream(&body);
        let announced = http_body::Body::size_hint(&body);
        let reached = &self.entries[..self.reached.get()];
        let lone = reached.len() == 1;
        // A lone plugin gets a response whose body came with its head in one entry into its
        // VM (`Whole`): the body is polled ahead for that. `first`: what that poll gave, when
        // it was not the whole body, for the body to start with.
        let mut whole = None;
        let mut first = None;
        let seed = |data| Some(Some(Ok(http_body::Frame::data(data))));
        if lone && !end_of_stream && !local && !self.request_open.get() && reached[0].active.get() {
            match body.as_mut().poll_frame(&mut now()) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data)
                        if body.is_end_stream() && announced.exact() == Some(data.len() as u64) =>
                    {
                        whole = Some(data)
                    }
                    Ok(data) => first = seed(data),
                    Err(frame) => first = Some(Some(Ok(frame))),
                },
                Poll::Ready(other) => first = Some(other),
                Poll::Pending => {}
            }
        }
        // The entry whose VM keeps the head.
        let mut held = None;
        for e in reached.iter().rev() {
            if !e.active.get() {
                continue;
            }
            let Some(h) = head.take() else {
                return fail_close().0;
            };
            let r = match whole.take() {
                Some(data) => match self.run_whole(e, h, data, body, announced) {
                    Ok(resp) => return resp,
                    Err((r, data, b)) => {
                        (body, first) = (b, seed(data));
                        r
                    }
                },
                None => e
                    .vm()
                    .borrow_mut()
                    .on_response_headers(e.id(), h, end_of_stream),
            };
            self.dispatch(e);
            let r = match self.settled(e, r) {
                Some(r) => r,
                None => self.resumed(e, true).await,
            };
            if lone && matches!(r, Resume::Continue) {
                e.vm().borrow_mut().release_response(e.id());
                held = Some(e);
                break;
            }
            let back = e.vm().borrow_mut().take_response(e.id());
            match r {
                Resume::Continue => {}
                Resume::LocalResponse(lr) => {
                    e.outcome.set(PluginOutcome::LocalReply);
                    return local_reply(lr).0;
                }
                Resume::Closed => {
                    e.outcome.set(PluginOutcome::Closed);
                    return fail_close().0;
                }
                Resume::Failed(f) => {
                    if let Some(reply) = self.failed(e, &f) {
                        return reply.0;
                    }
                }
            }
            match back {
                Some(h) => head = Some(h),
                None => return fail_close().0,
            }
        }
        // Content-Length stays as the upstream sent it: as in Envoy, a plugin that changes the
        // body's size removes it itself.
        // Ok: the body as it goes on, whole; Err: still streaming through the plugins.
        let body = if end_of_stream {
            Ok(body)
        } else {
            let mut f = FilteredBody::new(body, self.clone(), true)
                .whole(local)
                .seed(first, announced);
            match f.poll_whole(&mut now()) {
                Some(whole) => Ok(body::full(whole)),
                None => Err(f),
            }
        };
        let over = body.is_ok() && !self.request_open.get();
        if let Some(e) = held {
            head = if over {
                self.end_entry(e)
            } else {
                e.vm().borrow_mut().take_response(e.id())
            };
        }
        if over {
            self.end();
        }
        with_head(
            head,
            match body {
                Ok(body) => body,
                Err(f) => Box::pin(f),
            },
        )
    }

    /// Runs the whole response through the lone plugin `e` in one entry into its VM
    /// ([`Whole`]): the response as it goes on, or, where the run stopped in the headers
    /// callback (or could not run), that callback's result, with the body's data (not seen by
    /// the plugin yet) and the rest of the body, to go on as after a separate call.
    fn run_whole(
        self: &Rc<Self>,
        e: &Entry,
        head: http::response::Parts,
        data: bytes::Bytes,
        body: Body,
        announced: http_body::SizeHint,
    ) -> Result<Response<Body>, (Result<Action, VmFailure>, bytes::Bytes, Body)> {
        let fused = e
            .vm()
            .borrow_mut()
            .respond_whole(e.id(), head, data, BUFFER_LIMIT);
        match fused {
            Whole::Done { head, body: out } => {
                self.dispatch(e);
                e.ended.set(true);
                self.end();
                Ok(with_head(head, body::full(out)))
            }
            Whole::Body {
                end,
                result,
                passed,
            } => {
                self.dispatch(e);
                let head = e.vm().borrow_mut().take_response(e.id());
                let f = FilteredBody::new(body, self.clone(), true)
                    .after_whole(end, result, passed, announced);
                Ok(with_head(head, Box::pin(f)))
            }
            Whole::Headers { result, body: data } => Err((result, data, body)),
            Whole::Unavailable { head, body: data } => {
                let r = e.vm().borrow_mut().on_response_headers(e.id(), head, false);
                Err((r, data, body))
            }
        }
    }

    /// Wraps the request body so it streams through the plugins.
    pub fn request_body(self: &Rc<Self>, body: Body) -> Body {
        if http_body::Body::is_end_stream(&body) {
            return body;
        }
        self.request_open.set(true);
        Box::pin(FilteredBody::new(body, self.clone(), false))
    }

    /// How many entries a body goes through in its direction.
    pub(super) fn body_len(&self, response: bool) -> usize {
        if response {
            self.reached.get()
        } else {
            self.entries.len()
        }
    }

    /// The entry at `pos` of a body's way: front to back for the request, back to front
    /// (through those that saw the request) for the response.
    pub(super) fn entry_at(&self, response: bool, pos: usize) -> &Entry {
        if response {
            &self.entries[self.reached.get() - 1 - pos]
        } else {
            &self.entries[pos]
        }
    }

    /// Tells every plugin what became of the request (for properties read later).
    pub fn update(&self, f: impl Fn(&mut StreamInfo)) {
        for e in &self.entries {
            let vm_rc = e.vm();
            let Ok(mut vm) = vm_rc.try_borrow_mut() else {
                continue;
            };
            if let Some(info) = vm.info_mut(e.id()) {
                f(info);
            }
        }
    }
}
