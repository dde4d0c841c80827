//! Talking to OCI registries with `oci-client`: fetch a manifest (following an index to one
//! image), find the module's layer, download it within the size cap, and verify every digest
//! against what named it.

use std::time::Duration;

use futures_util::StreamExt as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;

use crate::auth::Credentials;
use crate::error::PullError;
use crate::layout::{self, Layout, Manifest};
use crate::reference::ImageRef;
use crate::{hex, sha256, MAX_MODULE_BYTES};

/// Largest manifest meshgate reads.
const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Registries (`host[:port]`, or `*` for all) spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// Extra CA certificates (PEM) to trust, besides the system's.
    pub extra_roots_pem: Vec<Vec<u8>>,
    /// Bound on each request (connect and read).
    pub timeout: Option<Duration>,
}

impl RegistryOptions {
    /// True when `registry` is reached over plain HTTP.
    pub fn is_insecure(&self, registry: &str) -> bool {
        self.insecure.iter().any(|h| h == "*" || h == registry)
    }

    /// An `oci-client` client for these options (one per pull: the client remembers the
    /// first credentials it saw for a registry).
    pub fn client(&self) -> Result<oci_client::Client, PullError> {
        crate::ensure_crypto_provider();
        let mut extra_root_certificates = Vec::new();
        for pem in &self.extra_roots_pem {
            extra_root_certificates.push(oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Pem,
                data: pem.clone(),
            });
        }
        let protocol = if self.insecure.iter().any(|h| h == "*") {
            ClientProtocol::Http
        } else if self.insecure.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(self.insecure.clone())
        };
        let timeout = self.timeout.unwrap_or(Duration::from_secs(30));
        let config = ClientConfig {
            protocol,
            extra_root_certificates,
            read_timeout: Some(timeout),
            connect_timeout: Some(timeout.min(Duration::from_secs(10))),
            platform_resolver: None,
            user_agent: concat!("meshgate/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        oci_client::Client::try_from(config).map_err(|e| PullError::Registry {
            url: "(client)".to_owned(),
            message: e.to_string(),
            transient: false,
        })
    }
}

/// A module pulled from a registry.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The module's bytes.
    pub module: Vec<u8>,
    /// The image manifest's digest (`sha256:…`; for an index, the chosen image's).
    pub manifest_digest: String,
    /// Where the module was in the image.
    pub layout: Layout,
}

/// Maps an `oci-client` error to ours, keeping the registry's words.
pub(crate) fn map_error(
    what: &str,
    registry: &str,
    creds: &Credentials,
    e: OciDistributionError,
) -> PullError {
    let unauthorized = |message: String| PullError::Unauthorized {
        registry: registry.to_owned(),
        detail: match creds {
            Credentials::Anonymous => "no credentials configured",
            Credentials::Basic { .. } => "credentials rejected",
        },
        message,
    };
    match e {
        OciDistributionError::AuthenticationFailure(m) => unauthorized(m),
        OciDistributionError::UnauthorizedError { url } => unauthorized(format!("401 from {url}")),
        OciDistributionError::ServerError { code, url, message } => match code {
            401 | 403 => unauthorized(format!("{code} from {url}: {}", message.trim())),
            _ => PullError::Registry {
                url,
                message: format!("status {code}: {}", message.trim()),
                transient: code >= 500 || code == 429 || code == 408,
            },
        },
        OciDistributionError::RegistryError { envelope, url } => {
            let denied = envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    oci_client::errors::OciErrorCode::Unauthorized
                        | oci_client::errors::OciErrorCode::Denied
                )
            });
            if denied {
                unauthorized(format!("{url}: {envelope}"))
            } else {
                PullError::Registry {
                    url,
                    message: envelope.to_string(),
                    transient: envelope.errors.iter().any(|e| {
                        matches!(e.code, oci_client::errors::OciErrorCode::Toomanyrequests)
                    }),
                }
            }
        }
        OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
            expected,
            actual,
        }) => PullError::DigestMismatch {
            what: what.to_owned(),
            expected,
            actual,
        },
        OciDistributionError::RequestError(e) => PullError::Registry {
            url: e.url().map_or_else(|| what.to_owned(), |u| u.to_string()),
            message: error_chain(&e),
            transient: true,
        },
        OciDistributionError::IoError(e) => PullError::Registry {
            url: what.to_owned(),
            message: e.to_string(),
            transient: true,
        },
        other => PullError::Registry {
            url: what.to_owned(),
            message: other.to_string(),
            transient: false,
        },
    }
}

/// An error with its causes (`error sending request: connection refused`).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

const ACCEPTED: [&str; 4] = [
    layout::OCI_MANIFEST,
    layout::DOCKER_MANIFEST,
    layout::OCI_INDEX,
    layout::DOCKER_LIST,
];

/// Fetches a manifest and checks that it hashes to the digest the registry (or the
/// reference) names it by.
async fn manifest(
    client: &oci_client::Client,
    image: &oci_client::Reference,
    shown: &str,
    registry: &str,
    creds: &Credentials,
) -> Result<(Manifest, String), PullError> {
    let (body, digest) = client
        .pull_manifest_raw(image, &creds.to_registry_auth(), &ACCEPTED)
        .await
        .map_err(|e| map_error(shown, registry, creds, e))?;
    if body.len() > MAX_MANIFEST_BYTES {
        return Err(PullError::TooLarge {
            what: format!("manifest of {shown}"),
            limit: MAX_MANIFEST_BYTES,
        });
    }
    let actual = format!("sha256:{}", hex(&sha256(&body)));
    if let Some(want) = image.digest() {
        if want != actual {
            return Err(PullError::DigestMismatch {
                what: format!("manifest of {shown}"),
                expected: want.to_owned(),
                actual,
            });
        }
    }
    if digest.starts_with("sha256:") && digest != actual {
        return Err(PullError::DigestMismatch {
            what: format!("manifest of {shown}"),
            expected: digest,
            actual,
        });
    }
    Ok((Manifest::parse(&body, shown)?, actual))
}

/// Pulls the module of `image`.
pub async fn pull(
    opts: &RegistryOptions,
    image: &ImageRef,
    creds: &Credentials,
) -> Result<PulledImage, PullError> {
    let client = opts.client()?;
    let shown = image.to_string();
    let registry = image.registry().to_owned();
    let (mut m, mut digest) =
        manifest(&client, image.client_ref(), &shown, &registry, creds).await?;
    if m.is_index() {
        let entry = m.pick_entry().ok_or_else(|| PullError::Layout {
            reference: shown.clone(),
            reason: "the image index has no manifests".to_owned(),
            manifest_media_type: m.media_type.clone().unwrap_or_default(),
            config_media_type: "(none)".to_owned(),
            layers: String::new(),
        })?;
        let inner = image.client_ref().clone_with_digest(entry.digest.clone());
        (m, digest) = manifest(&client, &inner, &shown, &registry, creds).await?;
        if m.is_index() {
            return Err(PullError::Layout {
                reference: shown,
                reason: "an image index inside an image index".to_owned(),
                manifest_media_type: m.media_type.clone().unwrap_or_default(),
                config_media_type: "(none)".to_owned(),
                layers: String::new(),
            });
        }
    }
    let (layout, layer) = m.classify(&shown)?;
    let blob = blob(&client, image, layer, &registry, creds).await?;
    let module = layout::extract(layout, &layer.digest, blob, MAX_MODULE_BYTES)?;
    if module.len() > MAX_MODULE_BYTES {
        return Err(PullError::TooLarge {
            what: format!("module of {shown}"),
            limit: MAX_MODULE_BYTES,
        });
    }
    if !crate::looks_like_wasm(&module) {
        return Err(PullError::NotWasm { what: shown });
    }
    Ok(PulledImage {
        module,
        manifest_digest: digest,
        layout,
    })
}

/// Downloads one blob, capped, and checks its digest (and size) against the descriptor.
async fn blob(
    client: &oci_client::Client,
    image: &ImageRef,
    layer: &layout::Descriptor,
    registry: &str,
    creds: &Credentials,
) -> Result<Vec<u8>, PullError> {
    let what = format!("blob {} of {image}", layer.digest);
    // Compressed layers may be larger than the module they hold, but not by much.
    let limit = MAX_MODULE_BYTES + (MAX_MODULE_BYTES / 8);
    if layer.size > limit as i64 {
        return Err(PullError::TooLarge { what, limit });
    }
    let Some(want_hex) = layer.digest.strip_prefix("sha256:") else {
        return Err(PullError::Registry {
            url: what,
            message: "only sha256 blob digests are supported".to_owned(),
            transient: false,
        });
    };
    let mut stream = client
        .pull_blob_stream(image.client_ref(), layer.digest.as_str())
        .await
        .map_err(|e| map_error(&what, registry, creds, e))?;
    let mut out = Vec::with_capacity(usize::try_from(layer.size.max(0)).unwrap_or(0).min(limit));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            // oci-client reports a digest mismatch at the stream's end as an I/O error.
            let text = e.to_string();
            PullError::Registry {
                url: what.clone(),
                message: text,
                transient: false,
            }
        });
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                return Err(if out.len() as i64 == layer.size {
                    PullError::DigestMismatch {
                        what: what.clone(),
                        expected: layer.digest.clone(),
                        actual: format!("sha256:{}", hex(&sha256(&out))),
                    }
                } else {
                    e
                })
            }
        };
        if out.len() + chunk.len() > limit {
            return Err(PullError::TooLarge { what, limit });
        }
        out.extend_from_slice(&chunk);
    }
    let actual = hex(&sha256(&out));
    if actual != want_hex {
        return Err(PullError::DigestMismatch {
            what,
            expected: layer.digest.clone(),
            actual: format!("sha256:{actual}"),
        });
    }
    if layer.size >= 0 && out.len() as i64 != layer.size {
        return Err(PullError::DigestMismatch {
            what: format!("{what} (size {} instead of {})", out.len(), layer.size),
            expected: layer.digest.clone(),
            actual: format!("sha256:{actual}"),
        });
    }
    Ok(out)
}
