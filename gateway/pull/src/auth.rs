//! Registry credentials: a docker config JSON (`~/.docker/config.json`, or a Kubernetes
//! `kubernetes.io/dockerconfigjson` Secret's `.dockerconfigjson`), looked up by registry host,
//! and the directory of mounted Secrets `imagePullSecret` names are found in.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use crate::error::PullError;

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Credentials {
    /// No credentials: an anonymous pull.
    #[default]
    Anonymous,
    /// HTTP basic credentials (also used to obtain a bearer token where the registry asks).
    Basic {
        /// User name.
        username: String,
        /// Password or token.
        password: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
        }
    }
}

impl Credentials {
    /// The `oci-client` form.
    pub fn to_registry_auth(&self) -> oci_client::secrets::RegistryAuth {
        match self {
            Credentials::Anonymous => oci_client::secrets::RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                oci_client::secrets::RegistryAuth::Basic(username.clone(), password.clone())
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Debug, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// A parsed docker config JSON: credentials by registry.
#[derive(Debug, Clone, Default)]
pub struct DockerConfig {
    entries: Vec<(String, Credentials)>,
}

/// The host part of a docker config `auths` key (`https://index.docker.io/v1/` ->
/// `index.docker.io`).
fn key_host(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

/// Docker Hub's names for itself.
fn canonical_host(host: &str) -> &str {
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "index.docker.io",
        h => h,
    }
}

impl DockerConfig {
    /// Parses a docker config JSON.
    pub fn parse(json: &[u8]) -> Result<DockerConfig, String> {
        let file: ConfigFile = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        let mut entries = Vec::new();
        for (key, e) in file.auths {
            let creds = match (e.username, e.password, e.auth) {
                (Some(u), Some(p), _) if !u.is_empty() => Credentials::Basic {
                    username: u,
                    password: p,
                },
                (_, _, Some(a)) if !a.is_empty() => {
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(a.trim())
                        .map_err(|e| format!("auths.{key}.auth: not base64: {e}"))?;
                    let text = String::from_utf8(raw)
                        .map_err(|_| format!("auths.{key}.auth: not UTF-8"))?;
                    let (u, p) = text
                        .split_once(':')
                        .ok_or_else(|| format!("auths.{key}.auth: not `user:password`"))?;
                    Credentials::Basic {
                        username: u.to_owned(),
                        password: p.to_owned(),
                    }
                }
                _ => continue,
            };
            entries.push((key, creds));
        }
        Ok(DockerConfig { entries })
    }

    /// Reads and parses a docker config file.
    pub fn load(path: &Path) -> Result<DockerConfig, PullError> {
        let err = |reason: String| PullError::DockerConfig {
            path: path.to_owned(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        DockerConfig::parse(&bytes).map_err(err)
    }

    /// The credentials for `registry` (`host[:port]`), if the config has any.
    pub fn lookup(&self, registry: &str) -> Option<&Credentials> {
        let want = canonical_host(registry);
        self.entries
            .iter()
            .find(|(k, _)| canonical_host(key_host(k)) == want)
            .map(|(_, c)| c)
    }

    /// True when the config holds no credentials.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Mounted Secrets: `DIR/<namespace>/<name>/.dockerconfigjson` (or `DIR/<name>/…`), the
/// layout Kubernetes uses when a Secret is mounted as a volume.
#[derive(Debug, Clone)]
pub struct SecretStore {
    dir: PathBuf,
}

impl SecretStore {
    /// Secrets under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> SecretStore {
        SecretStore { dir: dir.into() }
    }

    /// The docker config of Secret `name` in `namespace`.
    pub fn docker_config(&self, namespace: &str, name: &str) -> Result<DockerConfig, PullError> {
        let full = format!("{namespace}/{name}");
        let bad = |reason: String| PullError::Secret {
            name: full.clone(),
            reason,
        };
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(bad("not a Secret name".to_owned()));
        }
        let candidates = [
            self.dir
                .join(namespace)
                .join(name)
                .join(".dockerconfigjson"),
            self.dir.join(name).join(".dockerconfigjson"),
        ];
        let Some(path) = candidates.iter().find(|p| p.is_file()) else {
            return Err(bad(format!(
                "no {} or {}",
                candidates[0].display(),
                candidates[1].display()
            )));
        };
        let bytes = std::fs::read(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
        DockerConfig::parse(&bytes).map_err(|e| bad(format!("{}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_auth_and_username_password_entries() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:x");
        let json = format!(
            r#"{{"auths": {{"127.0.0.1:5000": {{"auth": "{auth}"}},
                "https://index.docker.io/v1/": {{"username": "bob", "password": "pw"}},
                "empty.example": {{}}}}}}"#
        );
        let c = DockerConfig::parse(json.as_bytes()).expect("parses");
        assert_eq!(
            c.lookup("127.0.0.1:5000"),
            Some(&Credentials::Basic {
                username: "alice".into(),
                password: "s3cret:x".into()
            })
        );
        assert!(
            matches!(c.lookup("docker.io"), Some(Credentials::Basic { username, .. }) if username == "bob")
        );
        assert_eq!(c.lookup("empty.example"), None);
        assert_eq!(c.lookup("127.0.0.1:5001"), None);
        assert!(DockerConfig::parse(br#"{"auths": {"h": {"auth": "!!"}}}"#).is_err());
    }

    #[test]
    fn secrets_by_namespace_or_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |p: PathBuf| {
            std::fs::create_dir_all(&p).expect("mkdir");
            std::fs::write(
                p.join(".dockerconfigjson"),
                br#"{"auths": {"r": {"username": "u", "password": "p"}}}"#,
            )
            .expect("write");
        };
        write(dir.path().join("ns").join("a"));
        write(dir.path().join("b"));
        let s = SecretStore::new(dir.path());
        assert!(s.docker_config("ns", "a").expect("a").lookup("r").is_some());
        assert!(s
            .docker_config("other", "b")
            .expect("b")
            .lookup("r")
            .is_some());
        assert!(s.docker_config("ns", "missing").is_err());
        assert!(s.docker_config("ns", "../b").is_err());
    }
}
