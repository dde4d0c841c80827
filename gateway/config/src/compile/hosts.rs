//! Istio's host rules: short-name resolution, wildcard intersection, namespace scoping and
//! `exportTo` visibility. Pure functions over strings.

/// Resolves a host written in `namespace` to an FQDN: a single-label name becomes
/// `name.namespace.svc.<suffix>`; names with dots and wildcards stay as written (lower-cased).
pub fn resolve_fqdn(host: &str, namespace: &str, domain_suffix: &str) -> String {
    let h = host.to_ascii_lowercase();
    if h.contains('.') || h.contains('*') {
        return h;
    }
    format!("{h}.{namespace}.svc.{domain_suffix}")
}

/// True when wildcard-aware host `pattern` (`*`, `*.x`, `*-x.y`) covers `host`.
pub fn covers(pattern: &str, host: &str) -> bool {
    if pattern == "*" || pattern == host {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => {
            let h = host.strip_prefix('*').unwrap_or(host);
            h.len() > suffix.len() && h.ends_with(suffix) || (host.starts_with('*') && h == suffix)
        }
        None => false,
    }
}

/// The domain two hosts share, if they intersect: the more specific of the two.
pub fn intersect<'a>(a: &'a str, b: &'a str) -> Option<&'a str> {
    if covers(a, b) {
        Some(b)
    } else if covers(b, a) {
        Some(a)
    } else {
        None
    }
}

/// A Gateway server host `[ns/]dns`: may a VirtualService in `vs_ns` use it?
/// Returns the dns part when the namespace part admits `vs_ns`.
pub fn server_host_for<'a>(server_host: &'a str, gateway_ns: &str, vs_ns: &str) -> Option<&'a str> {
    match server_host.split_once('/') {
        None => Some(server_host),
        Some(("*", dns)) => Some(dns),
        Some((".", dns)) => (vs_ns == gateway_ns).then_some(dns),
        Some(("~", _)) => None,
        Some((ns, dns)) => (ns == vs_ns).then_some(dns),
    }
}

/// `exportTo` visibility of a resource owned by `owner_ns` to a proxy in `viewer_ns`.
/// Empty means exported everywhere (Istio's default).
pub fn exported_to(export_to: &[String], owner_ns: &str, viewer_ns: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|e| e == "*" || e == viewer_ns || (e == "." && owner_ns == viewer_ns))
}

/// Resolves a `gateways:` entry written in `vs_ns` to `namespace/name` (or `mesh`).
pub fn resolve_gateway_ref(gw: &str, vs_ns: &str) -> String {
    if gw == "mesh" || gw.contains('/') {
        return gw.to_owned();
    }
    // `name.namespace.svc.cluster.local` style references are still accepted by Istio.
    if let Some((name, rest)) = gw.split_once('.') {
        let ns = rest.split('.').next().unwrap_or(vs_ns);
        return format!("{ns}/{name}");
    }
    format!("{vs_ns}/{gw}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_resolve_in_their_namespace() {
        assert_eq!(
            resolve_fqdn("reviews", "bookinfo", "cluster.local"),
            "reviews.bookinfo.svc.cluster.local"
        );
        assert_eq!(
            resolve_fqdn("Api.Example.com", "x", "cluster.local"),
            "api.example.com"
        );
        assert_eq!(resolve_fqdn("*", "x", "cluster.local"), "*");
    }

    #[test]
    fn wildcard_intersection() {
        assert_eq!(
            intersect("*.example.com", "a.example.com"),
            Some("a.example.com")
        );
        assert_eq!(
            intersect("a.example.com", "*.example.com"),
            Some("a.example.com")
        );
        assert_eq!(intersect("*", "x.org"), Some("x.org"));
        assert_eq!(intersect("*.a.com", "*.com"), Some("*.a.com"));
        assert_eq!(intersect("example.com", "*.example.com"), None);
        assert_eq!(intersect("a.org", "b.org"), None);
    }

    #[test]
    fn server_host_namespaces() {
        assert_eq!(server_host_for("*/a.com", "gw", "x"), Some("a.com"));
        assert_eq!(server_host_for("./a.com", "gw", "gw"), Some("a.com"));
        assert_eq!(server_host_for("./a.com", "gw", "x"), None);
        assert_eq!(server_host_for("x/a.com", "gw", "x"), Some("a.com"));
        assert_eq!(server_host_for("~/a.com", "gw", "x"), None);
        assert_eq!(server_host_for("a.com", "gw", "x"), Some("a.com"));
    }

    #[test]
    fn export_to_and_gateway_refs() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(exported_to(&[], "a", "b"));
        assert!(exported_to(&v(&["."]), "a", "a"));
        assert!(!exported_to(&v(&["."]), "a", "b"));
        assert!(exported_to(&v(&["b"]), "a", "b"));
        assert!(!exported_to(&v(&["~"]), "a", "a"));
        assert_eq!(resolve_gateway_ref("gw", "ns"), "ns/gw");
        assert_eq!(resolve_gateway_ref("other/gw", "ns"), "other/gw");
        assert_eq!(
            resolve_gateway_ref("gw.istio-system.svc.cluster.local", "ns"),
            "istio-system/gw"
        );
        assert_eq!(resolve_gateway_ref("mesh", "ns"), "mesh");
    }
}
