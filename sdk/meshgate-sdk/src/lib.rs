//! # meshgate-sdk: proxy-wasm plugins with less ceremony
//!
//! A thin layer over the [`proxy_wasm`] crate (ABI 0.2.1). Everything here is made of plain
//! proxy-wasm host calls, so a plugin built with it runs unchanged in meshgate and in Envoy.
//! What it adds is where the raw API is clumsy:
//!
//! - [`config`]: the plugin configuration (Istio's `pluginConfig`, handed over as JSON) parsed
//!   into your own `serde` type, with a logged error and a refused configuration when it does
//!   not fit;
//! - [`headers`]: the request's method, path, query parameters and authority, and all values of
//!   a header, without spelling out pseudo-headers, read as bytes so that a header value that is
//!   not UTF-8 never traps the plugin (proxy-wasm's own text getters panic on one);
//! - [`reply`]: local replies (`send_http_response`) built step by step;
//! - [`metrics`]: typed handles for counters, gauges and histograms;
//! - [`callout`]: HTTP callouts with the pseudo-headers Envoy insists on, and their answers;
//! - [`shared`]: read-modify-write of shared data with compare-and-swap retries;
//! - [`plugin`]: the root context (typed config in, shared state out to every stream), written
//!   once: implement [`plugin::HttpPlugin`] and call [`plugin::register`].
//!
//! ```no_run
//! use meshgate_sdk::prelude::*;
//! use meshgate_sdk::proxy_wasm;
//!
//! #[derive(Default, serde::Deserialize)]
//! struct Config { header: String }
//!
//! proxy_wasm::main! {{
//!     proxy_wasm::set_root_context(|_| Box::new(Root { config: Default::default() }));
//! }}
//!
//! struct Root { config: std::rc::Rc<Config> }
//! impl Context for Root {}
//! impl RootContext for Root {
//!     fn on_configure(&mut self, _: usize) -> bool {
//!         meshgate_sdk::config::configure(&mut self.config)
//!     }
//!     fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
//!         Some(Box::new(Stream { config: self.config.clone() }))
//!     }
//!     fn get_type(&self) -> Option<ContextType> { Some(ContextType::HttpContext) }
//! }
//! struct Stream { config: std::rc::Rc<Config> }
//! impl Context for Stream {}
//! impl HttpContext for Stream {
//!     fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
//!         match self.request_header_values(&self.config.header).len() {
//!             0 => reply(400).text("missing header").send(),
//!             _ => Action::Continue,
//!         }
//!     }
//! }
//! ```

pub mod callout;
pub mod config;
pub mod headers;
pub mod metrics;
pub mod plugin;
pub mod reply;
pub mod shared;

pub use proxy_wasm;

/// The traits and types a plugin usually needs, in one `use`.
pub mod prelude {
    pub use crate::callout::{CallResponse, Callout};
    pub use crate::headers::{RequestHeaders, ResponseHeaders};
    pub use crate::metrics::{Counter, Gauge, Histogram};
    pub use crate::plugin::HttpPlugin;
    pub use crate::reply::{reply, Reply};
    pub use proxy_wasm::traits::{Context, HttpContext, RootContext};
    pub use proxy_wasm::types::{Action, ContextType, LogLevel, Status};
}
