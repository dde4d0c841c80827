//! rate-limit: a local rate limiter. One token bucket per key (a request header, the client's
//! address or the authority), kept in shared data so every worker's VM draws from the same
//! bucket, updated with compare-and-swap. A request takes one token; without one it is answered
//! `429` with `x-ratelimit-*` and `retry-after` headers, as Envoy's local_ratelimit filter answers
//! with `enable_x_ratelimit_headers: DRAFT_VERSION_03`.
//!
//! A bucket holds `capacity` tokens and gains `tokensPerSecond`, computed from the host clock
//! (`get_current_time`) at each request; tokens are kept in millionths so slow rates refill
//! exactly. The shared-data value is 16 bytes: tokens (u64 LE, millionths) and the time of the
//! last refill (u64 LE, nanoseconds since the epoch).
//!
//! Metrics: `P_allowed_total`, `P_limited_total` and `P_errors_total` (shared data failed; the
//! request follows `onError`), `P` being `metricPrefix` (default `rate_limit`).

use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use meshgate_sdk::prelude::*;
use meshgate_sdk::proxy_wasm;
use serde::Deserialize;

/// Tokens are counted in millionths.
const MICRO: u64 = 1_000_000;

/// Where a request's key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
enum KeyFrom {
    /// One bucket for every request.
    Global,
    /// A request header's (first) value.
    Header { name: String },
    /// The client's address (`source.address` without the port).
    SourceAddress,
    /// `:authority`.
    Authority,
}

/// What a request gets when shared data fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
enum OnError {
    Allow,
    Deny,
}

/// The configuration (`pluginConfig`), see `schema.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct Config {
    /// The bucket size: how many requests can come at once.
    capacity: u64,
    /// Refill rate (may be fractional, e.g. 0.5 for one request every two seconds).
    tokens_per_second: f64,
    /// Which bucket a request draws from.
    key: KeyFrom,
    /// The bucket for requests without the key (header absent): `None` lets them through
    /// unlimited.
    missing_key_bucket: Option<String>,
    /// A key longer than this counts as missing (it would be a shared-data entry of that size).
    max_key_bytes: usize,
    /// Whether to send `x-ratelimit-limit`/`-remaining`/`-reset` on every response.
    headers: bool,
    /// Body of the 429.
    body: String,
    /// Shared-data failure (CAS lost on every attempt, host error).
    on_error: OnError,
    /// Prefix of every metric name.
    metric_prefix: String,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            capacity: 10,
            tokens_per_second: 1.0,
            key: KeyFrom::SourceAddress,
            missing_key_bucket: Some(String::new()),
            max_key_bytes: 128,
            headers: true,
            body: "local_rate_limited".into(),
            on_error: OnError::Allow,
            metric_prefix: "rate_limit".into(),
        }
    }
}

/// The checked configuration with its metrics.
struct Plugin {
    config: Config,
    /// Refill, in millionths of a token per second.
    rate: u64,
    /// Shared-data key prefix: the plugin's name, so two plugins keep separate buckets.
    prefix: String,
    allowed: Counter,
    limited: Counter,
    errors: Counter,
}

impl Plugin {
    fn new(config: Config, name: &str) -> Result<Plugin, String> {
        if config.capacity == 0 || config.capacity > u64::MAX / MICRO {
            return Err(format!(
                "capacity must be 1 to {}, not {}",
                u64::MAX / MICRO,
                config.capacity
            ));
        }
        let rate = config.tokens_per_second * MICRO as f64;
        if !rate.is_finite() || !(1.0..=1e15).contains(&rate) {
            return Err(format!(
                "tokensPerSecond must be between 0.000001 and 1e9, not {}",
                config.tokens_per_second
            ));
        }
        if let KeyFrom::Header { name } = &config.key {
            if name.is_empty() || name.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(format!("key.name {name:?}: a lowercase header name"));
            }
        }
        let p = &config.metric_prefix;
        let ok = !p.is_empty()
            && !p.starts_with(|c: char| c.is_ascii_digit())
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            return Err(format!("metricPrefix {p:?}: only a-z, 0-9 and _"));
        }
        let counter = |n: &str| {
            Counter::define(&format!("{p}_{n}")).map_err(|s| format!("metric {n}: {s:?}"))
        };
        Ok(Plugin {
            rate: rate as u64,
            prefix: format!("rate-limit/{name}/"),
            allowed: counter("allowed_total")?,
            limited: counter("limited_total")?,
            errors: counter("errors_total")?,
            config,
        })
    }
}

/// A bucket's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    /// Millionths of a token.
    tokens: u64,
    /// Last refill, ns since the epoch.
    at: u64,
}

impl Bucket {
    fn decode(b: &[u8]) -> Option<Bucket> {
        let tokens = u64::from_le_bytes(b.get(0..8)?.try_into().ok()?);
        let at = u64::from_le_bytes(b.get(8..16)?.try_into().ok()?);
        Some(Bucket { tokens, at })
    }

    fn encode(self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(&self.tokens.to_le_bytes());
        v.extend_from_slice(&self.at.to_le_bytes());
        v
    }

    /// The bucket refilled up to `now` (full when new or unreadable). A clock that went back
    /// refills nothing.
    fn refilled(current: Option<&[u8]>, now: u64, capacity: u64, rate: u64) -> Bucket {
        let full = capacity * MICRO;
        let Some(b) = current.and_then(Bucket::decode) else {
            return Bucket {
                tokens: full,
                at: now,
            };
        };
        let elapsed = u128::from(now.saturating_sub(b.at));
        let gained = elapsed * u128::from(rate) / 1_000_000_000;
        let tokens = (u128::from(b.tokens) + gained).min(u128::from(full)) as u64;
        Bucket {
            tokens,
            at: now.max(b.at),
        }
    }
}

/// What one request got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decision {
    allowed: bool,
    /// Whole tokens left.
    remaining: u64,
    /// Seconds until the next whole token (0 when one is there).
    reset_secs: u64,
}

/// Takes one token from the bucket in `current` at time `now`; `(decision, new value)`.
fn take(current: Option<&[u8]>, now: u64, capacity: u64, rate: u64) -> (Decision, Bucket) {
    let mut b = Bucket::refilled(current, now, capacity, rate);
    let allowed = b.tokens >= MICRO;
    if allowed {
        b.tokens -= MICRO;
    }
    let missing = MICRO - (b.tokens % MICRO);
    // Round up: `retry-after: 0` would invite an immediate retry that fails.
    let reset_secs = missing.div_ceil(rate);
    let decision = Decision {
        allowed,
        remaining: b.tokens / MICRO,
        reset_secs: if b.tokens >= MICRO { 0 } else { reset_secs },
    };
    (decision, b)
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `1.2.3.4:5678` -> `1.2.3.4`, `[::1]:80` -> `::1`; anything else as it is.
fn host_of(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => address,
    }
}

/// The plugin's name as the host knows it (`plugin_name`), which prefixes its shared-data keys.
fn plugin_name() -> String {
    proxy_wasm::hostcalls::get_property(vec!["plugin_name"])
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default()
}

proxy_wasm::main! {{
    meshgate_sdk::plugin::register::<Plugin>();
}}

impl HttpPlugin for Plugin {
    type Config = Config;
    const NAME: &'static str = "rate-limit";

    fn configure(config: Config) -> Result<Plugin, String> {
        Plugin::new(config, &plugin_name())
    }

    fn stream(plugin: Rc<Plugin>) -> Box<dyn HttpContext> {
        Box::new(Stream {
            plugin,
            decision: None,
        })
    }
}

struct Stream {
    plugin: Rc<Plugin>,
    decision: Option<Decision>,
}

impl Stream {
    /// The bucket name of this request, or `None` (not limited).
    fn key(&self, config: &Config) -> Option<String> {
        let found = match &config.key {
            KeyFrom::Global => Some(String::new()),
            KeyFrom::Header { name } => self.request_header(name),
            KeyFrom::Authority => self.authority(),
            KeyFrom::SourceAddress => self
                .get_property(vec!["source", "address"])
                .and_then(|b| String::from_utf8(b).ok())
                .map(|a| host_of(&a).to_owned()),
        };
        found
            .filter(|k| k.len() <= config.max_key_bytes)
            .map(|k| format!("k:{k}"))
            .or_else(|| config.missing_key_bucket.as_ref().map(|b| format!("m:{b}")))
    }
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let plugin = self.plugin.clone();
        let c = &plugin.config;
        let Some(key) = self.key(c) else {
            return Action::Continue;
        };
        let now = nanos(self.get_current_time());
        let mut decision = None;
        let result = meshgate_sdk::shared::update(&format!("{}{key}", plugin.prefix), |cur| {
            let (d, b) = take(cur, now, c.capacity, plugin.rate);
            decision = Some(d);
            Some(b.encode())
        });
        let decision = match (result, decision) {
            (Ok(_), Some(d)) => d,
            (r, _) => {
                log::warn!("rate-limit: shared data for {key:?}: {:?}", r.err());
                plugin.errors.inc();
                Decision {
                    allowed: c.on_error == OnError::Allow,
                    remaining: 0,
                    reset_secs: 1,
                }
            }
        };
        if decision.allowed {
            plugin.allowed.inc();
            self.decision = c.headers.then_some(decision);
            return Action::Continue;
        }
        plugin.limited.inc();
        let limit = c.capacity.to_string();
        let reset = decision.reset_secs.max(1).to_string();
        let mut r = reply(429)
            .header("x-envoy-ratelimited", "true")
            .header("retry-after", &reset);
        if c.headers {
            r = r
                .header("x-ratelimit-limit", &limit)
                .header("x-ratelimit-remaining", "0")
                .header("x-ratelimit-reset", &reset);
        }
        r.text(&c.body).send()
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(d) = self.decision {
            let limit = self.plugin.config.capacity.to_string();
            self.set_http_response_header("x-ratelimit-limit", Some(&limit));
            self.set_http_response_header("x-ratelimit-remaining", Some(&d.remaining.to_string()));
            self.set_http_response_header("x-ratelimit-reset", Some(&d.reset_secs.to_string()));
        }
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn bucket_takes_and_refills() {
        // 2 tokens, one every 2 s.
        let (cap, rate) = (2, MICRO / 2);
        let (d, b) = take(None, 10 * S, cap, rate);
        assert!(d.allowed);
        assert_eq!((d.remaining, d.reset_secs), (1, 0));
        let (d, b) = take(Some(&b.encode()), 10 * S, cap, rate);
        assert!(d.allowed);
        assert_eq!((d.remaining, d.reset_secs), (0, 2));
        let (d, b) = take(Some(&b.encode()), 11 * S, cap, rate);
        assert!(!d.allowed);
        assert_eq!((d.remaining, d.reset_secs), (0, 1));
        let (d, b) = take(Some(&b.encode()), 12 * S, cap, rate);
        assert!(d.allowed, "{d:?}");
        // Long idle: refills to capacity, not beyond.
        let (d, _) = take(Some(&b.encode()), 1000 * S, cap, rate);
        assert_eq!(d.remaining, 1);
        // A clock going back refills nothing; garbage reads as a full bucket.
        let (d, _) = take(Some(&b.encode()), 5 * S, cap, rate);
        assert!(!d.allowed);
        assert!(take(Some(b"junk"), 5 * S, cap, rate).0.allowed);
    }

    #[test]
    fn addresses() {
        assert_eq!(host_of("10.0.0.1:5555"), "10.0.0.1");
        assert_eq!(host_of("[::1]:80"), "::1");
        assert_eq!(host_of("::1"), "::1");
        assert_eq!(host_of("unix"), "unix");
    }
}
