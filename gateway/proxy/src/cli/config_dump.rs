//! `meshgate config-dump --config PATH`: load, validate, compile and print the snapshot.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use meshgate_config::{compile, load_paths, CompileOptions, LoadOptions};

/// Arguments of `meshgate config-dump`.
#[derive(Debug, Args)]
pub struct ConfigDumpArgs {
    /// Config files or directories.
    #[arg(long, required = true)]
    pub config: Vec<PathBuf>,
    /// This gateway's labels, `k=v[,k=v]` (Gateway selectors match against them).
    #[arg(long, default_value = "istio=ingressgateway")]
    pub labels: String,
    /// This gateway's namespace.
    #[arg(long, default_value = "istio-system")]
    pub namespace: String,
    /// Cluster domain suffix for short host names.
    #[arg(long, default_value = "cluster.local")]
    pub domain_suffix: String,
    /// Namespace of documents that do not name one.
    #[arg(long, default_value = "default")]
    pub default_namespace: String,
}

/// Parses `k=v,k2=v2`.
pub fn parse_labels(s: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("label {pair:?} is not k=v");
        };
        out.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(out)
}

/// Runs `config-dump`: exit 1 (with the diagnostics on stderr) when the config is invalid.
pub fn run(a: &ConfigDumpArgs) -> anyhow::Result<ExitCode> {
    let load = LoadOptions {
        default_namespace: a.default_namespace.clone(),
        strict: false,
    };
    let loaded = load_paths(&a.config, &load)?;
    for d in &loaded.diagnostics {
        eprintln!("{d}");
    }
    if loaded.has_errors() {
        eprintln!("meshgate: config is invalid; nothing compiled");
        return Ok(ExitCode::from(1));
    }
    let opts = CompileOptions {
        labels: parse_labels(&a.labels)?,
        namespace: a.namespace.clone(),
        domain_suffix: a.domain_suffix.clone(),
        ..CompileOptions::default()
    };
    let compiled = match compile(&loaded.set, &opts) {
        Ok(c) => c,
        Err(diags) => {
            for d in diags {
                eprintln!("{d}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    for w in &compiled.warnings {
        eprintln!("{w}");
    }
    let json = serde_json::to_string_pretty(&compiled.snapshot).context("serialising snapshot")?;
    println!("{json}");
    Ok(ExitCode::SUCCESS)
}
