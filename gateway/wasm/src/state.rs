//! What a VM's store holds: the plugin's shared parts, the guest's allocator and memory, the
//! context the guest is acting in, and the data of every HTTP stream the VM has a context for.
//!
//! Host calls read and write only this; the filter moves a stream's headers and body in while
//! the plugin may touch them and takes them back when the stream moves on.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use bytes::Bytes;
use wasmtime::{Memory, TypedFunc};

use crate::body_buffer::BodyBuffer;
use crate::context::{CallResponse, Callout, LocalResponse};
use crate::header_cache::HeaderCache;
use crate::host::{Host, StreamInfo};
use crate::metrics::Metric;
use crate::plugin::PluginShared;

/// The store data of one VM.
pub struct VmState {
    pub(crate) limits: Limits,
    pub(crate) inbox: Arc<crate::shared::Inbox>,
    pub(crate) plugin: Arc<PluginShared>,
    pub(crate) host: Rc<dyn Host>,
    /// `proxy_on_memory_allocate` or `malloc`.
    pub(crate) alloc: Option<Rc<TypedFunc<i32, i32>>>,
    pub(crate) memory: Option<Memory>,
    /// The root context's id.
    pub(crate) root_id: u32,
    /// The context host calls act on (the callback's, or what `proxy_set_effective_context` set).
    pub(crate) effective: u32,
    /// Boxed: a stream's data is about a kilobyte, and boxes move as pointers in and out of
    /// the map; ended streams' boxes are kept in `spare` for the next ones.
    pub(crate) streams: HashMap<u32, Box<StreamData>, BuildHasherDefault<IdHasher>>,
    // Boxes on purpose: they go back into `streams` as they are, without moving the data.
    #[allow(clippy::vec_box)]
    pub(crate) spare: Vec<Box<StreamData>>,
    /// Emptied request heads of ended streams, for [`crate::PluginVm::shared_head`].
    pub(crate) spare_heads: Vec<Rc<RequestHead>>,
    /// The root context's tick period; `None` when ticks are off.
    pub(crate) tick_period: Option<Duration>,
    pub(crate) tick_waker: Option<Waker>,
    /// Callouts dispatched during the current callback, for the filter to send.
    pub(crate) calls: Vec<Callout>,
    /// gRPC callouts the plugin cancelled or closed before their answer.
    pub(crate) cancelled: Vec<u32>,
    /// The message of the gRPC answer being delivered to `proxy_on_grpc_receive`.
    pub(crate) grpc_message: Option<Bytes>,
    /// The metadata being delivered to `proxy_on_grpc_receive_initial/trailing_metadata`.
    pub(crate) grpc_metadata: Option<Vec<(String, Bytes)>>,
    /// gRPC streams the plugin has open.
    pub(crate) grpc_streams: Vec<u32>,
    pub(crate) next_token: u32,
    /// The response of the callout being delivered to `proxy_on_http_call_response`.
    pub(crate) call_response: Option<CallResponse>,
    /// Metrics this VM defined, by id.
    pub(crate) metrics: Vec<Arc<Metric>>,
    /// Queues this VM registered (delivered to its root context).
    pub(crate) queues: Vec<u32>,
    /// What `proxy_get_status` reports (the last gRPC close or callout status).
    pub(crate) status: (u32, Bytes),
    /// The plugin called `proxy_done` (the root context may be deleted).
    pub(crate) done: bool,
    /// Bytes a plain `fd_write` to stdout/stderr left without a newline yet.
    pub(crate) stdio: [Vec<u8>; 2],
    /// Header names (and values) the plugin writes, parsed once.
    pub(crate) header_cache: HeaderCache,
    /// The stage memory and deadline count of the entries that run several callbacks (`vm::fused`);
    /// `None` when the module has none.
    pub(crate) fused: Option<crate::vm::fused::Fused>,
    /// A whole response's run through the plugin in one entry (`vm::whole`).
    pub(crate) whole: crate::vm::whole::Run,
    /// Every callback's CPU budget (`callbackDeadline`), in time and in epoch ticks.
    pub(crate) callback_budget: crate::vm::Budget,
}

/// One HTTP stream as the VM sees it.
#[derive(Default)]
pub struct StreamData {
    /// The request head, while the plugin holds it (request phase, or paused).
    pub(crate) request: Option<http::request::Parts>,
    pub(crate) request_body: BodyBuffer,
    pub(crate) request_trailers: Option<http::HeaderMap>,
    /// The response head, while the plugin holds it.
    pub(crate) response: Option<http::response::Parts>,
    /// `response` went on downstream: the plugin may read it, no longer change it.
    pub(crate) response_gone: bool,
    /// `proxy_on_context_create` is still to come (the stream was opened with
    /// `PluginVm::open_stream`).
    pub(crate) unannounced: bool,
    pub(crate) response_body: BodyBuffer,
    pub(crate) response_trailers: Option<http::HeaderMap>,
    /// What the gateway knows of the stream (addresses, route, cluster, response code).
    pub(crate) info: StreamInfo,
    /// The request head as it went on, kept for `request.*` properties and header reads later
    /// on (shared with the gateway's own copy when it keeps one).
    pub(crate) sent_request: Option<Rc<RequestHead>>,
    /// The response status and headers as they went downstream, kept for reads after the
    /// response-headers phase.
    pub(crate) sent_response: SentResponse,
    /// A reply the plugin asked for with `proxy_send_local_response`.
    pub(crate) local_response: Option<LocalResponse>,
    /// The plugin resumed the request (`proxy_continue_stream(0)`) or the response.
    pub(crate) resumed_request: bool,
    pub(crate) resumed_response: bool,
    /// The plugin closed or reset the stream.
    pub(crate) closed: bool,
    /// Woken when the plugin resumes, closes or replies to this stream.
    pub(crate) waker: Option<Waker>,
    /// Values the plugin set with `proxy_set_property` (filter state).
    pub(crate) filter_state: HashMap<Vec<u8>, Bytes>,
    /// The exchange is over (on_log and after): `request.duration` is known.
    pub(crate) ended: bool,
    /// What the plugin changed of the request head.
    pub(crate) request_edits: RequestEdits,
}

/// What plugins changed of a request head: whether its route may have to be chosen again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestEdits {
    /// A regular header was added, replaced or removed.
    pub headers: bool,
    /// A pseudo-header or `host` was written, or the whole map was replaced.
    pub pseudo: bool,
}

impl RequestEdits {
    /// Both sets of changes.
    pub fn union(self, other: RequestEdits) -> RequestEdits {
        RequestEdits {
            headers: self.headers || other.headers,
            pseudo: self.pseudo || other.pseudo,
        }
    }
}

/// A request head once the plugins are done with it: what header reads and `request.*`
/// properties see afterwards. The gateway may keep the same one to build its upstream attempts
/// from, so the head is not copied twice.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// The method.
    pub method: http::Method,
    /// The target.
    pub uri: http::Uri,
    /// The protocol version.
    pub version: http::Version,
    /// The headers.
    pub headers: http::HeaderMap,
}

impl RequestHead {
    /// A head with nothing in it (allocates nothing).
    pub(crate) fn empty() -> RequestHead {
        RequestHead {
            method: http::Method::GET,
            uri: http::Uri::default(),
            version: http::Version::HTTP_11,
            headers: http::HeaderMap::new(),
        }
    }

    /// A copy of `head` (without its extensions).
    pub fn copy_of(head: &http::request::Parts) -> RequestHead {
        RequestHead::copy(&head.method, &head.uri, head.version, &head.headers)
    }

    /// A copy of a request's head.
    pub fn copy(
        method: &http::Method,
        uri: &http::Uri,
        version: http::Version,
        headers: &http::HeaderMap,
    ) -> RequestHead {
        RequestHead {
            method: method.clone(),
            uri: uri.clone(),
            version,
            headers: headers.clone(),
        }
    }

    /// `head` itself, its extensions dropped.
    pub fn from_parts(head: http::request::Parts) -> RequestHead {
        RequestHead {
            method: head.method,
            uri: head.uri,
            version: head.version,
            headers: head.headers,
        }
    }
}

impl StreamData {
    /// Empties the data in place for the next stream (keeping what it allocated where that can
    /// be reused).
    pub(crate) fn reset(&mut self) {
        // Every field by name, so a new one cannot be forgotten here.
        let StreamData {
            request,
            request_body,
            request_trailers,
            response,
            response_gone,
            unannounced,
            response_body,
            response_trailers,
            info,
            sent_request,
            sent_response,
            local_response,
            resumed_request,
            resumed_response,
            closed,
            waker,
            filter_state,
            ended,
            request_edits,
        } = self;
        *request = None;
        *request_body = BodyBuffer::default();
        *request_trailers = None;
        *response = None;
        *response_gone = false;
        *unannounced = false;
        *response_body = BodyBuffer::default();
        *response_trailers = None;
        *info = StreamInfo::default();
        *sent_request = None;
        sent_response.clear();
        *local_response = None;
        *resumed_request = false;
        *resumed_response = false;
        *closed = false;
        *waker = None;
        filter_state.clear();
        *ended = false;
        *request_edits = RequestEdits::default();
    }

    /// Adds `chunk` to the request (or `response`) body the plugin sees, counting it in the
    /// body's size; the size of the buffered body.
    pub(crate) fn append_body(&mut self, response: bool, chunk: Bytes) -> usize {
        let (buf, seen) = if response {
            (&mut self.response_body, &mut self.info.response_body_size)
        } else {
            (&mut self.request_body, &mut self.info.request_body_size)
        };
        *seen += chunk.len() as u64;
        buf.append(chunk);
        buf.len()
    }

    /// Wakes whoever waits on the stream.
    pub(crate) fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

impl VmState {
    /// The stage the last entry that ran several callbacks failed in (`vm::fused`).
    pub(crate) fn fused_stage(&self) -> usize {
        self.fused.map_or(0, |f| f.last())
    }

    /// The stream the guest is acting on, if the effective context is a stream.
    pub(crate) fn stream(&mut self) -> Option<&mut StreamData> {
        self.streams.get_mut(&self.effective).map(|s| &mut **s)
    }
}

/// A response head as it went downstream, kept for the plugin's reads after its
/// response-headers phase (body callbacks, `on_log`): the names and values copied into one
/// buffer. It is kept with the stream's data, which the VM reuses, so once warm recording a
/// head allocates nothing, and forgetting it frees nothing.
#[derive(Debug, Default)]
pub(crate) struct SentResponse {
    status: Option<http::StatusCode>,
    /// Every name followed by its value.
    bytes: Vec<u8>,
    /// Per header, where its name ends and where its value ends in `bytes`.
    ends: Vec<(u32, u32)>,
}

impl SentResponse {
    /// Keeps `status` and `headers`, in the map's order.
    pub(crate) fn record(&mut self, status: http::StatusCode, headers: &http::HeaderMap) {
        self.clear();
        self.status = Some(status);
        for (k, v) in headers {
            self.bytes.extend_from_slice(k.as_str().as_bytes());
            let name_end = self.bytes.len() as u32;
            self.bytes.extend_from_slice(v.as_bytes());
            self.ends.push((name_end, self.bytes.len() as u32));
        }
    }

    /// Forgets the head (keeping the buffers).
    pub(crate) fn clear(&mut self) {
        self.status = None;
        self.bytes.clear();
        self.ends.clear();
    }

    /// The status, if a head was kept.
    pub(crate) fn status(&self) -> Option<http::StatusCode> {
        self.status
    }

    /// The headers kept, as name and value bytes.
    pub(crate) fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let mut start = 0usize;
        self.ends.iter().map(move |&(name_end, value_end)| {
            let (n, v) = (name_end as usize, value_end as usize);
            let pair = (&self.bytes[start..n], &self.bytes[n..v]);
            start = v;
            pair
        })
    }

    /// The headers kept, as a map (for `response.*` properties).
    pub(crate) fn to_map(&self) -> http::HeaderMap {
        let mut map = http::HeaderMap::with_capacity(self.ends.len());
        for (k, v) in self.headers() {
            // They were a map's names and values: they parse again.
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k),
                http::HeaderValue::from_bytes(v),
            ) {
                map.append(k, v);
            }
        }
        map
    }
}

/// Hashes the VM's context ids (small sequential integers) as themselves: the stream map is
/// looked up several times per callback.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u32(&mut self, v: u32) {
        self.0 = u64::from(v);
    }
}

/// The VM's resource limits: its memory cap, and whether the guest ran into it.
#[derive(Debug)]
pub struct Limits {
    pub(crate) memory: usize,
    pub(crate) hit: bool,
    /// The memory grew since the VM last looked (so its size is read only then).
    pub(crate) grew: bool,
}

impl wasmtime::ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            // The guest sees a failed `memory.grow`, as on a real out-of-memory; the VM is
            // marked so a trap that follows is reported as the cap being hit.
            self.hit = true;
            return Ok(false);
        }
        self.grew = true;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        // The plugin's, and the host's own modules that start streams (`vm::start`), end
        // them (`vm::ending`) and run whole responses (`vm::whole`).
        4
    }

    fn tables(&self) -> usize {
        4
    }

    fn memories(&self) -> usize {
        1
    }
}
