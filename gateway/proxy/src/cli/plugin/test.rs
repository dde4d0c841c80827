//! `meshgate plugin test`.

use std::process::ExitCode;

/// Arguments of `meshgate plugin test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {}

/// Runs `meshgate plugin test`.
pub fn run(_args: &TestArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`meshgate plugin test` is not built yet")
}
