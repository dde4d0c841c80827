//! Types shared by several Istio kinds: metadata, durations, string matches, selectors.
//!
//! Field names and JSON shapes follow istio/api (`common.proto`, `type/v1beta1/selector.proto`,
//! protobuf well-known types as Istio's JSON reads them).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Kubernetes object metadata: the fields meshgate uses. Other metadata is accepted silently.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// `metadata.name`.
    #[serde(default)]
    pub name: String,
    /// `metadata.namespace`; the loader fills in the default namespace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `metadata.labels`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A protobuf `Duration` as Istio reads it: Go duration syntax (`1.5s`, `100ms`, `1h2m`).
///
/// Stored as signed nanoseconds so that negative values survive parsing and can be rejected by
/// validation with a precise message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration {
    nanos: i64,
}

impl Duration {
    /// A duration of `nanos` nanoseconds.
    pub const fn from_nanos(nanos: i64) -> Self {
        Duration { nanos }
    }

    /// A duration of `ms` milliseconds.
    pub const fn from_millis(ms: i64) -> Self {
        Duration {
            nanos: ms.saturating_mul(1_000_000),
        }
    }

    /// Signed nanoseconds.
    pub const fn as_nanos(self) -> i64 {
        self.nanos
    }

    /// The duration as a `std::time::Duration`, or `None` when negative.
    pub fn to_std(self) -> Option<std::time::Duration> {
        u64::try_from(self.nanos)
            .ok()
            .map(std::time::Duration::from_nanos)
    }

    /// Parses Go duration syntax: a sequence of decimal numbers with units `ns`, `us`, `µs`,
    /// `ms`, `s`, `m`, `h`, optionally signed; `0` alone is allowed.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid duration {s:?}: expected e.g. 1.5s, 100ms, 1m");
        let (neg, mut rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        if rest == "0" {
            return Ok(Duration::default());
        }
        if rest.is_empty() {
            return Err(bad());
        }
        let mut total: i128 = 0;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            let (num, tail) = rest.split_at(num_len);
            let unit_len = tail
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_len);
            let scale: i128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                _ => return Err(bad()),
            };
            let (int, frac) = num.split_once('.').unwrap_or((num, ""));
            if int.is_empty() && frac.is_empty() {
                return Err(bad());
            }
            let int: i128 = if int.is_empty() {
                0
            } else {
                int.parse().map_err(|_| bad())?
            };
            let mut part = int.checked_mul(scale).ok_or_else(bad)?;
            let mut div = scale;
            for d in frac.bytes() {
                div /= 10;
                if div == 0 {
                    break;
                }
                part += i128::from(d - b'0') * div;
            }
            total = total.checked_add(part).ok_or_else(bad)?;
            rest = tail;
        }
        let total = if neg { -total } else { total };
        i64::try_from(total)
            .map(Duration::from_nanos)
            .map_err(|_| bad())
    }
}

impl fmt::Display for Duration {
    /// Formats as seconds with up to nine fraction digits, like protobuf JSON (`1.5s`, `0.100s`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let n = self.nanos.unsigned_abs();
        let (secs, frac) = (n / 1_000_000_000, n % 1_000_000_000);
        if frac == 0 {
            write!(f, "{sign}{secs}s")
        } else {
            let digits = format!("{frac:09}");
            write!(f, "{sign}{secs}.{}s", digits.trim_end_matches('0'))
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Duration::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `istio.networking.v1.StringMatch`: one of exact, prefix or regex (RE2 syntax).
///
/// Modelled as three optional fields so that a document setting two of them parses and is then
/// rejected by validation with a field path, as Istio's webhook does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StringMatch {
    /// Exact string match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Prefix match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// RE2 regular expression, matched against the whole value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// `istio.networking.v1.Percent`: a percentage in `[0, 100]` with fractions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize)]
pub struct Percent {
    /// The percentage.
    #[serde(default)]
    pub value: f64,
}

/// `istio.networking.v1.PortSelector`: a port by number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct PortSelector {
    /// The port number.
    #[serde(default)]
    pub number: u32,
}

/// `istio.type.v1beta1.WorkloadSelector`: selects workloads (here: gateways) by labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// Labels that must all be present with these values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// `istio.networking.v1alpha3.WorkloadSelector`: the `labels` selector of ServiceEntry and
/// Sidecar (not the `matchLabels` one of the security and extension kinds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must all be present with these values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `istio.type.v1beta1.PolicyTargetReference`: a Kubernetes object a policy attaches to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargetReference {
    /// API group of the target (empty for the core group).
    #[serde(default)]
    pub group: String,
    /// Kind of the target, e.g. `Gateway` or `Service`.
    #[serde(default)]
    pub kind: String,
    /// Name of the target.
    #[serde(default)]
    pub name: String,
    /// Namespace of the target; must be the policy's own when set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let ms = |n| Duration::from_millis(n);
        assert_eq!(Duration::parse("1.5s"), Ok(ms(1500)));
        assert_eq!(Duration::parse("100ms"), Ok(ms(100)));
        assert_eq!(Duration::parse("1h2m3s"), Ok(ms(3_723_000)));
        assert_eq!(Duration::parse("0"), Ok(ms(0)));
        assert_eq!(Duration::parse("-2s"), Ok(ms(-2000)));
        assert_eq!(Duration::parse("10us"), Ok(Duration::from_nanos(10_000)));
        assert_eq!(Duration::parse(".5s"), Ok(ms(500)));
        for bad in ["", "s", "1", "1x", "1.5", "abc", "1s2", "--1s"] {
            assert!(Duration::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_like_protobuf_json() {
        assert_eq!(Duration::from_millis(1500).to_string(), "1.5s");
        assert_eq!(Duration::from_millis(3000).to_string(), "3s");
        assert_eq!(Duration::from_millis(-100).to_string(), "-0.1s");
    }
}
