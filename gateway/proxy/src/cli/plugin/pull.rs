//! `meshgate plugin pull oci://REF|https://URL`: fetches a module as the gateway would
//! (every Wasm image layout, digests verified, `--sha256` checked), writes it to a file and,
//! with `--wasm-cache`, into the gateway's module cache; prints the digest and the layout.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use meshgate_pull::{Fetcher, FetcherOptions, ImageRef, PullPolicy, Request, Source};

use super::push::RegistryArgs;

/// Arguments of `meshgate plugin pull`.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// `oci://HOST[:PORT]/REPO[:TAG|@sha256:…]`, or an `http(s)://` URL.
    pub source: String,
    /// Where to write the module (default: `plugin.wasm` in the current directory).
    #[arg(short, long, value_name = "FILE", default_value = "plugin.wasm")]
    pub output: PathBuf,
    /// The sha256 the module (or, for an image, its manifest) must have.
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// Also store the module in this gateway cache directory (as `meshgate run --wasm-cache`).
    #[arg(long, value_name = "DIR")]
    pub wasm_cache: Option<PathBuf>,
    /// Registry access.
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Runs `meshgate plugin pull`.
pub fn run(args: &PullArgs) -> anyhow::Result<ExitCode> {
    let (source, registry) =
        if args.source.starts_with("http://") || args.source.starts_with("https://") {
            (Source::Http(args.source.clone()), None)
        } else {
            let image = ImageRef::parse(&args.source)?;
            let host = image.registry().to_owned();
            (Source::Oci(image), Some(host))
        };
    let sha256 = match &args.sha256 {
        Some(h) => Some(
            meshgate_pull::parse_sha256(h)
                .with_context(|| format!("--sha256 {h:?} is not 64 hex digits"))?,
        ),
        None => None,
    };
    let cache = match &args.wasm_cache {
        Some(dir) => Some(std::sync::Arc::new(meshgate_pull::ModuleCache::open(
            dir.join("modules"),
            meshgate_pull::cache::DEFAULT_MAX_BYTES,
        )?)),
        None => None,
    };
    let fetcher = Fetcher::new(FetcherOptions {
        registry: args.registry.options()?,
        retry: meshgate_pull::retry::RetryPolicy::default(),
        cache,
    })?;
    let credentials = match &registry {
        Some(r) => args.registry.credentials(r)?,
        None => meshgate_pull::Credentials::Anonymous,
    };
    let req = Request {
        source,
        sha256,
        policy: PullPolicy::Always,
        credentials,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    let started = std::time::Instant::now();
    let fetched = rt
        .block_on(fetcher.fetch(&req))
        .with_context(|| format!("pulling {}", args.source))?;
    let elapsed = started.elapsed();
    std::fs::write(&args.output, &fetched.module)
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!("sha256:{}", meshgate_wasm::hex(&fetched.digest));
    if let Some(m) = &fetched.manifest_digest {
        println!("manifest {m}");
    }
    println!("layout {}", fetched.layout.as_deref().unwrap_or("http"));
    eprintln!(
        "wrote {} ({} bytes) in {} ms",
        args.output.display(),
        fetched.module.len(),
        elapsed.as_millis()
    );
    Ok(ExitCode::SUCCESS)
}
