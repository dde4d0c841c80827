//! Where the test plugins (`plugins/`, built by `scripts/build-plugins.sh`) are: the same
//! lookup the gateway's integration tests use.

#[path = "../../../../gateway/proxy/tests/support/plugins.rs"]
mod plugins;

pub use plugins::path as plugin;
