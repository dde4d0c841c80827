//! The whole fetch of one module: the cache first when the pull policy allows it, else the
//! network (one fetch per reference at a time, bounded retries), then the `sha256` pin, then
//! the cache again for next time.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::Credentials;
use crate::cache::{timestamp, IndexEntry, ModuleCache};
use crate::error::PullError;
use crate::http::HttpFetcher;
use crate::layout::Layout;
use crate::oci::{self, RegistryOptions};
use crate::policy::{self, CacheUse, PullPolicy};
use crate::reference::ImageRef;
use crate::retry::RetryPolicy;
use crate::{hex, parse_sha256, sha256};

/// Where a module comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An OCI image.
    Oci(ImageRef),
    /// An `http://` or `https://` URL.
    Http(String),
}

impl Source {
    /// The cache index key.
    pub fn key(&self) -> String {
        match self {
            Source::Oci(r) => r.key(),
            Source::Http(u) => u.clone(),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Oci(r) => r.fmt(f),
            Source::Http(u) => f.write_str(u),
        }
    }
}

/// One module to fetch.
#[derive(Debug, Clone)]
pub struct Request {
    /// Where from.
    pub source: Source,
    /// The WasmPlugin's `sha256`: the module's digest (or, for an OCI image, as Istio
    /// compares it, the manifest's).
    pub sha256: Option<[u8; 32]>,
    /// `imagePullPolicy`.
    pub policy: PullPolicy,
    /// Registry credentials.
    pub credentials: Credentials,
}

/// A fetched module.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The module.
    pub module: Vec<u8>,
    /// Its sha256.
    pub digest: [u8; 32],
    /// The image manifest's digest, for OCI images.
    pub manifest_digest: Option<String>,
    /// Where the module was in the image, for OCI images.
    pub layout: Option<String>,
    /// Taken from the cache rather than the network.
    pub from_cache: bool,
    /// When it was pulled from the network (seconds since the Unix epoch).
    pub pulled_at: u64,
}

/// How the fetcher reaches registries and URLs.
#[derive(Debug, Clone, Default)]
pub struct FetcherOptions {
    /// Registry access.
    pub registry: RegistryOptions,
    /// Retries of one fetch.
    pub retry: RetryPolicy,
    /// The module cache (`None`: every fetch goes to the network).
    pub cache: Option<Arc<ModuleCache>>,
}

/// Fetches modules.
#[derive(Debug, Clone)]
pub struct Fetcher {
    registry: RegistryOptions,
    http: HttpFetcher,
    retry: RetryPolicy,
    cache: Option<Arc<ModuleCache>>,
}

impl Fetcher {
    /// A fetcher with these options.
    pub fn new(opts: FetcherOptions) -> Result<Fetcher, PullError> {
        let timeout = opts.registry.timeout.unwrap_or(Duration::from_secs(30));
        Ok(Fetcher {
            http: HttpFetcher::new(&opts.registry.extra_roots_pem, timeout)?,
            registry: opts.registry,
            retry: opts.retry,
            cache: opts.cache,
        })
    }

    /// The module cache.
    pub fn cache(&self) -> Option<&Arc<ModuleCache>> {
        self.cache.as_ref()
    }

    /// The registry options.
    pub fn registry(&self) -> &RegistryOptions {
        &self.registry
    }

    fn cache_use(req: &Request) -> CacheUse {
        match &req.source {
            // A digest reference is immutable: its cached module is always good.
            Source::Oci(r) if r.digest().is_some() => CacheUse::Reference,
            Source::Oci(r) => policy::for_oci(req.policy, r.explicit_latest()),
            Source::Http(_) => policy::for_http(),
        }
    }

    /// The module from the cache, if the pull policy allows using it — no network.
    pub fn cached(&self, req: &Request) -> Option<Fetched> {
        self.lookup_cache(req, Self::cache_use(req))
    }

    /// The module the cache last had for this reference, whatever the pull policy says: the
    /// last-known-good copy when the registry cannot be reached.
    pub fn cached_any(&self, req: &Request) -> Option<Fetched> {
        self.lookup_cache(req, CacheUse::Reference)
    }

    fn lookup_cache(&self, req: &Request, usage: CacheUse) -> Option<Fetched> {
        let cache = self.cache.as_ref()?;
        if let (Source::Http(_), Some(pin)) = (&req.source, req.sha256) {
            let module = cache.get(&pin)?;
            return Some(Fetched {
                module,
                digest: pin,
                manifest_digest: None,
                layout: None,
                from_cache: true,
                pulled_at: cache.lookup(&req.source.key()).map_or(0, |e| e.pulled_at),
            });
        }
        if usage == CacheUse::PinnedOnly {
            return None;
        }
        let entry = cache.lookup(&req.source.key())?;
        let digest = parse_sha256(&entry.module)?;
        let module = cache.get(&digest)?;
        check_pin(req, &digest, entry.manifest.as_deref()).ok()?;
        Some(Fetched {
            module,
            digest,
            manifest_digest: entry.manifest,
            layout: entry.layout,
            from_cache: true,
            pulled_at: entry.pulled_at,
        })
    }

    /// The module: from the cache when the policy allows, else from the network (with
    /// retries), verified, and cached.
    pub async fn fetch(&self, req: &Request) -> Result<Fetched, PullError> {
        if let Some(f) = self.cached(req) {
            if let Some(c) = &self.cache {
                c.count_lookup(true);
            }
            return Ok(f);
        }
        let key = req.source.key();
        let flight = self.cache.as_ref().map(|c| c.flight(&key));
        let _one_at_a_time = match &flight {
            Some(f) => Some(f.lock().await),
            None => None,
        };
        // Whoever held the lock before may have just fetched it.
        if let Some(f) = self.cached(req) {
            if let Some(c) = &self.cache {
                c.count_lookup(true);
            }
            return Ok(f);
        }
        if let Some(c) = &self.cache {
            c.count_lookup(false);
        }
        let what = req.source.to_string();
        let (module, manifest_digest, layout) =
            self.retry.run(&what, || self.fetch_once(req)).await?;
        let digest = sha256(&module);
        check_pin(req, &digest, manifest_digest.as_deref())?;
        let pulled_at = timestamp();
        if let Some(c) = &self.cache {
            match c.put(&module) {
                Ok(_) => c.record(
                    &key,
                    IndexEntry {
                        module: hex(&digest),
                        manifest: manifest_digest.clone(),
                        layout: layout.map(|l| l.as_str().to_owned()),
                        pulled_at,
                    },
                ),
                Err(e) => tracing::warn!(source = %what, error = %e, "wasm module not cached"),
            }
        }
        Ok(Fetched {
            module,
            digest,
            manifest_digest,
            layout: layout.map(|l| l.as_str().to_owned()),
            from_cache: false,
            pulled_at,
        })
    }

    async fn fetch_once(
        &self,
        req: &Request,
    ) -> Result<(Vec<u8>, Option<String>, Option<Layout>), PullError> {
        match &req.source {
            Source::Oci(image) => {
                let p = oci::pull(&self.registry, image, &req.credentials).await?;
                Ok((p.module, Some(p.manifest_digest), Some(p.layout)))
            }
            Source::Http(url) => {
                let body = self.http.get(url).await?;
                if !crate::looks_like_wasm(&body) {
                    return Err(PullError::NotWasm { what: url.clone() });
                }
                Ok((body, None, None))
            }
        }
    }
}

/// Checks the WasmPlugin's `sha256`: it names the module, or (Istio's reading for OCI images)
/// the image manifest.
pub fn check_pin(
    req: &Request,
    module: &[u8; 32],
    manifest: Option<&str>,
) -> Result<(), PullError> {
    let Some(pin) = req.sha256 else {
        return Ok(());
    };
    if pin == *module {
        return Ok(());
    }
    let manifest_hex = manifest.and_then(|m| m.strip_prefix("sha256:"));
    if manifest_hex == Some(hex(&pin).as_str()) {
        return Ok(());
    }
    Err(PullError::PinMismatch {
        pinned: hex(&pin),
        module: hex(module),
        manifest: manifest.map_or_else(String::new, |m| format!(", the manifest is {m}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(pin: Option<[u8; 32]>) -> Request {
        Request {
            source: Source::Http("http://x/m.wasm".into()),
            sha256: pin,
            policy: PullPolicy::Unspecified,
            credentials: Credentials::Anonymous,
        }
    }

    #[test]
    fn the_pin_names_the_module_or_the_manifest() {
        let module = sha256(b"module");
        let manifest = sha256(b"manifest");
        let manifest_text = format!("sha256:{}", hex(&manifest));
        assert!(check_pin(&req(None), &module, None).is_ok());
        assert!(check_pin(&req(Some(module)), &module, Some(&manifest_text)).is_ok());
        assert!(check_pin(&req(Some(manifest)), &module, Some(&manifest_text)).is_ok());
        let e = check_pin(&req(Some([7; 32])), &module, Some(&manifest_text))
            .expect_err("mismatch")
            .to_string();
        assert!(
            e.contains("sha256 mismatch") && e.contains(&manifest_text),
            "{e}"
        );
        assert!(check_pin(&req(Some(manifest)), &module, None).is_err());
    }

    #[test]
    fn the_cache_answers_as_the_policy_allows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Arc::new(ModuleCache::open(dir.path(), 1 << 20).expect("cache"));
        let module = b"\0asm\x01\0\0\0body".to_vec();
        let digest = cache.put(&module).expect("put");
        let fetcher = Fetcher::new(FetcherOptions {
            cache: Some(cache.clone()),
            ..FetcherOptions::default()
        })
        .expect("fetcher");
        let oci = |text: &str, policy| Request {
            source: Source::Oci(ImageRef::parse(text).expect("ref")),
            sha256: None,
            policy,
            credentials: Credentials::Anonymous,
        };
        for key in ["r.example/p:v1", "r.example/p:latest"] {
            cache.record(
                key,
                IndexEntry {
                    module: hex(&digest),
                    manifest: None,
                    layout: None,
                    pulled_at: 1,
                },
            );
        }
        assert!(fetcher
            .cached(&oci("r.example/p:v1", PullPolicy::Unspecified))
            .is_some());
        assert!(fetcher
            .cached(&oci("r.example/p:v1", PullPolicy::Always))
            .is_none());
        assert!(fetcher
            .cached(&oci("r.example/p:latest", PullPolicy::Unspecified))
            .is_none());
        assert!(fetcher
            .cached(&oci("r.example/p:latest", PullPolicy::IfNotPresent))
            .is_some());
        assert!(fetcher
            .cached_any(&oci("r.example/p:latest", PullPolicy::Always))
            .is_some());
        // http(s): only a pinned digest is taken from the cache.
        assert!(fetcher.cached(&req(None)).is_none());
        let hit = fetcher.cached(&req(Some(digest))).expect("pinned hit");
        assert_eq!(hit.module, module);
        assert!(hit.from_cache);
    }
}
