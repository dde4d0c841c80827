//! The on-disk cache of precompiled modules: a second engine on the same folder loads the
//! module without compiling it, and a damaged entry is recompiled instead of run.

use std::path::Path;

use meshgate_wasm::{Engine, EngineOptions, NoHost, PluginConfig, PluginVm};

const MODULE: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 1024))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1)))"#;

fn engine(dir: &Path) -> std::sync::Arc<Engine> {
    Engine::new(EngineOptions {
        cache_dir: Some(dir.to_path_buf()),
        ..EngineOptions::default()
    })
    .expect("engine")
}

/// Loads the module on a fresh engine, starts a VM on it, and returns (hits, misses).
fn load_and_start(dir: &Path) -> (usize, usize) {
    load_and_start_this(dir, MODULE)
}

fn load_and_start_this(dir: &Path, wat: &str) -> (usize, usize) {
    let engine = engine(dir);
    let module = engine.load(wat.as_bytes()).expect("module loads");
    let plugin = engine.plugin(PluginConfig::new("cache-test"), module);
    PluginVm::start(&plugin, std::rc::Rc::new(NoHost)).expect("VM starts");
    engine.cache_stats()
}

fn entries(dir: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for sub in std::fs::read_dir(dir).expect("code folder") {
        for e in std::fs::read_dir(sub.expect("entry").path()).expect("engine folder") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == ext) {
                found.push(p);
            }
        }
    }
    found
}

#[test]
fn a_restart_loads_precompiled_code_and_a_damaged_entry_is_recompiled() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(load_and_start(dir.path()), (0, 1), "first load compiles");
    assert_eq!(entries(dir.path(), "cwasm").len(), 1);
    assert_eq!(load_and_start(dir.path()), (1, 0), "second engine hits");

    // Flip one byte in the middle of the entry: its checksum no longer matches.
    let code = &entries(dir.path(), "cwasm")[0];
    let mut bytes = std::fs::read(code).expect("read entry");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(code, &bytes).expect("damage entry");
    assert_eq!(
        load_and_start(dir.path()),
        (0, 1),
        "damaged entry recompiled"
    );
    assert_eq!(load_and_start(dir.path()), (1, 0), "and cached again");

    // An entry without its checksum (a write that did not finish) is not used either.
    for sum in entries(dir.path(), "sha256") {
        std::fs::remove_file(sum).expect("remove checksum");
    }
    assert_eq!(load_and_start(dir.path()), (0, 1));
}

#[test]
fn the_hosts_stream_end_module_is_cached_beside_a_plugin_and_left_out_of_the_counts() {
    // A module with on_log, on_done and on_delete gets the host's module that calls the three
    // in one entry: compiled once, then loaded from the cache like the plugin's code (so a
    // restart starts no compiler), and not counted as a plugin's hit or miss.
    let open = MODULE
        .strip_suffix(')')
        .expect("a module ends with its paren");
    let wat = open.to_string()
        + r#"
  (func (export "proxy_on_log") (param i32))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32)))"#;
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(load_and_start_this(dir.path(), &wat), (0, 1));
    assert_eq!(
        entries(dir.path(), "cwasm").len(),
        2,
        "the plugin's and the host's"
    );
    assert_eq!(load_and_start_this(dir.path(), &wat), (1, 0));
    assert_eq!(entries(dir.path(), "cwasm").len(), 2);
}
