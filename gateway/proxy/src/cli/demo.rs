//! `meshgate demo`: the coffee-shop example with no setup: embedded config, embedded demo
//! services on loopback, the gateway on 127.0.0.1, and ready-to-paste curl lines.

use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use meshgate::demo;
use meshgate_config::{load_text, LoadOptions, Loaded};

use super::run::{compile_for, serve, ServeArgs};

/// Arguments of `meshgate demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Port the coffee shop listens on.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Serving options (the demo listens on 127.0.0.1 unless `--bind` says otherwise).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Runs the demo until Ctrl-C.
pub fn run(a: &DemoArgs) -> anyhow::Result<ExitCode> {
    super::init_tracing();
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("meshgate-control")
        .enable_all()
        .build()
        .context("starting the control runtime")?;
    let services = control
        .block_on(demo::start_services())
        .context("starting demo services")?;
    let mut loaded = Loaded::default();
    let opts = LoadOptions::default();
    for (name, text) in demo::COFFEE_SHOP {
        load_text(name, text, &opts, &mut loaded);
    }
    load_text(
        "<demo service entries>",
        &demo::service_entries(&services),
        &opts,
        &mut loaded,
    );
    loaded.finish();
    let mut serve_args = a.serve.clone();
    serve_args.bind = Some(serve_args.bind.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    if a.serve.readiness_addr.port() == 15021 && a.serve.readiness_addr.ip().is_unspecified() {
        serve_args.readiness_addr = "127.0.0.1:15021".parse().context("address")?;
    }
    if a.serve.stats_addr.port() == 15090 && a.serve.stats_addr.ip().is_unspecified() {
        serve_args.stats_addr = "127.0.0.1:15090".parse().context("address")?;
    }
    let Some(mut snapshot) = compile_for(&loaded, &serve_args)? else {
        return Ok(ExitCode::from(1));
    };
    for l in &mut snapshot.listeners {
        l.port = a.port;
        l.name = format!("{}_{}", l.address, a.port);
    }
    serve(snapshot, &serve_args, &control, None, |addrs| {
        let Some(gw) = addrs.first() else { return };
        let base = format!("http://{gw}");
        println!("\nThe coffee shop is open. Try:\n");
        for (path, extra) in [
            ("/orders", ""),
            ("/payments", " -X POST -d '{\"amount\": 4.5}'"),
            ("/inventory/beans", ""),
            ("/customers/42", ""),
            ("/customers/42", " -H 'x-customer-tier: gold'"),
            ("/menu", " -i"),
            ("/healthz", ""),
        ] {
            println!("  curl -s -H 'Host: coffee.example.com'{extra} {base}{path}");
        }
        println!(
            "\nAdmin: curl -s http://{}/config_dump | head\nCtrl-C stops it.",
            a.serve.admin_addr
        );
    })
}
