//! hostile: misbehaves on purpose in exactly one callback, to test how a host contains a bad
//! plugin. Config `{"callback": "...", "kind": "loop"|"panic"|"alloc"|"garbage"|"refuse"}`; in
//! every other callback, and on streams with `x-hostile: off`, it must pass through untouched.
//! The plan is read from the plugin configuration, or from the VM configuration when that is
//! empty (the only one a host is sure to expose in on_vm_start).

use std::hint::black_box;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

const BUFFER_VM_CONFIGURATION: u32 = 6;
const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Callback {
    VmStart,
    Configure,
    RequestHeaders,
    RequestBody,
    ResponseHeaders,
    ResponseBody,
    Log,
    Tick,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// Spins forever.
    Loop,
    /// Panics, which on wasm32 is an `unreachable` trap.
    Panic,
    /// Allocates and touches memory until the allocator fails (then aborts: a trap).
    Alloc,
    /// Calls the host with out-of-range enum values and out-of-bounds pointers, logs the
    /// statuses it got (and adds them as `x-hostile-garbage` where headers can be edited), then
    /// goes on normally. The SDK's Action and bool returns are closed types, so an out-of-range
    /// return value cannot be expressed without undefined behaviour; these calls stand in.
    Garbage,
    /// Returns false from on_vm_start or on_configure (only valid for those).
    Refuse,
}

#[derive(Clone, Copy, Debug)]
struct Plan {
    callback: Callback,
    kind: Kind,
}

fn parse(config: &[u8]) -> Result<Option<Plan>, String> {
    if config.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: serde_json::Value =
        serde_json::from_slice(config).map_err(|e| format!("config is not JSON: {e}"))?;
    let field = |name: &str| {
        value
            .get(name)
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| format!("config needs a string {name:?}"))
    };
    let callback = match field("callback")? {
        "vm_start" => Callback::VmStart,
        "configure" => Callback::Configure,
        "request_headers" => Callback::RequestHeaders,
        "request_body" => Callback::RequestBody,
        "response_headers" => Callback::ResponseHeaders,
        "response_body" => Callback::ResponseBody,
        "log" => Callback::Log,
        "tick" => Callback::Tick,
        other => return Err(format!("unknown callback {other:?}")),
    };
    let kind = match field("kind")? {
        "loop" => Kind::Loop,
        "panic" => Kind::Panic,
        "alloc" => Kind::Alloc,
        "garbage" => Kind::Garbage,
        "refuse" => Kind::Refuse,
        other => return Err(format!("unknown kind {other:?}")),
    };
    if kind == Kind::Refuse && !matches!(callback, Callback::VmStart | Callback::Configure) {
        return Err("refuse is only for vm_start and configure".into());
    }
    Ok(Some(Plan { callback, kind }))
}

mod raw {
    use std::ptr::null_mut;

    #[link(wasm_import_module = "env")]
    extern "C" {
        fn proxy_log(level: u32, data: *const u8, size: usize) -> u32;
        fn proxy_get_header_map_pairs(map_type: u32, data: *mut *mut u8, size: *mut usize) -> u32;
        fn proxy_set_header_map_pairs(map_type: u32, data: *const u8, size: usize) -> u32;
        fn proxy_get_buffer_bytes(
            buffer_type: u32,
            start: usize,
            max_size: usize,
            data: *mut *mut u8,
            size: *mut usize,
        ) -> u32;
        fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
        fn proxy_continue_stream(stream_type: u32) -> u32;
        fn proxy_get_property(
            path: *const u8,
            path_size: usize,
            data: *mut *mut u8,
            size: *mut usize,
        ) -> u32;
        fn proxy_define_metric(metric_type: u32, name: *const u8, size: usize, id: *mut u32)
            -> u32;
        fn proxy_set_effective_context(context_id: u32) -> u32;
    }

    /// An address far past any memory this module will have.
    const WILD: usize = 0xffff_ff00;

    pub fn buffer(buffer_type: u32) -> Option<Vec<u8>> {
        let (mut data, mut size) = (null_mut(), 0);
        // SAFETY: out-pointers are locals; on Ok the host's data came from our allocator.
        unsafe {
            if proxy_get_buffer_bytes(buffer_type, 0, usize::MAX, &mut data, &mut size) != 0
                || data.is_null()
            {
                return None;
            }
            Some(Vec::from_raw_parts(data, size, size))
        }
    }

    /// Each bad call and the status the host returned, as `name=status;...`.
    pub fn garbage() -> String {
        let message = b"hostile: log at level 99";
        // A serialized header map that claims u32::MAX pairs in four bytes.
        let bad_map = u32::MAX.to_le_bytes();
        let (mut data, mut size) = (null_mut::<u8>(), 0usize);
        let wild = WILD as *mut u8;
        // SAFETY: the host is the one that must cope: every pointer we pass is either a live
        // local or WILD, which the host must refuse to touch; we never dereference WILD.
        let calls: [(&str, u32); 10] = unsafe {
            [
                (
                    "log_level_99",
                    proxy_log(99, message.as_ptr(), message.len()),
                ),
                ("log_wild_pointer", proxy_log(2, wild, 4096)),
                (
                    "get_map_type_99",
                    proxy_get_header_map_pairs(99, &mut data, &mut size),
                ),
                (
                    "set_map_bad_count",
                    proxy_set_header_map_pairs(0, bad_map.as_ptr(), 4),
                ),
                (
                    "get_buffer_type_99",
                    proxy_get_buffer_bytes(99, 0, 16, &mut data, &mut size),
                ),
                (
                    "time_wild_out_pointer",
                    proxy_get_current_time_nanoseconds(wild.cast()),
                ),
                ("continue_stream_type_99", proxy_continue_stream(99)),
                (
                    "property_wild_path",
                    proxy_get_property(wild, 64, &mut data, &mut size),
                ),
                (
                    "define_metric_type_99",
                    proxy_define_metric(99, message.as_ptr(), 4, &mut 0),
                ),
                (
                    "effective_context_bogus",
                    proxy_set_effective_context(0xdead_beef),
                ),
            ]
        };
        calls
            .iter()
            .map(|(name, status)| format!("{name}={status}"))
            .collect::<Vec<_>>()
            .join(";")
    }

    pub fn config(buffer_type: u32) -> Vec<u8> {
        buffer(buffer_type).unwrap_or_default()
    }

    pub const VM: u32 = super::BUFFER_VM_CONFIGURATION;
    pub const PLUGIN: u32 = super::BUFFER_PLUGIN_CONFIGURATION;
}

fn log(level: LogLevel, message: &str) {
    let _ = proxy_wasm::hostcalls::log(level, message);
}

/// Does the planned harm. Returns only for Garbage (with the statuses) and Refuse.
fn misbehave(kind: Kind, at: Callback) -> String {
    log(LogLevel::Warn, &format!("hostile: {kind:?} in {at:?}"));
    match kind {
        Kind::Loop => {
            let mut n: u64 = 0;
            loop {
                n = black_box(n.wrapping_add(1));
            }
        }
        Kind::Panic => panic!("hostile: panic in {at:?}"),
        Kind::Alloc => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                let mut chunk = vec![0u8; 1 << 20];
                // Touch every page so the memory is really used.
                for b in chunk.iter_mut().step_by(4096) {
                    *b = 1;
                }
                hoard.push(black_box(chunk));
            }
        }
        Kind::Garbage => {
            let report = raw::garbage();
            log(
                LogLevel::Info,
                &format!("hostile: garbage in {at:?}: {report}"),
            );
            report
        }
        Kind::Refuse => String::new(),
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(Root { plan: None }));
}}

struct Root {
    plan: Option<Plan>,
}

impl Root {
    /// Misbehaves if the plan says so for `at`; false only for Refuse.
    fn hit(&self, at: Callback) -> bool {
        match self.plan {
            Some(plan) if plan.callback == at => {
                misbehave(plan.kind, at);
                plan.kind != Kind::Refuse
            }
            _ => true,
        }
    }

    fn read_plan(&mut self, sources: &[u32]) -> bool {
        for &source in sources {
            let config = raw::config(source);
            match parse(&config) {
                Ok(None) => continue,
                Ok(Some(plan)) => {
                    self.plan = Some(plan);
                    return true;
                }
                Err(e) => {
                    log(LogLevel::Error, &format!("hostile: {e}"));
                    return false;
                }
            }
        }
        true
    }
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        // The plugin configuration may not be readable here; the VM configuration is.
        self.read_plan(&[raw::VM, raw::PLUGIN]) && self.hit(Callback::VmStart)
    }

    fn on_configure(&mut self, _size: usize) -> bool {
        if !self.read_plan(&[raw::PLUGIN, raw::VM]) {
            return false;
        }
        if matches!(self.plan, Some(p) if p.callback == Callback::Tick) {
            self.set_tick_period(Duration::from_millis(100));
        }
        self.hit(Callback::Configure)
    }

    fn on_tick(&mut self) {
        self.hit(Callback::Tick);
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            plan: self.plan,
            off: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    plan: Option<Plan>,
    /// `x-hostile: off` on the request: behave for this whole stream.
    off: bool,
}

impl Stream {
    /// The garbage report when garbage ran here, after doing any other planned harm.
    fn hit(&self, at: Callback) -> Option<String> {
        match self.plan {
            Some(plan) if plan.callback == at && !self.off => Some(misbehave(plan.kind, at)),
            _ => None,
        }
    }
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.off = self.get_http_request_header("x-hostile").as_deref() == Some("off");
        if let Some(report) = self.hit(Callback::RequestHeaders) {
            self.add_http_request_header("x-hostile-garbage", &report);
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, _size: usize, _end_of_stream: bool) -> Action {
        self.hit(Callback::RequestBody);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(report) = self.hit(Callback::ResponseHeaders) {
            self.add_http_response_header("x-hostile-garbage", &report);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, _size: usize, _end_of_stream: bool) -> Action {
        self.hit(Callback::ResponseBody);
        Action::Continue
    }

    fn on_log(&mut self) {
        self.hit(Callback::Log);
    }
}
