//! The wasmtime engine all plugins share: Cranelift, epoch interruption driven by one ticker
//! thread, and an on-disk cache of precompiled code keyed by the module's content, so a
//! restart loads plugins without compiling them. Modules are also kept in memory by sha256.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::{Config, InstancePre, Linker, Module, OptLevel};

use crate::code_cache::CodeCache;
use crate::epoch::Clock;
use crate::error::WasmError;
use crate::metrics::MetricRegistry;
use crate::plugin::{Plugin, PluginConfig, PluginShared, PluginStats};
use crate::shared::SharedState;
use crate::state::VmState;

/// How to build the engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Where precompiled modules are kept across restarts (`None`: no disk cache).
    pub cache_dir: Option<PathBuf>,
    /// How often the epoch advances; callback deadlines are counted in these ticks.
    pub epoch_tick: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            cache_dir: None,
            epoch_tick: Duration::from_millis(5),
        }
    }
}

/// Which ABI a module was built for (the `proxy_abi_version_*` export it has).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbiVersion {
    /// 0.1.0: header callbacks without `end_of_stream`.
    V0_1_0,
    /// 0.2.0.
    V0_2_0,
    /// 0.2.1.
    V0_2_1,
}

/// A module compiled and linked against the host, ready to instantiate on any worker.
#[derive(Clone)]
pub struct CompiledModule {
    /// sha256 of the module's bytes.
    pub digest: [u8; 32],
    /// Size of the module's bytes.
    pub size: usize,
    /// Its ABI version.
    pub abi: AbiVersion,
    /// The module reads headers or properties after they went upstream (so the host keeps a
    /// copy of the request head for it).
    pub(crate) reads_request: bool,
    pub(crate) pre: InstancePre<VmState>,
    /// The module that runs a stream's last callbacks in one entry (`vm::ending`), for a
    /// module that exports all three.
    pub(crate) ending: Option<Module>,
    /// The module that runs a whole response in one entry (`vm::whole`), for a module of ABI
    /// 0.2 that exports the callbacks it calls.
    pub(crate) whole: Option<Module>,
    /// The module that starts a stream in one entry (`vm::start`), likewise.
    pub(crate) start: Option<Module>,
}

impl std::fmt::Debug for CompiledModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledModule")
            .field("digest", &hex(&self.digest))
            .field("size", &self.size)
            .field("abi", &self.abi)
            .finish()
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The shared wasm engine.
pub struct Engine {
    engine: wasmtime::Engine,
    linker: Linker<VmState>,
    modules: Mutex<HashMap<[u8; 32], CompiledModule>>,
    cache: Option<CodeCache>,
    epoch_tick: Duration,
    clock: Arc<Clock>,
    /// Compiled (or found in the code cache) with the first plugin's module: starting the
    /// compiler for it at every start would cost an engine without plugins, or with cached
    /// ones, megabytes of memory.
    ending: std::sync::OnceLock<Module>,
    /// The same for the module that runs whole responses (`vm::whole`).
    whole: std::sync::OnceLock<Module>,
    /// And for the one that starts streams (`vm::start`).
    start: std::sync::OnceLock<Module>,
    /// Shared data and queues of every plugin.
    pub shared: Arc<SharedState>,
    /// Metrics plugins defined.
    pub metrics: Arc<MetricRegistry>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl Engine {
    /// Builds the engine and starts its epoch ticker thread (which ends with the engine).
    pub fn new(opts: EngineOptions) -> Result<Arc<Engine>, WasmError> {
        let err = |e: wasmtime::Error| WasmError::Engine(format!("{e:#}"));
        let mut config = Config::new();
        config.cranelift_opt_level(OptLevel::Speed);
        config.epoch_interruption(true);
        // Tables filled at instantiation (a few microseconds per VM start) instead of on first
        // use: an indirect call, which the SDKs' dispatch makes in every callback, then needs
        // no check for a slot still to be filled.
        config.table_lazy_init(false);
        let engine = wasmtime::Engine::new(&config).map_err(err)?;
        let cache = opts
            .cache_dir
            .as_deref()
            .map(|dir| CodeCache::new(dir, &engine));
        let mut linker = Linker::new(&engine);
        crate::abi::link(&mut linker).map_err(err)?;
        let tick = opts.epoch_tick.max(Duration::from_millis(1));
        let clock = Arc::new(Clock::default());
        Clock::start(clock.clone(), engine.weak(), tick)
            .map_err(|e| WasmError::Engine(format!("starting the epoch thread: {e}")))?;
        Ok(Arc::new(Engine {
            engine,
            linker,
            modules: Mutex::new(HashMap::new()),
            cache,
            epoch_tick: tick,
            clock,
            ending: std::sync::OnceLock::new(),
            whole: std::sync::OnceLock::new(),
            start: std::sync::OnceLock::new(),
            shared: Arc::default(),
            metrics: Arc::default(),
        }))
    }

    /// The epoch tick (deadline granularity).
    pub fn epoch_tick(&self) -> Duration {
        self.epoch_tick
    }

    /// Hits and misses of the on-disk cache of precompiled code.
    pub fn cache_stats(&self) -> (usize, usize) {
        self.cache.as_ref().map_or((0, 0), CodeCache::stats)
    }

    /// Compiles (or finds, by content) a module and links it against the host.
    pub fn load(&self, bytes: &[u8]) -> Result<CompiledModule, WasmError> {
        self.load_digested(bytes, Sha256::digest(bytes).into())
    }

    /// [`Engine::load`] for a caller that already hashed the bytes (`digest` must be their
    /// sha256: modules are found by it).
    pub fn load_digested(
        &self,
        bytes: &[u8],
        digest: [u8; 32],
    ) -> Result<CompiledModule, WasmError> {
        if let Some(m) = self.lock_modules().get(&digest) {
            return Ok(m.clone());
        }
        let module = self.compile_cached(bytes, &digest, true)?;
        let exported = |n: &str| module.exports().any(|e| e.name() == n);
        let abi = if exported("proxy_abi_version_0_2_1") {
            AbiVersion::V0_2_1
        } else if exported("proxy_abi_version_0_2_0") {
            AbiVersion::V0_2_0
        } else if exported("proxy_abi_version_0_1_0") {
            AbiVersion::V0_1_0
        } else {
            return Err(WasmError::NotProxyWasm);
        };
        let reads_request = module.imports().any(|i| {
            matches!(
                i.name(),
                "proxy_get_header_map_value"
                    | "proxy_get_header_map_pairs"
                    | "proxy_get_header_map_size"
                    | "proxy_get_property"
            )
        });
        // The host's modules that call several callbacks in one entry, for a module that
        // exports all they call (those with an end-of-stream flag only from ABI 0.2).
        let host = |slot, wat, callbacks: &[&str], v2: bool| -> Result<Option<Module>, WasmError> {
            if (v2 && abi == AbiVersion::V0_1_0) || !callbacks.iter().all(|n| exported(n)) {
                return Ok(None);
            }
            self.host_module(slot, wat).map(Some)
        };
        use crate::vm::{ending, start, whole};
        let ending = host(&self.ending, ending::WAT, &ending::CALLBACKS, false)?;
        let start = host(&self.start, start::WAT, &start::CALLBACKS, true)?;
        let whole = host(&self.whole, whole::WAT, &whole::CALLBACKS, true)?;
        let pre = self.linker.instantiate_pre(&module).map_err(|e| {
            let text = format!("{e:#}");
            match module
                .imports()
                .find(|i| text.contains(&format!("`{}::{}`", i.module(), i.name())))
            {
                Some(i) => WasmError::MissingImport {
                    module: i.module().to_owned(),
                    name: i.name().to_owned(),
                },
                None => WasmError::Compile(text),
            }
        })?;
        let compiled = CompiledModule {
            digest,
            size: bytes.len(),
            abi,
            reads_request,
            pre,
            ending,
            whole,
            start,
        };
        self.lock_modules().insert(digest, compiled.clone());
        Ok(compiled)
    }

    /// One of the host's own modules (`vm::start`, `vm::ending`, `vm::whole`), compiled once
    /// from `wat` into `slot`, from the code cache when it is there.
    fn host_module(
        &self,
        slot: &std::sync::OnceLock<Module>,
        wat: &str,
    ) -> Result<Module, WasmError> {
        if let Some(m) = slot.get() {
            return Ok(m.clone());
        }
        let wat = wat.as_bytes();
        let module = self.compile_cached(wat, &Sha256::digest(wat).into(), false)?;
        Ok(slot.get_or_init(|| module).clone())
    }

    /// The module compiled from `bytes` (whose sha256 is `digest`): from the code cache when it
    /// is there (a hit or a miss in the counts when `counted`), else compiled and cached.
    fn compile_cached(
        &self,
        bytes: &[u8],
        digest: &[u8; 32],
        counted: bool,
    ) -> Result<Module, WasmError> {
        let cached = self.cache.as_ref().and_then(|c| {
            if counted {
                c.load(&self.engine, digest)
            } else {
                c.load_uncounted(&self.engine, digest)
            }
        });
        if let Some(m) = cached {
            return Ok(m);
        }
        // Binary modules skip the text-format check; WAT is accepted for tests and tools.
        let m = if bytes.starts_with(b"\0asm") {
            Module::from_binary(&self.engine, bytes)
        } else {
            Module::new(&self.engine, bytes)
        }
        .map_err(|e| WasmError::Compile(format!("{e:#}")))?;
        if let Some(c) = &self.cache {
            c.store(digest, &m);
        }
        Ok(m)
    }

    /// A plugin running `module` with `config`.
    pub fn plugin(&self, config: PluginConfig, module: CompiledModule) -> Plugin {
        Plugin(Arc::new(PluginShared {
            config,
            module,
            shared: self.shared.clone(),
            metrics: self.metrics.clone(),
            stats: PluginStats::default(),
            epoch_tick: self.epoch_tick,
            clock: self.clock.clone(),
        }))
    }

    /// A plugin running `module` with `config` whose shared data, queues and metrics are its
    /// own rather than the engine's (for tests and tools that run plugins side by side and
    /// read what each did; the gateway uses [`Engine::plugin`]).
    pub fn isolated_plugin(&self, config: PluginConfig, module: CompiledModule) -> Plugin {
        Plugin(Arc::new(PluginShared {
            config,
            module,
            shared: Arc::default(),
            metrics: Arc::default(),
            stats: PluginStats::default(),
            epoch_tick: self.epoch_tick,
            clock: self.clock.clone(),
        }))
    }

    /// Every function the host gives modules, as (import module, name) pairs sorted by
    /// both: read off the linker itself, so it is what a module can actually import.
    pub fn host_functions(&self) -> Result<Vec<(String, String)>, WasmError> {
        // The linker lists its definitions against a store, so one VM of an empty module is
        // started to provide it.
        let module = self.load(br#"(module (func (export "proxy_abi_version_0_2_1")))"#)?;
        let plugin = self.isolated_plugin(PluginConfig::new("host-functions"), module);
        let mut vm = crate::vm::PluginVm::start(&plugin, std::rc::Rc::new(crate::host::NoHost))?;
        let mut out: Vec<(String, String)> = self
            .linker
            .iter(vm.store_mut())
            .map(|(m, n, _)| (m.to_owned(), n.to_owned()))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Forgets modules no plugin uses any more (`keep`: digests still in use).
    pub fn retain_modules(&self, keep: &[[u8; 32]]) {
        self.lock_modules().retain(|d, _| keep.contains(d));
    }

    fn lock_modules(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], CompiledModule>> {
        self.modules.lock().unwrap_or_else(|p| p.into_inner())
    }
}
