//! `meshgate proxy-config plugins`: asks a running gateway's admin API for its `/config_dump`
//! and prints, per listener and route, the ordered pipeline of plugins and built-in filters,
//! then every WasmPlugin with its source, module digest and state (like `istioctl proxy-config`).

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde_json::Value;

/// Arguments of `meshgate proxy-config`.
#[derive(Debug, Args)]
pub struct ProxyConfigArgs {
    /// What to show.
    pub what: What,
    /// The gateway's admin address.
    #[arg(long, default_value = "127.0.0.1:15000")]
    pub admin: String,
    /// `text` (default) or `json` (the pipeline and plugins as `/config_dump` gives them).
    #[arg(long, default_value = "text")]
    pub output: String,
}

/// The views `proxy-config` has.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum What {
    /// The WasmPlugin pipeline of every route, and every plugin's state.
    Plugins,
}

/// Runs `meshgate proxy-config`.
pub fn run(a: &ProxyConfigArgs) -> anyhow::Result<ExitCode> {
    let dump = fetch(&a.admin).with_context(|| format!("reading /config_dump from {}", a.admin))?;
    let What::Plugins = a.what;
    if a.output == "json" {
        let routes: Vec<Value> = routes(&dump)
            .map(|(l, r)| serde_json::json!({"listener": l, "route": r["name"], "pipeline": r["pipeline"]}))
            .collect();
        let out = serde_json::json!({"routes": routes, "plugins": dump["plugins"]});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", text(&dump));
    Ok(ExitCode::SUCCESS)
}

/// Every (listener address, route) of a dump.
fn routes(dump: &Value) -> impl Iterator<Item = (String, &Value)> {
    let listeners = dump["listeners"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    listeners.iter().flat_map(|l| {
        let at = format!("{}:{}", l["address"].as_str().unwrap_or("?"), l["port"]);
        let vhosts = l["routes"]["virtualHosts"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        vhosts
            .iter()
            .flat_map(|vh| vh["routes"].as_array().map(Vec::as_slice).unwrap_or(&[]))
            .map(move |r| (at.clone(), r))
    })
}

/// The text view.
fn text(dump: &Value) -> String {
    let mut out = String::new();
    let short = |d: &Value| d.as_str().map(|s| s[..s.len().min(12)].to_owned());
    for (listener, r) in routes(dump) {
        let name = r["name"].as_str().unwrap_or("");
        out.push_str(&format!(
            "{listener}  route {}\n",
            if name.is_empty() { "(unnamed)" } else { name }
        ));
        for (i, step) in r["pipeline"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .enumerate()
        {
            let line = match step["builtin"].as_str() {
                Some(b) => format!("[{b}]"),
                None => format!(
                    "{}  {}  {}  {}",
                    step["plugin"].as_str().unwrap_or("?"),
                    step["phase"].as_str().unwrap_or("?"),
                    short(&step["sha256"]).map_or("-".to_owned(), |d| format!("sha256:{d}")),
                    step["state"].as_str().unwrap_or("?"),
                ),
            };
            out.push_str(&format!("  {}. {line}\n", i + 1));
        }
    }
    let plugins = dump["plugins"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    out.push_str(&format!("\n{} WasmPlugin(s)\n", plugins.len()));
    for p in plugins {
        let pull = &p["pull"];
        let lkg = if pull["servingLastKnownGood"].as_bool() == Some(true) {
            format!(
                "  (serving last-known-good sha256:{})",
                short(&pull["servingSha256"]).unwrap_or_else(|| "-".to_owned())
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            "  {}  {}  module sha256:{}  {}{lkg}\n",
            p["name"].as_str().unwrap_or("?"),
            source(&p["source"]),
            p["moduleSha256"].as_str().unwrap_or("-"),
            p["state"].as_str().unwrap_or("?"),
        ));
    }
    out
}

fn source(v: &Value) -> String {
    if let Some(f) = v.get("file").and_then(Value::as_str) {
        return format!("file://{f}");
    }
    if let Some(u) = v.pointer("/http/url").and_then(Value::as_str) {
        return u.to_owned();
    }
    if let Some(r) = v.pointer("/oci/reference").and_then(Value::as_str) {
        return format!("oci://{r}");
    }
    v.to_string()
}

/// GETs `/config_dump` from `admin`.
fn fetch(admin: &str) -> anyhow::Result<Value> {
    use http_body_util::BodyExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let stream = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tokio::net::TcpStream::connect(admin),
        )
        .await
        .context("timed out connecting")??;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = http::Request::get("/config_dump")
            .header(http::header::HOST, admin)
            .body(http_body_util::Empty::<bytes::Bytes>::new())?;
        let resp = send.send_request(req).await?;
        if !resp.status().is_success() {
            bail!("status {}", resp.status());
        }
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(serde_json::from_slice(&body)?)
    })
}
