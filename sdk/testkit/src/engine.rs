//! The one wasm engine of the process: every harness shares it, so a module is compiled once
//! per test binary, and its on-disk cache keeps the compiled code across runs.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use meshgate_wasm::{Engine, EngineOptions};

use crate::Error;

/// Where compiled modules are cached across runs: `MESHGATE_TESTKIT_CACHE` (`none` turns the
/// cache off), else `meshgate-testkit` in the system's temporary directory.
pub fn cache_dir() -> Option<PathBuf> {
    match std::env::var_os("MESHGATE_TESTKIT_CACHE") {
        Some(v) if v == "none" => None,
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => Some(std::env::temp_dir().join("meshgate-testkit")),
    }
}

/// Compiles `bytes` (or finds them compiled). Tests starting in parallel on one module
/// compile it once: a load waits for another load of the same bytes, not for other modules.
pub(crate) fn load(bytes: &[u8]) -> Result<meshgate_wasm::CompiledModule, Error> {
    type InFlight = HashMap<(usize, u64), Arc<Mutex<()>>>;
    static IN_FLIGHT: OnceLock<Mutex<InFlight>> = OnceLock::new();
    let engine = engine()?;
    let key = {
        let mut h = std::hash::DefaultHasher::new();
        bytes.hash(&mut h);
        (bytes.len(), h.finish())
    };
    let slot = IN_FLIGHT
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default()
        .clone();
    let _same_module = slot.lock().unwrap_or_else(|p| p.into_inner());
    Ok(engine.load(bytes)?)
}

pub(crate) fn engine() -> Result<Arc<Engine>, Error> {
    static ENGINE: OnceLock<Result<Arc<Engine>, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let opts = EngineOptions {
                cache_dir: cache_dir(),
                ..EngineOptions::default()
            };
            match Engine::new(opts) {
                Ok(e) => Ok(e),
                // An unusable cache directory must not stop the tests: go without it.
                Err(_) => Engine::new(EngineOptions::default()).map_err(|e| e.to_string()),
            }
        })
        .clone()
        .map_err(Error::Engine)
}
