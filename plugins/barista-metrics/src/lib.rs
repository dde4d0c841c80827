//! barista-metrics: the coffee-shop example's plugin. Counts the orders placed on the orders
//! route, one counter per configured drink, and records how long the order service took.
//!
//! An order is a `POST` to the orders path (prefix `/orders` by default) naming its drink in the
//! query (`?drink=espresso`) or in a JSON body (`{"drink": "espresso", ...}`); the query wins when
//! both say. The body is read whole before the request goes on (the plugin pauses it until the end
//! of the stream), at most `maxBodyBytes`; a longer body goes on unread and the order counts as
//! `unknown`. Drinks compare case-insensitively; one not configured counts as `other`.
//!
//! Metrics (`P` is `metricPrefix`, default `barista`):
//! - `P_orders_total`: every order seen;
//! - `P_orders_DRINK_total`: per configured drink;
//! - `P_orders_other_total`, `P_orders_unknown_total`: a drink not configured, and no drink
//!   found (no query parameter, body not JSON, too long, or without the field);
//! - `P_order_duration_milliseconds` (histogram, unless `latency: false`): from the order's
//!   request headers to its response headers.

use std::rc::Rc;
use std::time::SystemTime;

use meshgate_sdk::prelude::*;
use meshgate_sdk::proxy_wasm;
use serde::Deserialize;

/// The configuration (`pluginConfig`), see `schema.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct Config {
    /// Path prefix of the orders route.
    path: String,
    /// Methods that place an order.
    methods: Vec<String>,
    /// Drinks with a counter of their own (metric-name characters only).
    drinks: Vec<String>,
    /// Query parameter naming the drink.
    query_param: String,
    /// Top-level field of the JSON body naming the drink.
    field: String,
    /// The most body bytes buffered to find the drink.
    max_body_bytes: usize,
    /// Prefix of every metric name.
    metric_prefix: String,
    /// Whether to record the order latency histogram.
    latency: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            path: "/orders".into(),
            methods: vec!["POST".into()],
            drinks: vec!["espresso".into()],
            query_param: "drink".into(),
            field: "drink".into(),
            max_body_bytes: 8192,
            metric_prefix: "barista".into(),
            latency: true,
        }
    }
}

/// A metric-name part: lowercase letters, digits and `_`, not empty, not starting with a digit.
fn metric_part(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Config {
    fn check(&self) -> Result<(), String> {
        if !self.path.starts_with('/') {
            return Err(format!("path {:?} must start with /", self.path));
        }
        if self.methods.is_empty() {
            return Err("methods must name at least one method".into());
        }
        if !metric_part(&self.metric_prefix) {
            return Err(format!(
                "metricPrefix {:?}: only a-z, 0-9 and _, not starting with a digit",
                self.metric_prefix
            ));
        }
        for d in &self.drinks {
            if !metric_part(d) || d == "other" || d == "unknown" {
                return Err(format!(
                    "drink {d:?}: only a-z, 0-9 and _ (it is part of a metric name), \
                     not `other` or `unknown`"
                ));
            }
        }
        if self.query_param.is_empty() && self.field.is_empty() {
            return Err("queryParam and field cannot both be empty".into());
        }
        if self.max_body_bytes > 1 << 20 {
            return Err("maxBodyBytes is at most 1048576 (the hosts' buffer limit)".into());
        }
        Ok(())
    }
}

/// The configuration with its metrics defined.
struct Plugin {
    config: Config,
    total: Counter,
    per_drink: Vec<(String, Counter)>,
    other: Counter,
    unknown: Counter,
    latency: Option<Histogram>,
}

impl Plugin {
    fn new(config: Config) -> Result<Plugin, String> {
        config.check()?;
        let p = &config.metric_prefix;
        let counter = |name: String| {
            Counter::define(&name).map_err(|s| format!("defining metric {name}: {s:?}"))
        };
        let mut per_drink = Vec::new();
        for d in &config.drinks {
            per_drink.push((d.clone(), counter(format!("{p}_orders_{d}_total"))?));
        }
        let latency = if config.latency {
            let name = format!("{p}_order_duration_milliseconds");
            Some(Histogram::define(&name).map_err(|s| format!("defining metric {name}: {s:?}"))?)
        } else {
            None
        };
        Ok(Plugin {
            total: counter(format!("{p}_orders_total"))?,
            other: counter(format!("{p}_orders_other_total"))?,
            unknown: counter(format!("{p}_orders_unknown_total"))?,
            per_drink,
            latency,
            config,
        })
    }

    /// Counts one order of `drink` (`None`: not found).
    fn count(&self, drink: Option<&str>) {
        self.total.inc();
        let Some(drink) = drink.map(str::trim) else {
            self.unknown.inc();
            return;
        };
        match self
            .per_drink
            .iter()
            .find(|(d, _)| d.eq_ignore_ascii_case(drink))
        {
            Some((_, c)) => c.inc(),
            None => self.other.inc(),
        }
    }
}

/// The drink named by a JSON body's top-level `field` (a string), if any.
fn drink_in_body(body: &[u8], field: &str) -> Option<String> {
    if field.is_empty() {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get(field)?.as_str().map(str::to_owned)
}

proxy_wasm::main! {{
    meshgate_sdk::plugin::register::<Plugin>();
}}

impl HttpPlugin for Plugin {
    type Config = Config;
    const NAME: &'static str = "barista-metrics";

    fn configure(config: Config) -> Result<Plugin, String> {
        Plugin::new(config)
    }

    fn stream(plugin: Rc<Plugin>) -> Box<dyn HttpContext> {
        Box::new(Stream {
            plugin,
            state: State::Ignored,
            started: None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not an order.
    Ignored,
    /// An order whose drink is looked for in the body.
    ReadingBody,
    /// Counted.
    Counted,
}

struct Stream {
    plugin: Rc<Plugin>,
    state: State,
    started: Option<SystemTime>,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let plugin = self.plugin.clone();
        let c = &plugin.config;
        let is_order = self
            .method()
            .is_some_and(|m| c.methods.iter().any(|x| x.eq_ignore_ascii_case(&m)))
            && self.path().is_some_and(|p| p.starts_with(&c.path));
        if !is_order {
            return Action::Continue;
        }
        self.started = Some(self.get_current_time());
        let from_query = if c.query_param.is_empty() {
            None
        } else {
            self.query_param(&c.query_param)
        };
        if from_query.is_some() || end_of_stream || c.field.is_empty() {
            plugin.count(from_query.as_deref());
            self.state = State::Counted;
        } else {
            self.state = State::ReadingBody;
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.state != State::ReadingBody {
            return Action::Continue;
        }
        let plugin = self.plugin.clone();
        if body_size > plugin.config.max_body_bytes {
            // Too long to look into: let it go on, unread.
            plugin.count(None);
            self.state = State::Counted;
            return Action::Continue;
        }
        if !end_of_stream {
            // Keep it buffered until the whole body is there.
            return Action::Pause;
        }
        let drink = self
            .get_http_request_body(0, body_size)
            .and_then(|b| drink_in_body(&b, &plugin.config.field));
        plugin.count(drink.as_deref());
        self.state = State::Counted;
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // A body followed by trailers: the data callbacks never said end_of_stream.
        if self.state == State::ReadingBody {
            let plugin = &self.plugin;
            let drink = self
                .get_http_request_body(0, plugin.config.max_body_bytes)
                .and_then(|b| drink_in_body(&b, &plugin.config.field));
            plugin.count(drink.as_deref());
            self.state = State::Counted;
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(started) = self.started.take() {
            if let Some(h) = self.plugin.latency {
                let ms = self
                    .get_current_time()
                    .duration_since(started)
                    .map_or(0, |d| d.as_millis());
                h.record(u64::try_from(ms).unwrap_or(u64::MAX));
            }
        }
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drinks_from_bodies() {
        assert_eq!(
            drink_in_body(br#"{"drink":"espresso","size":2}"#, "drink").as_deref(),
            Some("espresso")
        );
        assert_eq!(drink_in_body(br#"{"drink":3}"#, "drink"), None);
        assert_eq!(drink_in_body(b"not json", "drink"), None);
        assert_eq!(drink_in_body(br#"["drink"]"#, "drink"), None);
        assert_eq!(drink_in_body(br#"{"drink":"x"}"#, ""), None);
    }

    #[test]
    fn config_checks() {
        assert!(Config::default().check().is_ok());
        let bad = |f: fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            c.check().is_err()
        };
        assert!(bad(|c| c.drinks = vec!["Flat White".into()]));
        assert!(bad(|c| c.drinks = vec!["other".into()]));
        assert!(bad(|c| c.metric_prefix = "9x".into()));
        assert!(bad(|c| c.path = "orders".into()));
        assert!(bad(|c| c.methods.clear()));
        assert!(bad(|c| c.max_body_bytes = 2 << 20));
    }
}
