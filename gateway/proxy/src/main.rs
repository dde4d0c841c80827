//! The `meshgate` binary: command-line parsing and dispatch. The commands live in `cli/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// meshgate: an Istio-compatible ingress/egress gateway.
#[derive(Debug, Parser)]
#[command(name = "meshgate", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check Istio YAML (files or directories) and report every problem as FILE:LINE.
    Validate(cli::validate::ValidateArgs),
    /// Print the compiled snapshot (listeners, virtual hosts, routes, clusters) as JSON.
    ConfigDump(cli::config_dump::ConfigDumpArgs),
    /// Serve traffic for the Gateways in the config until SIGTERM.
    Run(cli::run::RunArgs),
    /// The coffee-shop demo: gateway plus demo services on loopback, no setup.
    Demo(cli::demo::DemoArgs),
    /// Show a running gateway's config: `plugins` (the WasmPlugin pipeline of every route).
    ProxyConfig(cli::proxy_config::ProxyConfigArgs),
    /// Build, test, publish, fetch and inspect proxy-wasm plugins.
    Plugin(cli::plugin::PluginArgs),
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Command::Validate(a) => cli::validate::run(&a),
        Command::ConfigDump(a) => cli::config_dump::run(&a),
        Command::Run(a) => cli::run::run(&a),
        Command::Demo(a) => cli::demo::run(&a),
        Command::ProxyConfig(a) => cli::proxy_config::run(&a),
        Command::Plugin(a) => cli::plugin::run(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meshgate: {e:#}");
            ExitCode::from(2)
        }
    }
}
