//! `meshgate plugin push`.

use std::process::ExitCode;

/// Arguments of `meshgate plugin push`.
#[derive(Debug, clap::Args)]
pub struct PushArgs {}

/// Runs `meshgate plugin push`.
pub fn run(_args: &PushArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`meshgate plugin push` is not built yet")
}
