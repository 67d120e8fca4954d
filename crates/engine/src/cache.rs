//! The compile cache: precompiled components on disk, keyed by content.
//!
//! Compiling a component with Cranelift takes from tens of milliseconds to
//! seconds; loading a precompiled one is a memory map. The key is the
//! SHA-256 of the component bytes (which the engine computes once, for
//! sharing compiled code too) together with wasmtime's compatibility hash
//! of the engine settings, so a change of wasmtime version or engine
//! configuration never loads stale code. Entries are written to a temporary file and
//! renamed into place, so concurrent `bantam up`s never see half a file.

use std::hash::Hasher;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

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

    /// The component for `bytes`, whose SHA-256 is `digest`: from the
    /// cache when present and usable, otherwise compiled and stored.
    /// Returns whether it came from the cache.
    pub fn load_or_compile(
        &self,
        engine: &wasmtime::Engine,
        digest: &[u8; 32],
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, bool)> {
        let path = self.dir.join(format!("{}.cwasm", cache_key(engine, digest)));
        if path.is_file() {
            match load(engine, &path) {
                Ok(component) => return Ok((component, true)),
                // A corrupt or foreign entry is not fatal: recompile over it.
                Err(error) => tracing::warn!(
                    "ignoring unusable cache entry {}: {}",
                    path.display(),
                    crate::describe(&error)
                ),
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(error) = self.store(&path, &component) {
            tracing::warn!("cannot write compile cache {}: {error}", path.display());
        }
        Ok((component, false))
    }

    fn store(&self, path: &Path, component: &Component) -> std::io::Result<()> {
        let serialized =
            component.serialize().map_err(|e| std::io::Error::other(crate::describe(&e)))?;
        std::fs::create_dir_all(&self.dir)?;
        let mut temp = tempfile::NamedTempFile::new_in(&self.dir)?;
        std::io::Write::write_all(&mut temp, &serialized)?;
        temp.persist(path).map(drop).map_err(|e| e.error)
    }
}

/// Load a precompiled component written by [`CompileCache::store`].
#[expect(unsafe_code, reason = "deserializing precompiled code we wrote ourselves")]
fn load(engine: &wasmtime::Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: the file was produced by `Component::serialize` from this
    // cache, under a name that includes the engine's compatibility hash;
    // wasmtime additionally checks the header and version before using it.
    // The cache directory belongs to the user running Bantam.
    unsafe { Component::deserialize_file(engine, path) }
}

/// SHA-256 over the engine's compatibility hash and the digest of the
/// component bytes (hashing the bytes again would cost a large component,
/// a 20 MiB Python app say, tens of milliseconds at every start).
fn cache_key(engine: &wasmtime::Engine, digest: &[u8; 32]) -> String {
    struct ShaHasher(Sha256);
    impl Hasher for ShaHasher {
        fn finish(&self) -> u64 {
            unreachable!("only used to feed the digest")
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut hasher = ShaHasher(Sha256::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
    hasher.0.update(digest);
    hex::encode(hasher.0.finalize())
}
