//! `meshgate plugin`: the plugin author's tool — scaffold, build, test, publish, fetch and
//! inspect proxy-wasm plugins. One file per subcommand.

use std::process::ExitCode;

use clap::{Args, Subcommand};

pub mod build;
pub mod inspect;
pub mod new;
pub mod pull;
pub mod push;
pub mod test;

/// `meshgate plugin ...`.
#[derive(Debug, Args)]
pub struct PluginArgs {
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Scaffold a plugin crate that uses the meshgate SDK, with a harness test.
    New(new::NewArgs),
    /// Build the plugin in the current crate for wasm32-wasip1 (release, optimised).
    Build(build::BuildArgs),
    /// Run the plugin's tests on the in-process harness.
    Test(test::TestArgs),
    /// Publish a .wasm file to an OCI registry as the Wasm OCI artifact.
    Push(push::PushArgs),
    /// Fetch a plugin from an OCI registry or URL into a file (and the cache).
    Pull(pull::PullArgs),
    /// Show a module's ABI version, exports, imports, size, digest and host support.
    Inspect(inspect::InspectArgs),
}

/// Runs `meshgate plugin ...`.
pub fn run(args: &PluginArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        PluginCommand::New(a) => new::run(a),
        PluginCommand::Build(a) => build::run(a),
        PluginCommand::Test(a) => test::run(a),
        PluginCommand::Push(a) => push::run(a),
        PluginCommand::Pull(a) => pull::run(a),
        PluginCommand::Inspect(a) => inspect::run(a),
    }
}
