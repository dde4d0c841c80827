//! OCI image references as a WasmPlugin `url` writes them: `oci://host[:port]/repo[:tag]`,
//! `…@sha256:HEX`, or the same without `oci://`. No tag means `latest`.

use std::fmt;

use crate::error::PullError;

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    inner: oci_client::Reference,
    /// The reference as written, without `oci://`.
    written: String,
}

impl ImageRef {
    /// Parses `oci://REF` or `REF`.
    pub fn parse(text: &str) -> Result<ImageRef, PullError> {
        let written = text.strip_prefix("oci://").unwrap_or(text).to_owned();
        let err = |reason: String| PullError::Reference {
            reference: text.to_owned(),
            reason,
        };
        if written.is_empty() {
            return Err(err("empty reference".to_owned()));
        }
        if written.contains("://") {
            return Err(err("only oci:// references are images".to_owned()));
        }
        let inner =
            oci_client::Reference::try_from(written.as_str()).map_err(|e| err(e.to_string()))?;
        if let Some(d) = inner.digest() {
            if !d.starts_with("sha256:") {
                return Err(err(format!(
                    "digest {d}: only sha256 digests are supported"
                )));
            }
        }
        Ok(ImageRef { inner, written })
    }

    /// The registry as written (`127.0.0.1:5000`, `ghcr.io`, `docker.io`).
    pub fn registry(&self) -> &str {
        self.inner.registry()
    }

    /// The repository (`org/plugin`).
    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    /// The tag; `latest` when neither a tag nor a digest is given.
    pub fn tag(&self) -> Option<&str> {
        match (self.inner.tag(), self.inner.digest()) {
            (Some(t), _) => Some(t),
            (None, None) => Some("latest"),
            (None, Some(_)) => None,
        }
    }

    /// The manifest digest (`sha256:…`) when the reference pins one.
    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// True when the reference spells out the `latest` tag — what Istio's default pull policy
    /// looks at (an omitted tag does not count, as in Istio).
    pub fn explicit_latest(&self) -> bool {
        self.digest().is_none() && self.written.ends_with(":latest")
    }

    /// The reference `oci-client` works with.
    pub fn client_ref(&self) -> &oci_client::Reference {
        &self.inner
    }

    /// The same repository at `tag`.
    pub fn with_tag(&self, tag: &str) -> ImageRef {
        let inner = oci_client::Reference::with_tag(
            self.inner.registry().to_owned(),
            self.inner.repository().to_owned(),
            tag.to_owned(),
        );
        ImageRef {
            written: inner.whole(),
            inner,
        }
    }

    /// A stable key for the tag index: `registry/repository:tag` or `…@digest`.
    pub fn key(&self) -> String {
        match (self.digest(), self.tag()) {
            (Some(d), _) => format!("{}/{}@{d}", self.registry(), self.repository()),
            (None, Some(t)) => format!("{}/{}:{t}", self.registry(), self.repository()),
            (None, None) => format!("{}/{}", self.registry(), self.repository()),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci://{}", self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_digests_and_defaults() {
        let r = ImageRef::parse("oci://127.0.0.1:5000/org/plugin:v1").expect("parses");
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "org/plugin");
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.digest(), None);
        assert!(!r.explicit_latest());
        assert_eq!(r.key(), "127.0.0.1:5000/org/plugin:v1");

        let r = ImageRef::parse("ghcr.io/org/plugin").expect("parses");
        assert_eq!(r.tag(), Some("latest"));
        assert!(
            !r.explicit_latest(),
            "an omitted tag is not an explicit latest"
        );
        assert_eq!(r.key(), "ghcr.io/org/plugin:latest");
        assert!(ImageRef::parse("ghcr.io/org/plugin:latest")
            .expect("parses")
            .explicit_latest());

        let d = format!("sha256:{}", "ab".repeat(32));
        let r = ImageRef::parse(&format!("oci://localhost:5000/p@{d}")).expect("parses");
        assert_eq!(r.digest(), Some(d.as_str()));
        assert_eq!(r.tag(), None);
        assert_eq!(r.to_string(), format!("oci://localhost:5000/p@{d}"));
        assert_eq!(r.with_tag("v2").key(), "localhost:5000/p:v2");
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "oci://",
            "https://ghcr.io/x",
            "oci://Host/UPPER",
            "ghcr.io/p@sha256:short",
            "ghcr.io/p:bad tag",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
