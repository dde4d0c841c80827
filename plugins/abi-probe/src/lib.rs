//! abi-probe: exercises the proxy-wasm ABI and replies with what the host answered, so one
//! request through Envoy and through meshgate can be compared byte for byte. The request header
//! `x-probe` picks a mode (see `Probe::start`); without it the plugin must leave the stream
//! untouched. Bytes are reported as lowercase hex and statuses as the host's raw numbers; the
//! plugin must never guess or normalise what the host said.

mod raw;

use std::cell::{Cell, RefCell};
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use raw::{hex, Got};
use serde_json::{json, Value};

// Buffer and map type numbers of the ABI.
const BUFFER_VM_CONFIGURATION: u32 = 6;
const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;
const MAP_REQUEST_HEADERS: u32 = 0;
const MAP_RESPONSE_HEADERS: u32 = 2;

const QUEUE_NAME: &str = "probe-queue";
const DEFAULT_TICK_MS: u64 = 100;

thread_local! {
    /// What the root context saw, for the streams to report (the VM runs one thread).
    static ROOT: RefCell<RootSeen> = RefCell::new(RootSeen::default());
    /// (counter, gauge, histogram) ids, defined on first use.
    static METRICS: Cell<Option<(u32, u32, u32)>> = const { Cell::new(None) };
}

#[derive(Default)]
struct RootSeen {
    context_id: u32,
    vm_configuration: Option<Value>,
    plugin_configuration: Option<Value>,
    queue: Option<u32>,
    events: Vec<Value>,
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|context_id| {
        ROOT.with_borrow_mut(|root| {
            root.context_id = context_id;
            root.events.push(json!({"cb": "root_create", "ctx": context_id}));
        });
        Box::new(Root { context_id, ticked: false, queue_ready: false })
    });
}}

/// Bytes as `{"hex": .., "utf8": ..}` (`utf8` is null when they are not UTF-8).
fn bytes_json(bytes: &[u8]) -> Value {
    json!({"hex": hex(bytes), "utf8": std::str::from_utf8(bytes).ok()})
}

/// Lowercase or uppercase hex to bytes; an odd or bad digit ends the input.
fn unhex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().collect();
    digits
        .chunks_exact(2)
        .map_while(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

fn got_bytes_json(got: Got) -> Value {
    match got {
        Got::Ok(Some(bytes)) => bytes_json(&bytes),
        Got::Ok(None) => Value::Null,
        Got::Status(n) => json!({ "status": n }),
    }
}

fn text(got: Got) -> Option<String> {
    got.bytes()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Adds one to a decimal counter in shared data, retrying on a CAS mismatch.
fn bump_shared(key: &str) {
    for _ in 0..8 {
        let (got, cas) = raw::get_shared(key);
        let n: u64 = text(got).and_then(|s| s.parse().ok()).unwrap_or(0);
        if raw::set_shared(key, (n + 1).to_string().as_bytes(), cas) == 0 {
            return;
        }
    }
}

fn save_root_events() {
    let events = ROOT.with_borrow(|root| Value::from(root.events.clone()));
    raw::set_shared("order-root", events.to_string().as_bytes(), 0);
}

struct Root {
    context_id: u32,
    ticked: bool,
    queue_ready: bool,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, size: usize) -> bool {
        let config = raw::buffer(BUFFER_VM_CONFIGURATION);
        let registered = self.register_shared_queue(QUEUE_NAME);
        ROOT.with_borrow_mut(|root| {
            root.vm_configuration = Some(got_bytes_json(config));
            root.queue = Some(registered);
            root.events
                .push(json!({"cb": "vm_start", "ctx": self.context_id, "size": size}));
        });
        save_root_events();
        true
    }

    fn on_configure(&mut self, size: usize) -> bool {
        let config = raw::buffer(BUFFER_PLUGIN_CONFIGURATION);
        // Optional `{"tick_ms": n}`; anything else (including an empty config) keeps 100 ms.
        let tick_ms = match &config {
            Got::Ok(Some(bytes)) => serde_json::from_slice::<Value>(bytes)
                .ok()
                .and_then(|v| v.get("tick_ms").and_then(Value::as_u64))
                .unwrap_or(DEFAULT_TICK_MS),
            _ => DEFAULT_TICK_MS,
        };
        ROOT.with_borrow_mut(|root| {
            root.plugin_configuration = Some(got_bytes_json(config));
            root.events.push(
                json!({"cb": "configure", "ctx": self.context_id, "size": size, "tick_ms": tick_ms}),
            );
        });
        if tick_ms > 0 {
            self.set_tick_period(Duration::from_millis(tick_ms));
        }
        save_root_events();
        true
    }

    fn on_tick(&mut self) {
        if !self.ticked {
            self.ticked = true;
            ROOT.with_borrow_mut(|root| {
                root.events
                    .push(json!({"cb": "tick", "ctx": self.context_id}))
            });
            save_root_events();
        }
        bump_shared("ticks");
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        if !self.queue_ready {
            self.queue_ready = true;
            ROOT.with_borrow_mut(|root| {
                root.events.push(
                    json!({"cb": "queue_ready", "ctx": self.context_id, "queue_id": queue_id}),
                )
            });
            save_root_events();
        }
        bump_shared("queue-ready-calls");
        // Drain the queue; keep the last value.
        loop {
            match raw::dequeue(queue_id) {
                Got::Ok(Some(value)) => {
                    raw::set_shared("queue-last", &value, 0);
                }
                Got::Ok(None) => {}
                Got::Status(_) => break,
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe {
            id: context_id,
            root_id: self.context_id,
            mode: None,
            append: Vec::new(),
            paths: Vec::new(),
            at_response: Value::Null,
            events: vec![
                json!({"cb": "context_create", "ctx": context_id, "root": self.context_id}),
            ],
            stream_seen: Vec::new(),
            late: Vec::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Probe {
    id: u32,
    root_id: u32,
    mode: Option<String>,
    /// Appended to the uppercased body in body-req/body-resp (`x-probe-append`).
    append: Vec<u8>,
    /// Property paths for properties-log.
    paths: Vec<String>,
    /// properties-log: what the paths gave in on_http_response_headers.
    at_response: Value,
    events: Vec<Value>,
    /// grpc-stream: what the stream brought back, reported at its close.
    stream_seen: Vec<String>,
    /// late-headers: what header reads gave after the headers phases.
    late: Vec<Value>,
}

/// `{path: hex | null | {"status": n}}` for `a.b.c,d.e` (paths split at `.`).
fn properties(paths: &[String]) -> Value {
    let mut out = serde_json::Map::new();
    for path in paths {
        let segments: Vec<&str> = path.split('.').collect();
        out.insert(path.clone(), raw::property(&segments).to_json());
    }
    Value::Object(out)
}

/// What reading map `map_type` gives: its names in order, and the raw answers for `values`.
fn map_view(map_type: u32, values: &[&str]) -> Value {
    let pairs = match raw::header_pairs(map_type) {
        Got::Ok(Some(map)) => raw::pair_names(&map).map_or(json!("malformed"), Value::from),
        other => other.raw_json(),
    };
    let mut out = serde_json::Map::new();
    out.insert("names".into(), pairs);
    for name in values {
        out.insert((*name).into(), raw::header(map_type, name).raw_json());
    }
    Value::Object(out)
}

fn split_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn prop_text(path: &[&str]) -> Option<String> {
    text(raw::property(path))
}

impl Probe {
    fn mode(&self) -> &str {
        self.mode.as_deref().unwrap_or("")
    }

    fn event(&mut self, cb: &str, detail: Value) {
        let mut event = json!({"cb": cb, "ctx": self.id});
        if let (Some(event), Value::Object(detail)) = (event.as_object_mut(), detail) {
            event.extend(detail);
        }
        self.events.push(event);
    }

    /// order: the whole sequence so far, rewritten at on_done, on_log and deletion.
    fn save_order(&self) {
        if self.mode() == "order" {
            let list = Value::from(self.events.clone());
            raw::set_shared("order-last", list.to_string().as_bytes(), 0);
        }
    }

    fn reply(&self, status: u32, body: &Value) -> Action {
        self.send_http_response(
            status,
            vec![("content-type", "application/json")],
            Some(body.to_string().as_bytes()),
        );
        Action::Pause
    }

    fn reply_shared(&self, key: &str) -> Action {
        let (got, cas) = raw::get_shared(key);
        let value = match got {
            Got::Ok(Some(bytes)) => serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::from(String::from_utf8_lossy(&bytes).into_owned())),
            other => other.to_json(),
        };
        self.reply(200, &json!({"key": key, "value": value, "cas": cas}))
    }

    /// late-headers: the response and request header maps as `phase` reads them.
    fn late_view(&mut self, phase: &str) {
        let view = json!({
            "phase": phase,
            "response": map_view(
                MAP_RESPONSE_HEADERS,
                &[":status", "x-upstream", "content-length", "access-control-allow-origin"],
            ),
            "request": map_view(MAP_REQUEST_HEADERS, &[":path", "x-probe"]),
        });
        self.late.push(view);
    }

    fn header(&self, name: &str) -> Option<String> {
        self.get_http_request_header(name)
    }

    fn start(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        match self.mode() {
            "properties" => {
                let paths = split_list(&self.header("x-probe-paths").unwrap_or_default());
                self.reply(200, &properties(&paths))
            }
            "properties-log" => {
                self.paths = split_list(&self.header("x-probe-paths").unwrap_or_default());
                self.then()
            }
            "properties-read" => self.reply_shared("properties-last"),
            "headers" => self.headers(num_headers, end_of_stream),
            "mutate" => {
                self.add_http_request_header("x-probe-added", "1");
                self.set_http_request_header("x-probe-replaced", Some("new"));
                self.remove_http_request_header("x-probe-remove");
                Action::Continue
            }
            "local" => {
                self.send_http_response(418, vec![("x-probe-local", "yes")], Some(b"teapot"));
                Action::Pause
            }
            "body-req" | "body-resp" => {
                self.append = self
                    .header("x-probe-append")
                    .unwrap_or_default()
                    .into_bytes();
                Action::Continue
            }
            "callout" => self.callout(),
            "grpc" => self.grpc(),
            "grpc-stream" => self.grpc_stream(),
            "metrics" => self.metrics(),
            "shared" => self.shared(),
            "queue" => self.queue(),
            "queue-read" => {
                let (last, cas) = raw::get_shared("queue-last");
                let (calls, _) = raw::get_shared("queue-ready-calls");
                self.reply(
                    200,
                    &json!({"value": text(last), "cas": cas, "queue_ready_calls": text(calls)}),
                )
            }
            "tick" | "ticks" => {
                let (ticks, _) = raw::get_shared("ticks");
                self.reply(200, &json!({"ticks": text(ticks)}))
            }
            "order" => self.then(),
            "late-headers" => self.then(),
            "late-read" => self.reply_shared("late-last"),
            "order-read" => self.reply_shared("order-last"),
            "order-root" => self.reply_shared("order-root"),
            "config" => self.config(),
            "env" => self.env(),
            "log" => self.log(),
            "time" => {
                let (status, nanos) = raw::time_nanos();
                self.reply(200, &json!({"status": status, "nanos": nanos}))
            }
            "status" => self.status(),
            "foreign" => self.foreign(),
            "reroute" => {
                // `x-probe-path` becomes the path; `x-probe-clear: 1` then clears the route
                // cache the foreign-function way (its status goes upstream as a header).
                if let Some(path) = self.header("x-probe-path") {
                    self.set_http_request_header(":path", Some(&path));
                }
                if self.header("x-probe-clear").as_deref() == Some("1") {
                    let f = raw::foreign(
                        "clear_route_cache",
                        b"",
                        raw::Ptr::Real,
                        raw::Ptr::Real,
                        raw::Ptr::Real,
                    );
                    self.set_http_request_header(
                        "x-probe-clear-status",
                        Some(&f.status.to_string()),
                    );
                }
                Action::Continue
            }
            other => {
                let body = json!({"error": "unknown x-probe mode", "mode": other});
                self.reply(400, &body)
            }
        }
    }

    /// For the modes that watch a whole stream: `x-probe-then: local` ends it with a local
    /// reply (418, `x-probe-local: yes`, body `teapot`) instead of going upstream.
    fn then(&self) -> Action {
        if self.header("x-probe-then").as_deref() == Some("local") {
            self.send_http_response(418, vec![("x-probe-local", "yes")], Some(b"teapot"));
            return Action::Pause;
        }
        Action::Continue
    }

    fn headers(&self, num_headers: usize, end_of_stream: bool) -> Action {
        let pairs = self.get_http_request_headers_bytes();
        let list: Vec<Value> = pairs
            .iter()
            .map(|(k, v)| json!([k, String::from_utf8_lossy(v)]))
            .collect();
        let count = pairs.len().to_string();
        let body = json!({
            "headers": list,
            "count": pairs.len(),
            "num_headers": num_headers,
            "end_of_stream": end_of_stream,
        });
        self.send_http_response(
            200,
            vec![
                ("content-type", "application/json"),
                ("x-probe-size", &count),
            ],
            Some(body.to_string().as_bytes()),
        );
        Action::Pause
    }

    fn callout(&self) -> Action {
        let cluster = self.header("x-probe-cluster").unwrap_or_default();
        let path = self
            .header("x-probe-callout-path")
            .unwrap_or_else(|| "/".into());
        let headers = vec![
            (":method", "GET"),
            (":path", &path),
            (":authority", "callout"),
        ];
        match self.dispatch_http_call(&cluster, headers, None, vec![], Duration::from_secs(5)) {
            Ok(_) => Action::Pause,
            Err(status) => {
                let body = format!("{status:?}");
                self.send_http_response(500, vec![], Some(body.as_bytes()));
                Action::Pause
            }
        }
    }

    /// A unary gRPC call (`test.Echo/Say`, message `ping`) to the cluster in
    /// `x-probe-cluster`; the answer is reported as request headers on the way upstream.
    fn grpc(&self) -> Action {
        let cluster = self.header("x-probe-cluster").unwrap_or_default();
        let metadata = vec![("x-probe-md", &b"1"[..])];
        match self.dispatch_grpc_call(
            &cluster,
            "test.Echo",
            "Say",
            metadata,
            Some(b"ping"),
            Duration::from_secs(5),
        ) {
            Ok(_) => Action::Pause,
            Err(status) => {
                let body = format!("{status:?}");
                self.send_http_response(500, vec![], Some(body.as_bytes()));
                Action::Pause
            }
        }
    }

    /// A gRPC stream (`test.Echo/Chat`) to the cluster in `x-probe-cluster`: sends `one` and
    /// `two` (then half-closes); what comes back is reported as request headers at the close.
    fn grpc_stream(&self) -> Action {
        let cluster = self.header("x-probe-cluster").unwrap_or_default();
        match self.open_grpc_stream(&cluster, "test.Echo", "Chat", vec![("x-probe-md", b"s")]) {
            Ok(token) => {
                self.send_grpc_stream_message(token, Some(b"one"), false);
                self.send_grpc_stream_message(token, Some(b"two"), true);
                Action::Pause
            }
            Err(status) => {
                let body = format!("{status:?}");
                self.send_http_response(500, vec![], Some(body.as_bytes()));
                Action::Pause
            }
        }
    }

    fn metrics(&self) -> Action {
        let (counter, gauge, hist) = match METRICS.get() {
            Some(ids) => ids,
            None => {
                let ids = (
                    raw::define_metric(0, "probe_requests").1,
                    raw::define_metric(1, "probe_gauge").1,
                    raw::define_metric(2, "probe_hist").1,
                );
                METRICS.set(Some(ids));
                ids
            }
        };
        let increment = raw::increment_metric(counter, 1);
        let set = raw::record_metric(gauge, 42);
        let record = raw::record_metric(hist, 7);
        let get = |id| {
            let (status, value) = raw::get_metric(id);
            json!({"status": status, "value": value})
        };
        let body = json!({
            "ids": {"counter": counter, "gauge": gauge, "histogram": hist},
            "statuses": {"increment": increment, "record_gauge": set, "record_histogram": record},
            "counter": get(counter),
            "gauge": get(gauge),
            "histogram": get(hist),
        });
        self.reply(200, &body)
    }

    fn shared(&self) -> Action {
        let key = "probe-key";
        let (first, cas1) = raw::get_shared(key);
        let first = first.bytes();
        let mut value = first.clone().unwrap_or_default();
        value.push(b'x');
        let set = raw::set_shared(key, &value, cas1);
        let (second, cas2) = raw::get_shared(key);
        let wrong_cas = cas2.wrapping_add(1000);
        let mismatch = raw::set_shared(key, b"never", wrong_cas);
        let (third, cas3) = raw::get_shared(key);
        let missing = raw::get_shared("probe-missing-key");
        let body = json!({
            "get": {"value": first.as_deref().map(String::from_utf8_lossy), "cas": cas1},
            "set_with_cas": {"cas": cas1, "status": set},
            "after_set": {"value": text(second), "cas": cas2},
            "set_with_wrong_cas": {"cas": wrong_cas, "status": mismatch},
            "after_mismatch": {"value": text(third), "cas": cas3},
            "missing_key": {"value": missing.0.to_json(), "cas": missing.1},
        });
        self.reply(200, &body)
    }

    fn queue(&self) -> Action {
        let value = self.header("x-probe-value").unwrap_or_default();
        let registered = ROOT.with_borrow(|root| root.queue);
        let vm_id = prop_text(&["plugin_vm_id"]).unwrap_or_default();
        let (resolve_status, resolved) = raw::resolve_queue(&vm_id, QUEUE_NAME);
        let (unknown_status, _) = raw::resolve_queue(&vm_id, "no-such-queue");
        let enqueue = match registered {
            Some(id) => raw::enqueue(id, value.as_bytes()),
            None => u32::MAX,
        };
        let body = json!({
            "registered_id": registered,
            "resolve": {"vm_id": vm_id, "status": resolve_status, "id": resolved},
            "resolve_unknown_status": unknown_status,
            "enqueue_status": enqueue,
            "value": value,
        });
        self.reply(200, &body)
    }

    fn config(&self) -> Action {
        let (vm, plugin) = ROOT.with_borrow(|root| {
            (
                root.vm_configuration.clone(),
                root.plugin_configuration.clone(),
            )
        });
        let body = json!({
            "plugin_configuration": plugin,
            "vm_configuration": vm,
            "in_stream": {
                "plugin_configuration": got_bytes_json(raw::buffer(BUFFER_PLUGIN_CONFIGURATION)),
                "vm_configuration": got_bytes_json(raw::buffer(BUFFER_VM_CONFIGURATION)),
            },
        });
        self.reply(200, &body)
    }

    fn env(&self) -> Action {
        let names = split_list(&self.header("x-probe-env").unwrap_or_default());
        let mut asked = serde_json::Map::new();
        for name in names {
            let value = std::env::var(&name).ok();
            asked.insert(name, value.into());
        }
        let all: Vec<Value> = std::env::vars().map(|(k, v)| json!([k, v])).collect();
        println!("abi-probe stdout line");
        eprintln!("abi-probe stderr line");
        self.reply(200, &json!({"vars": asked, "all": all}))
    }

    fn log(&self) -> Action {
        let mut statuses = Vec::new();
        for (level, name) in ["trace", "debug", "info", "warn", "error", "critical"]
            .iter()
            .enumerate()
        {
            let status = raw::log(level as u32, &format!("abi-probe log {name}"));
            statuses.push(json!([name, status]));
        }
        let (status, level) = raw::log_level();
        self.reply(
            200,
            &json!({"log_level": {"status": status, "level": level}, "log_statuses": statuses}),
        )
    }

    fn status(&self) -> Action {
        let headers = [
            (":method", "GET"),
            (":path", "/"),
            (":authority", "callout"),
        ];
        let (unknown_cluster, _) = raw::http_call("no-such-cluster", &headers, 1000);
        let (missing_path, _) = raw::http_call("no-such-cluster", &headers[..1], 1000);
        let missing_header = raw::header(MAP_REQUEST_HEADERS, "x-probe-no-such-header");
        let empty_header = raw::header(MAP_REQUEST_HEADERS, "x-probe-empty");
        let (no_metric, _) = raw::get_metric(0x7fff_fff0);
        let no_queue = raw::dequeue(0x7fff_fff0);
        let body = json!({
            "http_call_unknown_cluster": unknown_cluster,
            "http_call_only_method_header": missing_path,
            "get_missing_request_header": missing_header.raw_json(),
            "get_empty_request_header (x-probe-empty)": empty_header.raw_json(),
            "get_metric_unknown_id": no_metric,
            "dequeue_unknown_queue": no_queue.raw_json(),
        });
        self.reply(200, &body)
    }

    /// Envoy's foreign functions: `compress` of `x-probe-data`, `uncompress` of that and of the
    /// hex stream in `x-probe-zlib`, bad streams, `clear_route_cache`, other names, and bad
    /// pointers; each reported with its status and the return words as the host left them.
    fn foreign(&self) -> Action {
        use raw::Ptr::{Bad, Null, Real};
        let data = self.header("x-probe-data").unwrap_or_default();
        let zlib = unhex(&self.header("x-probe-zlib").unwrap_or_default());
        let report = |f: raw::Foreign| {
            json!({
                "status": f.status,
                "null": f.null,
                "size": f.size,
                "data": f.data.as_deref().map(bytes_json),
            })
        };
        let call = |name: &str, args: &[u8]| raw::foreign(name, args, Real, Real, Real);
        let compressed = call("compress", data.as_bytes());
        let again = compressed
            .data
            .clone()
            .map(|z| report(call("uncompress", &z)));
        let empty = call("compress", b"");
        let empty_again = empty.data.clone().map(|z| report(call("uncompress", &z)));
        let mut cut = compressed.data.clone().unwrap_or_default();
        cut.truncate(cut.len().saturating_sub(3));
        let body = json!({
            "compress": report(compressed),
            "uncompress(compress)": again,
            "compress(empty)": report(empty),
            "uncompress(compress(empty))": empty_again,
            "uncompress(x-probe-zlib)": report(call("uncompress", &zlib)),
            "uncompress(truncated)": report(call("uncompress", &cut)),
            "uncompress(garbage)": report(call("uncompress", b"not a zlib stream")),
            "uncompress(empty)": report(call("uncompress", b"")),
            "clear_route_cache": report(call("clear_route_cache", b"")),
            "clear_route_cache(args)": report(call("clear_route_cache", b"ignored")),
            "unknown": report(call("no_such_function", b"x")),
            "empty name": report(call("", b"")),
            "compress(bad name pointer)": report(raw::foreign("compress", b"x", Bad, Real, Real)),
            "unknown(bad name pointer)": report(raw::foreign("nope", b"x", Bad, Real, Real)),
            "compress(bad args pointer)": report(raw::foreign("compress", b"x", Real, Bad, Real)),
            "unknown(bad args pointer)": report(raw::foreign("nope", b"x", Real, Bad, Real)),
            "compress(bad return pointer)": report(raw::foreign("compress", b"x", Real, Real, Bad)),
            "compress(null return pointer)": report(raw::foreign("compress", b"x", Real, Real, Null)),
            "uncompress(garbage, bad return pointer)": report(raw::foreign("uncompress", b"junk", Real, Real, Bad)),
            "clear_route_cache(bad return pointer)": report(raw::foreign("clear_route_cache", b"", Real, Real, Bad)),
        });
        self.reply(200, &body)
    }

    fn uppercase_body(&self, body: Option<Vec<u8>>) -> Vec<u8> {
        let mut body = body.unwrap_or_default();
        body.make_ascii_uppercase();
        body.extend_from_slice(&self.append);
        body
    }
}

impl Context for Probe {
    fn on_grpc_stream_initial_metadata(&mut self, _token: u32, n: u32) {
        let has = self
            .get_grpc_stream_initial_metadata_value("content-type")
            .is_some();
        self.stream_seen.push(format!("initial:{n}:{has}"));
    }

    fn on_grpc_stream_message(&mut self, _token: u32, size: usize) {
        let m = self.get_grpc_stream_message(0, size).unwrap_or_default();
        self.stream_seen
            .push(format!("message:{}", String::from_utf8_lossy(&m)));
    }

    fn on_grpc_stream_trailing_metadata(&mut self, _token: u32, n: u32) {
        self.stream_seen.push(format!("trailers:{n}"));
    }

    fn on_grpc_stream_close(&mut self, _token: u32, status: u32) {
        self.stream_seen.push(format!("close:{status}"));
        let seen = self.stream_seen.join(";");
        self.add_http_request_header("x-grpc-stream", &seen);
        self.resume_http_request();
    }

    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        self.event(
            "grpc_call_response",
            json!({"token": token, "status": status, "size": size}),
        );
        let body = self
            .get_grpc_call_response_body(0, size)
            .unwrap_or_default();
        self.add_http_request_header("x-grpc-status", &status.to_string());
        self.add_http_request_header("x-grpc-message", &String::from_utf8_lossy(&body));
        if status != 0 {
            let (_, message) = self.get_grpc_status();
            self.add_http_request_header("x-grpc-status-message", &message.unwrap_or_default());
        }
        self.resume_http_request();
    }

    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        size: usize,
        trailers: usize,
    ) {
        self.event(
            "http_call_response",
            json!({"token": token, "num_headers": num_headers, "body_size": size, "num_trailers": trailers}),
        );
        let headers = self.get_http_call_response_headers_bytes();
        let status = headers
            .iter()
            .find(|(k, _)| k == ":status")
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_else(|| "none".into());
        let body = self
            .get_http_call_response_body(0, size)
            .unwrap_or_default();
        let pairs: Vec<Value> = headers
            .iter()
            .map(|(k, v)| json!([k, String::from_utf8_lossy(v)]))
            .collect();
        self.add_http_request_header("x-callout-status", &status);
        self.add_http_request_header("x-callout-body-len", &body.len().to_string());
        self.add_http_request_header("x-callout-num-headers", &num_headers.to_string());
        self.add_http_request_header("x-callout-headers", &Value::from(pairs).to_string());
        self.add_http_request_header("x-callout-body-hex", &hex(&body[..body.len().min(256)]));
        self.resume_http_request();
    }

    fn on_done(&mut self) -> bool {
        self.event("done", Value::Null);
        self.save_order();
        true
    }
}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        self.event(
            "request_headers",
            json!({"num_headers": num_headers, "end_of_stream": end_of_stream}),
        );
        self.mode = self.header("x-probe");
        if self.mode.is_none() {
            return Action::Continue;
        }
        self.start(num_headers, end_of_stream)
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.event(
            "request_body",
            json!({"body_size": size, "end_of_stream": end_of_stream}),
        );
        if self.mode() != "body-req" {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.uppercase_body(self.get_http_request_body(0, size));
        self.set_http_request_body(0, size, &body);
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, num_trailers: usize) -> Action {
        self.event("request_trailers", json!({ "num_trailers": num_trailers }));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        self.event(
            "response_headers",
            json!({"num_headers": num_headers, "end_of_stream": end_of_stream}),
        );
        match self.mode() {
            "mutate" => {
                self.add_http_response_header("x-probe-resp", "1");
                // Whether the request headers can still be read in the response phase.
                let seen = match raw::header_pairs(MAP_REQUEST_HEADERS) {
                    Got::Ok(Some(map)) => {
                        format!("count={}", raw::pair_count(&map).map_or(-1, i64::from))
                    }
                    Got::Ok(None) => "none".into(),
                    Got::Status(n) => format!("status={n}"),
                };
                self.add_http_response_header("x-probe-request-headers", &seen);
            }
            "properties-log" => self.at_response = properties(&self.paths),
            _ => {}
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.event(
            "response_body",
            json!({"body_size": size, "end_of_stream": end_of_stream}),
        );
        if self.mode() == "late-headers" {
            self.late_view(if end_of_stream { "body end" } else { "body" });
        }
        if self.mode() != "body-resp" {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.uppercase_body(self.get_http_response_body(0, size));
        self.set_http_response_body(0, size, &body);
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, num_trailers: usize) -> Action {
        self.event("response_trailers", json!({ "num_trailers": num_trailers }));
        Action::Continue
    }

    fn on_log(&mut self) {
        let detail = json!({
            "root": self.root_id,
            "plugin_name": prop_text(&["plugin_name"]),
            "plugin_root_id": prop_text(&["plugin_root_id"]),
            "plugin_vm_id": prop_text(&["plugin_vm_id"]),
        });
        self.event("log", detail);
        self.save_order();
        if self.mode() == "late-headers" {
            self.late_view("log");
            let list = Value::from(std::mem::take(&mut self.late));
            raw::set_shared("late-last", list.to_string().as_bytes(), 0);
        }
        if self.mode() == "properties-log" {
            let body = json!({
                "response_headers": self.at_response,
                "log": properties(&self.paths),
            });
            raw::set_shared("properties-last", body.to_string().as_bytes(), 0);
        }
    }
}

impl Drop for Probe {
    /// The SDK drops a context in proxy_on_delete; that is the only sign of it a plugin gets.
    fn drop(&mut self) {
        self.event("delete", Value::Null);
        self.save_order();
    }
}
