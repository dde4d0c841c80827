//! How long a plugin takes to start: compiling a module into an empty code cache, then (as
//! after a restart) loading it from that cache with a new engine, and starting a VM each time.
//! Prints one JSON line per module. `cargo run --release -p meshgate-wasm --example
//! plugin_start -- MODULE.wasm...` (the bench runs it).

use std::rc::Rc;
use std::time::Instant;

use meshgate_wasm::{Engine, EngineOptions, NoHost, PluginConfig, PluginVm};

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for path in std::env::args().skip(1) {
        let bytes = std::fs::read(&path)?;
        let cache = tempfile::tempdir()?;
        let opts = EngineOptions {
            cache_dir: Some(cache.path().to_path_buf()),
            ..EngineOptions::default()
        };
        let mut row = serde_json::Map::new();
        row.insert("module".into(), path.clone().into());
        row.insert("bytes".into(), bytes.len().into());
        for phase in ["compile", "cached"] {
            let engine = Engine::new(opts.clone())?;
            let t = Instant::now();
            let module = engine.load(&bytes)?;
            row.insert(format!("{phase}_load_ms"), ms(t).into());
            let plugin = engine.plugin(PluginConfig::new("start"), module);
            let t = Instant::now();
            let _vm = PluginVm::start(&plugin, Rc::new(NoHost))?;
            row.insert(format!("{phase}_vm_start_ms"), ms(t).into());
            if phase == "cached" {
                row.insert("cache_hits".into(), engine.cache_stats().0.into());
            }
        }
        println!("{}", serde_json::Value::Object(row));
    }
    Ok(())
}
