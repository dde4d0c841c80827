//! The harness: one plugin, one VM, and the gateway around it played by the test.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use meshgate_wasm::{
    Callout, GrpcCall, GrpcEvent, HttpCall, LogLevel, MetricKind, Plugin, PluginConfig, PluginVm,
    Resume, Status, StreamInfo,
};

use crate::host::TestHost;
use crate::stream::{LocalReply, StreamState};
use crate::{Error, GrpcCallout, HttpCallout, HttpResponse, LogLine, Result, Stream};

enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// How to load a plugin: its file, and the configuration a WasmPlugin would give it.
///
/// ```no_run
/// use std::time::Duration;
/// use meshgate_testkit::Harness;
///
/// # fn main() -> Result<(), meshgate_testkit::Error> {
/// let plugin = Harness::builder("my_plugin.wasm")
///     .config(r#"{"header": "x-hello"}"#)      // pluginConfig, as the guest reads it
///     .root_id("my-root")                      // WasmPlugin pluginName
///     .vm_id("shared-vm")                      // shared data and queues namespace
///     .env("REGION", "eu-1")                   // vmConfig.env
///     .upstreams(["outbound|80||auth.default.svc.cluster.local"])
///     .callback_deadline(Duration::from_millis(50))
///     .build()?;
/// # let _ = plugin;
/// # Ok(())
/// # }
/// ```
pub struct HarnessBuilder {
    source: Source,
    config: PluginConfig,
    upstreams: Option<Vec<String>>,
    node: Vec<(String, Vec<u8>)>,
    start_time: Option<SystemTime>,
}

impl std::fmt::Debug for HarnessBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HarnessBuilder")
            .field("config", &self.config)
            .field("upstreams", &self.upstreams)
            .finish_non_exhaustive()
    }
}

impl HarnessBuilder {
    /// The plugin's name (log prefix, `plugin_name` property; default: the file's stem).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// The root id (WasmPlugin `pluginName`; default empty).
    pub fn root_id(mut self, root_id: impl Into<String>) -> Self {
        self.config.root_id = root_id.into();
        self
    }

    /// The vm id: the namespace of shared data and queues (default empty).
    pub fn vm_id(mut self, vm_id: impl Into<String>) -> Self {
        self.config.vm_id = vm_id.into();
        self
    }

    /// The plugin configuration (`pluginConfig`, as JSON text, as Istio hands it over).
    pub fn config(mut self, config: impl AsRef<[u8]>) -> Self {
        self.config.configuration = Bytes::copy_from_slice(config.as_ref());
        self
    }

    /// The VM configuration (`proxy_on_vm_start`).
    pub fn vm_config(mut self, config: impl AsRef<[u8]>) -> Self {
        self.config.vm_configuration = Bytes::copy_from_slice(config.as_ref());
        self
    }

    /// An environment variable the guest sees through WASI (`vmConfig.env`).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.env.push((name.into(), value.into()));
        self
    }

    /// The VM's memory cap in bytes (default 64 MiB, as the gateway's).
    pub fn memory_limit(mut self, bytes: usize) -> Self {
        self.config.memory_limit = bytes;
        self
    }

    /// The CPU deadline of one callback (default 100 ms, as the gateway's).
    pub fn callback_deadline(mut self, deadline: Duration) -> Self {
        self.config.callback_deadline = deadline;
        self
    }

    /// The CPU deadline of VM start-up (default 1 s).
    pub fn start_deadline(mut self, deadline: Duration) -> Self {
        self.config.start_deadline = deadline;
        self
    }

    /// The only upstreams callouts may go to; any other is refused as the gateway refuses an
    /// unknown cluster (`proxy_http_call` returns `BadArgument`). Default: every upstream.
    pub fn upstreams<I, S>(mut self, upstreams: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.upstreams = Some(upstreams.into_iter().map(Into::into).collect());
        self
    }

    /// A node property (`node.id`, `node.metadata.NAME`, ...): `path` without the leading
    /// `node.`, `value` encoded as Envoy encodes it (strings as their bytes).
    pub fn node_property(mut self, path: &str, value: impl AsRef<[u8]>) -> Self {
        self.node.push((path.to_owned(), value.as_ref().to_vec()));
        self
    }

    /// Where the simulated clock starts (default: the real time at [`HarnessBuilder::build`]).
    pub fn start_time(mut self, at: SystemTime) -> Self {
        self.start_time = Some(at);
        self
    }

    /// Compiles (or finds compiled) the module and starts the VM: `_initialize`,
    /// `proxy_on_vm_start`, `proxy_on_configure`.
    pub fn build(self) -> Result<Harness> {
        let bytes = match self.source {
            Source::File(path) => std::fs::read(&path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?,
            Source::Bytes(b) => b,
        };
        let module = crate::engine::load(&bytes)?;
        let engine = crate::engine::engine()?;
        let plugin = engine.isolated_plugin(self.config, module);
        let host = Rc::new(TestHost {
            upstreams: self.upstreams,
            node: self.node,
            clock: Cell::new(self.start_time.unwrap_or_else(SystemTime::now)),
            logs: RefCell::new(Vec::new()),
        });
        let vm = PluginVm::start(&plugin, host.clone()).map_err(|error| Error::Start {
            error,
            logs: host.logs.borrow().clone(),
        })?;
        let h = Harness {
            vm: RefCell::new(vm),
            plugin,
            host,
            streams: RefCell::new(HashMap::new()),
            http: RefCell::new(Vec::new()),
            grpc: RefCell::new(Vec::new()),
            callouts: RefCell::new(Vec::new()),
            tick_base: Cell::new(None),
        };
        h.collect();
        Ok(h)
    }
}

/// One plugin running in a VM of meshgate's wasm runtime, driven by the test.
///
/// Not `Send`: a harness lives on the test's thread. Every method that runs the guest
/// returns [`Error::Vm`] once the VM has failed; [`Harness::failure`] says why.
pub struct Harness {
    vm: RefCell<PluginVm>,
    plugin: Plugin,
    host: Rc<TestHost>,
    pub(crate) streams: RefCell<HashMap<u32, StreamState>>,
    http: RefCell<Vec<HttpCall>>,
    grpc: RefCell<Vec<GrpcCall>>,
    callouts: RefCell<Vec<Callout>>,
    tick_base: Cell<Option<SystemTime>>,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("plugin", &self.plugin.config().name)
            .finish_non_exhaustive()
    }
}

/// A metric the plugin defined, with its current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricValue {
    /// The name the plugin gave it.
    pub name: String,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// Counter or gauge value; for a histogram, how many values were recorded.
    pub value: i64,
}

/// A histogram the plugin defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    /// How many values were recorded.
    pub count: u64,
    /// Their sum.
    pub sum: u64,
    /// Per bucket of [`HISTOGRAM_BOUNDS`](crate::HISTOGRAM_BOUNDS) (not cumulative), then the
    /// values above the last bound.
    pub buckets: Vec<u64>,
}

fn noop() -> Context<'static> {
    Context::from_waker(Waker::noop())
}

impl Harness {
    /// A builder for the plugin in the `.wasm` file at `path`.
    pub fn builder(path: impl AsRef<Path>) -> HarnessBuilder {
        let path = path.as_ref().to_path_buf();
        let name = path
            .file_stem()
            .map_or_else(|| "plugin".to_owned(), |s| s.to_string_lossy().into_owned());
        HarnessBuilder {
            source: Source::File(path),
            config: PluginConfig::new(name),
            upstreams: None,
            node: Vec::new(),
            start_time: None,
        }
    }

    /// A builder for a module given as bytes (binary or WAT text).
    pub fn builder_from_bytes(bytes: impl Into<Vec<u8>>) -> HarnessBuilder {
        HarnessBuilder {
            source: Source::Bytes(bytes.into()),
            config: PluginConfig::new("plugin"),
            upstreams: None,
            node: Vec::new(),
            start_time: None,
        }
    }

    /// Loads the plugin at `path` with plugin configuration `config` and defaults otherwise.
    pub fn load(path: impl AsRef<Path>, config: impl AsRef<[u8]>) -> Result<Harness> {
        Harness::builder(path).config(config).build()
    }

    /// Opens a stream (an HTTP context). Its facts: source `127.0.0.1:40000`, destination
    /// `127.0.0.1:8080`, `HTTP/1.1`, started now on the harness clock; see
    /// [`Harness::stream_with`] for others. If the VM cannot open a context (it failed), the
    /// stream's first call returns the error.
    pub fn stream(&self) -> Stream<'_> {
        let info = StreamInfo {
            source: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 40000))),
            destination: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 8080))),
            protocol: "HTTP/1.1",
            start: Some(self.now()),
            ..StreamInfo::default()
        };
        self.stream_with(info)
    }

    /// Opens a stream with these facts (addresses, protocol, route and cluster names, ...).
    pub fn stream_with(&self, info: StreamInfo) -> Stream<'_> {
        let r = self.vm.borrow_mut().create_stream(info);
        self.collect();
        match r {
            Ok(id) => {
                self.streams.borrow_mut().insert(id.0, StreamState::new(id));
                Stream::new(self, Ok(id))
            }
            Err(f) => Stream::new(self, Err(f)),
        }
    }

    pub(crate) fn vm(&self) -> std::cell::RefMut<'_, PluginVm> {
        self.vm.borrow_mut()
    }

    /// Runs `f` on the VM itself (the runtime's full API), then picks up what it dispatched.
    pub fn with_vm<R>(&self, f: impl FnOnce(&mut PluginVm) -> R) -> R {
        let r = f(&mut self.vm.borrow_mut());
        self.collect();
        r
    }

    /// Picks up the callouts the guest dispatched and lets paused streams go on that the
    /// guest resumed, answered or closed.
    pub(crate) fn collect(&self) {
        let calls = self.vm.borrow_mut().take_calls();
        for c in &calls {
            match c {
                Callout::Http(h) => self.http.borrow_mut().push(h.clone()),
                Callout::Grpc(g) => self.grpc.borrow_mut().push(g.clone()),
                _ => {}
            }
        }
        self.callouts.borrow_mut().extend(calls);
        let mut vm = self.vm.borrow_mut();
        let mut streams = self.streams.borrow_mut();
        for s in streams.values_mut() {
            if s.ended {
                continue;
            }
            if let Some(response) = s.paused {
                match vm.poll_resume(s.id, response, &mut noop()) {
                    Poll::Pending => {}
                    Poll::Ready(Resume::Continue) => {
                        s.paused = None;
                        s.forward(&mut vm, response);
                    }
                    Poll::Ready(Resume::LocalResponse(r)) => {
                        s.paused = None;
                        s.reply = Some(LocalReply::new(r));
                    }
                    Poll::Ready(Resume::Closed) => {
                        s.paused = None;
                        s.closed = true;
                    }
                    Poll::Ready(Resume::Failed(_)) => s.paused = None,
                }
            } else if let Some(r) = vm.take_local_response(s.id) {
                s.reply = Some(LocalReply::new(r));
            }
        }
    }

    /// Why the VM failed (trap, deadline, memory cap, bad return), if it did.
    pub fn failure(&self) -> Option<meshgate_wasm::VmFailure> {
        self.vm.borrow().failed().cloned()
    }

    /// The runtime's plugin: its configuration, module (ABI version, size, digest) and stats
    /// (traps, deadlines, callback latency).
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// Bytes of linear memory the guest has.
    pub fn memory_size(&self) -> usize {
        self.vm.borrow().memory_size()
    }

    // ---- time and ticks

    /// The time on the harness clock (what the plugin reads as now).
    pub fn now(&self) -> SystemTime {
        self.host.clock.get()
    }

    /// The tick period the plugin set (`None`: ticks off).
    pub fn tick_period(&self) -> Option<Duration> {
        self.vm.borrow_mut().tick_period(&mut noop())
    }

    /// Runs `proxy_on_tick` once, whatever the period.
    pub fn tick(&self) -> Result<()> {
        let r = self.vm.borrow_mut().on_tick();
        self.collect();
        Ok(r?)
    }

    /// Moves the clock on by `by`, firing each tick that falls due on the way (at its own
    /// time on the clock; ticks are due one period after the plugin set the period or after
    /// the previous tick), then delivers ready queues. Returns how many ticks fired.
    pub fn advance(&self, by: Duration) -> Result<u32> {
        let end = self.now() + by;
        let mut fired = 0;
        loop {
            let Some(period) = self.tick_period() else {
                self.tick_base.set(None);
                break;
            };
            let base = self.tick_base.get().unwrap_or_else(|| self.now());
            self.tick_base.set(Some(base));
            let due = base + period;
            if due > end {
                break;
            }
            self.host.clock.set(due);
            self.tick_base.set(Some(due));
            self.tick()?;
            fired += 1;
        }
        self.host.clock.set(end);
        self.deliver_queues()?;
        Ok(fired)
    }

    // ---- callouts

    /// The HTTP callouts waiting for an answer, oldest first.
    pub fn http_callouts(&self) -> Vec<HttpCallout> {
        self.http.borrow().iter().map(HttpCallout::new).collect()
    }

    /// The oldest HTTP callout waiting for an answer.
    pub fn http_callout(&self) -> Option<HttpCallout> {
        self.http.borrow().first().map(HttpCallout::new)
    }

    fn take_http(&self, token: u32) -> Result<HttpCall> {
        let mut pending = self.http.borrow_mut();
        let i = pending
            .iter()
            .position(|c| c.token == token)
            .ok_or(Error::NoSuchCallout(token))?;
        Ok(pending.remove(i))
    }

    /// Answers HTTP callout `token` (`proxy_on_http_call_response`).
    pub fn respond_http(&self, token: u32, response: HttpResponse) -> Result<()> {
        let call = self.take_http(token)?;
        let r = self
            .vm
            .borrow_mut()
            .on_http_call_response(&call, Some(response.into_call_response()));
        self.collect();
        Ok(r?)
    }

    /// Fails HTTP callout `token` as a timeout or reset does: the plugin is called back with
    /// no headers, body or trailers, as Envoy calls it.
    pub fn fail_http(&self, token: u32) -> Result<()> {
        let call = self.take_http(token)?;
        let r = self.vm.borrow_mut().on_http_call_response(&call, None);
        self.collect();
        Ok(r?)
    }

    /// The unary gRPC callouts waiting for an answer, oldest first.
    pub fn grpc_callouts(&self) -> Vec<GrpcCallout> {
        self.grpc.borrow().iter().map(GrpcCallout::new).collect()
    }

    fn take_grpc(&self, token: u32) -> Result<GrpcCall> {
        let mut pending = self.grpc.borrow_mut();
        let i = pending
            .iter()
            .position(|c| c.token == token)
            .ok_or(Error::NoSuchCallout(token))?;
        Ok(pending.remove(i))
    }

    /// Answers gRPC callout `token` with a response message (`proxy_on_grpc_receive`).
    pub fn respond_grpc(&self, token: u32, message: impl Into<Bytes>) -> Result<()> {
        let call = self.take_grpc(token)?;
        let r = self
            .vm
            .borrow_mut()
            .on_grpc_response(&call, Ok(message.into()));
        self.collect();
        Ok(r?)
    }

    /// Closes gRPC callout `token` with a status (`proxy_on_grpc_close`; 14 is UNAVAILABLE,
    /// 4 DEADLINE_EXCEEDED).
    pub fn fail_grpc(&self, token: u32, code: u32, message: &str) -> Result<()> {
        let call = self.take_grpc(token)?;
        let r = self.vm.borrow_mut().on_grpc_response(
            &call,
            Err((code, Bytes::copy_from_slice(message.as_bytes()))),
        );
        self.collect();
        Ok(r?)
    }

    /// Delivers an event on a gRPC stream the plugin opened (see [`Harness::callouts`] for
    /// the `GrpcStream` it opened and the messages it sent).
    pub fn grpc_stream_event(&self, token: u32, event: GrpcEvent) -> Result<()> {
        let r = self.vm.borrow_mut().on_grpc_stream(token, event);
        self.collect();
        Ok(r?)
    }

    /// Every callout the plugin dispatched, answered or not, in order (HTTP, gRPC, gRPC
    /// stream opens, sends, half-closes and cancels).
    pub fn callouts(&self) -> Vec<Callout> {
        self.callouts.borrow().clone()
    }

    // ---- shared data and queues

    fn vm_id(&self) -> &str {
        &self.plugin.config().vm_id
    }

    /// The value of shared data `key` in the plugin's vm id.
    pub fn shared_data(&self, key: &str) -> Option<Bytes> {
        self.shared_data_with_cas(key).map(|(v, _)| v)
    }

    /// The value of shared data `key` and its cas.
    pub fn shared_data_with_cas(&self, key: &str) -> Option<(Bytes, u32)> {
        self.plugin.shared_state().get(self.vm_id(), key.as_bytes())
    }

    /// Sets shared data `key` (whatever its cas), as another plugin of the vm id would.
    pub fn set_shared_data(&self, key: &str, value: impl AsRef<[u8]>) {
        let _ = self
            .plugin
            .shared_state()
            .set(self.vm_id(), key.as_bytes(), value.as_ref(), 0);
    }

    /// Puts `value` on the shared queue `name` the plugin registered, and delivers it
    /// (`proxy_on_queue_ready`).
    pub fn enqueue(&self, name: &str, value: impl AsRef<[u8]>) -> Result<()> {
        let shared = self.plugin.shared_state();
        let id = shared
            .resolve_queue(self.vm_id(), name.as_bytes())
            .ok_or_else(|| Error::NoSuchQueue(name.to_owned()))?;
        match shared.enqueue(id, value.as_ref()) {
            Status::Ok => {}
            Status::NotFound => return Err(Error::NoSuchQueue(name.to_owned())),
            _ => return Err(Error::QueueFull(name.to_owned())),
        }
        self.deliver_queues()?;
        Ok(())
    }

    /// Takes the oldest item off shared queue `name` (what the plugin enqueued).
    pub fn dequeue(&self, name: &str) -> Option<Bytes> {
        let shared = self.plugin.shared_state();
        let id = shared.resolve_queue(self.vm_id(), name.as_bytes())?;
        shared.dequeue(id).ok()
    }

    /// Calls `proxy_on_queue_ready` for every queue of the plugin's that has data; returns
    /// how many were delivered.
    pub fn deliver_queues(&self) -> Result<usize> {
        let ready = self.vm.borrow().inbox().take(Waker::noop());
        for id in &ready {
            let r = self.vm.borrow_mut().on_queue_ready(*id);
            self.collect();
            r?;
        }
        Ok(ready.len())
    }

    // ---- metrics

    fn metric(
        &self,
        name: &str,
        kind: MetricKind,
    ) -> Option<std::sync::Arc<meshgate_wasm::Metric>> {
        self.plugin
            .metrics()
            .all()
            .into_iter()
            .find(|m| m.name == name && m.kind == kind)
    }

    /// The value of counter `name`, if the plugin defined it.
    pub fn counter(&self, name: &str) -> Option<u64> {
        self.metric(name, MetricKind::Counter)
            .map(|m| m.value().max(0) as u64)
    }

    /// The value of gauge `name`, if the plugin defined it.
    pub fn gauge(&self, name: &str) -> Option<i64> {
        self.metric(name, MetricKind::Gauge).map(|m| m.value())
    }

    /// Histogram `name`, if the plugin defined it.
    pub fn histogram(&self, name: &str) -> Option<Histogram> {
        self.metric(name, MetricKind::Histogram).map(|m| {
            let (buckets, sum) = m.histogram();
            Histogram {
                count: m.value().max(0) as u64,
                sum,
                buckets,
            }
        })
    }

    /// Every metric the plugin defined, sorted by name.
    pub fn metrics(&self) -> Vec<MetricValue> {
        self.plugin
            .metrics()
            .all()
            .into_iter()
            .map(|m| MetricValue {
                name: m.name.clone(),
                kind: m.kind,
                value: m.value(),
            })
            .collect()
    }

    // ---- logs

    /// Every line the plugin logged, in order.
    pub fn logs(&self) -> Vec<LogLine> {
        self.host.logs.borrow().clone()
    }

    /// The messages the plugin logged at `level`.
    pub fn logs_at(&self, level: LogLevel) -> Vec<String> {
        self.host
            .logs
            .borrow()
            .iter()
            .filter(|l| l.level == level)
            .map(|l| l.message.clone())
            .collect()
    }

    /// Whether any line the plugin logged contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.host
            .logs
            .borrow()
            .iter()
            .any(|l| l.message.contains(needle))
    }

    /// Takes the lines logged so far (the log starts empty again).
    pub fn take_logs(&self) -> Vec<LogLine> {
        std::mem::take(&mut self.host.logs.borrow_mut())
    }
}
