//! A route's compiled CORS policy: origin matchers built once (regexes included) and the
//! header values the gateway sends, joined once, so a request with an `Origin` costs a few
//! comparisons and no allocation.

use serde::Serialize;

use super::route::Matcher;

/// Istio's `corsPolicy` as the CORS filter applies it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cors {
    /// Allowed origins (`allowOrigins`, and the deprecated `allowOrigin` as exact matches);
    /// an exact `*` allows every origin, as in Envoy.
    pub allow_origins: Vec<Matcher>,
    /// `access-control-allow-methods` (joined with `,`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_methods: Option<Box<str>>,
    /// `access-control-allow-headers`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_headers: Option<Box<str>>,
    /// `access-control-expose-headers`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expose_headers: Option<Box<str>>,
    /// `access-control-max-age`, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Box<str>>,
    /// `allowCredentials: true`.
    pub allow_credentials: bool,
    /// Preflights from other origins go to the upstream (`unmatchedPreflights` FORWARD, the
    /// default) instead of being answered without CORS headers (IGNORE).
    pub forward_unmatched_preflights: bool,
}

impl Cors {
    /// Is `origin` allowed?
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.allow_origins.iter().any(|m| match m {
            Matcher::Exact(e) if &**e == "*" => true,
            m => m.matches(origin, false),
        })
    }
}
