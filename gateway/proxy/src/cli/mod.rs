//! Command implementations: argument types and the code that runs each command.

pub mod config_dump;
pub mod demo;
pub mod plugin;
pub mod proxy_config;
pub mod run;
pub mod validate;

/// Logs to stderr; `RUST_LOG` overrides the default level (`info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
