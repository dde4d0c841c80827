//! Fetching WasmPlugin modules the way istio-agent does for Envoy, without Kubernetes: OCI
//! images (`oci://`) in every Wasm layout seen in the wild, `http(s)://` URLs, a
//! content-addressed on-disk cache shared by all workers, pull policies, registry credentials
//! from docker config files, and publishing a module as the Wasm OCI artifact.
//!
//! One concern per module: [`reference`] parses image references, [`auth`] finds
//! credentials, [`layout`] finds the module in a manifest, [`oci`] talks to registries,
//! [`http`] fetches URLs, [`cache`] keeps modules on disk, [`policy`] decides when to pull,
//! [`retry`] bounds retries, [`push`] publishes, and [`fetcher`] ties them together.

pub mod auth;
pub mod cache;
pub mod error;
pub mod fetcher;
pub mod http;
pub mod layout;
pub mod oci;
pub mod policy;
pub mod push;
pub mod reference;
pub mod retry;

pub use auth::{Credentials, DockerConfig, SecretStore};
pub use cache::{CacheStats, ModuleCache};
pub use error::PullError;
pub use fetcher::{Fetched, Fetcher, FetcherOptions, Request, Source};
pub use layout::Layout;
pub use policy::PullPolicy;
pub use reference::ImageRef;

/// Largest module meshgate accepts (and largest blob it downloads).
pub const MAX_MODULE_BYTES: usize = 64 << 20;

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The sha256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

/// Decodes 64 hex digits (an optional `sha256:` prefix allowed) into a digest.
pub fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let text = text.strip_prefix("sha256:").unwrap_or(text);
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// True when `bytes` start like a WebAssembly binary (magic and a version), as Istio checks.
pub fn looks_like_wasm(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm"
}

/// Installs rustls' ring provider as the process default once (reqwest is built without a
/// provider of its own, so one crypto library is compiled, not two).
pub(crate) fn ensure_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
