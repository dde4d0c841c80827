//! `meshgate plugin build`.

use std::process::ExitCode;

/// Arguments of `meshgate plugin build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {}

/// Runs `meshgate plugin build`.
pub fn run(_args: &BuildArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`meshgate plugin build` is not built yet")
}
