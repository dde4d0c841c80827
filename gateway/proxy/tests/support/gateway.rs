//! Starts the real `meshgate run` binary on a config and waits until it reports ready.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// A running gateway process; killed on drop.
pub struct Gateway {
    child: Option<Child>,
    /// Port of the first listener.
    pub port: u16,
    /// Admin port.
    pub admin: u16,
    /// Readiness port (Istio's 15021 role).
    pub readiness: u16,
    /// Stats port (Istio's 15090 role).
    pub stats: u16,
    dir: tempfile::TempDir,
    stderr: PathBuf,
}

impl Gateway {
    /// Writes `yaml` (with `{PORT}` replaced by a free port) and starts the gateway on it.
    pub fn start(yaml: &str) -> Gateway {
        Self::start_with(yaml, &[])
    }

    /// Like [`Gateway::start`] with extra command-line arguments.
    pub fn start_with(yaml: &str, extra: &[&str]) -> Gateway {
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("config.yaml"),
            yaml.replace("{PORT}", &port.to_string()),
        )
        .expect("write config");
        let (admin, readiness, stats) = (free_port(), free_port(), free_port());
        let stderr = dir.path().join("stderr.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_meshgate"))
            .arg("run")
            .arg("--config")
            .arg(dir.path().join("config.yaml"))
            // One worker when the test asks (`--concurrency 1` in `extra`), else two.
            .args(
                ["--concurrency", "2"]
                    .into_iter()
                    .filter(|_| !extra.contains(&"--concurrency")),
            )
            .args(["--bind", "127.0.0.1", "--drain-timeout", "5s"])
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .args(["--readiness-addr", &format!("127.0.0.1:{readiness}")])
            .args(["--stats-addr", &format!("127.0.0.1:{stats}")])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("meshgate starts");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.starts_with("meshgate ready") {
                    let _ = tx.send(line);
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "meshgate exited ({status}) before ready:\n{}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "meshgate not ready in time");
        }
        Gateway {
            child: Some(child),
            port,
            admin,
            readiness,
            stats,
            dir,
            stderr,
        }
    }

    /// The config file the gateway watches.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// Replaces the config file (`{PORT}` becomes the gateway's listener port).
    pub fn rewrite_config(&self, yaml: &str) {
        // Write beside it and rename, as editors and ConfigMap updates do.
        let tmp = self.dir.path().join(".config.yaml.tmp");
        std::fs::write(&tmp, yaml.replace("{PORT}", &self.port.to_string())).expect("write config");
        std::fs::rename(&tmp, self.config_path()).expect("replace config");
    }

    /// A per-cluster value on `/stats/prometheus` (`envoy_cluster_NAME{cluster_name="..."}`);
    /// panics when the gateway does not export it.
    pub fn cluster_stat(&self, cluster: &str, name: &str) -> u64 {
        let text = String::from_utf8_lossy(
            &super::Client::http1(self.stats)
                .get("localhost", "/stats/prometheus")
                .body,
        )
        .into_owned();
        let prefix = format!("envoy_cluster_{name}{{cluster_name=\"{cluster}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} for {cluster}:\n{text}"))
    }

    /// What the gateway logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = &self.dir;
    }
}
