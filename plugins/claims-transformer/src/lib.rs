//! claims-transformer: maps JWT claims to request headers and edits request and response headers.
//!
//! The claims come from the payload segment of the `Authorization: Bearer` token, or from a
//! header holding the base64url payload (Istio's RequestAuthentication `outputPayloadToHeader`).
//! **Nothing is verified here**: verifying the token is RequestAuthentication's job, and this
//! plugin must run after it (`phase: AUTHZ`), with an AuthorizationPolicy requiring a principal
//! where a token is mandatory.
//!
//! Every configured output header is removed from the request first, whether or not a token
//! comes, so a client cannot pass its own `x-user: admin` through. Then each claim found is set
//! (nested claims by dotted path, `realm_access.roles`; a key that contains dots itself is found
//! too), then the request rules run (remove, rename, set, append). The response rules run on the
//! response. A token that does not decode, or a claim value that is not a valid header value,
//! adds nothing and is counted.
//!
//! Metrics: `P_tokens_total` (payload decoded), `P_invalid_tokens_total`, `P_claims_set_total`,
//! `P` being `metricPrefix` (default `claims_transformer`).

use std::collections::BTreeMap;
use std::rc::Rc;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use meshgate_sdk::prelude::*;
use meshgate_sdk::proxy_wasm;
use serde::Deserialize;
use serde_json::Value;

/// The longest token (or payload header) looked at.
const MAX_TOKEN: usize = 16 * 1024;

/// base64url, with or without padding, as JWTs and Envoy's payload header spell it.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Where the claims are read from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
enum Source {
    /// `Authorization: Bearer <jwt>`: the payload segment.
    Bearer,
    /// A header with the base64url-encoded payload (Istio `outputPayloadToHeader`).
    PayloadHeader { name: String },
}

/// One claim to header mapping.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Claim {
    /// Claim name, dotted for nested objects (`realm_access.roles`).
    claim: String,
    /// The request header it becomes.
    header: String,
    /// Joins array values (default `,`).
    #[serde(default = "comma")]
    separator: String,
}

fn comma() -> String {
    ",".into()
}

/// Header edits, applied in this order: remove, rename, set, append.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Rules {
    remove: Vec<String>,
    /// `from -> to`: every value of `from` moves to `to` (replacing `to`).
    rename: BTreeMap<String, String>,
    /// Replace (or add).
    set: BTreeMap<String, String>,
    /// Add a value, keeping existing ones.
    append: BTreeMap<String, String>,
}

/// The configuration (`pluginConfig`), see `schema.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct Config {
    source: Source,
    claims: Vec<Claim>,
    request: Rules,
    response: Rules,
    /// Whether to remove `authorization` once its claims are read.
    remove_authorization: bool,
    metric_prefix: String,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            source: Source::Bearer,
            claims: Vec::new(),
            request: Rules::default(),
            response: Rules::default(),
            remove_authorization: false,
            metric_prefix: "claims_transformer".into(),
        }
    }
}

/// A header name as both hosts accept one: lowercase token characters, no pseudo-header.
fn header_name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b)
        })
}

/// A header value: visible ASCII, space and tab, and bytes >= 0x80; no CR, LF or NUL.
fn header_value_ok(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

impl Config {
    fn check(&self) -> Result<(), String> {
        let mut names: Vec<(&str, &str)> = Vec::new();
        for c in &self.claims {
            if c.claim.is_empty() {
                return Err("claims[].claim must not be empty".into());
            }
            names.push(("claims[].header", &c.header));
        }
        if let Source::PayloadHeader { name } = &self.source {
            names.push(("source.name", name));
        }
        for (what, rules) in [("request", &self.request), ("response", &self.response)] {
            for n in &rules.remove {
                names.push((what, n));
            }
            for (a, b) in &rules.rename {
                names.push((what, a));
                names.push((what, b));
            }
            for (n, v) in rules.set.iter().chain(&rules.append) {
                names.push((what, n));
                if !header_value_ok(v) {
                    return Err(format!("{what}: value of {n:?} has control characters"));
                }
            }
        }
        for (what, n) in names {
            if !header_name_ok(n) {
                return Err(format!(
                    "{what}: {n:?} is not a lowercase header name (pseudo-headers cannot be edited)"
                ));
            }
        }
        let p = &self.metric_prefix;
        if p.is_empty()
            || p.starts_with(|c: char| c.is_ascii_digit())
            || !p
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(format!("metricPrefix {p:?}: only a-z, 0-9 and _"));
        }
        Ok(())
    }
}

/// The payload of a compact JWT (`header.payload.signature`), decoded; `None` when it is not one.
fn jwt_payload(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    decode_payload(payload)
}

/// A base64url JSON object, decoded.
fn decode_payload(b64: &str) -> Option<Value> {
    if b64.len() > MAX_TOKEN {
        return None;
    }
    let bytes = B64URL.decode(b64.trim()).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.is_object().then_some(v)
}

/// The claim at `path`: the whole path as a key first, then split at dots, longest key first at
/// each level (`a.b.c` finds `{"a.b": {"c": 1}}` as well as `{"a": {"b": {"c": 1}}}`).
fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let obj = v.as_object()?;
    if let Some(found) = obj.get(path) {
        return Some(found);
    }
    let mut cut = path.len();
    while let Some(i) = path[..cut].rfind('.') {
        if let Some(inner) = obj.get(&path[..i]) {
            if let Some(found) = lookup(inner, &path[i + 1..]) {
                return Some(found);
            }
        }
        cut = i;
    }
    None
}

/// A claim as a header value: strings as they are, numbers and booleans in JSON, arrays of
/// those joined with `sep`, objects as compact JSON; `None` for null or an unfit value.
fn header_value(v: &Value, sep: &str) -> Option<String> {
    let s = match v {
        Value::Null => return None,
        Value::String(s) => s.clone(),
        Value::Bool(_) | Value::Number(_) => v.to_string(),
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for i in items {
                match i {
                    Value::String(s) => out.push(s.clone()),
                    Value::Bool(_) | Value::Number(_) => out.push(i.to_string()),
                    _ => out.push(i.to_string()),
                }
            }
            out.join(sep)
        }
        Value::Object(_) => v.to_string(),
    };
    header_value_ok(&s).then_some(s)
}

/// The checked configuration with its metrics.
struct Plugin {
    config: Config,
    /// Every header the claims write, stripped from each request first.
    outputs: Vec<String>,
    tokens: Counter,
    invalid: Counter,
    claims_set: Counter,
}

impl Plugin {
    fn new(config: Config) -> Result<Plugin, String> {
        config.check()?;
        let p = &config.metric_prefix;
        let counter = |n: &str| {
            Counter::define(&format!("{p}_{n}")).map_err(|s| format!("metric {n}: {s:?}"))
        };
        let mut outputs: Vec<String> = config.claims.iter().map(|c| c.header.clone()).collect();
        outputs.sort();
        outputs.dedup();
        Ok(Plugin {
            tokens: counter("tokens_total")?,
            invalid: counter("invalid_tokens_total")?,
            claims_set: counter("claims_set_total")?,
            outputs,
            config,
        })
    }
}

/// Applies `rules` through the four header operations of one direction (bytes, so a value
/// that is not UTF-8 is renamed as it is).
fn apply(
    rules: &Rules,
    get_all: impl Fn(&str) -> Vec<Vec<u8>>,
    set: impl Fn(&str, Option<&[u8]>),
    add: impl Fn(&str, &[u8]),
) {
    for n in &rules.remove {
        set(n, None);
    }
    for (from, to) in &rules.rename {
        let values = get_all(from);
        if values.is_empty() {
            continue;
        }
        set(from, None);
        set(to, None);
        for v in values {
            add(to, &v);
        }
    }
    for (n, v) in &rules.set {
        set(n, Some(v.as_bytes()));
    }
    for (n, v) in &rules.append {
        add(n, v.as_bytes());
    }
}

proxy_wasm::main! {{
    meshgate_sdk::plugin::register::<Plugin>();
}}

impl HttpPlugin for Plugin {
    type Config = Config;
    const NAME: &'static str = "claims-transformer";

    fn configure(config: Config) -> Result<Plugin, String> {
        Plugin::new(config)
    }

    fn stream(plugin: Rc<Plugin>) -> Box<dyn HttpContext> {
        Box::new(Stream { plugin })
    }
}

struct Stream {
    plugin: Rc<Plugin>,
}

impl Stream {
    /// The claims of this request: `None` without a token, `Some(None)` for one that does not
    /// decode.
    fn claims(&self, source: &Source) -> Option<Option<Value>> {
        match source {
            Source::Bearer => {
                let auth = self.request_header("authorization")?;
                let (scheme, token) = auth.trim().split_once(' ')?;
                if !scheme.eq_ignore_ascii_case("bearer") {
                    return None;
                }
                Some(jwt_payload(token.trim()))
            }
            Source::PayloadHeader { name } => {
                let v = self.request_header(name)?;
                Some(decode_payload(&v))
            }
        }
    }
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let plugin = self.plugin.clone();
        let c = &plugin.config;
        // Whatever the client sent under an output name goes, token or not.
        for h in &plugin.outputs {
            self.set_http_request_header(h, None);
        }
        match self.claims(&c.source) {
            None => {}
            Some(None) => plugin.invalid.inc(),
            Some(Some(payload)) => {
                plugin.tokens.inc();
                for m in &c.claims {
                    let Some(v) = lookup(&payload, &m.claim) else {
                        continue;
                    };
                    match header_value(v, &m.separator) {
                        Some(v) => {
                            self.set_http_request_header(&m.header, Some(&v));
                            plugin.claims_set.inc();
                        }
                        None => log::info!(
                            "claims-transformer: claim {:?} is not a header value, skipped",
                            m.claim
                        ),
                    }
                }
            }
        }
        if c.remove_authorization {
            self.set_http_request_header("authorization", None);
        }
        apply(
            &c.request,
            |n| self.request_header_values_bytes(n),
            |n, v| self.set_http_request_header_bytes(n, v),
            |n, v| self.add_http_request_header_bytes(n, v),
        );
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let plugin = self.plugin.clone();
        apply(
            &plugin.config.response,
            |n| self.response_header_values_bytes(n),
            |n, v| self.set_http_response_header_bytes(n, v),
            |n, v| self.add_http_response_header_bytes(n, v),
        );
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payloads_decode() {
        let payload = B64URL.encode(br#"{"sub":"alice","n":{"roles":["a","b"]}}"#);
        let v = jwt_payload(&format!("eyJhbGciOiJub25lIn0.{payload}.sig")).unwrap();
        assert_eq!(v["sub"], "alice");
        // Padded, too; not three segments, not base64, not an object: nothing.
        let padded = base64::engine::general_purpose::URL_SAFE.encode(br#"{"sub":"bob"}"#);
        assert!(padded.ends_with('='));
        assert_eq!(decode_payload(&padded).unwrap()["sub"], "bob");
        assert!(jwt_payload(&format!("a.{payload}")).is_none());
        assert!(jwt_payload("a.b.c.d").is_none());
        assert!(jwt_payload("a.!!!.c").is_none());
        assert!(decode_payload(&B64URL.encode(b"[1]")).is_none());
        assert!(decode_payload(&"A".repeat(MAX_TOKEN + 1)).is_none());
    }

    #[test]
    fn dotted_paths() {
        let v = json!({"a": {"b": {"c": 1}}, "x.y": {"z": 2}, "k.l": 3, "arr": [1]});
        assert_eq!(lookup(&v, "a.b.c"), Some(&json!(1)));
        assert_eq!(lookup(&v, "x.y.z"), Some(&json!(2)));
        assert_eq!(lookup(&v, "k.l"), Some(&json!(3)));
        assert_eq!(lookup(&v, "a.b"), Some(&json!({"c": 1})));
        assert_eq!(lookup(&v, "a.q"), None);
        assert_eq!(lookup(&v, "arr.0"), None);
    }

    #[test]
    fn values() {
        assert_eq!(header_value(&json!("x"), ",").as_deref(), Some("x"));
        assert_eq!(header_value(&json!(5), ",").as_deref(), Some("5"));
        assert_eq!(header_value(&json!(["a", 1]), " ").as_deref(), Some("a 1"));
        assert_eq!(
            header_value(&json!({"k": 1}), ",").as_deref(),
            Some(r#"{"k":1}"#)
        );
        assert_eq!(header_value(&json!("a\r\nb: c"), ","), None);
        assert_eq!(header_value(&Value::Null, ","), None);
    }

    #[test]
    fn config_checks() {
        let bad = |j: Value| {
            let c: Config = serde_json::from_value(j).unwrap();
            c.check().is_err()
        };
        assert!(!bad(
            json!({"claims": [{"claim": "sub", "header": "x-user"}]})
        ));
        assert!(bad(
            json!({"claims": [{"claim": "sub", "header": "X-User"}]})
        ));
        assert!(bad(json!({"claims": [{"claim": "", "header": "x-user"}]})));
        assert!(bad(json!({"request": {"set": {":path": "/"}}})));
        assert!(bad(json!({"response": {"set": {"x": "a\nb"}}})));
    }
}
