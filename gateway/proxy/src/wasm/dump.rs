//! What `/config_dump` adds about plugins: each WasmPlugin's load state and module digest,
//! and per listener and route the ordered pipeline of built-in filters and plugins a request
//! runs through.

use serde_json::{json, Value};

use meshgate_config::snapshot::PluginSource;

use crate::live::Live;
use crate::wasm::LoadedPlugin;

/// A remote plugin's fetch state: where from, what it resolved to, when, the last error, and
/// whether a previous version (or an older cached copy) serves in its place.
fn pull_state(p: &std::sync::Arc<LoadedPlugin>) -> Value {
    let info = p.pull_info();
    let state = match &**p.load_state() {
        crate::wasm::LoadState::Pending => "pending",
        crate::wasm::LoadState::Loaded { .. } => "loaded",
        crate::wasm::LoadState::Failed(_) => "failed",
    };
    let fallback = p.fallback().filter(|f| f.digest().is_some());
    json!({
        "source": p.spec.source.to_string(),
        "state": state,
        "moduleSha256": p.digest().map(|d| meshgate_wasm::hex(&d)),
        "manifestDigest": info.manifest_digest,
        "layout": info.layout,
        "pulledAt": info.pulled_at,
        "fromCache": info.from_cache,
        "attempts": info.attempts,
        "lastError": info.last_error,
        "servingLastKnownGood": fallback.is_some() || info.stale,
        "servingSha256": p
            .serving()
            .and_then(|s| s.digest())
            .map(|d| meshgate_wasm::hex(&d)),
    })
}

/// Adds `pluginState` to every plugin of `dump` and a `pipeline` to every route.
pub fn annotate(dump: &mut Value, live: &Live) {
    if let Some(list) = dump.get_mut("plugins").and_then(Value::as_array_mut) {
        for (v, p) in list.iter_mut().zip(&live.plugins) {
            v["state"] = json!(p.state());
            if let Some(d) = p.digest() {
                v["moduleSha256"] = json!(meshgate_wasm::hex(&d));
            }
            if !matches!(p.spec.source, PluginSource::File(_)) {
                v["pull"] = pull_state(p);
            }
        }
    }
    let Some(listeners) = dump.get_mut("listeners").and_then(Value::as_array_mut) else {
        return;
    };
    for l in listeners {
        let port = l.get("port").and_then(Value::as_u64).unwrap_or(0) as u16;
        let Some(vhosts) = l
            .pointer_mut("/routes/virtualHosts")
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for vh in vhosts {
            let Some(routes) = vh.get_mut("routes").and_then(Value::as_array_mut) else {
                continue;
            };
            for r in routes {
                let name = r.get("name").and_then(Value::as_str).map(str::to_owned);
                let mut pipeline: Vec<Value> = live
                    .plugins
                    .iter()
                    .filter(|p| p.spec.applies(name.as_deref(), port))
                    .map(|p| {
                        json!({
                            "plugin": &*p.spec.name,
                            "phase": p.spec.phase.as_str(),
                            "sha256": p.serving().and_then(|s| s.digest()).map(|d| meshgate_wasm::hex(&d)),
                            "state": p.state(),
                        })
                    })
                    .collect();
                for builtin in ["fault", "cors"] {
                    if r.get(builtin).is_some_and(|v| !v.is_null()) {
                        pipeline.push(json!({ "builtin": builtin }));
                    }
                }
                pipeline.push(json!({ "builtin": "router" }));
                r["pipeline"] = Value::Array(pipeline);
            }
        }
    }
}
