//! Publishing a module as the Wasm OCI artifact Istio pulls: one layer of type
//! [`WASM_LAYER`](crate::layout::WASM_LAYER) holding the module, config
//! [`WASM_CONFIG`](crate::layout::WASM_CONFIG), in an OCI image manifest.

use crate::auth::Credentials;
use crate::error::PullError;
use crate::layout::{OCI_MANIFEST, WASM_CONFIG, WASM_LAYER};
use crate::oci::{map_error, RegistryOptions};
use crate::reference::ImageRef;
use crate::{hex, sha256, MAX_MODULE_BYTES};

/// Pushes `module` to `image` (which must name a tag) and returns the manifest digest
/// (`sha256:…`).
pub async fn push(
    opts: &RegistryOptions,
    image: &ImageRef,
    creds: &Credentials,
    module: &[u8],
) -> Result<String, PullError> {
    let shown = image.to_string();
    if image.digest().is_some() {
        return Err(PullError::Reference {
            reference: shown,
            reason: "push to a tag, not a digest".to_owned(),
        });
    }
    if !crate::looks_like_wasm(module) {
        return Err(PullError::NotWasm {
            what: "the module to push".to_owned(),
        });
    }
    if module.len() > MAX_MODULE_BYTES {
        return Err(PullError::TooLarge {
            what: "the module to push".to_owned(),
            limit: MAX_MODULE_BYTES,
        });
    }
    let client = opts.client()?;
    let reference = image.client_ref();
    let registry = image.registry();
    client
        .store_auth_if_needed(reference.resolve_registry(), &creds.to_registry_auth())
        .await;
    let config = b"{}".to_vec();
    let layer_digest = format!("sha256:{}", hex(&sha256(module)));
    let config_digest = format!("sha256:{}", hex(&sha256(&config)));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": WASM_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{
            "mediaType": WASM_LAYER,
            "digest": layer_digest,
            "size": module.len(),
            "annotations": {"org.opencontainers.image.title": "plugin.wasm"},
        }],
    });
    let body = serde_json::to_vec(&manifest).map_err(|e| PullError::Registry {
        url: shown.clone(),
        message: e.to_string(),
        transient: false,
    })?;
    let digest = format!("sha256:{}", hex(&sha256(&body)));
    client
        .push_blob(reference, module.to_vec(), &layer_digest)
        .await
        .map_err(|e| map_error(&shown, registry, creds, e))?;
    client
        .push_blob(reference, config, &config_digest)
        .await
        .map_err(|e| map_error(&shown, registry, creds, e))?;
    client
        .push_manifest_raw(
            reference,
            body,
            reqwest::header::HeaderValue::from_static(OCI_MANIFEST),
        )
        .await
        .map_err(|e| map_error(&shown, registry, creds, e))?;
    Ok(digest)
}
