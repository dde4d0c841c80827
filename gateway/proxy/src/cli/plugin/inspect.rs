//! `meshgate plugin inspect`.

use std::process::ExitCode;

/// Arguments of `meshgate plugin inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {}

/// Runs `meshgate plugin inspect`.
pub fn run(_args: &InspectArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`meshgate plugin inspect` is not built yet")
}
