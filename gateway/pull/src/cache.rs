//! The on-disk module cache, content-addressed: `DIR/sha256/HEX` holds the module whose sha256
//! is `HEX`, and `DIR/index.json` maps references (`registry/repo:tag`, pinned URLs) to the
//! module they last resolved to, so `IfNotPresent` works offline after a restart.
//!
//! Every write goes to a temporary file in the same directory and is renamed into place, so a
//! crash never leaves a partial module under its digest; every read is verified against the
//! digest (a bad entry is deleted and reported as a miss). The cache is bounded: past
//! `max_bytes`, least-recently-used modules are evicted, never one a loaded plugin holds a
//! [`Lease`] on. One process owns a cache directory.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::PullError;
use crate::{hex, parse_sha256, sha256};

/// Default bound on the cache's size.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// What a reference resolved to when it was last pulled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    /// The module's sha256 (hex).
    pub module: String,
    /// The image manifest's digest (`sha256:…`), for OCI images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
    /// The image layout (`Layout::as_str`), for OCI images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
    /// When it was pulled, seconds since the Unix epoch.
    pub pulled_at: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct IndexFile {
    #[serde(default)]
    entries: BTreeMap<String, IndexEntry>,
}

#[derive(Debug)]
struct Entry {
    size: u64,
    /// Larger is more recent.
    last_used: u64,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<[u8; 32], Entry>,
    index: BTreeMap<String, IndexEntry>,
    in_use: HashMap<[u8; 32], usize>,
    total: u64,
    clock: u64,
}

/// Counters for `/stats/prometheus`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from disk.
    pub hits: u64,
    /// Lookups that had to go to the network.
    pub misses: u64,
    /// Entries found corrupt and deleted.
    pub corrupt: u64,
    /// Entries evicted for space.
    pub evictions: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Modules held.
    pub entries: u64,
}

/// The module cache.
#[derive(Debug)]
pub struct ModuleCache {
    dir: PathBuf,
    max_bytes: u64,
    inner: Mutex<Inner>,
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    hits: AtomicU64,
    misses: AtomicU64,
    corrupt: AtomicU64,
    evictions: AtomicU64,
}

/// Keeps a module from being evicted while a plugin runs it.
#[derive(Debug)]
pub struct Lease {
    cache: Arc<ModuleCache>,
    digest: [u8; 32],
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut inner = self.cache.lock();
        if let Some(n) = inner.in_use.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                inner.in_use.remove(&self.digest);
            }
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ModuleCache {
    /// Opens (creating) the cache in `dir`, bounded to `max_bytes`. Leftover temporary files
    /// are removed; modules already there are counted, ordered by modification time.
    pub fn open(dir: impl Into<PathBuf>, max_bytes: u64) -> Result<ModuleCache, PullError> {
        let dir = dir.into();
        let blobs = dir.join("sha256");
        std::fs::create_dir_all(&blobs).map_err(|source| PullError::Cache {
            path: blobs.clone(),
            source,
        })?;
        let mut found: Vec<([u8; 32], u64, SystemTime)> = Vec::new();
        let listing = std::fs::read_dir(&blobs).map_err(|source| PullError::Cache {
            path: blobs.clone(),
            source,
        })?;
        for e in listing.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let Ok(meta) = e.metadata() else { continue };
            match parse_sha256(&name) {
                Some(d) if meta.is_file() => {
                    found.push((d, meta.len(), meta.modified().unwrap_or(UNIX_EPOCH)));
                }
                _ if name.starts_with(".tmp-") => {
                    let _ = std::fs::remove_file(e.path());
                }
                _ => {}
            }
        }
        found.sort_by_key(|(_, _, t)| *t);
        let mut inner = Inner::default();
        for (d, size, _) in found {
            inner.clock += 1;
            inner.total += size;
            inner.entries.insert(
                d,
                Entry {
                    size,
                    last_used: inner.clock,
                },
            );
        }
        if let Ok(bytes) = std::fs::read(dir.join("index.json")) {
            match serde_json::from_slice::<IndexFile>(&bytes) {
                Ok(f) => inner.index = f.entries,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "wasm module cache index unreadable; starting a new one")
                }
            }
        }
        Ok(ModuleCache {
            dir,
            max_bytes,
            inner: Mutex::new(inner),
            flights: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the module with `digest` is kept.
    pub fn path_of(&self, digest: &[u8; 32]) -> PathBuf {
        self.dir.join("sha256").join(hex(digest))
    }

    /// The module with `digest`, read and verified; a corrupt entry is deleted (`None`).
    pub fn get(&self, digest: &[u8; 32]) -> Option<Vec<u8>> {
        if !self.lock().entries.contains_key(digest) {
            return None;
        }
        let path = self.path_of(digest);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "wasm module cache entry unreadable; dropping it");
                self.forget(digest);
                return None;
            }
        };
        if sha256(&bytes) != *digest {
            tracing::warn!(path = %path.display(), "wasm module cache entry does not match its digest; deleting it");
            self.corrupt.fetch_add(1, Ordering::Relaxed);
            let _ = std::fs::remove_file(&path);
            self.forget(digest);
            return None;
        }
        let mut inner = self.lock();
        inner.clock += 1;
        let clock = inner.clock;
        if let Some(e) = inner.entries.get_mut(digest) {
            e.last_used = clock;
        }
        drop(inner);
        // The modification time carries the recency across restarts.
        if let Ok(f) = std::fs::File::options().append(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        Some(bytes)
    }

    fn forget(&self, digest: &[u8; 32]) {
        let mut inner = self.lock();
        if let Some(e) = inner.entries.remove(digest) {
            inner.total -= e.size;
        }
    }

    /// Stores a module under its sha256 (written to a temporary file, then renamed) and evicts
    /// what no longer fits. Returns the digest.
    pub fn put(&self, bytes: &[u8]) -> Result<[u8; 32], PullError> {
        let digest = sha256(bytes);
        if self.lock().entries.contains_key(&digest) && self.path_of(&digest).is_file() {
            return Ok(digest);
        }
        let final_path = self.path_of(&digest);
        let tmp = self.dir.join("sha256").join(format!(
            ".tmp-{}-{}-{}",
            hex(&digest[..8]),
            std::process::id(),
            fastrand::u64(..)
        ));
        let io = |source| PullError::Cache {
            path: tmp.clone(),
            source,
        };
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        if let Err(source) = std::fs::rename(&tmp, &final_path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(PullError::Cache {
                path: final_path,
                source,
            });
        }
        let mut inner = self.lock();
        inner.clock += 1;
        let clock = inner.clock;
        if let Some(old) = inner.entries.insert(
            digest,
            Entry {
                size: bytes.len() as u64,
                last_used: clock,
            },
        ) {
            inner.total -= old.size;
        }
        inner.total += bytes.len() as u64;
        self.evict(&mut inner, &digest);
        Ok(digest)
    }

    /// Evicts least-recently-used modules until the cache fits, sparing leased ones and `keep`.
    fn evict(&self, inner: &mut Inner, keep: &[u8; 32]) {
        let mut removed = Vec::new();
        while inner.total > self.max_bytes {
            let victim = inner
                .entries
                .iter()
                .filter(|(d, _)| *d != keep && !inner.in_use.contains_key(*d))
                .min_by_key(|(_, e)| e.last_used)
                .map(|(d, _)| *d);
            let Some(victim) = victim else { break };
            if let Some(e) = inner.entries.remove(&victim) {
                inner.total -= e.size;
            }
            let _ = std::fs::remove_file(self.path_of(&victim));
            self.evictions.fetch_add(1, Ordering::Relaxed);
            removed.push(hex(&victim));
        }
        if !removed.is_empty() {
            inner.index.retain(|_, e| !removed.contains(&e.module));
            self.save_index(inner);
        }
    }

    /// What `key` resolved to last, if its module is still cached.
    pub fn lookup(&self, key: &str) -> Option<IndexEntry> {
        let inner = self.lock();
        let e = inner.index.get(key)?;
        let d = parse_sha256(&e.module)?;
        inner.entries.contains_key(&d).then(|| e.clone())
    }

    /// Records what `key` resolved to (persisted atomically).
    pub fn record(&self, key: &str, entry: IndexEntry) {
        let mut inner = self.lock();
        inner.index.insert(key.to_owned(), entry);
        self.save_index(&inner);
    }

    fn save_index(&self, inner: &Inner) {
        let file = IndexFile {
            entries: inner.index.clone(),
        };
        let Ok(json) = serde_json::to_vec_pretty(&file) else {
            return;
        };
        let tmp = self
            .dir
            .join(format!(".index.json.tmp-{}", std::process::id()));
        let res = std::fs::write(&tmp, &json)
            .and_then(|()| std::fs::rename(&tmp, self.dir.join("index.json")));
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(dir = %self.dir.display(), error = %e, "wasm module cache index not saved");
        }
    }

    /// Protects the module with `digest` from eviction until the lease is dropped.
    pub fn lease(self: &Arc<Self>, digest: [u8; 32]) -> Lease {
        *self.lock().in_use.entry(digest).or_insert(0) += 1;
        Lease {
            cache: self.clone(),
            digest,
        }
    }

    /// The lock that makes fetches of `key` one at a time (the second waiter then finds the
    /// first one's result in the cache).
    pub fn flight(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut f = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        f.retain(|_, m| Arc::strong_count(m) > 1);
        f.entry(key.to_owned()).or_default().clone()
    }

    /// Counts a lookup answered from the cache (`true`) or not.
    pub fn count_lookup(&self, hit: bool) {
        if hit {
            self.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            corrupt: self.corrupt.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            bytes: inner.total,
            entries: inner.entries.len() as u64,
        }
    }
}

/// Seconds since the Unix epoch, for [`IndexEntry::pulled_at`].
pub fn timestamp() -> u64 {
    now_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(n: u8, len: usize) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.resize(len, n);
        m
    }

    #[test]
    fn stores_atomically_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("sha256")).expect("mkdir");
        std::fs::write(dir.path().join("sha256").join(".tmp-dead-1-2"), b"partial").expect("write");
        let c = ModuleCache::open(dir.path(), 1 << 20).expect("open");
        assert!(
            !dir.path().join("sha256").join(".tmp-dead-1-2").exists(),
            "leftover temp files go"
        );
        let m = module(1, 100);
        let d = c.put(&m).expect("put");
        assert_eq!(d, sha256(&m));
        c.record(
            "r/p:v1",
            IndexEntry {
                module: hex(&d),
                manifest: None,
                layout: None,
                pulled_at: 1,
            },
        );
        let names: Vec<String> = std::fs::read_dir(dir.path().join("sha256"))
            .expect("list")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![hex(&d)], "no temporary file is left behind");
        drop(c);
        let c = ModuleCache::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(c.lookup("r/p:v1").map(|e| e.module), Some(hex(&d)));
        assert_eq!(c.get(&d), Some(m));
        assert_eq!(c.stats().entries, 1);
    }

    #[test]
    fn a_corrupt_entry_is_deleted_on_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = ModuleCache::open(dir.path(), 1 << 20).expect("open");
        let d = c.put(&module(2, 64)).expect("put");
        c.record(
            "k",
            IndexEntry {
                module: hex(&d),
                manifest: None,
                layout: None,
                pulled_at: 1,
            },
        );
        std::fs::write(c.path_of(&d), b"\0asm\x01\0\0\0tampered").expect("tamper");
        assert_eq!(c.get(&d), None);
        assert!(!c.path_of(&d).exists());
        assert_eq!(
            c.lookup("k"),
            None,
            "the index no longer answers for a missing module"
        );
        assert_eq!(c.stats().corrupt, 1);
        assert_eq!(c.stats().bytes, 0);
    }

    #[test]
    fn evicts_least_recently_used_but_never_leased() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Arc::new(ModuleCache::open(dir.path(), 250).expect("open"));
        let a = c.put(&module(1, 100)).expect("a");
        let b = c.put(&module(2, 100)).expect("b");
        let _lease = c.lease(a);
        assert!(c.get(&b).is_some()); // b is now more recent than a, but a is leased
        let x = c.put(&module(3, 100)).expect("x");
        // 300 > 250: the LRU unleased entry (b) goes; a is leased, x was just added.
        assert!(c.path_of(&a).exists());
        assert!(!c.path_of(&b).exists());
        assert!(c.path_of(&x).exists());
        assert_eq!(c.stats().evictions, 1);
        drop(_lease);
        let y = c.put(&module(4, 100)).expect("y");
        assert!(
            !c.path_of(&a).exists(),
            "once released, a is the least recently used"
        );
        assert!(c.path_of(&y).exists() && c.path_of(&x).exists());
        assert!(c.stats().bytes <= 250);
    }
}
