//! The root context every HTTP plugin writes, written once.
//!
//! A plugin describes how its state is built from its configuration ([`HttpPlugin::configure`])
//! and how a stream starts ([`HttpPlugin::stream`]); [`register`] installs a root context that
//! parses `pluginConfig` into [`HttpPlugin::Config`] on every `on_configure`, builds the state
//! once per configuration, shares it with each stream through an `Rc`, and refuses the
//! configuration with a logged `NAME: reason` when parsing or building fails. A stream that
//! arrives without a configuration (hosts create none after a refusal) is answered 500.
//!
//! ```no_run
//! use std::rc::Rc;
//! use meshgate_sdk::plugin::{register, HttpPlugin};
//! use meshgate_sdk::prelude::*;
//! use meshgate_sdk::proxy_wasm;
//!
//! #[derive(serde::Deserialize)]
//! struct Config { header: String }
//!
//! struct Tagger { header: String }
//!
//! impl HttpPlugin for Tagger {
//!     type Config = Config;
//!     const NAME: &'static str = "tagger";
//!     fn configure(config: Config) -> Result<Tagger, String> {
//!         Ok(Tagger { header: config.header.to_ascii_lowercase() })
//!     }
//!     fn stream(plugin: Rc<Tagger>) -> Box<dyn HttpContext> {
//!         Box::new(Stream(plugin))
//!     }
//! }
//!
//! struct Stream(Rc<Tagger>);
//! impl Context for Stream {}
//! impl HttpContext for Stream {
//!     fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
//!         self.add_http_request_header(&self.0.header, "seen");
//!         Action::Continue
//!     }
//! }
//!
//! proxy_wasm::main! {{
//!     register::<Tagger>();
//! }}
//! ```

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel};
use serde::de::DeserializeOwned;

/// An HTTP plugin: state built from a typed configuration, and streams that share it.
pub trait HttpPlugin: Sized + 'static {
    /// The `pluginConfig` document, parsed with [`crate::config::parse`] (an absent config
    /// reads as `{}`).
    type Config: DeserializeOwned;
    /// The name log lines start with.
    const NAME: &'static str;
    /// Builds the plugin's state; `Err(reason)` refuses the configuration.
    fn configure(config: Self::Config) -> Result<Self, String>;
    /// The context of a new HTTP stream.
    fn stream(plugin: Rc<Self>) -> Box<dyn HttpContext>;
}

/// Installs the root context of `P` (call it in `proxy_wasm::main!`), logging at `info`.
pub fn register<P: HttpPlugin>() {
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(Root::<P> { plugin: None }));
}

struct Root<P> {
    plugin: Option<Rc<P>>,
}

impl<P> Context for Root<P> {}

impl<P: HttpPlugin> RootContext for Root<P> {
    fn on_configure(&mut self, _size: usize) -> bool {
        let built = crate::config::load::<P::Config>()
            .map_err(|e| e.to_string())
            .and_then(P::configure);
        match built {
            Ok(p) => {
                self.plugin = Some(Rc::new(p));
                true
            }
            Err(e) => {
                log::error!("{}: {e}", P::NAME);
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Hosts create no streams for a refused configuration; should one come anyway, it is
        // refused rather than let through unfiltered (and `None` would make proxy-wasm trap).
        Some(match &self.plugin {
            Some(p) => P::stream(p.clone()),
            None => Box::new(Unconfigured(P::NAME)),
        })
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// A stream of a plugin that has no configuration: answered 500, never let through.
struct Unconfigured(&'static str);

impl Context for Unconfigured {}

impl HttpContext for Unconfigured {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> proxy_wasm::types::Action {
        crate::reply::reply(500)
            .text(&format!("{} is not configured", self.0))
            .send()
    }
}
