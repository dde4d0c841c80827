//! Virtual hosts of one listener and the host lookup that picks one per request.
//!
//! Lookup order is Envoy's: exact domain, then the longest `*.suffix` wildcard, then `*`.
//! Each step is a hash probe (one per label of the request host), so the cost does not grow
//! with the number of hosts.

use std::collections::HashMap;

use serde::Serialize;

use super::route::Route;

/// Routes for a set of domains (Envoy's virtual host).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualHost {
    /// `host:port`, Istio's virtual host naming.
    pub name: String,
    /// Domains served (exact names, `*.suffix` wildcards or `*`).
    pub domains: Vec<String>,
    /// Answer plain-HTTP requests with a redirect to https (Gateway `tls.httpsRedirect`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub require_tls: bool,
    /// Routes in order; the first that matches wins.
    pub routes: Vec<Route>,
}

/// The virtual hosts of a listener with their domain index.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteTable {
    /// Virtual hosts in a stable order.
    pub virtual_hosts: Vec<VirtualHost>,
    #[serde(skip)]
    exact: HashMap<String, usize>,
    /// Keyed by the suffix including its dot (`.example.com` for `*.example.com`).
    #[serde(skip)]
    wildcard: HashMap<String, usize>,
    /// Wildcards that are not `*.` prefixes (`*-api.example.com`): rare, scanned.
    #[serde(skip)]
    partial: Vec<(String, usize)>,
    #[serde(skip)]
    catch_all: Option<usize>,
}

impl RouteTable {
    /// Indexes `virtual_hosts` by their domains (lower-cased). A domain claimed twice keeps
    /// its first virtual host.
    pub fn new(virtual_hosts: Vec<VirtualHost>) -> Self {
        let mut t = RouteTable::default();
        for (i, vh) in virtual_hosts.iter().enumerate() {
            for d in &vh.domains {
                let d = d.to_ascii_lowercase();
                if d == "*" {
                    t.catch_all.get_or_insert(i);
                } else if let Some(suffix) = d.strip_prefix('*') {
                    if suffix.starts_with('.') {
                        t.wildcard.entry(suffix.to_owned()).or_insert(i);
                    } else {
                        t.partial.push((suffix.to_owned(), i));
                    }
                } else {
                    t.exact.entry(d).or_insert(i);
                }
            }
        }
        t.partial.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        t.virtual_hosts = virtual_hosts;
        t
    }

    /// The virtual host for a request authority (`Host` header, port allowed). Matching is
    /// case-insensitive; a port in the authority is ignored unless a domain names it.
    pub fn lookup(&self, authority: &str) -> Option<&VirtualHost> {
        self.lookup_index(authority).map(|i| &self.virtual_hosts[i])
    }

    fn lookup_index(&self, authority: &str) -> Option<usize> {
        let lower;
        let host = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = authority.to_ascii_lowercase();
            lower.as_str()
        } else {
            authority
        };
        // Empty tables are skipped: a gateway with only `*` hosts hashes nothing per request.
        if !self.exact.is_empty() {
            if let Some(i) = self.exact.get(host) {
                return Some(*i);
            }
        }
        let host = strip_port(host);
        if !self.exact.is_empty() {
            if let Some(i) = self.exact.get(host) {
                return Some(*i);
            }
        }
        // Longest wildcard suffix first: `.b.example.com`, then `.example.com`, then `.com`.
        let mut from = 0;
        while let Some(dot) = (!self.wildcard.is_empty())
            .then(|| host[from..].find('.'))
            .flatten()
        {
            let suffix = &host[from + dot..];
            // `*.example.com` does not match `example.com` itself, only names with a label
            // before the suffix, so the suffix must start after at least one character.
            if from + dot > 0 {
                if let Some(i) = self.wildcard.get(suffix) {
                    return Some(*i);
                }
            }
            from += dot + 1;
        }
        for (suffix, i) in &self.partial {
            if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                return Some(*i);
            }
        }
        self.catch_all
    }
}

/// `host:port` -> `host`; IPv6 literals keep their brackets.
fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rfind(':') {
        Some(i) if authority[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &authority[..i],
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vh(name: &str, domains: &[&str]) -> VirtualHost {
        VirtualHost {
            name: name.into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            require_tls: false,
            routes: vec![],
        }
    }

    #[test]
    fn exact_then_longest_wildcard_then_catch_all() {
        let t = RouteTable::new(vec![
            vh("exact", &["api.example.com"]),
            vh("deep", &["*.b.example.com"]),
            vh("wild", &["*.example.com"]),
            vh("partial", &["*-shop.test"]),
            vh("all", &["*"]),
        ]);
        let name = |h: &str| t.lookup(h).map(|v| v.name.as_str());
        assert_eq!(name("api.example.com"), Some("exact"));
        assert_eq!(name("API.Example.COM:8080"), Some("exact"));
        assert_eq!(name("x.b.example.com"), Some("deep"));
        assert_eq!(name("b.example.com"), Some("wild"));
        assert_eq!(name("www.example.com"), Some("wild"));
        assert_eq!(name("example.com"), Some("all"));
        assert_eq!(name("coffee-shop.test"), Some("partial"));
        assert_eq!(name("[::1]:80"), Some("all"));
        assert_eq!(name("other.org"), Some("all"));
    }

    #[test]
    fn no_catch_all_means_no_match() {
        let t = RouteTable::new(vec![vh("wild", &["*.example.com"])]);
        assert!(t.lookup("example.org").is_none());
        assert!(t.lookup(".example.com").is_none());
    }
}
