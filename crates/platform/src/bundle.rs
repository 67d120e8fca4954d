//! The deploy bundle: what `bantam deploy` uploads.
//!
//! A gzipped tar holding `lock.json` (the app in Spin's locked format,
//! the same JSON an OCI artifact carries, its content referenced by
//! digest), `settings.json` (the deploy's variables, domains and limits), and
//! `blobs/<hex>` for each component and file, named by the SHA-256 of its
//! bytes. Using the registry's lock means a bundled app and a pulled app
//! become a served app the same way, through the same validation.

use std::io::Read;
use std::path::Path;

use bantam_registry::Cache;
use bantam_registry::locked::{self, LockedApp};

use crate::{DeploySettings, PlatformError};

const LOCK_ENTRY: &str = "lock.json";
const SETTINGS_ENTRY: &str = "settings.json";
const BLOB_PREFIX: &str = "blobs/";

/// Bundle `app` with `settings` for upload.
pub fn pack(app: &bantam_app::App, settings: &DeploySettings) -> Result<Vec<u8>, PlatformError> {
    let (lock, blobs) = locked::lock_app(app).map_err(PlatformError::Registry)?;
    let gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gzip);
    let mut append = |name: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, data)
    };
    let lock_json = serde_json::to_vec_pretty(&lock).expect("a lock serialises");
    let settings_json = serde_json::to_vec_pretty(settings).expect("settings serialise");
    append(LOCK_ENTRY, &lock_json).map_err(PlatformError::bundle)?;
    append(SETTINGS_ENTRY, &settings_json).map_err(PlatformError::bundle)?;
    let mut seen = std::collections::HashSet::new();
    for blob in &blobs {
        let digest = locked::digest(&blob.data);
        if seen.insert(digest.clone()) {
            let hex = digest.trim_start_matches("sha256:");
            append(&format!("{BLOB_PREFIX}{hex}"), &blob.data).map_err(PlatformError::bundle)?;
        }
    }
    tar.into_inner().and_then(|gzip| gzip.finish()).map_err(PlatformError::bundle)
}

/// The most a bundle may unpack to, its entries' headers and bytes
/// together. An upload is at most `admin::MAX_UPLOAD` compressed, and gzip
/// of zeros shrinks them a thousandfold: unbounded, one upload could hold
/// the host's memory and a core for minutes.
const MAX_UNPACKED: u64 = 2 << 30;

/// Unpack an uploaded bundle: blobs go into `blobs` (each checked against
/// its name), the lock and settings are returned. Anything else in the
/// archive, a blob whose bytes do not match its name, or a bundle that
/// unpacks to more than 2 GiB (`MAX_UNPACKED`), is refused.
pub fn unpack(bytes: &[u8], blobs: &Cache) -> Result<(LockedApp, DeploySettings), PlatformError> {
    unpack_within(bytes, blobs, MAX_UNPACKED)
}

fn unpack_within(
    bytes: &[u8],
    blobs: &Cache,
    limit: u64,
) -> Result<(LockedApp, DeploySettings), PlatformError> {
    let bad = |problem: String| PlatformError::BadBundle(problem);
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut lock = None;
    let mut settings = DeploySettings::default();
    let mut left = limit;
    let entries = archive.entries().map_err(|e| bad(format!("not a gzipped tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("not a gzipped tar, or cut short: {e}")))?;
        // Counted before anything is read or skipped: the size is the
        // header's word, and an entry reads no more than it says.
        let size = entry.size();
        left = left
            .checked_sub(size.saturating_add(512))
            .ok_or_else(|| bad(format!("it unpacks to more than {} MiB", limit >> 20)))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().map_err(|e| bad(e.to_string()))?.to_string_lossy().into_owned();
        let mut data = Vec::with_capacity(size as usize);
        entry.read_to_end(&mut data).map_err(|e| bad(format!("{name}: {e}")))?;
        if name == LOCK_ENTRY {
            lock =
                Some(serde_json::from_slice(&data).map_err(|e| bad(format!("{LOCK_ENTRY}: {e}")))?);
        } else if name == SETTINGS_ENTRY {
            settings =
                serde_json::from_slice(&data).map_err(|e| bad(format!("{SETTINGS_ENTRY}: {e}")))?;
        } else if let Some(hex) = name.strip_prefix(BLOB_PREFIX) {
            let digest = locked::digest(&data);
            if digest.strip_prefix("sha256:") != Some(hex) {
                return Err(bad(format!("{name}: its bytes hash to {digest}")));
            }
            write_blob(&blobs.blob_path(&digest), &data)?;
        } else {
            return Err(bad(format!("unexpected entry `{name}`")));
        }
    }
    let lock = lock.ok_or_else(|| bad(format!("no {LOCK_ENTRY}")))?;
    Ok((lock, settings))
}

/// Write beside, then rename: a blob is never seen half-written under its
/// digest, and one already present is left alone.
fn write_blob(path: &Path, data: &[u8]) -> Result<(), PlatformError> {
    if path.is_file() {
        return Ok(());
    }
    let io = |error| PlatformError::Io { path: path.to_path_buf(), error };
    let dir = path.parent().expect("blobs live in a folder");
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    std::io::Write::write_all(&mut temp, data).map_err(io)?;
    temp.persist(path).map(drop).map_err(|e| io(e.error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (name, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, name, *data).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn a_packed_app_unpacks_to_its_lock_settings_and_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = dir.path().join("handler.wasm");
        let bytes = b"\0asm\x0d\0\x01\0 and enough bytes not to be inlined in the lock, which takes at most 128 of them: padding padding padding padding";
        std::fs::write(&wasm, bytes).unwrap();
        let app = bantam_app::from_wasm_file(&wasm).unwrap();
        let settings = DeploySettings {
            variables: [("key".to_string(), "value".to_string())].into(),
            domains: Some(vec!["example.com".into()]),
            limits: bantam_capabilities::runtime_config::Limits {
                request_timeout: Some(std::time::Duration::from_secs(5)),
                max_memory: Some(64 << 20),
                ..Default::default()
            },
            reset_limits: vec![crate::ResetLimit::One(
                bantam_capabilities::runtime_config::LimitName::MaxOutboundConnections,
            )],
        };
        let bundle = pack(&app, &settings).unwrap();
        let cache = Cache::new(dir.path().join("cache"));
        let (lock, unpacked) = unpack(&bundle, &cache).unwrap();
        assert_eq!(lock.components.len(), 1);
        assert_eq!(unpacked.variables, settings.variables);
        assert_eq!(unpacked.domains, settings.domains);
        assert_eq!(unpacked.limits, settings.limits);
        assert_eq!(unpacked.reset_limits, settings.reset_limits);
        let digest = lock.components[0].source.content.digest.clone().unwrap();
        assert_eq!(std::fs::read(cache.blob_path(&digest)).unwrap(), bytes);
    }

    #[test]
    fn a_bundle_unpacking_past_its_limit_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("cache"));
        // A gzip bomb: 2 MiB of zeros, a few KiB on the wire.
        let zeros = vec![0; 2 << 20];
        let name = format!("{BLOB_PREFIX}{}", locked::digest(&zeros).trim_start_matches("sha256:"));
        let bomb = tar_gz(&[(&name, &zeros)]);
        assert!(bomb.len() < 16 << 10);
        let error = unpack_within(&bomb, &cache, 1 << 20).unwrap_err().to_string();
        assert!(error.contains("it unpacks to more than 1 MiB"), "{error}");
        assert!(!cache.blob_path(&locked::digest(&zeros)).exists());
        // A header claiming a terabyte, which must not be taken at its
        // word for an allocation (that would abort the process).
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        let mut header = tar::Header::new_gnu();
        header.set_size(1 << 40);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, LOCK_ENTRY, &b"{}"[..]).unwrap();
        let liar = tar.into_inner().unwrap().finish().unwrap();
        let error = unpack(&liar, &cache).unwrap_err().to_string();
        assert!(error.contains("it unpacks to more than 2048 MiB"), "{error}");
    }

    #[test]
    fn blobs_must_match_their_names_and_strangers_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("cache"));
        let wrong = format!("{BLOB_PREFIX}{}", "0".repeat(64));
        let error = unpack(&tar_gz(&[(&wrong, b"bytes")]), &cache).unwrap_err().to_string();
        assert!(error.contains("its bytes hash to sha256:"), "{error}");
        assert!(!cache.blob_path(&format!("sha256:{}", "0".repeat(64))).exists());
        let error = unpack(&tar_gz(&[("notes.txt", b"x")]), &cache).unwrap_err().to_string();
        assert!(error.contains("unexpected entry `notes.txt`"), "{error}");
        let error = unpack(&tar_gz(&[]), &cache).unwrap_err().to_string();
        assert!(error.contains("no lock.json"), "{error}");
    }
}
