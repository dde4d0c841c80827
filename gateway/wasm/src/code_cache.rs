//! The on-disk cache of precompiled modules, so a restart loads plugins without compiling.
//!
//! An entry is the module's native code as `Module::serialize` writes it, named by the sha256
//! of the Wasm module it came from, in a folder named for the engine's compilation settings
//! (another wasmtime version or other settings use another folder). Next to it is the sha256
//! of the entry itself, written after the entry: it is what makes an entry complete, and it is
//! checked on every load so a truncated or corrupted file is recompiled, not run.
//!
//! Entries are loaded with `Module::deserialize_file`, which maps the file instead of copying
//! it: only the code a plugin runs becomes resident, which keeps a plugin's memory small.
//! Entries are never rewritten in place (a new one is renamed over the old), so a mapping
//! stays valid whatever another process does to the folder. The folder must be as trusted as
//! the gateway binary: native code from it runs in the gateway.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Module;

use crate::engine::hex;

/// The cache keeps at most this many bytes of entries; the least recently used go first.
const MAX_BYTES: u64 = 512 << 20;

/// Precompiled modules in one folder.
#[derive(Debug)]
pub(crate) struct CodeCache {
    dir: PathBuf,
    hits: AtomicUsize,
    misses: AtomicUsize,
}

impl CodeCache {
    /// The cache for `engine` under `root` (the folder is created when first written).
    pub(crate) fn new(root: &Path, engine: &wasmtime::Engine) -> CodeCache {
        let mut h = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        CodeCache {
            dir: root.join(format!("{:016x}", h.finish())),
            hits: AtomicUsize::new(0),
            misses: AtomicUsize::new(0),
        }
    }

    /// Hits and misses so far.
    pub(crate) fn stats(&self) -> (usize, usize) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    fn paths(&self, digest: &[u8; 32]) -> (PathBuf, PathBuf) {
        let name = hex(digest);
        (
            self.dir.join(format!("{name}.cwasm")),
            self.dir.join(format!("{name}.sha256")),
        )
    }

    /// The precompiled module for the Wasm module with sha256 `digest`, if a sound entry is
    /// cached (counted as a hit or a miss). A damaged entry is removed.
    pub(crate) fn load(&self, engine: &wasmtime::Engine, digest: &[u8; 32]) -> Option<Module> {
        let found = self.load_uncounted(engine, digest);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// [`CodeCache::load`] for the host's own modules, which the hit and miss counts (about
    /// plugins) leave out.
    pub(crate) fn load_uncounted(
        &self,
        engine: &wasmtime::Engine,
        digest: &[u8; 32],
    ) -> Option<Module> {
        let (code, sum) = self.paths(digest);
        let Ok(want) = fs::read(&sum) else {
            return None;
        };
        let sound = matches!(sha256_of(&code), Ok(got) if got[..] == want[..]);
        let module = sound
            .then(|| {
                // SAFETY: `deserialize_file` runs the file's code, so it must hold what
                // `Module::serialize` wrote for a compatible engine, unchanged while mapped.
                // The entry's sha256 was just checked against the one recorded when this cache
                // wrote it (so it is the complete file that serialize produced), the folder is
                // named for this engine's settings (and wasmtime checks them again), and
                // entries are only ever replaced by rename, never modified in place.
                #[allow(unsafe_code)]
                unsafe {
                    Module::deserialize_file(engine, &code)
                }
            })
            .and_then(|r| {
                r.map_err(|e| tracing::warn!(entry = %code.display(), error = %e, "unusable precompiled module"))
                    .ok()
            });
        match module {
            Some(m) => {
                // Recently used entries are the last to be evicted.
                let _ = fs::File::options()
                    .append(true)
                    .open(&sum)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                Some(m)
            }
            None => {
                let _ = fs::remove_file(&sum);
                let _ = fs::remove_file(&code);
                None
            }
        }
    }

    /// Stores `module`, compiled from the Wasm module with sha256 `digest`. Failures are
    /// logged: the cache is an optimisation.
    pub(crate) fn store(&self, digest: &[u8; 32], module: &Module) {
        if let Err(e) = self.try_store(digest, module) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "precompiled module not cached");
        }
        self.evict();
    }

    fn try_store(&self, digest: &[u8; 32], module: &Module) -> std::io::Result<()> {
        let bytes = module.serialize().map_err(std::io::Error::other)?;
        fs::create_dir_all(&self.dir)?;
        let (code, sum) = self.paths(digest);
        write_atomically(&code, &bytes)?;
        write_atomically(&sum, &Sha256::digest(&bytes))
    }

    /// Removes the least recently used entries while the folder holds more than `MAX_BYTES`.
    fn evict(&self) {
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = dir
            .filter_map(Result::ok)
            .filter_map(|e| {
                let path = e.path();
                (path.extension()? == "sha256").then_some(())?;
                let code = path.with_extension("cwasm");
                let used = e.metadata().ok()?.modified().ok()?;
                let size = fs::metadata(&code).map_or(0, |m| m.len());
                Some((used, size, path))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        entries.sort();
        for (_, size, sum) in entries {
            if total <= MAX_BYTES {
                break;
            }
            let _ = fs::remove_file(&sum);
            let _ = fs::remove_file(sum.with_extension("cwasm"));
            total = total.saturating_sub(size);
        }
    }
}

/// sha256 of a file, read in small pieces (so the file never becomes resident in this process).
fn sha256_of(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        match f.read(&mut buf)? {
            0 => return Ok(h.finalize().into()),
            n => h.update(&buf[..n]),
        }
    }
}

/// Writes `bytes` to a temporary file beside `path` and renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", fastrand::u64(..)));
    let result = fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
