//! `meshgate run`: load and compile the config, start the control thread (admin, DNS) and
//! the workers, serve until SIGTERM/SIGINT, then drain.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use meshgate::admin::{self, AdminRole};
use meshgate::live::{ProxySettings, Shared};
use meshgate::telemetry::Identity;
use meshgate::upstream::dns;
use meshgate::upstream::locality::Node;
use meshgate::worker::{self, Workers};
use meshgate_config::{compile, CompileOptions, Loaded, Snapshot};

use super::config_dump::parse_labels;

/// Options shared by `run` and `demo`.
#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Worker threads (default: number of cores).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Admin API address (`/ready`, `/stats/prometheus`, `/config_dump`, `/clusters`).
    #[arg(long, default_value = "127.0.0.1:15000")]
    pub admin_addr: SocketAddr,
    /// Readiness port as on istio-ingressgateway (`/healthz/ready`).
    #[arg(long, default_value = "0.0.0.0:15021")]
    pub readiness_addr: SocketAddr,
    /// Prometheus port as on istio-ingressgateway (`/stats/prometheus`).
    #[arg(long, default_value = "0.0.0.0:15090")]
    pub stats_addr: SocketAddr,
    /// Listen on this address instead of each Gateway server's bind address (`0.0.0.0`).
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// This gateway's labels, `k=v[,k=v]` (Gateway selectors match against them).
    #[arg(long, default_value = "istio=ingressgateway")]
    pub labels: String,
    /// This gateway's namespace.
    #[arg(long, default_value = "istio-system")]
    pub namespace: String,
    /// Cluster domain suffix for short host names.
    #[arg(long, default_value = "cluster.local")]
    pub domain_suffix: String,
    /// Keep clients' `x-request-id` (Envoy's `preserve_external_request_id`).
    #[arg(long)]
    pub preserve_external_request_id: bool,
    /// Write an access log line per request, in Istio's default format, to this file (`-`:
    /// standard output), as Istio's `meshConfig.accessLogFile` does. Off by default.
    #[arg(long, value_name = "PATH")]
    pub access_log: Option<String>,
    /// The access log line, as Istio's `meshConfig.accessLogFormat` (TEXT): Envoy command
    /// operators of Istio's default line, plus `%WASM_PLUGINS%` (`name:outcome` of each
    /// WasmPlugin the request met). Default: Istio's default line.
    #[arg(long, value_name = "FORMAT", requires = "access_log")]
    pub access_log_format: Option<String>,
    /// Where compiled WasmPlugin modules are kept, so a restart does not compile them again
    /// (default: `$XDG_CACHE_HOME/meshgate/wasm` or `~/.cache/meshgate/wasm`; `none`: memory only).
    #[arg(long, value_name = "DIR")]
    pub wasm_cache: Option<String>,
    /// Bound on the fetched-module cache (`DIR/modules` under `--wasm-cache`); least recently
    /// used modules are evicted past it (`1073741824`, or with a suffix: `512Mi`, `1Gi`).
    #[arg(long, value_name = "BYTES", default_value = "1Gi", value_parser = parse_bytes)]
    pub wasm_cache_max_bytes: u64,
    /// A registry (`HOST[:PORT]`, or `*`) to pull WasmPlugin images from over plain HTTP;
    /// repeatable. Every other registry is spoken to over HTTPS.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,
    /// A docker config JSON with registry credentials for WasmPlugins without an
    /// `imagePullSecret` (`auths.HOST.auth`, or `username`/`password`).
    #[arg(long, value_name = "FILE")]
    pub docker_config: Option<PathBuf>,
    /// Where the Secrets WasmPlugins name in `imagePullSecret` are mounted:
    /// `DIR/<namespace>/<name>/.dockerconfigjson` (or `DIR/<name>/.dockerconfigjson`).
    #[arg(long, value_name = "DIR")]
    pub image_pull_secrets: Option<PathBuf>,
    /// A PEM file of CA certificates to trust, besides the system's, for `https://` modules
    /// and HTTPS registries; repeatable.
    #[arg(long, value_name = "FILE")]
    pub wasm_ca_file: Vec<PathBuf>,
    /// How long after a failed WasmPlugin fetch (its own retries spent) it is tried again.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub wasm_pull_retry_period: Duration,
    /// This gateway's locality, `region[/zone[/subzone]]` (locality load balancing and
    /// failover of DestinationRule `localityLbSetting`); empty: none.
    #[arg(long, default_value = "", value_parser = parse_locality)]
    pub locality: String,
}

fn parse_locality(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.split('/').collect();
    if s.is_empty() {
        return Ok(String::new());
    }
    if parts.len() > 3 || parts.iter().any(|p| p.contains('*')) || parts[0].is_empty() {
        return Err(format!(
            "locality {s:?} must be region[/zone[/subzone]] without wildcards"
        ));
    }
    Ok(s.to_owned())
}

/// Arguments of `meshgate run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Config files or directories.
    #[arg(long, required = true)]
    pub config: Vec<PathBuf>,
    /// Serving options.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// A byte count, plain or with a binary suffix (`Ki`, `Mi`, `Gi`).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let (num, mult) = match s {
        _ if s.ends_with("Gi") => (&s[..s.len() - 2], 1u64 << 30),
        _ if s.ends_with("Mi") => (&s[..s.len() - 2], 1 << 20),
        _ if s.ends_with("Ki") => (&s[..s.len() - 2], 1 << 10),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a byte count (e.g. 1073741824, 512Mi, 1Gi)"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    meshgate_config::model::common::Duration::parse(s)?
        .to_std()
        .ok_or_else(|| "duration must not be negative".to_owned())
}

/// Compiles `loaded` for the gateway described by `a`, printing diagnostics.
pub fn compile_for(loaded: &Loaded, a: &ServeArgs) -> anyhow::Result<Option<Snapshot>> {
    for d in &loaded.diagnostics {
        eprintln!("{d}");
    }
    if loaded.has_errors() {
        eprintln!("meshgate: config is invalid; not starting");
        return Ok(None);
    }
    match compile(&loaded.set, &compile_options(a)?) {
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("{w}");
            }
            Ok(Some(c.snapshot))
        }
        Err(diags) => {
            for d in diags {
                eprintln!("{d}");
            }
            Ok(None)
        }
    }
}

/// Runs `meshgate run`.
pub fn run(a: &RunArgs) -> anyhow::Result<ExitCode> {
    super::init_tracing();
    let loaded = meshgate_config::load_paths(&a.config, &meshgate_config::LoadOptions::default())?;
    let Some(snapshot) = compile_for(&loaded, &a.serve)? else {
        return Ok(ExitCode::from(1));
    };
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("meshgate-control")
        .enable_all()
        .build()
        .context("starting the control runtime")?;
    let source = meshgate::config_source::FileSource {
        paths: a.config.clone(),
        load: meshgate_config::LoadOptions::default(),
        compile: compile_options(&a.serve)?,
    };
    serve(snapshot, &a.serve, &control, Some(source), |_| {})
}

/// The compile options a gateway started with these arguments uses.
pub fn compile_options(a: &ServeArgs) -> anyhow::Result<CompileOptions> {
    Ok(CompileOptions {
        labels: parse_labels(&a.labels)?,
        namespace: a.namespace.clone(),
        domain_suffix: a.domain_suffix.clone(),
        ..CompileOptions::default()
    })
}

/// Serves `snapshot` until a signal: the part `run` and `demo` share. With a `source`, changes
/// to its files are reloaded (invalid updates are rejected). `on_ready` receives the listening
/// addresses once traffic is accepted.
pub fn serve(
    snapshot: Snapshot,
    a: &ServeArgs,
    control: &tokio::runtime::Runtime,
    source: Option<meshgate::config_source::FileSource>,
    on_ready: impl FnOnce(&[SocketAddr]),
) -> anyhow::Result<ExitCode> {
    let labels = parse_labels(&a.labels)?;
    let shared = Shared::new(
        snapshot,
        ProxySettings {
            preserve_external_request_id: a.preserve_external_request_id,
            access_log: a
                .access_log
                .as_deref()
                .map(|p| meshgate::access_log::AccessLog::open(p, a.access_log_format.as_deref()))
                .transpose()?,
            node: Node::new(&a.locality, labels.clone()),
            // wasmtime owns `DIR/code` (its cleanup deletes files it does not know), the
            // fetched modules live beside it in `DIR/modules`.
            wasm_cache: wasm_cache_dir(a.wasm_cache.as_deref()).map(|d| d.join("code")),
            wasm_pull: meshgate::wasm::PullSettings {
                insecure_registries: a.insecure_registry.clone(),
                docker_config: a.docker_config.clone(),
                pull_secrets_dir: a.image_pull_secrets.clone(),
                ca_files: a.wasm_ca_file.clone(),
                module_cache_dir: wasm_cache_dir(a.wasm_cache.as_deref())
                    .map(|d| d.join("modules")),
                cache_max_bytes: a.wasm_cache_max_bytes,
                retry_period: a.wasm_pull_retry_period,
            },
            wasm_node: meshgate::wasm::node::NodeIdentity::from_env(
                &a.namespace,
                &a.domain_suffix,
                &labels,
            ),
        },
    );
    shared.metrics.set_identity(Identity {
        workload: labels
            .get("app")
            .cloned()
            .unwrap_or_else(|| "istio-ingressgateway".into()),
        namespace: a.namespace.clone(),
    });
    let (admin, ready_port, stats_port) = control.block_on(async {
        dns::refresh_all(&shared).await;
        let admin = admin::bind(a.admin_addr).await;
        let ready = admin::bind(a.readiness_addr).await;
        let stats = admin::bind(a.stats_addr).await;
        (admin, ready, stats)
    });
    let admin = admin.with_context(|| format!("admin address {}", a.admin_addr))?;
    let ready_port =
        ready_port.with_context(|| format!("readiness address {}", a.readiness_addr))?;
    let stats_port = stats_port.with_context(|| format!("stats address {}", a.stats_addr))?;
    let bound = [
        admin.local_addr()?,
        ready_port.local_addr()?,
        stats_port.local_addr()?,
    ];
    control.spawn(admin::serve(admin, AdminRole::Admin, shared.clone()));
    control.spawn(admin::serve(
        ready_port,
        AdminRole::Readiness,
        shared.clone(),
    ));
    control.spawn(admin::serve(stats_port, AdminRole::Stats, shared.clone()));
    control.spawn(dns::refresh_loop(shared.clone()));
    control.spawn(meshgate::upstream::outlier::tick_loop(shared.clone()));
    let _watcher = match source {
        Some(src) => Some(
            meshgate::config_source::watch(src, shared.clone(), control.handle())
                .context("watching the config files")?,
        ),
        None => None,
    };

    let addrs = worker::listen_addrs(&shared, a.bind);
    let n = a
        .concurrency
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let workers = Workers::start(n, &addrs, shared.clone()).context("starting workers")?;
    shared.ready.store(true, Ordering::Release);
    let listening: Vec<SocketAddr> = addrs.iter().map(|l| l.addr).collect();
    let list = |v: &[SocketAddr]| {
        v.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    println!(
        "meshgate ready: listeners={} admin={} readiness={} stats={} workers={n}",
        list(&listening),
        bound[0],
        bound[1],
        bound[2]
    );
    on_ready(&listening);
    control.block_on(wait_for_signal());
    shared.draining.store(true, Ordering::Release);
    tracing::info!("draining for up to {:?}", a.drain_timeout);
    workers.shutdown(a.drain_timeout);
    let _ = Arc::strong_count(&shared);
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The wasm code cache directory `--wasm-cache` asks for.
fn wasm_cache_dir(flag: Option<&str>) -> Option<std::path::PathBuf> {
    match flag {
        Some("none") => None,
        Some(dir) => Some(dir.into()),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache")))
            .map(|d| d.join("meshgate").join("wasm")),
    }
}
