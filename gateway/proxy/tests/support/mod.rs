//! Test support: the real `meshgate` binary on loopback, real upstream servers and a small
//! real HTTP client. Every process and server here listens on 127.0.0.1 only and stops when
//! its handle is dropped.

#![allow(dead_code, unused_imports)]

pub mod client;
pub mod envoy;
pub mod fixtures;
pub mod gateway;
pub mod parity;
pub mod plugins;
pub mod registry;
pub mod upstream;

pub use client::Client;
pub use gateway::Gateway;
pub use upstream::Upstream;

/// A free loopback port for a process a test starts (a gateway, Envoy), or for a port that
/// must refuse connections.
///
/// Handed out from 20000-29999, below Linux's default ephemeral range (32768-60999), so a
/// server that binds port 0 (the echo upstreams) never takes a port handed out but not bound
/// yet; within one test process no port is handed out twice, so parallel tests cannot collide.
/// Each candidate is checked free by binding it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Test binaries run one after another; start each one elsewhere anyway.
    let start = std::process::id() % 10_000;
    for _ in 0..10_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + ((start + n) % 10_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in 20000-29999");
}
