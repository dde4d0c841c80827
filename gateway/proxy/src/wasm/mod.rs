//! WasmPlugins in the request path: loading modules for a snapshot (`loader`), one VM per
//! plugin per worker (`vms`), the filter chain a request runs through (`filter`, with `body`
//! for streamed bodies) and plugin callouts (`callout`). The ABI itself is `meshgate-wasm`.

mod body;
mod callout;
pub mod dump;
pub mod filter;
pub mod loader;
pub mod node;
pub mod stats;
pub mod vms;

pub use loader::{LoadState, LoadedPlugin, PullInfo, PullSettings, Runtime};
