//! `meshgate plugin push FILE oci://REF`: publishes a module as the Wasm OCI artifact (the
//! layout Istio pulls) and prints the manifest digest.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use meshgate_pull::{Credentials, DockerConfig, ImageRef};

/// Registry access options shared by `push` and `pull`.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistryArgs {
    /// A registry (`HOST[:PORT]`, or `*`) spoken to over plain HTTP; repeatable.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,
    /// A docker config JSON with credentials (`auths.HOST.auth` or `username`/`password`).
    #[arg(long, value_name = "FILE", conflicts_with = "username")]
    pub docker_config: Option<PathBuf>,
    /// User name for the registry (the password is read from standard input).
    #[arg(long, requires = "password_stdin")]
    pub username: Option<String>,
    /// Read the password for `--username` from standard input.
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// A PEM file of CA certificates to trust besides the system's; repeatable.
    #[arg(long, value_name = "FILE")]
    pub wasm_ca_file: Vec<PathBuf>,
}

impl RegistryArgs {
    /// The registry options these flags give.
    pub fn options(&self) -> anyhow::Result<meshgate_pull::oci::RegistryOptions> {
        let mut extra_roots_pem = Vec::new();
        for f in &self.wasm_ca_file {
            extra_roots_pem
                .push(std::fs::read(f).with_context(|| format!("--wasm-ca-file {}", f.display()))?);
        }
        Ok(meshgate_pull::oci::RegistryOptions {
            insecure: self.insecure_registry.clone(),
            extra_roots_pem,
            timeout: Some(std::time::Duration::from_secs(30)),
        })
    }

    /// The credentials for `registry`.
    pub fn credentials(&self, registry: &str) -> anyhow::Result<Credentials> {
        if let Some(username) = &self.username {
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .context("reading the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']).to_owned();
            if password.is_empty() {
                bail!("--password-stdin: standard input was empty");
            }
            return Ok(Credentials::Basic {
                username: username.clone(),
                password,
            });
        }
        if let Some(path) = &self.docker_config {
            let config = DockerConfig::load(path)?;
            return Ok(config.lookup(registry).cloned().unwrap_or_default());
        }
        Ok(Credentials::Anonymous)
    }
}

/// Arguments of `meshgate plugin push`.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The `.wasm` module to publish.
    pub file: PathBuf,
    /// Where to: `oci://HOST[:PORT]/REPO:TAG`.
    pub reference: String,
    /// Registry access.
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Runs `meshgate plugin push`.
pub fn run(args: &PushArgs) -> anyhow::Result<ExitCode> {
    let module = std::fs::read(&args.file).with_context(|| format!("{}", args.file.display()))?;
    let image = ImageRef::parse(&args.reference)?;
    let opts = args.registry.options()?;
    let creds = args.registry.credentials(image.registry())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    let started = std::time::Instant::now();
    let digest = rt
        .block_on(meshgate_pull::push::push(&opts, &image, &creds, &module))
        .with_context(|| format!("pushing {} to {image}", args.file.display()))?;
    eprintln!(
        "pushed {} ({} bytes, module sha256:{}) to {image} in {} ms",
        args.file.display(),
        module.len(),
        meshgate_wasm::hex(&meshgate_pull::sha256(&module)),
        started.elapsed().as_millis()
    );
    println!("{digest}");
    Ok(ExitCode::SUCCESS)
}
