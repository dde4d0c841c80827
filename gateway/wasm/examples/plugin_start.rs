//! How long a plugin takes to start: compiling a module into an empty code cache, then (as
//! after a restart) loading it from that cache with a new engine, and starting a VM each time.
//! Prints one JSON line per module.
//!
//! `cargo run --release -p meshgate-wasm --example plugin_start -- [--synthetic BYTES]
//! [MODULE.wasm...]` (the bench runs it). `--synthetic BYTES` adds a generated plugin of at
//! least that many bytes, nearly all of them code (see [`synthetic`]), for a module size none
//! of the test plugins reaches.

use std::fmt::Write as _;
use std::rc::Rc;
use std::time::Instant;

use meshgate_wasm::{Engine, EngineOptions, NoHost, PluginConfig, PluginVm};

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// A proxy-wasm plugin whose binary is at least `bytes` long, nearly all of it code: the ABI
/// exports a VM start needs, and as many generated functions as it takes. Each function mixes
/// what compiled plugins are made of (locals, arithmetic, loads and stores to linear memory, a
/// branch, a loop, a call to the next function), so the compiler has real work per byte, as
/// it would for a large Go or Rust module, rather than one repeated instruction.
fn synthetic(bytes: usize) -> Result<Vec<u8>, wat::Error> {
    const HEAD: &str = r#"(module
  (memory (export "memory") 17)
  (global $sum (mut i32) (i32.const 0))
  (func (export "_initialize"))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param i32) (result i32) (i32.const 65536))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $f0 (local.get 0) (local.get 1))) (i32.const 0))
"#;
    // Function `$f{i}`, calling `next` (the next one's index) on one of its branches.
    let body = |out: &mut String, i: usize, next: Option<usize>| {
        let call = match next {
            Some(n) => format!("(call $f{n} (local.get $c) (local.get $b))"),
            None => "(local.get $c)".to_string(),
        };
        let _ = write!(
            out,
            r#"  (func $f{i} (param $a i32) (param $b i32) (result i32) (local $c i32) (local $k i32)
    (local.set $c (i32.add (i32.mul (local.get $a) (i32.const {m})) (local.get $b)))
    (if (i32.gt_u (local.get $c) (i32.const {t}))
      (then (local.set $c (i32.xor (local.get $c) (i32.shr_u (local.get $c) (i32.const 7)))))
      (else (local.set $c (i32.rotl (local.get $c) (i32.const 13)))))
    (i32.store offset={o} (i32.and (local.get $b) (i32.const 0xfff0)) (local.get $c))
    (block $out (loop $again
      (br_if $out (i32.ge_u (local.get $k) (i32.and (local.get $a) (i32.const 3))))
      (local.set $c (i32.add (local.get $c)
        (i32.load offset={o} (i32.and (local.get $k) (i32.const 0xfff0)))))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br $again)))
    (global.set $sum (i32.add (global.get $sum) (local.get $c)))
    (if (result i32) (i32.eqz (i32.and (local.get $c) (i32.const {bit})))
      (then {call})
      (else (i32.sub (local.get $c) (i32.const {i})))))
"#,
            m = 2 * i + 1,
            t = i * 7919 % 65521,
            o = i % 61 * 16,
            bit = 1 << (i % 31),
        );
    };
    // Grow the module until it is large enough (the size per function is measured, not guessed).
    let mut count = 1024;
    loop {
        let mut text = String::from(HEAD);
        for i in 0..count {
            body(&mut text, i, (i + 1 < count).then_some(i + 1));
        }
        text.push(')');
        let wasm = wat::parse_str(&text)?;
        if wasm.len() >= bytes {
            return Ok(wasm);
        }
        count = count * bytes / wasm.len() + 16;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut modules = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--synthetic" {
            let size: usize = args.next().ok_or("--synthetic takes a size")?.parse()?;
            modules.push((format!("synthetic ({size} bytes asked)"), synthetic(size)?));
        } else {
            let bytes = std::fs::read(&arg)?;
            modules.push((arg, bytes));
        }
    }
    for (name, bytes) in modules {
        let cache = tempfile::tempdir()?;
        let opts = EngineOptions {
            cache_dir: Some(cache.path().to_path_buf()),
            ..EngineOptions::default()
        };
        let mut row = serde_json::Map::new();
        row.insert("module".into(), name.into());
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
