//! The file config source: watches the config paths (notify) and, when they change, loads,
//! validates and compiles them again and swaps the new snapshot in. An invalid update is
//! reported and dropped: the gateway keeps serving its last good snapshot.
//!
//! Runs on the control thread; workers only ever see a complete snapshot.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meshgate_config::{compile, load_paths, CompileOptions, LoadOptions};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::live::Shared;
use crate::upstream::dns;

/// Time to let a burst of file events settle before reloading.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// A new snapshot is serving.
    Applied,
    /// The config was invalid; the previous snapshot keeps serving.
    Rejected(Vec<String>),
}

/// Where config comes from and how to read it.
#[derive(Debug, Clone)]
pub struct FileSource {
    /// Files and directories.
    pub paths: Vec<PathBuf>,
    /// Loading options.
    pub load: LoadOptions,
    /// Compile options (this gateway's identity).
    pub compile: CompileOptions,
}

impl FileSource {
    /// Loads and compiles the files once more and installs the result when it is valid.
    pub async fn reload(&self, shared: &Shared) -> Reload {
        let loaded = match load_paths(&self.paths, &self.load) {
            Ok(l) => l,
            Err(e) => return Reload::Rejected(vec![e.to_string()]),
        };
        if loaded.has_errors() {
            let errors = loaded
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(ToString::to_string)
                .collect();
            return Reload::Rejected(errors);
        }
        let compiled = match compile(&loaded.set, &self.compile) {
            Ok(c) => c,
            Err(diags) => return Reload::Rejected(diags.iter().map(ToString::to_string).collect()),
        };
        let listeners = |s: &meshgate_config::Snapshot| {
            let mut v: Vec<(String, u16)> = s
                .listeners
                .iter()
                .map(|l| (l.address.clone(), l.port))
                .collect();
            v.sort();
            v
        };
        if listeners(&shared.live.load().snapshot) != listeners(&compiled.snapshot) {
            tracing::warn!("listener ports changed: routes and clusters are updated now, new or removed ports take effect after a restart");
        }
        shared.install(compiled.snapshot);
        dns::refresh_all(shared).await;
        Reload::Applied
    }
}

/// Whether a change to `path` can change the config: a YAML or JSON file, or a Kubernetes
/// ConfigMap's `..data` link swap. Other files in a watched directory (logs, caches) are not.
fn is_config_path(path: &std::path::Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let dotdot = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(".."));
    matches!(ext, "yaml" | "yml" | "json") || dotdot
}

/// Watches `source.paths` until the returned watcher is dropped, reloading on every change.
pub fn watch(
    source: FileSource,
    shared: Arc<Shared>,
    rt: &tokio::runtime::Handle,
) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if ev.is_ok_and(|e| !e.kind.is_access() && e.paths.iter().any(|p| is_config_path(p))) {
            let _ = tx.send(());
        }
    })?;
    for p in &source.paths {
        // Watch directories: editors and ConfigMap updates replace files rather than write them.
        let (dir, mode) = if p.is_dir() {
            (p.clone(), RecursiveMode::Recursive)
        } else {
            let parent = p
                .parent()
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."));
            let parent = if parent.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                parent
            };
            (parent, RecursiveMode::NonRecursive)
        };
        watcher.watch(&dir, mode)?;
    }
    rt.spawn(async move {
        while rx.recv().await.is_some() {
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            match source.reload(&shared).await {
                Reload::Applied => {
                    let generation = shared.live.load().generation;
                    tracing::info!(generation, "config reloaded");
                }
                Reload::Rejected(errors) => {
                    for e in &errors {
                        tracing::warn!("{e}");
                    }
                    tracing::warn!(
                        errors = errors.len(),
                        "config update rejected; keeping the last good config"
                    );
                }
            }
        }
    });
    Ok(watcher)
}
