//! The plugin configuration as your own type.
//!
//! Istio hands a WasmPlugin's `pluginConfig` to the plugin as a JSON document (and nothing, or
//! `{}`, when it is absent). [`configure`] reads it in `on_configure`, parses it with `serde`,
//! and on a mismatch logs where and why and returns `false`, which makes the host refuse the
//! configuration instead of running the plugin half-configured.

use std::fmt;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::types::BufferType;
use serde::de::DeserializeOwned;

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> ConfigError {
        ConfigError {
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Parses a configuration document. An empty (or all-whitespace) document reads as `{}`, so a
/// type whose fields all have defaults accepts a WasmPlugin without `pluginConfig`.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(text).map_err(|e| {
        ConfigError::new(format!(
            "plugin configuration, line {} column {}: {e}",
            e.line(),
            e.column()
        ))
    })
}

/// Reads and parses the plugin configuration of the current root context.
pub fn load<T: DeserializeOwned>() -> Result<T, ConfigError> {
    let bytes = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        .map_err(|s| ConfigError::new(format!("reading the plugin configuration: {s:?}")))?
        .unwrap_or_default();
    parse(&bytes)
}

/// For `RootContext::on_configure`: loads the configuration into `slot` and returns `true`, or
/// logs the error, leaves `slot` as it was and returns `false` (the host then refuses the
/// configuration).
pub fn configure<T: DeserializeOwned>(slot: &mut Rc<T>) -> bool {
    match load::<T>() {
        Ok(config) => {
            *slot = Rc::new(config);
            true
        }
        Err(e) => {
            log::error!("{e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        name: String,
        limit: u32,
    }

    #[test]
    fn empty_reads_as_defaults() {
        assert_eq!(parse::<Sample>(b"  \n").unwrap(), Sample::default());
    }

    #[test]
    fn errors_say_where() {
        let e = parse::<Sample>(b"{\n  \"limit\": \"ten\"\n}").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = parse::<Sample>(b"{\"nmae\": \"x\"}").unwrap_err();
        assert!(e.to_string().contains("unknown field `nmae`"), "{e}");
    }
}
