//! A real OCI registry on loopback: Debian's `docker-registry` (the CNCF distribution
//! registry) with its own storage in a temporary directory, optionally behind htpasswd (bcrypt)
//! basic auth; plus the real tools that push the image layouts meshgate must read: its own
//! `plugin push`, `skopeo` (a Docker/OCI image built by the shared corpus script) and the
//! Python `oras` client (`application/wasm` layers).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// `name` on `PATH`, or `None` (the test skips) outside CI; in CI a missing tool fails the
/// test, since the test command installs it.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is missing in CI (scripts/test.sh installs it)"
        );
        eprintln!("SKIPPED: {name} not installed (scripts/test.sh installs it)");
    }
    found
}

/// True when the Python `oras` package is importable (else as [`tool`]).
pub fn oras_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import oras.client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "the Python oras package is missing in CI (scripts/test.sh installs it)"
        );
        eprintln!("SKIPPED: Python oras not installed (pip install oras)");
    }
    ok
}

/// The shared corpus script that builds a compat-layout OCI image directory.
pub fn layout_script() -> Option<PathBuf> {
    let p = manifest_dir().join("../../../shared/corpus/tools/mk_oci_layout.py");
    if p.is_file() {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing in CI",
        p.display()
    );
    eprintln!("SKIPPED: {} not found", p.display());
    None
}

/// A running registry; stopped on drop.
pub struct Registry {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    /// `(user, password)` when it requires auth.
    pub auth: Option<(String, String)>,
}

impl Registry {
    /// An anonymous registry, or `None` (skip) when `docker-registry` is not installed.
    pub fn start() -> Option<Registry> {
        Self::start_inner(None)
    }

    /// A registry requiring basic auth for `user`/`password`, or `None` (skip).
    pub fn start_with_auth(user: &str, password: &str) -> Option<Registry> {
        tool("htpasswd")?;
        Self::start_inner(Some((user.to_owned(), password.to_owned())))
    }

    fn start_inner(auth: Option<(String, String)>) -> Option<Registry> {
        tool("docker-registry")?;
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("storage").display()
        );
        if let Some((user, password)) = &auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd runs");
            assert!(out.status.success(), "htpasswd failed");
            std::fs::write(dir.path().join("htpasswd"), &out.stdout).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: meshgate-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), config).expect("write config");
        let mut r = Registry {
            child: None,
            port,
            dir,
            auth,
        };
        r.resume();
        Some(r)
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the registry process (its storage stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and storage and waits until it answers.
    pub fn resume(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry not listening in time:\n{}",
                std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Where the registry keeps the blob `sha256:HEX`.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// A scratch directory that lives as long as the registry.
    pub fn scratch(&self) -> PathBuf {
        let p = self.dir.path().join("scratch");
        std::fs::create_dir_all(&p).expect("scratch dir");
        p
    }

    /// Runs `meshgate plugin push FILE oci://HOST/REPO_TAG` (with the registry's credentials)
    /// and returns the manifest digest it prints.
    pub fn push(&self, wasm: &Path, repo_tag: &str) -> String {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshgate"));
        cmd.args(["plugin", "push"])
            .arg(wasm)
            .arg(format!("oci://{}/{repo_tag}", self.host()))
            .args(["--insecure-registry", &self.host()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((user, _)) = &self.auth {
            cmd.args(["--username", user, "--password-stdin"]);
        }
        let mut child = cmd.spawn().expect("meshgate plugin push runs");
        if let Some((_, password)) = &self.auth {
            let mut stdin = child.stdin.take().expect("stdin");
            writeln!(stdin, "{password}").expect("write password");
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().expect("push finishes");
        assert!(
            out.status.success(),
            "plugin push failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Pushes `wasm` as a Docker/OCI image with one gzip tar layer holding `plugin.wasm`
    /// (the shared corpus script builds the OCI layout, skopeo copies it); returns the
    /// manifest digest, or `None` (skip) without skopeo or the script.
    pub fn push_compat(&self, wasm: &Path, repo: &str, tag: &str) -> Option<String> {
        let skopeo = tool("skopeo")?;
        let script = layout_script()?;
        let layout = self.scratch().join(format!("layout-{repo}-{tag}"));
        let out = Command::new("python3")
            .arg(&script)
            .arg(wasm)
            .arg(&layout)
            .arg(tag)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let digest = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let mut cmd = Command::new(skopeo);
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some((user, password)) = &self.auth {
            cmd.arg(format!("--dest-creds={user}:{password}"));
        }
        let out = cmd
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo}:{tag}", self.host()))
            .output()
            .expect("skopeo runs");
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(digest)
    }

    /// Pushes `wasm` as one `application/wasm` layer with the Python `oras` client (as
    /// wasm-pkg tools lay modules out), or `None` (skip) without oras.
    pub fn push_application_wasm(&self, wasm: &Path, repo: &str, tag: &str) -> Option<()> {
        if !oras_available() {
            return None;
        }
        let dir = self.scratch().join(format!("oras-{repo}-{tag}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::copy(wasm, dir.join("plugin.wasm")).expect("copy module");
        self.oras_push(
            &dir,
            "plugin.wasm",
            "application/wasm",
            &format!("{repo}:{tag}"),
        );
        Some(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The layer digest of a manifest pushed by `meshgate plugin push` (its only layer).
pub fn layer_digest(registry: &Registry, repo_tag: &str) -> String {
    let (repo, tag) = repo_tag.split_once(':').expect("repo:tag");
    let resp = super::Client::http1(registry.port).get_h(
        &registry.host(),
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("accept", "application/vnd.oci.image.manifest.v1+json")],
    );
    assert_eq!(resp.status, 200, "manifest of {repo_tag}");
    let m: serde_json::Value = serde_json::from_slice(&resp.body).expect("manifest JSON");
    m["layers"][0]["digest"]
        .as_str()
        .expect("layer digest")
        .to_owned()
}

impl Registry {
    /// Pushes `file` as a one-layer artifact of layer media type `media_type` with oras
    /// (to `plugins/text:v1`), or `None` (skip) without oras.
    pub fn push_application_wasm_like(&self, file: &Path, media_type: &str) -> Option<()> {
        if !oras_available() {
            return None;
        }
        let dir = file.parent().expect("parent");
        let name = file.file_name().expect("name").to_string_lossy();
        self.oras_push(dir, &name, media_type, "plugins/text:v1");
        Some(())
    }

    /// Pushes `file` (in `dir`) as a one-layer artifact of layer media type `media_type` to
    /// `repo_tag`, with the oras Python client.
    fn oras_push(&self, dir: &Path, file: &str, media_type: &str, repo_tag: &str) {
        let script = format!(
            "import oras.client\nc = oras.client.OrasClient(hostname='{host}', insecure=True)\n\
             r = c.push(files=['{file}:{media_type}'], target='{host}/{repo_tag}', disable_path_validation=True)\n\
             assert r.status_code in (200, 201), r.status_code\n",
            host = self.host()
        );
        let out = Command::new("python3")
            .args(["-c", &script])
            .current_dir(dir)
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "oras push failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The package's folder, as cargo gives it to the running test (the path compiled in would be
/// that of whichever checkout built the binary, when checkouts share a target directory).
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}
