//! What `/config_dump` adds about plugins: each WasmPlugin's load state and module digest,
//! and per listener and route the ordered pipeline of built-in filters and plugins a request
//! runs through.

use serde_json::{json, Value};

use crate::live::Live;

/// Adds `pluginState` to every plugin of `dump` and a `pipeline` to every route.
pub fn annotate(dump: &mut Value, live: &Live) {
    if let Some(list) = dump.get_mut("plugins").and_then(Value::as_array_mut) {
        for (v, p) in list.iter_mut().zip(&live.plugins) {
            v["state"] = json!(p.state());
            if let Some(d) = p.digest {
                v["moduleSha256"] = json!(meshgate_wasm::hex(&d));
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
                            "sha256": p.digest.map(|d| meshgate_wasm::hex(&d)),
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
