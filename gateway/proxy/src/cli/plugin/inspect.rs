//! `meshgate plugin inspect`: what a module is (ABI version, exports, imports, size, digest)
//! and, per imported host function, whether meshgate provides it and whether Envoy does.
//!
//! meshgate's answer is read off the runtime's real linker ([`Engine::host_functions`]), so it
//! cannot drift from what loading the module would do. Envoy's is the list below.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use meshgate_wasm::{Engine, EngineOptions};
use serde_json::json;
use sha2::{Digest, Sha256};

/// Arguments of `meshgate plugin inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The module (`.wasm`).
    pub file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The host functions Envoy links for proxy-wasm modules: what proxy-wasm-cpp-host (the
/// host library Envoy embeds) registers in `WasmBase::registerCallbacks` (`src/wasm.cc`), from
/// the `FOR_ALL_HOST_FUNCTIONS` and `FOR_ALL_WASI_FUNCTIONS` lists of
/// `include/proxy-wasm/exports.h`, as of proxy-wasm-cpp-host commit 52a0291 (2026-07).
/// Envoy registers the WASI file-system and socket calls only as stubs that return an error.
const ENVOY_ALL_ABIS: &[&str] = &[
    "proxy_log",
    "proxy_get_status",
    "proxy_set_property",
    "proxy_get_property",
    "proxy_send_local_response",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_get_header_map_value",
    "proxy_add_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_size",
    "proxy_get_buffer_status",
    "proxy_get_buffer_bytes",
    "proxy_set_buffer_bytes",
    "proxy_http_call",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_close",
    "proxy_grpc_cancel",
    "proxy_grpc_send",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_current_time_nanoseconds",
    "proxy_define_metric",
    "proxy_increment_metric",
    "proxy_record_metric",
    "proxy_get_metric",
    "proxy_set_effective_context",
    "proxy_done",
    "proxy_call_foreign_function",
    // Registered unconditionally next to the proxy-wasm functions.
    "pthread_equal",
    "emscripten_notify_memory_growth",
];

/// The ABI-specific ones (`registerCallbacks` registers them by the module's ABI version).
const ENVOY_0_1_0: &[&str] = &[
    "proxy_get_configuration",
    "proxy_continue_request",
    "proxy_continue_response",
    "proxy_clear_route_cache",
];
const ENVOY_0_2_0: &[&str] = &["proxy_continue_stream", "proxy_close_stream"];
const ENVOY_0_2_1: &[&str] = &[
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_get_log_level",
];

/// WASI functions, linked under both `wasi_unstable` and `wasi_snapshot_preview1`.
const ENVOY_WASI: &[&str] = &[
    "fd_write",
    "fd_read",
    "fd_seek",
    "fd_close",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "environ_get",
    "environ_sizes_get",
    "args_get",
    "args_sizes_get",
    "clock_time_get",
    "clock_res_get",
    "fd_advise",
    "fd_allocate",
    "fd_datasync",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_pwrite",
    "fd_readdir",
    "fd_renumber",
    "fd_sync",
    "fd_tell",
    "path_create_directory",
    "path_filestat_set_times",
    "path_link",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
    "random_get",
    "sched_yield",
    "poll_oneoff",
    "proc_exit",
    "path_open",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "path_filestat_get",
    "fd_filestat_get",
];

/// The ABI version a module declares by its `proxy_abi_version_*` export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abi {
    V0_1_0,
    V0_2_0,
    V0_2_1,
}

impl Abi {
    fn name(self) -> &'static str {
        match self {
            Abi::V0_1_0 => "0.1.0",
            Abi::V0_2_0 => "0.2.0",
            Abi::V0_2_1 => "0.2.1",
        }
    }
}

/// Whether Envoy links function `module.name` for a module of `abi` (no ABI export: Envoy
/// refuses the module, so nothing is supported).
fn envoy_supports(abi: Option<Abi>, module: &str, name: &str) -> bool {
    let Some(abi) = abi else {
        return false;
    };
    match module {
        "env" => {
            let specific = match abi {
                Abi::V0_1_0 => ENVOY_0_1_0,
                Abi::V0_2_0 => ENVOY_0_2_0,
                Abi::V0_2_1 => ENVOY_0_2_1,
            };
            ENVOY_ALL_ABIS.contains(&name) || specific.contains(&name)
        }
        "wasi_unstable" | "wasi_snapshot_preview1" => ENVOY_WASI.contains(&name),
        _ => false,
    }
}

/// One import of the module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// Import module (`env`, `wasi_snapshot_preview1`, ...).
    pub module: String,
    /// Name.
    pub name: String,
    /// `func`, `memory`, `table`, `global`, `tag`.
    pub kind: &'static str,
}

/// What a module's binary says about itself.
#[derive(Debug, Clone, Default)]
pub struct ModuleFacts {
    /// Exports, as (name, kind).
    pub exports: Vec<(String, &'static str)>,
    /// Imports.
    pub imports: Vec<Import>,
    /// Custom sections, as (name, size in bytes).
    pub custom_sections: Vec<(String, usize)>,
}

/// Reads the import, export and custom sections of a module.
pub fn parse(bytes: &[u8]) -> anyhow::Result<ModuleFacts> {
    use wasmparser::{ExternalKind, Parser, Payload, TypeRef};
    let mut facts = ModuleFacts::default();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.context("not a valid wasm module")? {
            Payload::Version { encoding, .. } if encoding != wasmparser::Encoding::Module => {
                anyhow::bail!(
                    "a wasm component, not a core module (proxy-wasm modules are core modules)"
                );
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.context("reading the import section")?;
                    let kind = match import.ty {
                        TypeRef::Func(_) | TypeRef::FuncExact(_) => "func",
                        TypeRef::Memory(_) => "memory",
                        TypeRef::Table(_) => "table",
                        TypeRef::Global(_) => "global",
                        TypeRef::Tag(_) => "tag",
                    };
                    facts.imports.push(Import {
                        module: import.module.to_owned(),
                        name: import.name.to_owned(),
                        kind,
                    });
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.context("reading the export section")?;
                    let kind = match export.kind {
                        ExternalKind::Func | ExternalKind::FuncExact => "func",
                        ExternalKind::Memory => "memory",
                        ExternalKind::Table => "table",
                        ExternalKind::Global => "global",
                        ExternalKind::Tag => "tag",
                    };
                    facts.exports.push((export.name.to_owned(), kind));
                }
            }
            Payload::CustomSection(c) => {
                facts
                    .custom_sections
                    .push((c.name().to_owned(), c.data().len()));
            }
            _ => {}
        }
    }
    Ok(facts)
}

fn abi_of(facts: &ModuleFacts) -> Option<Abi> {
    let exported = |n: &str| facts.exports.iter().any(|(e, k)| e == n && *k == "func");
    // The newest marker wins, as in meshgate's loader.
    if exported("proxy_abi_version_0_2_1") {
        Some(Abi::V0_2_1)
    } else if exported("proxy_abi_version_0_2_0") {
        Some(Abi::V0_2_0)
    } else if exported("proxy_abi_version_0_1_0") {
        Some(Abi::V0_1_0)
    } else {
        None
    }
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    meshgate_wasm::hex(&Sha256::digest(bytes))
}

/// The host functions meshgate's runtime links, as (module, name).
fn meshgate_functions() -> anyhow::Result<Vec<(String, String)>> {
    let engine = Engine::new(EngineOptions::default()).context("starting the wasm engine")?;
    engine
        .host_functions()
        .context("listing the runtime's host functions")
}

fn inspect(path: &Path, as_json: bool) -> anyhow::Result<(String, bool)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let facts = parse(&bytes).with_context(|| path.display().to_string())?;
    let abi = abi_of(&facts);
    let ours = meshgate_functions()?;
    let meshgate =
        |i: &Import| i.kind == "func" && ours.iter().any(|(m, n)| *m == i.module && *n == i.name);
    let unsupported: Vec<&Import> = facts.imports.iter().filter(|i| !meshgate(i)).collect();
    let ok = abi.is_some() && unsupported.is_empty();
    let digest = sha256_hex(&bytes);
    let out = if as_json {
        let imports: Vec<_> = facts
            .imports
            .iter()
            .map(|i| {
                json!({
                    "module": i.module,
                    "name": i.name,
                    "kind": i.kind,
                    "meshgate": meshgate(i),
                    "envoy": i.kind == "func" && envoy_supports(abi, &i.module, &i.name),
                })
            })
            .collect();
        let exports: Vec<_> = facts
            .exports
            .iter()
            .map(|(n, k)| json!({"name": n, "kind": k}))
            .collect();
        let custom: Vec<_> = facts
            .custom_sections
            .iter()
            .map(|(n, s)| json!({"name": n, "size": s}))
            .collect();
        let doc = json!({
            "file": path.display().to_string(),
            "size": bytes.len(),
            "sha256": digest,
            "abi_version": abi.map(Abi::name),
            "exports": exports,
            "imports": imports,
            "custom_sections": custom,
            "unsupported_imports": unsupported
                .iter()
                .map(|i| format!("{}.{}", i.module, i.name))
                .collect::<Vec<_>>(),
            "loadable": ok,
        });
        serde_json::to_string_pretty(&doc)? + "\n"
    } else {
        let mut o = String::new();
        let w = &mut o;
        use std::fmt::Write as _;
        writeln!(w, "file:    {}", path.display())?;
        writeln!(w, "size:    {} bytes", bytes.len())?;
        writeln!(w, "sha256:  {digest}")?;
        match abi {
            Some(a) => writeln!(w, "abi:     proxy-wasm {}", a.name())?,
            None => writeln!(
                w,
                "abi:     none (no proxy_abi_version_* export: not a proxy-wasm module)"
            )?,
        }
        writeln!(w, "exports: {}", facts.exports.len())?;
        for (name, kind) in &facts.exports {
            writeln!(w, "  {kind:<6} {name}")?;
        }
        writeln!(w, "imports: {}", facts.imports.len())?;
        let width = facts
            .imports
            .iter()
            .map(|i| i.module.len() + i.name.len() + 1)
            .max()
            .unwrap_or(0)
            .max(6);
        writeln!(w, "  {:<6} {:<width$}  meshgate  envoy", "kind", "import")?;
        let yes = |b: bool| if b { "yes" } else { "NO" };
        for i in &facts.imports {
            let name = format!("{}.{}", i.module, i.name);
            let envoy = i.kind == "func" && envoy_supports(abi, &i.module, &i.name);
            writeln!(
                w,
                "  {:<6} {name:<width$}  {:<8}  {}",
                i.kind,
                yes(meshgate(i)),
                yes(envoy)
            )?;
        }
        if !facts.custom_sections.is_empty() {
            writeln!(w, "custom sections:")?;
            for (name, size) in &facts.custom_sections {
                writeln!(w, "  {name} ({size} bytes)")?;
            }
        }
        if !unsupported.is_empty() {
            writeln!(
                w,
                "meshgate cannot load it: it imports {}",
                unsupported
                    .iter()
                    .map(|i| format!("{}.{}", i.module, i.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )?;
        }
        o
    };
    Ok((out, ok))
}

/// Runs `meshgate plugin inspect`: exit 0 when meshgate can load the module, 1 when it
/// imports something meshgate does not provide or is not a proxy-wasm module.
pub fn run(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let (out, ok) = inspect(&args.file, args.json)?;
    print!("{out}");
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_support_follows_the_abi_version() {
        assert!(envoy_supports(
            Some(Abi::V0_2_1),
            "env",
            "proxy_get_log_level"
        ));
        assert!(!envoy_supports(
            Some(Abi::V0_2_0),
            "env",
            "proxy_get_log_level"
        ));
        assert!(envoy_supports(
            Some(Abi::V0_1_0),
            "env",
            "proxy_continue_request"
        ));
        assert!(!envoy_supports(
            Some(Abi::V0_2_1),
            "env",
            "proxy_continue_request"
        ));
        assert!(envoy_supports(
            Some(Abi::V0_2_1),
            "wasi_snapshot_preview1",
            "fd_write"
        ));
        assert!(envoy_supports(
            Some(Abi::V0_2_1),
            "wasi_unstable",
            "fd_write"
        ));
        assert!(!envoy_supports(Some(Abi::V0_2_1), "env", "proxy_made_up"));
        assert!(!envoy_supports(None, "env", "proxy_log"));
    }

    #[test]
    fn a_wat_module_is_parsed() {
        let wasm = wat_module();
        let facts = parse(&wasm).expect("parse");
        assert_eq!(abi_of(&facts), Some(Abi::V0_2_0));
        assert_eq!(
            facts.imports,
            vec![Import {
                module: "env".into(),
                name: "proxy_log".into(),
                kind: "func"
            }]
        );
        assert!(parse(b"not wasm").is_err());
    }

    fn wat_module() -> Vec<u8> {
        wat::parse_str(
            r#"(module
                 (import "env" "proxy_log" (func (param i32 i32 i32) (result i32)))
                 (func (export "proxy_abi_version_0_2_0")))"#,
        )
        .expect("wat")
    }
}
