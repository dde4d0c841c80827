//! Turns a snapshot's WasmPlugins into loaded plugins on the control thread: fetch the module
//! (a file, or `http://` with a mandatory sha256), check its digest, compile it (or take it
//! from the engine's cache), and set up its configuration. A plugin that cannot be loaded is
//! kept with its reason, for its failStrategy and for `/config_dump`; it never stops a swap.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use meshgate_config::snapshot::{EnvValue, Plugin as PluginSpec, PluginSource};
use meshgate_wasm::{Engine, EngineOptions, Plugin, PluginConfig};
use sha2::{Digest, Sha256};

/// Largest module meshgate fetches.
const MAX_MODULE_BYTES: usize = 64 << 20;

/// A WasmPlugin of the current snapshot, loaded or not.
#[derive(Debug)]
pub struct LoadedPlugin {
    /// The compiled WasmPlugin.
    pub spec: Arc<PluginSpec>,
    /// sha256 of the module's bytes, when they were read.
    pub digest: Option<[u8; 32]>,
    /// The plugin, or why it could not be loaded.
    pub plugin: Result<Plugin, String>,
}

impl LoadedPlugin {
    /// `loaded`, or `failed: REASON`, for dumps.
    pub fn state(&self) -> String {
        match &self.plugin {
            Ok(_) => "loaded".to_owned(),
            Err(e) => format!("failed: {e}"),
        }
    }
}

/// The process's wasm runtime: the engine (created when a first plugin needs it) and where
/// precompiled modules are cached.
#[derive(Debug, Default)]
pub struct Runtime {
    engine: OnceLock<Result<Arc<Engine>, String>>,
    cache_dir: Option<PathBuf>,
    node: super::node::NodeIdentity,
}

impl Runtime {
    /// A runtime caching compiled modules in `cache_dir` (`None`: in memory only), for a
    /// gateway whose node identity plugins see is `node`.
    pub fn new(cache_dir: Option<PathBuf>, node: super::node::NodeIdentity) -> Runtime {
        Runtime {
            engine: OnceLock::new(),
            cache_dir,
            node,
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
                // A pinned digest or a remote module: an unchanged spec means unchanged bytes.
                if let Some(old) = old {
                    if old.plugin.is_ok()
                        && (spec.sha256.is_some() || !matches!(spec.source, PluginSource::File(_)))
                    {
                        return old.clone();
                    }
                }
                let fetched = fetch(&spec.source).map(|b| {
                    let d: [u8; 32] = Sha256::digest(&b).into();
                    (b, d)
                });
                let digest = fetched.as_ref().ok().map(|(_, d)| *d);
                if let (Some(old), Some(d)) = (old, digest) {
                    if old.digest == Some(d) && old.plugin.is_ok() {
                        return old.clone();
                    }
                }
                let plugin = fetched.and_then(|(b, d)| self.build(spec, &b, d));
                if let Err(e) = &plugin {
                    tracing::warn!(plugin = %spec.name, source = %spec.source, error = %e, "WasmPlugin not loaded");
                }
                Arc::new(LoadedPlugin {
                    spec: spec.clone(),
                    digest,
                    plugin,
                })
            })
            .collect();
        // Compiled modules no plugin uses any more are forgotten.
        if let Some(engine) = self.engine_if_started() {
            let keep: Vec<[u8; 32]> = loaded.iter().filter_map(|p| p.digest).collect();
            engine.retain_modules(&keep);
        }
        loaded
    }

    fn build(&self, spec: &PluginSpec, bytes: &[u8], digest: [u8; 32]) -> Result<Plugin, String> {
        match spec.sha256 {
            Some(want) if want != digest => {
                return Err(format!(
                    "sha256 mismatch: the WasmPlugin pins {}, the module is {}",
                    meshgate_wasm::hex(&want),
                    meshgate_wasm::hex(&digest)
                ))
            }
            None if matches!(spec.source, PluginSource::Http { .. }) => {
                return Err("an http(s) module needs `sha256` to be set".to_owned())
            }
            _ => {}
        }
        let engine = self.engine()?;
        let module = engine.load(bytes).map_err(|e| e.to_string())?;
        Ok(engine.plugin(config_of(spec), module))
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

/// The module's bytes.
fn fetch(source: &PluginSource) -> Result<Vec<u8>, String> {
    match source {
        PluginSource::File(path) => {
            let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
            if meta.len() > MAX_MODULE_BYTES as u64 {
                return Err(format!("{}: larger than {MAX_MODULE_BYTES} bytes", path.display()));
            }
            std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
        }
        PluginSource::Http { url } if url.starts_with("http://") => fetch_http(url),
        PluginSource::Http { url } => Err(format!("{url}: https:// fetching is not built yet (serve the module over http:// with sha256, or from a file)")),
        PluginSource::Oci { reference } => Err(format!(
            "oci://{reference}: OCI pulls are not built yet"
        )),
    }
}

/// GETs an `http://` URL on a thread of its own (the caller may be inside a runtime).
fn fetch_http(url: &str) -> Result<Vec<u8>, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let url = url.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), get(uri))
                .await
                .map_err(|_| format!("{url}: timed out after 30 s"))?
                .map_err(|e| format!("{url}: {e}"))
        })
    })
    .join()
    .map_err(|_| "the fetch thread panicked".to_owned())?
}

async fn get(uri: http::Uri) -> Result<Vec<u8>, String> {
    use http_body_util::BodyExt;
    let host = uri.host().ok_or("no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or(host);
    let req = http::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority)
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let body = http_body_util::Limited::new(resp.into_body(), MAX_MODULE_BYTES)
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(body.to_bytes().to_vec())
}
