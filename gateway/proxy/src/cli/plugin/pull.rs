//! `meshgate plugin pull`.

use std::process::ExitCode;

/// Arguments of `meshgate plugin pull`.
#[derive(Debug, clap::Args)]
pub struct PullArgs {}

/// Runs `meshgate plugin pull`.
pub fn run(_args: &PullArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`meshgate plugin pull` is not built yet")
}
