//! `meshgate plugin inspect`, `new`, `build` and `test`, run as a plugin author runs them.

#[path = "support/plugins.rs"]
mod plugins;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use serde_json::Value;

fn meshgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(args)
        .output()
        .expect("meshgate runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn inspect_json(path: &Path) -> (Output, Value) {
    let out = meshgate(&["plugin", "inspect", "--json", &path.to_string_lossy()]);
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)));
    (out, doc)
}

#[test]
fn inspect_reports_the_test_plugins_as_loadable_on_meshgate_and_envoy() {
    for name in ["abi-probe", "add-headers", "hostile"] {
        let Some(path) = plugins::path(name) else {
            return;
        };
        let (out, doc) = inspect_json(&path);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        assert_eq!(doc["abi_version"], "0.2.1", "{name}");
        assert_eq!(doc["loadable"], true, "{name}");
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(doc["size"], bytes.len(), "{name}");
        assert_eq!(doc["sha256"].as_str().map(str::len), Some(64));
        let imports = doc["imports"].as_array().expect("imports");
        assert!(!imports.is_empty());
        for i in imports {
            assert_eq!(i["meshgate"], true, "{name}: {i}");
            assert_eq!(i["envoy"], true, "{name}: {i}");
        }
        assert!(imports
            .iter()
            .any(|i| i["module"] == "env" && i["name"] == "proxy_log"));
        let exports = doc["exports"].as_array().expect("exports");
        assert!(exports
            .iter()
            .any(|e| e["name"] == "proxy_on_request_headers"));
    }
    // The text form says the same.
    let Some(path) = plugins::path("add-headers") else {
        return;
    };
    let out = meshgate(&["plugin", "inspect", &path.to_string_lossy()]);
    assert!(out.status.success());
    let t = text(&out.stdout);
    assert!(t.contains("abi:     proxy-wasm 0.2.1"), "{t}");
    assert!(t.contains("env.proxy_log"), "{t}");
    assert!(t.contains("support: meshgate provides "), "{t}");
}

#[test]
fn inspect_fails_a_module_with_an_import_meshgate_does_not_provide() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wasm = wat::parse_str(
        r#"(module
  (import "env" "proxy_log" (func (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_log_level" (func (param i32) (result i32)))
  (import "env" "proxy_made_up_call" (func (param i32) (result i32)))
  (import "acme" "memory" (memory 1))
  (func (export "proxy_abi_version_0_2_0"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 0)))"#,
    )
    .expect("wat");
    let path = dir.path().join("unknown.wasm");
    std::fs::write(&path, &wasm).expect("write");
    let (out, doc) = inspect_json(&path);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(doc["abi_version"], "0.2.0");
    assert_eq!(doc["loadable"], false);
    let find = |n: &str| -> Value {
        doc["imports"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["name"] == n).cloned())
            .unwrap_or(Value::Null)
    };
    assert_eq!(find("proxy_log")["meshgate"], true);
    assert_eq!(find("proxy_log")["envoy"], true);
    // Envoy links proxy_get_log_level for ABI 0.2.1 modules only; meshgate for every ABI.
    assert_eq!(find("proxy_get_log_level")["meshgate"], true);
    assert_eq!(find("proxy_get_log_level")["envoy"], false);
    assert_eq!(find("proxy_made_up_call")["meshgate"], false);
    assert_eq!(find("proxy_made_up_call")["envoy"], false);
    assert_eq!(find("memory")["kind"], "memory");
    assert_eq!(
        doc["unsupported_imports"],
        serde_json::json!(["env.proxy_made_up_call", "acme.memory"])
    );
    let out = meshgate(&["plugin", "inspect", &path.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("meshgate cannot load it: it imports env.proxy_made_up_call"),
        "{}",
        text(&out.stdout)
    );

    // Not proxy-wasm (no ABI export), and not wasm at all.
    let plain = dir.path().join("plain.wasm");
    std::fs::write(&plain, wat::parse_str("(module)").expect("wat")).expect("write");
    let (out, doc) = inspect_json(&plain);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(doc["abi_version"], Value::Null);
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"junk").expect("write");
    let out = meshgate(&["plugin", "inspect", &junk.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not a valid wasm module"));
}

/// A target dir kept across runs for the scaffolded crates (their dependencies, wasmtime
/// among them, take minutes to build the first time): next to the one this test runs from,
/// not in it, so the cargo running this test does not hold its lock.
fn scaffold_target_dir() -> PathBuf {
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t).join("scaffold");
    }
    // .../target/debug/deps/plugin_cli-HASH
    let exe = std::env::current_exe().expect("exe");
    exe.ancestors()
        .nth(3)
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
        .join("scaffold")
}

#[test]
fn a_new_plugin_builds_and_its_harness_test_passes() {
    if Command::new("rustup").arg("--version").output().is_err() && std::env::var_os("CI").is_none()
    {
        eprintln!("SKIPPED: no rustup to add wasm32-wasip1 with");
        return;
    }
    let checkout = manifest_dir().join("../..");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("hello-plugin");
    let dir_s = dir.to_string_lossy().into_owned();
    let target = scaffold_target_dir();
    let run = |args: &[&str]| -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_meshgate"))
            .args(args)
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(&dir)
            .output()
            .expect("meshgate runs");
        assert!(
            out.status.success(),
            "meshgate {args:?}: {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        out
    };

    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_meshgate"))
        .args(["plugin", "new", "hello-plugin", "--dir", &dir_s, "--sdk"])
        .arg(&checkout)
        .output()
        .expect("meshgate runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    for f in [
        "Cargo.toml",
        "Cargo.lock",
        "src/lib.rs",
        "README.md",
        "harness/Cargo.toml",
        "harness/tests/plugin.rs",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("read");
    assert!(manifest.contains("crate-type = [\"cdylib\"]"));
    assert!(manifest.contains("panic = \"abort\""));
    assert!(manifest.contains("meshgate-sdk = { path = "));

    // Offline: everything the scaffold needs is what meshgate itself builds with.
    let out = run(&["plugin", "build", "--offline", "--strip"]);
    let stdout = text(&out.stdout);
    let wasm = PathBuf::from(stdout.lines().next().unwrap_or_default());
    assert!(wasm.ends_with("hello_plugin.wasm"), "{stdout}");
    assert!(stdout.contains("sha256: "), "{stdout}");
    let inspected = meshgate(&["plugin", "inspect", "--json", &wasm.to_string_lossy()]);
    assert!(inspected.status.success(), "{}", text(&inspected.stdout));
    let doc: Value = serde_json::from_slice(&inspected.stdout).expect("json");
    assert_eq!(doc["custom_sections"], serde_json::json!([]));

    let out = run(&["plugin", "test", "--offline"]);
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(all.contains("test result: ok. 3 passed"), "{all}");
    eprintln!("plugin new -> build -> test: {:?}", t.elapsed());
}

/// The package's folder, as cargo gives it to the running test (the path compiled in would be
/// that of whichever checkout built the binary, when checkouts share a target directory).
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}
