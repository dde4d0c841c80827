//! Compiled retry policy of a route: Istio's `HTTPRetry` turned into what Envoy's router gets
//! from Istio (`retry.ConvertPolicy`): the default policy when a route sets none, nothing when
//! `attempts` is 0, bare status codes in `retryOn` as retriable codes.
//!
//! Pure data: the proxy decides per attempt with [`RetryPolicy::retries_on`] and friends.

use std::time::Duration;

use serde::Serialize;

use crate::model::virtual_service::HttpRetry;

/// One `retryOn` condition, as a bit of [`RetryOn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum RetryCondition {
    /// Any 5xx response, or no response at all (reset, connect failure, per-try timeout).
    FiveXx = 1 << 0,
    /// 502, 503 or 504, or no response at all.
    GatewayError = 1 << 1,
    /// The upstream did not answer: disconnect, reset, per-try timeout.
    Reset = 1 << 2,
    /// The connection to the upstream could not be made.
    ConnectFailure = 1 << 3,
    /// 409.
    Retriable4xx = 1 << 4,
    /// HTTP/2 REFUSED_STREAM.
    RefusedStream = 1 << 5,
    /// The status is one of the policy's retriable codes.
    RetriableStatusCodes = 1 << 6,
    /// The upstream was reset before the request was sent.
    ResetBeforeRequest = 1 << 7,
    /// gRPC status 1.
    Cancelled = 1 << 8,
    /// gRPC status 4.
    DeadlineExceeded = 1 << 9,
    /// gRPC status 13.
    Internal = 1 << 10,
    /// gRPC status 8.
    ResourceExhausted = 1 << 11,
    /// gRPC status 14.
    Unavailable = 1 << 12,
}

impl RetryCondition {
    /// Every condition with its `retryOn` name, in Envoy's order.
    const NAMES: [(RetryCondition, &'static str); 13] = [
        (RetryCondition::FiveXx, "5xx"),
        (RetryCondition::GatewayError, "gateway-error"),
        (RetryCondition::Reset, "reset"),
        (RetryCondition::ConnectFailure, "connect-failure"),
        (RetryCondition::Retriable4xx, "retriable-4xx"),
        (RetryCondition::RefusedStream, "refused-stream"),
        (
            RetryCondition::RetriableStatusCodes,
            "retriable-status-codes",
        ),
        (RetryCondition::ResetBeforeRequest, "reset-before-request"),
        (RetryCondition::Cancelled, "cancelled"),
        (RetryCondition::DeadlineExceeded, "deadline-exceeded"),
        (RetryCondition::Internal, "internal"),
        (RetryCondition::ResourceExhausted, "resource-exhausted"),
        (RetryCondition::Unavailable, "unavailable"),
    ];

    /// The condition named `s` in `retryOn`, if it is one meshgate acts on.
    pub fn parse(s: &str) -> Option<RetryCondition> {
        Self::NAMES.iter().find(|(_, n)| *n == s).map(|(c, _)| *c)
    }
}

/// A set of [`RetryCondition`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn(u32);

impl RetryOn {
    /// Is `c` in the set?
    pub fn has(self, c: RetryCondition) -> bool {
        self.0 & c as u32 != 0
    }

    /// Adds `c`.
    pub fn add(&mut self, c: RetryCondition) {
        self.0 |= c as u32;
    }

    /// True when no condition is set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl Serialize for RetryOn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let names: Vec<&str> = RetryCondition::NAMES
            .iter()
            .filter(|(c, _)| self.has(*c))
            .map(|(_, n)| *n)
            .collect();
        s.serialize_str(&names.join(","))
    }
}

/// Envoy's default base interval between retries.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);

/// A route's retry policy, as Envoy's router would run it under Istio.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub num_retries: u32,
    /// Conditions that make an attempt worth retrying.
    pub retry_on: RetryOn,
    /// Codes for `retriable-status-codes`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retriable_status_codes: Vec<u16>,
    /// Timeout of each attempt.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_millis")]
    pub per_try_timeout: Option<Duration>,
    /// Prefer endpoints not tried yet (`previous_hosts`, up to 5 picks).
    pub avoid_previous_hosts: bool,
    /// Base interval of the jittered exponential backoff (the cap is 10 times it).
    #[serde(with = "millis")]
    pub backoff_base: Duration,
    /// `retryRemoteLocalities`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub retry_remote_localities: bool,
}

mod millis {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }
}

mod opt_millis {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::millis::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}

impl RetryPolicy {
    /// Istio's default for routes without `retries`: 2 retries on connect failures, refused
    /// streams, gRPC `unavailable`/`cancelled` and 503, on other endpoints.
    pub fn istio_default() -> RetryPolicy {
        let mut on = RetryOn::default();
        for c in [
            RetryCondition::ConnectFailure,
            RetryCondition::RefusedStream,
            RetryCondition::Unavailable,
            RetryCondition::Cancelled,
            RetryCondition::RetriableStatusCodes,
        ] {
            on.add(c);
        }
        RetryPolicy {
            num_retries: 2,
            retry_on: on,
            retriable_status_codes: vec![503],
            per_try_timeout: None,
            avoid_previous_hosts: true,
            backoff_base: DEFAULT_BACKOFF_BASE,
            retry_remote_localities: false,
        }
    }

    /// The policy for a route's `retries` (None: retries are off).
    pub fn from_istio(r: Option<&HttpRetry>) -> Option<RetryPolicy> {
        let mut out = RetryPolicy::istio_default();
        let Some(r) = r else {
            return Some(out);
        };
        if r.attempts <= 0 {
            return None;
        }
        out.num_retries = u32::try_from(r.attempts).unwrap_or(0);
        if !r.retry_on.is_empty() {
            let mut on = RetryOn::default();
            let mut codes = Vec::new();
            for part in r
                .retry_on
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
            {
                match part.parse::<u16>() {
                    Ok(code) if (100..600).contains(&code) => codes.push(code),
                    _ => {
                        if let Some(c) = RetryCondition::parse(part) {
                            on.add(c);
                        }
                    }
                }
            }
            if !codes.is_empty() {
                on.add(RetryCondition::RetriableStatusCodes);
            }
            out.retry_on = on;
            out.retriable_status_codes = codes;
        }
        out.per_try_timeout = r
            .per_try_timeout
            .and_then(|d| d.to_std())
            .filter(|d| !d.is_zero());
        if let Some(v) = r.retry_ignore_previous_hosts {
            out.avoid_previous_hosts = v;
        }
        out.retry_remote_localities = r.retry_remote_localities == Some(true);
        if let Some(b) = r.backoff.and_then(|d| d.to_std()).filter(|d| !d.is_zero()) {
            out.backoff_base = b;
        }
        Some(out)
    }

    /// Is a response with `status` (and the gRPC status in its headers, if any) retried?
    pub fn retries_response(&self, status: u16, grpc_status: Option<u32>) -> bool {
        let on = self.retry_on;
        if on.has(RetryCondition::FiveXx) && (500..600).contains(&status) {
            return true;
        }
        if on.has(RetryCondition::GatewayError) && matches!(status, 502..=504) {
            return true;
        }
        if on.has(RetryCondition::Retriable4xx) && status == 409 {
            return true;
        }
        if on.has(RetryCondition::RetriableStatusCodes)
            && self.retriable_status_codes.contains(&status)
        {
            return true;
        }
        match grpc_status {
            Some(1) => on.has(RetryCondition::Cancelled),
            Some(4) => on.has(RetryCondition::DeadlineExceeded),
            Some(8) => on.has(RetryCondition::ResourceExhausted),
            Some(13) => on.has(RetryCondition::Internal),
            Some(14) => on.has(RetryCondition::Unavailable),
            _ => false,
        }
    }

    /// Is an attempt that ended without a response retried? `connect_failure`: the connection
    /// could not be made; `refused`: HTTP/2 REFUSED_STREAM; `timeout`: the per-try timeout.
    pub fn retries_failure(&self, connect_failure: bool, refused: bool, timeout: bool) -> bool {
        let on = self.retry_on;
        if on.has(RetryCondition::FiveXx)
            || on.has(RetryCondition::GatewayError)
            || on.has(RetryCondition::Reset)
        {
            return true;
        }
        if timeout {
            return false;
        }
        (connect_failure
            && (on.has(RetryCondition::ConnectFailure)
                || on.has(RetryCondition::ResetBeforeRequest)))
            || (refused && on.has(RetryCondition::RefusedStream))
    }

    /// The wait before retry number `retry` (1-based): Envoy's jittered exponential backoff,
    /// a random time below `base * (2^retry - 1)`, capped at ten times the base. `rand` is a
    /// uniform random number.
    pub fn backoff(&self, retry: u32, rand: u64) -> Duration {
        let base = u64::try_from(self.backoff_base.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let multiplier = (1u64 << retry.min(30)) - 1;
        let ceiling = base.saturating_mul(multiplier).min(base.saturating_mul(10));
        Duration::from_millis(rand % ceiling.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Option<RetryPolicy> {
        let r: HttpRetry = serde_json::from_str(yaml).expect("retry json");
        RetryPolicy::from_istio(Some(&r))
    }

    #[test]
    fn default_policy_is_istios() {
        let p = RetryPolicy::from_istio(None).expect("default");
        assert_eq!(p.num_retries, 2);
        assert!(p.retries_response(503, None));
        assert!(!p.retries_response(500, None));
        assert!(!p.retries_response(502, None));
        assert!(p.retries_response(200, Some(14)));
        assert!(p.retries_response(200, Some(1)));
        assert!(!p.retries_response(200, Some(13)));
        assert!(p.retries_failure(true, false, false));
        assert!(p.retries_failure(false, true, false));
        assert!(
            !p.retries_failure(false, false, false),
            "a reset is not retried"
        );
        assert!(!p.retries_failure(false, false, true));
        assert!(p.avoid_previous_hosts);
    }

    #[test]
    fn zero_attempts_disable_retries() {
        assert_eq!(policy(r#"{"attempts": 0, "retryOn": "5xx"}"#), None);
    }

    #[test]
    fn retry_on_replaces_the_default_and_codes_become_retriable() {
        let p = policy(
            r#"{"attempts": 3, "retryOn": "gateway-error, 418,409", "perTryTimeout": "0.5s"}"#,
        )
        .expect("policy");
        assert_eq!(p.num_retries, 3);
        assert_eq!(p.retriable_status_codes, vec![418, 409]);
        assert!(p.retry_on.has(RetryCondition::RetriableStatusCodes));
        assert!(p.retries_response(418, None));
        assert!(p.retries_response(504, None));
        assert!(!p.retries_response(500, None));
        assert!(
            !p.retries_response(200, Some(14)),
            "unavailable no longer listed"
        );
        assert!(
            p.retries_failure(false, false, true),
            "gateway-error covers timeouts"
        );
        assert_eq!(p.per_try_timeout, Some(Duration::from_millis(500)));
        let p = policy(r#"{"attempts": 1, "retryOn": "5xx"}"#).expect("policy");
        assert!(p.retries_response(500, None));
        assert!(p.retriable_status_codes.is_empty());
        let p = policy(r#"{"attempts": 1}"#).expect("policy");
        assert!(
            p.retries_response(503, None),
            "no retryOn keeps the default conditions"
        );
    }

    #[test]
    fn backoff_is_jittered_exponential_and_capped() {
        let p = RetryPolicy::istio_default();
        for rand in [0, 7, 24, 1000, u64::MAX] {
            assert!(p.backoff(1, rand) < Duration::from_millis(25));
            assert!(p.backoff(2, rand) < Duration::from_millis(75));
            assert!(p.backoff(9, rand) < Duration::from_millis(250));
        }
        assert_eq!(p.backoff(2, 74), Duration::from_millis(74));
        assert_eq!(p.backoff(30, 249), Duration::from_millis(249));
    }
}
