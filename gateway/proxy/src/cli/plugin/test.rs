//! `meshgate plugin test`: builds the plugin for wasm32-wasip1, then runs its harness tests
//! (a host crate, `harness/` next to the plugin's Cargo.toml, as `meshgate plugin new` lays
//! it out) with `MESHGATE_PLUGIN_WASM` pointing at the built module.
//!
//! The harness is a crate of its own because the plugin is a cdylib whose proxy-wasm imports
//! exist only in a wasm host: the tests run on the host, load the `.wasm` into meshgate's
//! runtime (meshgate-testkit) and never link the plugin's code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};

use super::build::{self, BuildArgs};

/// Arguments of `meshgate plugin test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The plugin crate's Cargo.toml (default: ./Cargo.toml).
    #[arg(long)]
    pub manifest_path: Option<PathBuf>,
    /// The harness crate's Cargo.toml (default: harness/Cargo.toml next to the plugin's).
    #[arg(long)]
    pub harness: Option<PathBuf>,
    /// Pass `--offline` to cargo.
    #[arg(long)]
    pub offline: bool,
    /// Pass `--locked` to cargo.
    #[arg(long)]
    pub locked: bool,
    /// Arguments for the test binaries (after `--`), e.g. a test name filter.
    #[arg(last = true)]
    pub test_args: Vec<String>,
}

/// Runs `meshgate plugin test`: the exit status is the tests'.
pub fn run(args: &TestArgs) -> anyhow::Result<ExitCode> {
    let manifest = build::manifest(args.manifest_path.as_deref())?;
    let dir = manifest
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let harness = args
        .harness
        .clone()
        .unwrap_or_else(|| dir.join("harness").join("Cargo.toml"));
    if !harness.is_file() {
        bail!(
            "no harness crate at {} (pass --harness; `meshgate plugin new` makes one)",
            harness.display()
        );
    }
    let built = build::build(&BuildArgs {
        manifest_path: Some(manifest.clone()),
        output: None,
        strip: false,
        offline: args.offline,
        locked: args.locked,
    })?;
    eprintln!(
        "meshgate: testing {} ({} bytes, sha256 {})",
        built.path.display(),
        built.size,
        built.sha256
    );
    let wasm = std::fs::canonicalize(&built.path)
        .with_context(|| format!("resolving {}", built.path.display()))?;
    let mut cmd = build::cargo();
    cmd.arg("test")
        .arg("--manifest-path")
        .arg(&harness)
        .env("MESHGATE_PLUGIN_WASM", &wasm);
    // One target dir for the plugin and its harness unless the caller chose one.
    if std::env::var_os("CARGO_TARGET_DIR").is_none() {
        cmd.env("CARGO_TARGET_DIR", dir.join("target"));
    }
    if args.offline {
        cmd.arg("--offline");
    }
    if args.locked {
        cmd.arg("--locked");
    }
    if !args.test_args.is_empty() {
        cmd.arg("--").args(&args.test_args);
    }
    let status = cmd.status().context("running cargo test")?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
