//! When a module is pulled again rather than taken from the cache, as istio-agent decides.
//!
//! For `oci://`: `Always` pulls whenever the WasmPlugin changes (an unchanged resource keeps
//! its module, as Istio keys `Always` on the resource version); `IfNotPresent` uses a cached
//! copy of the same reference; unspecified means `Always` when the tag is spelled `:latest`
//! and `IfNotPresent` otherwise (an omitted tag counts as not-latest, as in Istio's code).
//! For `http(s)://` Istio always downloads, except that a module whose `sha256` is pinned and
//! already cached is used as is (its cache is keyed by that checksum); meshgate does the same.

/// `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// `UNSPECIFIED_POLICY`.
    #[default]
    Unspecified,
    /// `IfNotPresent`.
    IfNotPresent,
    /// `Always`.
    Always,
}

/// What the fetcher may take from the cache before going to the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// The module cached for this reference (tag index) or this pinned digest.
    Reference,
    /// Only a module whose content digest is pinned (`sha256`) or in the reference.
    PinnedOnly,
}

/// The cache use for an OCI reference under `policy` (`explicit_latest`: the tag is spelled
/// `latest`).
pub fn for_oci(policy: PullPolicy, explicit_latest: bool) -> CacheUse {
    match policy {
        PullPolicy::IfNotPresent => CacheUse::Reference,
        PullPolicy::Always => CacheUse::PinnedOnly,
        PullPolicy::Unspecified if explicit_latest => CacheUse::PinnedOnly,
        PullPolicy::Unspecified => CacheUse::Reference,
    }
}

/// The cache use for an `http(s)://` URL (the pull policy does not apply, as in Istio).
pub fn for_http() -> CacheUse {
    CacheUse::PinnedOnly
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_rules() {
        assert_eq!(for_oci(PullPolicy::Unspecified, true), CacheUse::PinnedOnly);
        assert_eq!(for_oci(PullPolicy::Unspecified, false), CacheUse::Reference);
        assert_eq!(for_oci(PullPolicy::IfNotPresent, true), CacheUse::Reference);
        assert_eq!(for_oci(PullPolicy::Always, false), CacheUse::PinnedOnly);
        assert_eq!(for_http(), CacheUse::PinnedOnly);
    }
}
