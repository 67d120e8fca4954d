//! The compile cache: precompiled components on disk, keyed by content.
//!
//! Compiling a component with Cranelift takes from tens of milliseconds to
//! seconds; loading a precompiled one is a memory map. The key is the
//! BLAKE3 digest of the component bytes (which the engine computes once,
//! for sharing compiled code too) together with wasmtime's compatibility hash
//! of the engine settings, so a change of wasmtime version or engine
//! configuration never loads stale code. Entries are written to a temporary file and
//! renamed into place, so concurrent `bantam up`s never see half a file.
//!
//! The cache is bounded: a load marks its entry used (its modification
//! time), and once the entries pass [`SOFT_LIMIT`] after a write, the least
//! recently used go until they are under [`PRUNE_TO_PERCENT`] of it, as
//! wasmtime's own cache does with the same defaults. Every rebuild of a
//! component leaves an entry behind, so without this the directory only
//! grows.

use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use wasmtime::component::Component;

/// The total size of entries past which a write prunes the cache.
const SOFT_LIMIT: u64 = 5 << 30;
/// How far a prune goes, in percent of [`SOFT_LIMIT`].
const PRUNE_TO_PERCENT: u64 = 70;

/// A directory of precompiled components.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The precompiled component whose bytes have the BLAKE3 `digest`, if
    /// the cache holds a usable one for `engine`. A corrupt or foreign
    /// entry is not fatal: it is logged, and compiling again replaces it.
    pub fn load(&self, engine: &wasmtime::Engine, digest: &[u8; 32]) -> Option<Component> {
        let path = self.path(engine, digest);
        if !path.is_file() {
            return None;
        }
        let loaded = load(engine, &path)
            .inspect_err(|error| {
                tracing::warn!(
                    "ignoring unusable cache entry {}: {}",
                    path.display(),
                    crate::describe(error)
                )
            })
            .ok()?;
        // Marks the entry used, for pruning (its owner may set the time
        // through a read-only handle); a failure only makes it look older.
        let _ = std::fs::File::open(&path).and_then(|file| file.set_modified(SystemTime::now()));
        Some(loaded)
    }

    /// Keep `artifact` (from `Engine::precompile_component`), compiled
    /// for `engine` from bytes of the BLAKE3 `digest`, and load it back
    /// from the entry written, as [`CompileCache::load`] would: mapped
    /// from the file. `None` if it could not be written or loaded back;
    /// either is logged, not fatal.
    pub fn store(
        &self,
        engine: &wasmtime::Engine,
        digest: &[u8; 32],
        artifact: &[u8],
    ) -> Option<Component> {
        let path = self.path(engine, digest);
        let written = self.write(&path, artifact);
        if let Err(error) = prune(&self.dir, SOFT_LIMIT, SOFT_LIMIT / 100 * PRUNE_TO_PERCENT) {
            tracing::warn!("cannot prune compile cache {}: {error}", self.dir.display());
        }
        match written {
            Ok(()) => load(engine, &path)
                .inspect_err(|error| {
                    tracing::warn!(
                        "cannot load the compile cache entry just written {}: {}",
                        path.display(),
                        crate::describe(error)
                    )
                })
                .ok(),
            Err(error) => {
                tracing::warn!("cannot write compile cache {}: {error}", path.display());
                None
            }
        }
    }

    fn path(&self, engine: &wasmtime::Engine, digest: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.cwasm", cache_key(engine, digest)))
    }

    fn write(&self, path: &Path, artifact: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut temp = tempfile::NamedTempFile::new_in(&self.dir)?;
        std::io::Write::write_all(&mut temp, artifact)?;
        temp.persist(path).map(drop).map_err(|e| e.error)
    }
}

/// If the entries in `dir` (its `.cwasm` files; nothing else there is
/// touched) take more than `limit` bytes, remove the least recently used
/// until they take at most `target`. Entries another process removes
/// meanwhile are skipped.
fn prune(dir: &Path, limit: u64, target: u64) -> std::io::Result<()> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_none_or(|extension| extension != "cwasm") {
            continue;
        }
        let Ok(metadata) = entry.metadata() else { continue };
        if metadata.is_file() {
            let used = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            entries.push((used, metadata.len(), path));
        }
    }
    let mut total: u64 = entries.iter().map(|(_, size, _)| size).sum();
    if total <= limit {
        return Ok(());
    }
    entries.sort();
    for (_, size, path) in entries {
        if total <= target {
            break;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::debug!("compile cache: removed {}", path.display()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        total -= size;
    }
    Ok(())
}

/// Load a precompiled component written by [`CompileCache::store`].
#[expect(unsafe_code, reason = "deserializing precompiled code we wrote ourselves")]
fn load(engine: &wasmtime::Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: the file was produced by `Engine::precompile_component` and
    // written by this cache, under a name that includes the engine's
    // compatibility hash; wasmtime additionally checks the header and
    // version before using it. The cache directory belongs to the user
    // running Bantam.
    unsafe { Component::deserialize_file(engine, path) }
}

/// BLAKE3 over the engine's compatibility hash and the digest of the
/// component bytes (hashing the bytes again would cost a large component
/// its start-up time once more).
fn cache_key(engine: &wasmtime::Engine, digest: &[u8; 32]) -> String {
    struct Blake3Hasher(blake3::Hasher);
    impl Hasher for Blake3Hasher {
        fn finish(&self) -> u64 {
            unreachable!("only used to feed the digest")
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut hasher = Blake3Hasher(blake3::Hasher::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
    hasher.0.update(digest);
    hasher.0.finalize().to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// An entry of `size` bytes last used `age` seconds ago.
    fn entry(dir: &Path, name: &str, size: usize, age: u64) {
        let path = dir.join(name);
        std::fs::write(&path, vec![0u8; size]).unwrap();
        let used = SystemTime::now() - Duration::from_secs(age);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(used).unwrap();
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_cache_past_its_limit_loses_its_least_recently_used_entries() {
        let dir = tempfile::tempdir().unwrap();
        entry(dir.path(), "oldest.cwasm", 400, 300);
        entry(dir.path(), "old.cwasm", 400, 200);
        entry(dir.path(), "recent.cwasm", 400, 100);
        entry(dir.path(), "newest.cwasm", 400, 0);
        entry(dir.path(), "notes.txt", 4000, 1000);
        std::fs::create_dir(dir.path().join("registry")).unwrap();

        prune(dir.path(), 2000, 1400).unwrap();
        assert_eq!(names(dir.path()).len(), 6, "under the limit: nothing goes");

        prune(dir.path(), 1500, 900).unwrap();
        assert_eq!(
            names(dir.path()),
            ["newest.cwasm", "notes.txt", "recent.cwasm", "registry"],
            "down to the target, oldest first; other files stay"
        );
    }
}
