//! What one HTTP stream costs in a plugin's VM, in-process: context create, request headers,
//! response headers, a one-chunk response body and its end, and the end of the stream, as the
//! gateway drives them. `cargo run --release -p meshgate-wasm --example stream_cost --
//! MODULE.wasm [STREAMS]` prints nanoseconds per stream.

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use meshgate_wasm::{Engine, EngineOptions, NoHost, PluginConfig, PluginVm};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: stream_cost MODULE.wasm [STREAMS]")?;
    let n: u32 = args.next().map_or(Ok(200_000), |s| s.parse())?;
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
    let t = Instant::now();
    for _ in 0..n {
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
    }
    let per = t.elapsed().as_nanos() / u128::from(n.max(1));
    println!("{per} ns per stream ({n} streams)");
    Ok(())
}
