//! Where the module is in an image. Three layouts are in use:
//!
//! - the Wasm OCI artifact (Istio's and solo.io's *oci* variant): a layer of media type
//!   [`WASM_LAYER`] holding the module's bytes, config [`WASM_CONFIG`];
//! - a Docker or OCI image (the *compat* variant): the last layer is a tar (gzip or plain)
//!   with a file `plugin.wasm`;
//! - an `application/wasm` layer, as wasm-pkg tools (`wkg`, `oras push x.wasm:application/wasm`)
//!   push modules. Istio rejects these; meshgate takes them.

use std::io::Read as _;

use serde::Deserialize;

use crate::error::PullError;

/// The Wasm OCI artifact's layer media type.
pub const WASM_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
/// The Wasm OCI artifact's config media type.
pub const WASM_CONFIG: &str = "application/vnd.module.wasm.config.v1+json";
/// The layer media type wasm-pkg tools use.
pub const APPLICATION_WASM: &str = "application/wasm";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest (schema 2).
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Tar layer media types of the compat layout.
const TAR_LAYERS: [&str; 4] = [
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar",
];

/// Which layout an image has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A [`WASM_LAYER`] layer.
    WasmArtifact,
    /// A tar layer with `plugin.wasm`.
    CompatImage,
    /// An [`APPLICATION_WASM`] layer.
    ApplicationWasm,
}

impl Layout {
    /// A short name for dumps and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::WasmArtifact => "wasm-oci-artifact",
            Layout::CompatImage => "image-tar-plugin.wasm",
            Layout::ApplicationWasm => "application/wasm",
        }
    }
}

/// A content descriptor.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type.
    #[serde(default)]
    pub media_type: String,
    /// `sha256:…`.
    pub digest: String,
    /// Size in bytes.
    #[serde(default)]
    pub size: i64,
    /// Platform (index entries only).
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// An index entry's platform.
#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    /// `architecture`.
    #[serde(default)]
    pub architecture: String,
    /// `os`.
    #[serde(default)]
    pub os: String,
}

/// An image manifest or index, as far as finding a module needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// `mediaType`, when the manifest states it (Docker always does; OCI may not).
    #[serde(default)]
    pub media_type: Option<String>,
    /// The config descriptor (manifests only).
    #[serde(default)]
    pub config: Option<Descriptor>,
    /// Layers (manifests only).
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// Entries (indexes only).
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

impl Manifest {
    /// Parses manifest JSON; `content_type` is the registry's Content-Type, used when the
    /// manifest does not state its media type.
    pub fn parse(bytes: &[u8], reference: &str) -> Result<Manifest, PullError> {
        serde_json::from_slice(bytes).map_err(|e| PullError::Registry {
            url: reference.to_owned(),
            message: format!("manifest is not valid JSON: {e}"),
            transient: false,
        })
    }

    /// True for an image index or Docker manifest list.
    pub fn is_index(&self) -> bool {
        matches!(self.media_type.as_deref(), Some(OCI_INDEX | DOCKER_LIST))
            || (self.media_type.is_none() && !self.manifests.is_empty() && self.layers.is_empty())
    }

    /// The index entry to follow: one for a Wasm platform (`wasm`/`wasip1`/`wasi`), else the
    /// only entry, else the first `linux/amd64` one, else the first.
    pub fn pick_entry(&self) -> Option<&Descriptor> {
        let wasm = |d: &&Descriptor| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.architecture == "wasm" || p.os == "wasip1" || p.os == "wasi")
        };
        let amd64 = |d: &&Descriptor| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        };
        self.manifests
            .iter()
            .find(wasm)
            .or_else(|| self.manifests.iter().find(amd64))
            .or_else(|| self.manifests.first())
    }

    /// Finds the layer holding the module.
    pub fn classify(&self, reference: &str) -> Result<(Layout, &Descriptor), PullError> {
        let fail = |reason: String| PullError::Layout {
            reference: reference.to_owned(),
            reason,
            manifest_media_type: self
                .media_type
                .clone()
                .unwrap_or_else(|| "(unset)".to_owned()),
            config_media_type: self
                .config
                .as_ref()
                .map_or_else(|| "(none)".to_owned(), |c| c.media_type.clone()),
            layers: self
                .layers
                .iter()
                .map(|l| l.media_type.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        };
        for (layout, media_type) in [
            (Layout::WasmArtifact, WASM_LAYER),
            (Layout::ApplicationWasm, APPLICATION_WASM),
        ] {
            let found: Vec<&Descriptor> = self
                .layers
                .iter()
                .filter(|l| l.media_type == media_type)
                .collect();
            match found.as_slice() {
                [one] => return Ok((layout, one)),
                [] => {}
                _ => return Err(fail(format!("{} layers of type {media_type}", found.len()))),
            }
        }
        match self.layers.last() {
            Some(last) if TAR_LAYERS.contains(&last.media_type.as_str()) => {
                Ok((Layout::CompatImage, last))
            }
            Some(_) => Err(fail(format!(
                "expected a {WASM_LAYER} or {APPLICATION_WASM} layer, or a tar layer last with plugin.wasm"
            ))),
            None => Err(fail("the manifest has no layers".to_owned())),
        }
    }
}

/// The module's bytes from the layer blob of `layout`.
pub fn extract(
    layout: Layout,
    digest: &str,
    blob: Vec<u8>,
    limit: usize,
) -> Result<Vec<u8>, PullError> {
    match layout {
        Layout::WasmArtifact | Layout::ApplicationWasm => Ok(blob),
        Layout::CompatImage => plugin_from_tar(digest, &blob, limit),
    }
}

/// `plugin.wasm` (in any directory, as Istio looks for it) from a tar, gzip-compressed or not.
fn plugin_from_tar(digest: &str, blob: &[u8], limit: usize) -> Result<Vec<u8>, PullError> {
    let fail = |reason: String| PullError::Archive {
        digest: digest.to_owned(),
        reason,
    };
    let reader: Box<dyn std::io::Read + '_> = if blob.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(blob))
    } else {
        Box::new(blob)
    };
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| fail(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| fail(format!("not a tar archive: {e}")))?;
        let is_plugin = entry
            .path()
            .ok()
            .and_then(|p| p.file_name().map(|n| n == "plugin.wasm"))
            .unwrap_or(false);
        if !is_plugin || !entry.header().entry_type().is_file() {
            continue;
        }
        if entry.size() > limit as u64 {
            return Err(PullError::TooLarge {
                what: format!("plugin.wasm in layer {digest}"),
                limit,
            });
        }
        let mut out = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0));
        entry
            .by_ref()
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| fail(format!("reading plugin.wasm: {e}")))?;
        return Ok(out);
    }
    Err(fail("no plugin.wasm in the archive".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(layers: &[&str]) -> Manifest {
        let layers: Vec<String> = layers
            .iter()
            .map(|m| format!(r#"{{"mediaType": "{m}", "digest": "sha256:00", "size": 1}}"#))
            .collect();
        let json = format!(
            r#"{{"schemaVersion": 2, "config": {{"mediaType": "x", "digest": "sha256:01", "size": 2}}, "layers": [{}]}}"#,
            layers.join(",")
        );
        Manifest::parse(json.as_bytes(), "r").expect("parses")
    }

    #[test]
    fn classifies_the_three_layouts_and_names_what_it_saw() {
        assert_eq!(
            manifest(&[WASM_LAYER]).classify("r").expect("ok").0,
            Layout::WasmArtifact
        );
        assert_eq!(
            manifest(&["application/vnd.oci.image.layer.v1.tar+gzip"])
                .classify("r")
                .expect("ok")
                .0,
            Layout::CompatImage
        );
        assert_eq!(
            manifest(&[APPLICATION_WASM]).classify("r").expect("ok").0,
            Layout::ApplicationWasm
        );
        let e = manifest(&["text/plain"])
            .classify("r")
            .expect_err("rejected")
            .to_string();
        assert!(e.contains("text/plain") && e.contains("config x"), "{e}");
        assert!(manifest(&[]).classify("r").is_err());
        assert!(manifest(&[WASM_LAYER, WASM_LAYER]).classify("r").is_err());
    }

    #[test]
    fn finds_plugin_wasm_in_plain_and_gzip_tars() {
        let mut tar_bytes = Vec::new();
        {
            let mut b = tar::Builder::new(&mut tar_bytes);
            for (name, data) in [
                ("README", &b"hi"[..]),
                ("dir/plugin.wasm", &b"\0asm\x01\0\0\0"[..]),
            ] {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                b.append_data(&mut h, name, data).expect("append");
            }
            b.finish().expect("finish");
        }
        let got = extract(Layout::CompatImage, "d", tar_bytes.clone(), 1024).expect("plain tar");
        assert_eq!(got, b"\0asm\x01\0\0\0");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar_bytes).expect("gzip");
        let gz = gz.finish().expect("gzip");
        assert_eq!(
            extract(Layout::CompatImage, "d", gz, 1024).expect("gzip tar"),
            got
        );
        assert!(extract(Layout::CompatImage, "d", b"junk".to_vec(), 1024).is_err());
        assert!(matches!(
            extract(Layout::CompatImage, "d", tar_bytes, 4),
            Err(PullError::TooLarge { .. })
        ));
    }
}

#[cfg(test)]
mod index_tests {
    use super::*;

    #[test]
    fn an_index_is_followed_to_a_wasm_platform_entry_first() {
        let json = br#"{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:aa", "size": 1, "platform": {"architecture": "arm64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:bb", "size": 1, "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:cc", "size": 1, "platform": {"architecture": "wasm", "os": "wasip1"}}]}"#;
        let m = Manifest::parse(json, "r").expect("parses");
        assert!(m.is_index());
        assert_eq!(m.pick_entry().map(|d| d.digest.as_str()), Some("sha256:cc"));
    }
}
