//! Test support: the real `meshgate` binary on loopback, real upstream servers and a small
//! real HTTP client. Every process and server here listens on 127.0.0.1 only and stops when
//! its handle is dropped.

#![allow(dead_code, unused_imports)]

pub mod client;
pub mod envoy;
pub mod fixtures;
pub mod gateway;
pub mod upstream;

pub use client::Client;
pub use gateway::Gateway;
pub use upstream::Upstream;

/// A free loopback port (bound then released; the caller binds it again at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
