//! The compile cache: precompiled components on disk, keyed by content.
//!
//! Compiling a component with Cranelift takes from tens of milliseconds to
//! seconds; loading a precompiled one is a memory map. The key is the
//! BLAKE3 digest of the component bytes (which the engine computes once,
//! for sharing compiled code too) together with wasmtime's compatibility hash
//! of the engine settings, so a change of wasmtime version or engine
//! configuration never loads stale code. Entries are written to a temporary file and
//! renamed into place, so concurrent `bantam up`s never see half a file.

use std::hash::Hasher;
use std::path::{Path, PathBuf};

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

    /// The precompiled component whose bytes have the BLAKE3 `digest`, if
    /// the cache holds a usable one for `engine`. A corrupt or foreign
    /// entry is not fatal: it is logged, and compiling again replaces it.
    pub fn load(&self, engine: &wasmtime::Engine, digest: &[u8; 32]) -> Option<Component> {
        let path = self.path(engine, digest);
        if !path.is_file() {
            return None;
        }
        load(engine, &path)
            .inspect_err(|error| {
                tracing::warn!(
                    "ignoring unusable cache entry {}: {}",
                    path.display(),
                    crate::describe(error)
                )
            })
            .ok()
    }

    /// Keep `component`, compiled for `engine` from bytes of the BLAKE3
    /// `digest`; a failure to write is logged, not fatal.
    pub fn store(&self, engine: &wasmtime::Engine, digest: &[u8; 32], component: &Component) {
        let path = self.path(engine, digest);
        if let Err(error) = self.write(&path, component) {
            tracing::warn!("cannot write compile cache {}: {error}", path.display());
        }
    }

    fn path(&self, engine: &wasmtime::Engine, digest: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.cwasm", cache_key(engine, digest)))
    }

    fn write(&self, path: &Path, component: &Component) -> std::io::Result<()> {
        let serialized =
            component.serialize().map_err(|e| std::io::Error::other(crate::describe(&e)))?;
        std::fs::create_dir_all(&self.dir)?;
        let mut temp = tempfile::NamedTempFile::new_in(&self.dir)?;
        std::io::Write::write_all(&mut temp, &serialized)?;
        temp.persist(path).map(drop).map_err(|e| e.error)
    }
}

/// Load a precompiled component written by [`CompileCache::write`].
#[expect(unsafe_code, reason = "deserializing precompiled code we wrote ourselves")]
fn load(engine: &wasmtime::Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: the file was produced by `Component::serialize` from this
    // cache, under a name that includes the engine's compatibility hash;
    // wasmtime additionally checks the header and version before using it.
    // The cache directory belongs to the user running Bantam.
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
