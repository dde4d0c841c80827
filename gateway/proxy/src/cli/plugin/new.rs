//! `meshgate plugin new`.

use std::process::ExitCode;

/// Arguments of `meshgate plugin new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {}

/// Runs `meshgate plugin new`.
pub fn run(_args: &NewArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`meshgate plugin new` is not built yet")
}
