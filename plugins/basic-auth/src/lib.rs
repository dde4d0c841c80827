//! basic-auth: HTTP Basic authentication (RFC 7617) against a configured list of users.
//!
//! Users are configured with the SHA-256 of their password (`sha256`, hex); a plain `password`
//! is accepted for development and logs a warning at every configuration. The password a client
//! sends is hashed and compared with the stored hash in constant time; an unknown user is hashed
//! and compared too, so timing does not tell which users exist.
//!
//! Which requests need credentials: with no `rules`, every request; otherwise the requests
//! matching a rule (path prefix, optional methods), the first matching rule deciding, and a rule
//! may name the users it admits (an authenticated user it does not name gets `403`).
//! Missing or wrong credentials get `401` with `www-authenticate: Basic realm="REALM"`.
//! Admitted requests go upstream without `authorization` (unless `removeAuthorization: false`)
//! and, with `forwardUsernameHeader`, with the user name in that header (a client's own copy of
//! it is removed from every request).
//!
//! Metrics: `P_allowed_total`, `P_denied_total` (401 and 403), `P` being `metricPrefix`
//! (default `basic_auth`).

use std::rc::Rc;

use base64::Engine;
use meshgate_sdk::prelude::*;
use meshgate_sdk::proxy_wasm;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// One configured user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct User {
    user: String,
    /// SHA-256 of the password, hex.
    #[serde(default)]
    sha256: Option<String>,
    /// The password itself (development only).
    #[serde(default)]
    password: Option<String>,
}

/// Requests that need credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Rule {
    /// Path prefix (`/` for all).
    prefix: String,
    /// Methods (empty: all).
    #[serde(default)]
    methods: Vec<String>,
    /// Users admitted (empty: every configured user).
    #[serde(default)]
    users: Vec<String>,
    /// `false` exempts the matching requests (e.g. a public `/healthz` before a rule for `/`).
    #[serde(default = "yes")]
    require: bool,
}

fn yes() -> bool {
    true
}

/// The configuration (`pluginConfig`), see `schema.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct Config {
    realm: String,
    users: Vec<User>,
    rules: Vec<Rule>,
    remove_authorization: bool,
    forward_username_header: Option<String>,
    metric_prefix: String,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            realm: "meshgate".into(),
            users: Vec::new(),
            rules: Vec::new(),
            remove_authorization: true,
            forward_username_header: None,
            metric_prefix: "basic_auth".into(),
        }
    }
}

/// A checked user: name and password hash.
struct Credential {
    user: String,
    hash: [u8; 32],
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        let hi = (b[2 * i] as char).to_digit(16)?;
        let lo = (b[2 * i + 1] as char).to_digit(16)?;
        *o = (hi * 16 + lo) as u8;
    }
    Some(out)
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Equal in time independent of where they differ.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Equal in time independent of where they differ (lengths may leak).
fn ct_eq_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The checked configuration.
struct Auth {
    config: Config,
    credentials: Vec<Credential>,
    challenge: String,
}

/// The checked configuration with its metrics.
struct Plugin {
    auth: Auth,
    allowed: Counter,
    denied: Counter,
}

impl Plugin {
    fn new(config: Config) -> Result<Plugin, String> {
        let auth = Auth::new(config)?;
        let p = &auth.config.metric_prefix;
        let counter = |n: &str| {
            Counter::define(&format!("{p}_{n}")).map_err(|s| format!("metric {n}: {s:?}"))
        };
        Ok(Plugin {
            allowed: counter("allowed_total")?,
            denied: counter("denied_total")?,
            auth,
        })
    }
}

impl Auth {
    fn new(config: Config) -> Result<Auth, String> {
        if config.realm.contains(['"', '\\']) || config.realm.bytes().any(|b| b < 0x20) {
            return Err("realm must not contain quotes, backslashes or control characters".into());
        }
        let mut credentials = Vec::new();
        for u in &config.users {
            if u.user.is_empty() || u.user.contains(':') {
                return Err(format!("user {:?}: not empty, no `:`", u.user));
            }
            if credentials.iter().any(|c: &Credential| c.user == u.user) {
                return Err(format!("user {:?} is listed twice", u.user));
            }
            let hash = match (&u.sha256, &u.password) {
                (Some(h), None) => parse_hex32(h)
                    .ok_or_else(|| format!("user {:?}: sha256 must be 64 hex digits", u.user))?,
                (None, Some(p)) => {
                    log::warn!(
                        "basic-auth: user {:?} has a plain-text password: for development only, \
                         configure its sha256 instead",
                        u.user
                    );
                    sha256(p.as_bytes())
                }
                _ => {
                    return Err(format!(
                        "user {:?}: exactly one of sha256 and password",
                        u.user
                    ))
                }
            };
            credentials.push(Credential {
                user: u.user.clone(),
                hash,
            });
        }
        for r in &config.rules {
            if !r.prefix.starts_with('/') {
                return Err(format!("rule prefix {:?} must start with /", r.prefix));
            }
            if let Some(u) = r
                .users
                .iter()
                .find(|u| !credentials.iter().any(|c| &c.user == *u))
            {
                return Err(format!("rule {:?} names unknown user {u:?}", r.prefix));
            }
        }
        if let Some(h) = &config.forward_username_header {
            let ok = !h.is_empty()
                && h.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !ok {
                return Err(format!(
                    "forwardUsernameHeader {h:?}: a lowercase header name"
                ));
            }
        }
        let p = &config.metric_prefix;
        if p.is_empty()
            || p.starts_with(|c: char| c.is_ascii_digit())
            || !p
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(format!("metricPrefix {p:?}: only a-z, 0-9 and _"));
        }
        Ok(Auth {
            challenge: format!("Basic realm=\"{}\", charset=\"UTF-8\"", config.realm),
            credentials,
            config,
        })
    }

    /// The rule for a request: `None` when it needs no credentials.
    fn rule(&self, method: &str, path: &str) -> Option<Option<&Rule>> {
        if self.config.rules.is_empty() {
            return Some(None);
        }
        let r = self.config.rules.iter().find(|r| {
            path.starts_with(&r.prefix)
                && (r.methods.is_empty()
                    || r.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
        })?;
        r.require.then_some(Some(r))
    }

    /// The user an `Authorization` value authenticates, if any.
    fn authenticate(&self, authorization: &str) -> Option<&str> {
        let (scheme, b64) = authorization.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") || b64.len() > 4096 {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        let given = sha256(password.as_bytes());
        // Look at every user, hash compared for each, so the time says nothing about who exists.
        let mut found = None;
        for c in &self.credentials {
            let name_ok = ct_eq_bytes(c.user.as_bytes(), user.as_bytes());
            let hash_ok = ct_eq(&c.hash, &given);
            if name_ok & hash_ok {
                found = Some(c.user.as_str());
            }
        }
        found
    }
}

proxy_wasm::main! {{
    meshgate_sdk::plugin::register::<Plugin>();
}}

impl HttpPlugin for Plugin {
    type Config = Config;
    const NAME: &'static str = "basic-auth";

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

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let plugin = self.plugin.clone();
        let auth = &plugin.auth;
        let c = &auth.config;
        if let Some(h) = &c.forward_username_header {
            self.set_http_request_header(h, None);
        }
        let method = self.method().unwrap_or_default();
        let path = self.path().unwrap_or_default();
        let Some(rule) = auth.rule(&method, &path) else {
            return Action::Continue;
        };
        let user = self
            .request_header("authorization")
            .and_then(|a| auth.authenticate(&a).map(str::to_owned));
        let Some(user) = user else {
            plugin.denied.inc();
            return reply(401)
                .header("www-authenticate", &auth.challenge)
                .text("User authentication failed. Missing or invalid username and password.")
                .send();
        };
        if let Some(rule) = rule {
            if !rule.users.is_empty() && !rule.users.contains(&user) {
                plugin.denied.inc();
                return reply(403).text("User is not allowed here.").send();
            }
        }
        plugin.allowed.inc();
        if c.remove_authorization {
            self.set_http_request_header("authorization", None);
        }
        if let Some(h) = &c.forward_username_header {
            self.set_http_request_header(h, Some(&user));
        }
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hex_and_compare() {
        let h = sha256(b"secret");
        let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_hex32(&hex), Some(h));
        assert_eq!(parse_hex32(&hex.to_uppercase()), Some(h));
        assert_eq!(parse_hex32("abc"), None);
        assert_eq!(parse_hex32(&"zz".repeat(32)), None);
        assert!(ct_eq(&h, &h));
        assert!(!ct_eq(&h, &sha256(b"other")));
        assert!(!ct_eq_bytes(b"a", b"ab"));
    }

    #[test]
    fn authenticates_and_matches_rules() {
        let hex: String = sha256(b"pw").iter().map(|b| format!("{b:02x}")).collect();
        let p = Auth::new(
            serde_json::from_value(json!({
                "users": [{"user": "alice", "sha256": hex}, {"user": "bob", "password": "dev"}],
                "rules": [
                    {"prefix": "/public", "require": false},
                    {"prefix": "/admin", "users": ["alice"]},
                    {"prefix": "/", "methods": ["POST"]}
                ]
            }))
            .unwrap(),
        )
        .unwrap();
        let b = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert_eq!(p.authenticate(&b("alice:pw")), Some("alice"));
        assert_eq!(p.authenticate(&b("bob:dev")), Some("bob"));
        assert_eq!(p.authenticate(&b("alice:dev")), None);
        assert_eq!(p.authenticate(&b("carol:pw")), None);
        assert_eq!(p.authenticate(&b("alice")), None);
        assert_eq!(p.authenticate("Basic !!!"), None);
        assert_eq!(p.authenticate("Bearer abc"), None);
        assert_eq!(
            p.authenticate(&b("alice:pw").replace("Basic", "basic")),
            Some("alice")
        );
        assert!(p.rule("GET", "/public/x").is_none());
        assert_eq!(p.rule("GET", "/admin").unwrap().unwrap().prefix, "/admin");
        assert!(p.rule("GET", "/other").is_none());
        assert_eq!(p.rule("post", "/other").unwrap().unwrap().prefix, "/");
    }
}
