//! What one HTTP stream costs in a plugin's VM, in-process: context create, request headers,
//! response headers, a one-chunk response body and its end, and the end of the stream, as the
//! gateway drives them for a lone plugin (two entries into the VM: context create with the
//! request headers, then the whole response). `cargo run --release -p meshgate-wasm --example
//! stream_cost -- MODULE.wasm [STREAMS] [EVICT_BYTES] [--separate]` prints nanoseconds per
//! stream; `--separate` makes each callback an entry of its own, as with several plugins.
//!
//! With `EVICT_BYTES`, each stream runs after the CPU's caches were filled with that much other
//! memory (written, then read), as they are when a gateway at a low request rate sleeps between
//! requests and other work runs meanwhile. Only the streams are timed, each on its own (two
//! clock reads, some 60 ns, are in every figure). 2 MiB is past a core's L2 here, 64 MiB past
//! the shared L3.

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use meshgate_wasm::{Engine, EngineOptions, NoHost, PluginConfig, PluginVm, Whole};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: stream_cost MODULE.wasm [STREAMS] [EVICT_BYTES] [--separate]")?;
    let n: u32 = args.next().map_or(Ok(200_000), |s| s.parse())?;
    let evict: usize = args.next().map_or(Ok(0), |s| s.parse())?;
    let separate = args.next().as_deref() == Some("--separate");
    let mut other = vec![0u64; evict / 8];
    let engine = Engine::new(EngineOptions::default())?;
    let module = engine.load(&std::fs::read(path)?)?;
    let plugin = engine.plugin(PluginConfig::new("cost"), module);
    let mut vm = PluginVm::start(&plugin, Rc::new(NoHost))?;
    let (req, ()) = http::Request::builder()
        .uri("/")
        .header("host", "bench.example.com")
        .header("user-agent", "wrk")
        .body(())?
        .into_parts();
    let (resp, ()) = http::Response::builder()
        .header("content-length", "20")
        .body(())?
        .into_parts();
    let body = Bytes::from_static(b"hello from upstream\n");
    let mut spent = std::time::Duration::ZERO;
    for i in 0..n {
        // Written, then read, a word per cache line; black_box keeps both passes.
        for (j, w) in other.iter_mut().enumerate().step_by(8) {
            *w = w.wrapping_add(u64::from(i) ^ j as u64);
        }
        std::hint::black_box(other.iter().step_by(8).fold(0, |a, w| a ^ w));
        let t = Instant::now();
        if separate {
            let id = vm.create_stream(Default::default())?;
            vm.on_request_headers(id, req.clone(), true)?;
            let _ = vm.take_request(id);
            vm.on_response_headers(id, resp.clone(), false)?;
            let _ = vm.take_response(id);
            vm.on_body(id, true, body.clone(), false)?;
            let _ = vm.take_body(id, true);
            vm.on_body(id, true, Bytes::new(), true)?;
            let _ = vm.take_body(id, true);
            vm.end_stream(id);
        } else {
            let id = vm.open_stream(Default::default())?;
            vm.on_request_headers(id, req.clone(), true)?;
            let _ = vm.take_request(id);
            match vm.respond_whole(id, resp.clone(), body.clone(), 1 << 20) {
                Whole::Done { .. } => {}
                _ => return Err("the plugin did not let the whole response through".into()),
            }
        }
        spent += t.elapsed();
    }
    let per = spent.as_nanos() / u128::from(n.max(1));
    let evicted = if evict > 0 {
        format!(", each after {evict} bytes of other memory")
    } else {
        String::new()
    };
    println!("{per} ns per stream ({n} streams{evicted})");
    Ok(())
}
