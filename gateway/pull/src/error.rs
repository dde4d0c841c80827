//! What can go wrong fetching a module, with the registry's own words where it gave any.

use std::path::PathBuf;

/// A failed pull, fetch, push or cache operation.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The image reference does not parse.
    #[error("invalid image reference {reference:?}: {reason}")]
    Reference {
        /// The reference as written.
        reference: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The registry refused the credentials, or wants some and none were given.
    #[error("{registry}: authentication failed ({detail}): {message}")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// `no credentials configured` or `credentials rejected`.
        detail: &'static str,
        /// The registry's answer.
        message: String,
    },
    /// The registry (or URL) answered with an error.
    #[error("{url}: {message}")]
    Registry {
        /// What was asked for.
        url: String,
        /// The registry's answer (status and body) or the transport error.
        message: String,
        /// True for errors worth retrying (transport errors, 5xx, 429).
        transient: bool,
    },
    /// Content does not hash to the digest it was named by.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The blob or manifest.
        what: String,
        /// The digest it should have.
        expected: String,
        /// The digest it has.
        actual: String,
    },
    /// The module does not match the WasmPlugin's `sha256`.
    #[error("sha256 mismatch: the WasmPlugin pins {pinned}, the module is {module}{manifest}")]
    PinMismatch {
        /// The pinned digest (hex).
        pinned: String,
        /// The module's digest (hex).
        module: String,
        /// `, the manifest is sha256:…` for OCI images, else empty.
        manifest: String,
    },
    /// No Wasm module could be found in the image.
    #[error("no Wasm module in {reference}: {reason} (manifest {manifest_media_type}, config {config_media_type}, layers [{layers}])")]
    Layout {
        /// The image.
        reference: String,
        /// What is missing.
        reason: String,
        /// The manifest's media type.
        manifest_media_type: String,
        /// The config's media type.
        config_media_type: String,
        /// The layers' media types, comma-separated.
        layers: String,
    },
    /// A tar layer holds no `plugin.wasm`, or is not a readable (gzip) tar.
    #[error("layer {digest}: {reason}")]
    Archive {
        /// The layer's digest.
        digest: String,
        /// What went wrong.
        reason: String,
    },
    /// Larger than the cap.
    #[error("{what} is larger than {limit} bytes")]
    TooLarge {
        /// The blob, manifest or URL.
        what: String,
        /// The cap.
        limit: usize,
    },
    /// The bytes are not a WebAssembly module.
    #[error("{what}: not a WebAssembly module (no \\0asm header)")]
    NotWasm {
        /// Where the bytes came from.
        what: String,
    },
    /// `imagePullSecret` names a secret meshgate cannot find or read.
    #[error("imagePullSecret {name:?}: {reason}")]
    Secret {
        /// The secret's name (`namespace/name`).
        name: String,
        /// Why it is unusable.
        reason: String,
    },
    /// A docker config file is unreadable.
    #[error("docker config {path}: {reason}")]
    DockerConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A CA file is unreadable.
    #[error("CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Reading or writing the cache failed.
    #[error("cache {path}: {source}")]
    Cache {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `IfNotPresent` offline pull found nothing cached (only for cache-only lookups).
    #[error("{0}: not in the cache")]
    NotCached(String),
    /// The source kind is not something this crate fetches.
    #[error("{0}: unsupported source")]
    Unsupported(String),
    /// Every attempt failed; the last error.
    #[error("{last} (after {attempts} attempts)")]
    Exhausted {
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error.
        last: Box<PullError>,
    },
}

impl PullError {
    /// True when trying again may help (the registry is down, overloaded, or timed out).
    pub fn is_transient(&self) -> bool {
        match self {
            PullError::Registry { transient, .. } => *transient,
            PullError::Exhausted { last, .. } => last.is_transient(),
            _ => false,
        }
    }
}
