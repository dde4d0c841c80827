//! Turns a snapshot's WasmPlugins into loaded plugins. File modules (and remote modules the
//! cache already holds, when the pull policy allows using it) are read and compiled at the
//! swap, as before. Remote modules that need the network are installed *pending*: a task on
//! the pull thread fetches (`meshgate-pull`: OCI images, `http(s)://`, cache, retries),
//! compiles and then activates them in place, without another swap. Until then — and when the
//! fetch fails — a previous version of the same WasmPlugin keeps serving (last-known-good), or
//! requests follow the plugin's failStrategy. A plugin that cannot be loaded is kept with its
//! reason, for its failStrategy and for `/config_dump`; it never stops a swap.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use meshgate_config::model::wasm_plugin::PullPolicy as SpecPullPolicy;
use meshgate_config::snapshot::{EnvValue, Plugin as PluginSpec, PluginSource};
use meshgate_pull::cache::Lease;
use meshgate_pull::{
    Credentials, DockerConfig, Fetched, Fetcher, ImageRef, PullPolicy, Request, SecretStore, Source,
};
use meshgate_wasm::{Engine, EngineOptions, Plugin, PluginConfig};
use sha2::{Digest, Sha256};

/// Largest module meshgate reads from a file.
const MAX_MODULE_BYTES: usize = meshgate_pull::MAX_MODULE_BYTES;

/// Where a plugin's module is.
#[derive(Debug)]
pub enum LoadState {
    /// Being fetched in the background.
    Pending,
    /// Compiled and serving.
    Loaded {
        /// The plugin.
        plugin: Plugin,
        /// sha256 of the module's bytes.
        digest: [u8; 32],
        /// Keeps the module in the on-disk cache while it serves.
        _lease: Option<Lease>,
    },
    /// Could not be loaded (a fetch is retried later for remote modules).
    Failed(String),
}

/// What the fetch of a remote module found, for dumps.
#[derive(Debug, Clone, Default)]
pub struct PullInfo {
    /// The image manifest's digest (OCI).
    pub manifest_digest: Option<String>,
    /// The image layout the module was found in (OCI).
    pub layout: Option<String>,
    /// When the module was pulled from the network (Unix seconds).
    pub pulled_at: Option<u64>,
    /// Taken from the on-disk cache.
    pub from_cache: bool,
    /// The last fetch error, kept until a fetch succeeds.
    pub last_error: Option<String>,
    /// Fetch attempts (each with its own retries).
    pub attempts: u32,
    /// Serving a cached copy because the registry could not be reached (`Always` policy).
    pub stale: bool,
}

/// A WasmPlugin of the current snapshot, loaded, pending or failed.
#[derive(Debug)]
pub struct LoadedPlugin {
    /// The compiled WasmPlugin.
    pub spec: Arc<PluginSpec>,
    state: ArcSwap<LoadState>,
    /// The previous version of this WasmPlugin, serving until this one is loaded.
    fallback: ArcSwapOption<LoadedPlugin>,
    info: Mutex<PullInfo>,
}

impl LoadedPlugin {
    fn new(spec: Arc<PluginSpec>, state: LoadState) -> LoadedPlugin {
        LoadedPlugin {
            spec,
            state: ArcSwap::from_pointee(state),
            fallback: ArcSwapOption::empty(),
            info: Mutex::new(PullInfo::default()),
        }
    }

    /// The current load state (a lock-free read).
    pub fn load_state(&self) -> arc_swap::Guard<Arc<LoadState>> {
        self.state.load()
    }

    /// `loaded`, `pending`, or `failed: REASON`, for dumps.
    pub fn state(&self) -> String {
        match &**self.state.load() {
            LoadState::Loaded { .. } => "loaded".to_owned(),
            LoadState::Pending => "pending".to_owned(),
            LoadState::Failed(e) => format!("failed: {e}"),
        }
    }

    /// sha256 of this version's module, once loaded.
    pub fn digest(&self) -> Option<[u8; 32]> {
        match &**self.state.load() {
            LoadState::Loaded { digest, .. } => Some(*digest),
            _ => None,
        }
    }

    /// The loaded plugin, if this version is loaded.
    pub fn plugin(&self) -> Option<Plugin> {
        match &**self.state.load() {
            LoadState::Loaded { plugin, .. } => Some(plugin.clone()),
            _ => None,
        }
    }

    /// The previous version, read without cloning it (the request path).
    pub fn fallback_guard(&self) -> arc_swap::Guard<Option<Arc<LoadedPlugin>>> {
        self.fallback.load()
    }

    /// The previous version serving in this one's place, if any.
    pub fn fallback(&self) -> Option<Arc<LoadedPlugin>> {
        self.fallback.load_full()
    }

    /// What the fetch found.
    pub fn pull_info(&self) -> PullInfo {
        self.info.lock().map(|i| i.clone()).unwrap_or_default()
    }

    /// The version that serves requests: this one once loaded, else the previous one (when
    /// loaded), else none.
    pub fn serving(self: &Arc<Self>) -> Option<Arc<LoadedPlugin>> {
        if matches!(&**self.state.load(), LoadState::Loaded { .. }) {
            return Some(self.clone());
        }
        self.fallback
            .load_full()
            .filter(|f| matches!(&**f.state.load(), LoadState::Loaded { .. }))
    }

    fn set_info(&self, f: impl FnOnce(&mut PullInfo)) {
        if let Ok(mut i) = self.info.lock() {
            f(&mut i);
        }
    }
}

/// How remote modules are fetched (`meshgate run` flags).
#[derive(Debug, Clone)]
pub struct PullSettings {
    /// Registries reached over plain HTTP (`--insecure-registry`).
    pub insecure_registries: Vec<String>,
    /// Default registry credentials (`--docker-config`).
    pub docker_config: Option<PathBuf>,
    /// Mounted Secrets `imagePullSecret` names (`--image-pull-secrets`).
    pub pull_secrets_dir: Option<PathBuf>,
    /// Extra CA certificates for `https://` modules and registries (`--wasm-ca-file`).
    pub ca_files: Vec<PathBuf>,
    /// Where fetched modules are kept (`None`: not on disk).
    pub module_cache_dir: Option<PathBuf>,
    /// Bound on the module cache (`--wasm-cache-max-bytes`).
    pub cache_max_bytes: u64,
    /// How long after a failed fetch the next attempt starts (`--wasm-pull-retry-period`).
    pub retry_period: Duration,
}

impl Default for PullSettings {
    fn default() -> Self {
        PullSettings {
            insecure_registries: Vec::new(),
            docker_config: None,
            pull_secrets_dir: None,
            ca_files: Vec::new(),
            module_cache_dir: None,
            cache_max_bytes: meshgate_pull::cache::DEFAULT_MAX_BYTES,
            retry_period: Duration::from_secs(30),
        }
    }
}

/// The fetcher and credentials, built when a first remote plugin needs them.
#[derive(Debug)]
struct PullCtx {
    fetcher: Fetcher,
    secrets: Option<SecretStore>,
    docker: Option<DockerConfig>,
    retry_period: Duration,
}

/// Pull counters for `/stats/prometheus`.
#[derive(Debug, Default)]
pub struct PullMetrics {
    pulls: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl PullMetrics {
    fn count(&self, plugin: &str, result: &'static str) {
        if let Ok(mut m) = self.pulls.lock() {
            *m.entry((plugin.to_owned(), result)).or_insert(0) += 1;
        }
    }

    /// `(plugin, result, count)` for every pull result seen.
    pub fn snapshot(&self) -> Vec<(String, &'static str, u64)> {
        self.pulls
            .lock()
            .map(|m| m.iter().map(|((p, r), n)| (p.clone(), *r, *n)).collect())
            .unwrap_or_default()
    }
}

/// The process's wasm runtime: the engine (created when a first plugin needs it), where
/// precompiled modules are cached, and how remote modules are fetched.
#[derive(Debug, Default)]
pub struct Runtime {
    engine: OnceLock<Result<Arc<Engine>, String>>,
    cache_dir: Option<PathBuf>,
    node: super::node::NodeIdentity,
    settings: PullSettings,
    pull: OnceLock<Result<Arc<PullCtx>, String>>,
    thread: OnceLock<Result<tokio::runtime::Handle, String>>,
    /// Pull counters.
    pub metrics: Arc<PullMetrics>,
}

impl Runtime {
    /// A runtime caching compiled modules in `cache_dir` (`None`: in memory only), for a
    /// gateway whose node identity plugins see is `node`, fetching remote modules as
    /// `settings` say.
    pub fn new(
        cache_dir: Option<PathBuf>,
        node: super::node::NodeIdentity,
        settings: PullSettings,
    ) -> Runtime {
        Runtime {
            engine: OnceLock::new(),
            cache_dir,
            node,
            settings,
            pull: OnceLock::new(),
            thread: OnceLock::new(),
            metrics: Arc::default(),
        }
    }

    /// The node identity plugins see.
    pub fn node(&self) -> &super::node::NodeIdentity {
        &self.node
    }

    /// The engine, if one was created.
    pub fn engine_if_started(&self) -> Option<&Arc<Engine>> {
        self.engine.get().and_then(|e| e.as_ref().ok())
    }

    /// The module cache's counters, once a remote plugin was configured.
    pub fn module_cache_stats(&self) -> Option<meshgate_pull::CacheStats> {
        let ctx = self.pull.get()?.as_ref().ok()?;
        ctx.fetcher.cache().map(|c| c.stats())
    }

    fn engine(&self) -> Result<&Arc<Engine>, String> {
        self.engine
            .get_or_init(|| {
                if let Some(dir) = &self.cache_dir {
                    if let Err(e) = std::fs::create_dir_all(dir) {
                        tracing::warn!(dir = %dir.display(), error = %e, "wasm cache directory unusable; compiling without it");
                        return Engine::new(EngineOptions::default()).map_err(|e| e.to_string());
                    }
                }
                Engine::new(EngineOptions {
                    cache_dir: self.cache_dir.clone(),
                    ..EngineOptions::default()
                })
                .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    fn pull_ctx(&self) -> Result<&Arc<PullCtx>, String> {
        self.pull
            .get_or_init(|| build_pull_ctx(&self.settings).map(Arc::new))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The pull thread's runtime: its own thread, so fetches never run on a worker or hold
    /// up the control thread.
    fn pull_thread(&self) -> Result<&tokio::runtime::Handle, String> {
        self.thread
            .get_or_init(|| {
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::Builder::new()
                    .name("meshgate-pull".into())
                    .spawn(move || {
                        let rt = match tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            Ok(rt) => rt,
                            Err(e) => {
                                let _ = tx.send(Err(e.to_string()));
                                return;
                            }
                        };
                        let _ = tx.send(Ok(rt.handle().clone()));
                        rt.block_on(std::future::pending::<()>());
                    })
                    .map_err(|e| e.to_string())?;
                rx.recv().map_err(|e| e.to_string())?
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Loads the plugins of a snapshot, reusing what `previous` loaded for an identical
    /// WasmPlugin whose module did not change (so its VMs live on).
    pub fn load_all(
        &self,
        specs: &[Arc<PluginSpec>],
        previous: &[Arc<LoadedPlugin>],
    ) -> Vec<Arc<LoadedPlugin>> {
        // Each spec is serialized once to compare it with the previous snapshot's plugins.
        let previous: Vec<(Option<String>, &Arc<LoadedPlugin>)> = previous
            .iter()
            .map(|p| (serde_json::to_string(&*p.spec).ok(), p))
            .collect();
        let loaded: Vec<Arc<LoadedPlugin>> = specs
            .iter()
            .map(|spec| {
                let text = serde_json::to_string(&**spec).ok();
                let old = previous
                    .iter()
                    .find(|(t, _)| t.is_some() && *t == text)
                    .map(|(_, p)| *p);
                let remote = !matches!(spec.source, PluginSource::File(_));
                if let Some(old) = old {
                    let state = old.load_state();
                    match &**state {
                        // A pinned digest or a remote module: an unchanged spec means
                        // unchanged bytes (a remote one still pending or failing is being
                        // fetched and retried by its task).
                        LoadState::Loaded { .. } if spec.sha256.is_some() || remote => {
                            return old.clone()
                        }
                        LoadState::Pending | LoadState::Failed(_) if remote => return old.clone(),
                        _ => {}
                    }
                }
                if remote {
                    // The same WasmPlugin's previous version serves until this one loads.
                    let fallback = previous
                        .iter()
                        .find(|(_, p)| p.spec.name == spec.name)
                        .and_then(|(_, p)| p.serving());
                    return self.load_remote(spec, fallback);
                }
                let fetched = read_file(&spec.source).map(|b| {
                    let d: [u8; 32] = Sha256::digest(&b).into();
                    (b, d)
                });
                if let (Some(old), Ok((_, d))) = (old, &fetched) {
                    if old.digest() == Some(*d) {
                        return old.clone();
                    }
                }
                let state = match fetched.and_then(|(b, d)| {
                    check_file_pin(spec, &d)?;
                    let engine = self.engine()?;
                    compile(engine, spec, &b, d).map(|p| (p, d))
                }) {
                    Ok((plugin, digest)) => LoadState::Loaded {
                        plugin,
                        digest,
                        _lease: None,
                    },
                    Err(e) => {
                        tracing::warn!(plugin = %spec.name, source = %spec.source, error = %e, "WasmPlugin not loaded");
                        LoadState::Failed(e)
                    }
                };
                Arc::new(LoadedPlugin::new(spec.clone(), state))
            })
            .collect();
        // Compiled modules no plugin uses any more are forgotten.
        if let Some(engine) = self.engine_if_started() {
            let keep: Vec<[u8; 32]> = loaded
                .iter()
                .flat_map(|p| [p.digest(), p.fallback().and_then(|f| f.digest())])
                .flatten()
                .collect();
            engine.retain_modules(&keep);
        }
        loaded
    }

    /// A remote plugin: from the cache now when the pull policy allows, else pending with a
    /// background fetch.
    fn load_remote(
        &self,
        spec: &Arc<PluginSpec>,
        fallback: Option<Arc<LoadedPlugin>>,
    ) -> Arc<LoadedPlugin> {
        let failed = |e: String| {
            tracing::warn!(plugin = %spec.name, source = %spec.source, error = %e, "WasmPlugin not loaded");
            Arc::new(LoadedPlugin::new(spec.clone(), LoadState::Failed(e)))
        };
        let ctx = match self.pull_ctx() {
            Ok(c) => c.clone(),
            Err(e) => return failed(e),
        };
        let engine = match self.engine() {
            Ok(e) => e.clone(),
            Err(e) => return failed(e),
        };
        // A cache hit needs no network: load it now, as a file would be.
        if let Ok(req) = request_for(spec, &ctx) {
            if let Some(f) = ctx.fetcher.cached(&req) {
                if let Some(c) = ctx.fetcher.cache() {
                    c.count_lookup(true);
                }
                match activate_state(&engine, spec, &ctx, &f) {
                    Ok(state) => {
                        self.metrics.count(&spec.name, "cache_hit");
                        let lp = LoadedPlugin::new(spec.clone(), state);
                        lp.set_info(|i| record_fetch(i, &f));
                        tracing::info!(plugin = %spec.name, source = %spec.source, sha256 = %meshgate_wasm::hex(&f.digest), "WasmPlugin loaded from the module cache");
                        return Arc::new(lp);
                    }
                    Err(e) => {
                        tracing::warn!(plugin = %spec.name, error = %e, "cached module does not compile; fetching it again")
                    }
                }
            }
        }
        let lp = Arc::new(LoadedPlugin::new(spec.clone(), LoadState::Pending));
        lp.fallback.store(fallback);
        let handle = match self.pull_thread() {
            Ok(h) => h,
            Err(e) => return failed(e),
        };
        handle.spawn(fetch_task(
            Arc::downgrade(&lp),
            ctx,
            engine,
            self.metrics.clone(),
        ));
        lp
    }
}

fn build_pull_ctx(s: &PullSettings) -> Result<PullCtx, String> {
    let mut roots = Vec::new();
    for f in &s.ca_files {
        roots.push(std::fs::read(f).map_err(|e| format!("--wasm-ca-file {}: {e}", f.display()))?);
    }
    let cache = match &s.module_cache_dir {
        Some(dir) => match meshgate_pull::ModuleCache::open(dir, s.cache_max_bytes) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                tracing::warn!(error = %e, "wasm module cache unusable; fetching without it");
                None
            }
        },
        None => None,
    };
    let docker = match &s.docker_config {
        Some(p) => Some(DockerConfig::load(p).map_err(|e| e.to_string())?),
        None => None,
    };
    let fetcher = Fetcher::new(meshgate_pull::FetcherOptions {
        registry: meshgate_pull::oci::RegistryOptions {
            insecure: s.insecure_registries.clone(),
            extra_roots_pem: roots,
            timeout: Some(Duration::from_secs(10)),
        },
        retry: meshgate_pull::retry::RetryPolicy::default(),
        cache,
    })
    .map_err(|e| e.to_string())?;
    Ok(PullCtx {
        fetcher,
        secrets: s.pull_secrets_dir.clone().map(SecretStore::new),
        docker,
        retry_period: s.retry_period,
    })
}

/// The fetch request for a remote WasmPlugin (its credentials read now, so a Secret that
/// changes is seen by the next attempt).
fn request_for(spec: &PluginSpec, ctx: &PullCtx) -> Result<Request, String> {
    let source = match &spec.source {
        PluginSource::Oci { reference } => {
            Source::Oci(ImageRef::parse(reference).map_err(|e| e.to_string())?)
        }
        // A URL names whatever the server answers today: the WasmPlugin must pin the module
        // (Istio makes `sha256` optional here; meshgate does not, see envoy-differences.md).
        PluginSource::Http { url } if spec.sha256.is_none() => {
            return Err(format!(
                "{url}: an http(s):// module needs `sha256` to be set"
            ))
        }
        PluginSource::Http { url } => Source::Http(url.clone()),
        PluginSource::File(p) => return Err(format!("{}: not a remote module", p.display())),
    };
    let credentials = match &source {
        Source::Oci(image) => {
            let config = match &spec.image_pull_secret {
                Some(secret) => {
                    let namespace = spec.name.split('/').next().unwrap_or_default();
                    let store = ctx.secrets.as_ref().ok_or_else(|| {
                        format!("imagePullSecret {namespace}/{secret}: no --image-pull-secrets directory configured")
                    })?;
                    Some(
                        store
                            .docker_config(namespace, secret)
                            .map_err(|e| e.to_string())?,
                    )
                }
                None => ctx.docker.clone(),
            };
            config
                .and_then(|c| c.lookup(image.registry()).cloned())
                .unwrap_or(Credentials::Anonymous)
        }
        Source::Http(_) => Credentials::Anonymous,
    };
    Ok(Request {
        source,
        sha256: spec.sha256,
        policy: match spec.image_pull_policy {
            SpecPullPolicy::UnspecifiedPolicy => PullPolicy::Unspecified,
            SpecPullPolicy::IfNotPresent => PullPolicy::IfNotPresent,
            SpecPullPolicy::Always => PullPolicy::Always,
        },
        credentials,
    })
}

fn record_fetch(i: &mut PullInfo, f: &Fetched) {
    i.manifest_digest = f.manifest_digest.clone();
    i.layout = f.layout.clone();
    i.pulled_at = (f.pulled_at > 0).then_some(f.pulled_at);
    i.from_cache = f.from_cache;
}

/// Compiles a fetched module into a loaded state.
fn activate_state(
    engine: &Arc<Engine>,
    spec: &PluginSpec,
    ctx: &PullCtx,
    f: &Fetched,
) -> Result<LoadState, String> {
    Ok(LoadState::Loaded {
        plugin: compile(engine, spec, &f.module, f.digest)?,
        digest: f.digest,
        _lease: ctx.fetcher.cache().map(|c| c.lease(f.digest)),
    })
}

/// Fetches, compiles and activates one pending plugin; on failure retries on the slow period
/// for as long as the plugin is in the config.
async fn fetch_task(
    weak: Weak<LoadedPlugin>,
    ctx: Arc<PullCtx>,
    engine: Arc<Engine>,
    metrics: Arc<PullMetrics>,
) {
    loop {
        let Some(lp) = weak.upgrade() else { return };
        let spec = lp.spec.clone();
        drop(lp);
        let started = std::time::Instant::now();
        let result = match request_for(&spec, &ctx) {
            Ok(req) => ctx
                .fetcher
                .fetch(&req)
                .await
                .map_err(|e| (e.to_string(), Some(req))),
            Err(e) => Err((e, None)),
        };
        let Some(lp) = weak.upgrade() else { return };
        lp.set_info(|i| i.attempts += 1);
        match result {
            Ok(f) => {
                let state = activate_state(&engine, &spec, &ctx, &f);
                match state {
                    Ok(state) => {
                        metrics.count(
                            &spec.name,
                            if f.from_cache { "cache_hit" } else { "success" },
                        );
                        lp.set_info(|i| {
                            record_fetch(i, &f);
                            i.last_error = None;
                            i.stale = false;
                        });
                        lp.state.store(Arc::new(state));
                        lp.fallback.store(None);
                        tracing::info!(
                            plugin = %spec.name,
                            source = %spec.source,
                            sha256 = %meshgate_wasm::hex(&f.digest),
                            layout = f.layout.as_deref().unwrap_or("-"),
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "WasmPlugin module fetched and loaded"
                        );
                    }
                    Err(e) => {
                        metrics.count(&spec.name, "failure");
                        tracing::warn!(plugin = %spec.name, source = %spec.source, error = %e, "WasmPlugin module does not compile");
                        lp.set_info(|i| i.last_error = Some(e.clone()));
                        lp.state.store(Arc::new(LoadState::Failed(e)));
                    }
                }
                return;
            }
            Err((e, req)) => {
                metrics.count(&spec.name, "failure");
                lp.set_info(|i| i.last_error = Some(e.clone()));
                let serving_previous = lp.fallback().is_some();
                // With `Always` the registry is asked first; when it cannot answer, the copy
                // the cache has from an earlier pull is better than nothing.
                if !serving_previous {
                    if let Some(f) = req.as_ref().and_then(|r| ctx.fetcher.cached_any(r)) {
                        if let Ok(state) = activate_state(&engine, &spec, &ctx, &f) {
                            tracing::warn!(plugin = %spec.name, source = %spec.source, error = %e, sha256 = %meshgate_wasm::hex(&f.digest), "WasmPlugin pull failed; serving the cached copy from an earlier pull");
                            lp.set_info(|i| {
                                record_fetch(i, &f);
                                i.stale = true;
                            });
                            lp.state.store(Arc::new(state));
                            return;
                        }
                    }
                }
                tracing::warn!(
                    plugin = %spec.name,
                    source = %spec.source,
                    error = %e,
                    retry_in = ?ctx.retry_period,
                    serving_previous_version = serving_previous,
                    "WasmPlugin module fetch failed"
                );
                lp.state.store(Arc::new(LoadState::Failed(e)));
                drop(lp);
                tokio::time::sleep(ctx.retry_period).await;
            }
        }
    }
}

/// The plugin of `spec` on the module `bytes` (whose sha256, already known, is `digest`).
fn compile(
    engine: &Engine,
    spec: &PluginSpec,
    bytes: &[u8],
    digest: [u8; 32],
) -> Result<Plugin, String> {
    let module = engine
        .load_digested(bytes, digest)
        .map_err(|e| e.to_string())?;
    Ok(engine.plugin(config_of(spec), module))
}

/// For a file module, a `sha256` given must match.
fn check_file_pin(spec: &PluginSpec, digest: &[u8; 32]) -> Result<(), String> {
    match spec.sha256 {
        Some(want) if want != *digest => Err(format!(
            "sha256 mismatch: the WasmPlugin pins {}, the module is {}",
            meshgate_wasm::hex(&want),
            meshgate_wasm::hex(digest)
        )),
        _ => Ok(()),
    }
}

/// How Istio configures the plugin's Envoy filter: the name `namespace.name`, root id from
/// `pluginName`, the JSON configuration, and the VM environment.
fn config_of(spec: &PluginSpec) -> PluginConfig {
    let mut cfg = PluginConfig::new(spec.name.replacen('/', ".", 1));
    cfg.root_id = spec.root_id.clone();
    if let Some(m) = spec.memory_limit {
        cfg.memory_limit = usize::try_from(m).unwrap_or(usize::MAX);
    }
    if let Some(d) = spec.callback_deadline {
        cfg.callback_deadline = d;
    }
    cfg.configuration = Bytes::copy_from_slice(spec.configuration.as_bytes());
    cfg.env = spec
        .env
        .iter()
        .filter_map(|(k, v)| match v {
            EnvValue::Inline(v) => Some((k.clone(), v.clone())),
            EnvValue::Host => std::env::var(k).ok().map(|v| (k.clone(), v)),
        })
        .collect();
    cfg
}

/// A file module's bytes.
fn read_file(source: &PluginSource) -> Result<Vec<u8>, String> {
    match source {
        PluginSource::File(path) => {
            let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
            if meta.len() > MAX_MODULE_BYTES as u64 {
                return Err(format!(
                    "{}: larger than {MAX_MODULE_BYTES} bytes",
                    path.display()
                ));
            }
            std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
        }
        other => Err(format!("{other}: not a file")),
    }
}
