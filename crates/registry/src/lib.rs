//! Apps as OCI artifacts: `bantam registry push|pull|login` and
//! `bantam up --from <reference>`.
//!
//! The artifact layout is Spin's, so Spin runs what Bantam pushes and
//! Bantam runs what Spin pushes: one `application/vnd.wasm.content.layer.
//! v1+wasm` layer per component, one `...+data` layer per file (files of
//! 128 bytes or less are inlined in the lock instead), and the locked app
//! JSON as an `application/vnd.fermyon.spin.application.v1+config` layer,
//! named by the `com.fermyon.spin.lockedAppDigest` label of an OCI image
//! config (`architecture: wasm`, `os: wasip1`). Layers are pushed once per
//! digest; pulled blobs are cached by digest and not fetched again.

pub mod locked;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use oci_client::client::{ClientConfig, ClientProtocol, Config};
use oci_client::config::{Architecture, ConfigFile, Os};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::{Client, Reference, RegistryOperation};

pub use locked::LockedApp;

/// Media type of a component's Wasm layer.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// Media type wkg gives Wasm layers, accepted on pull.
pub const WASM_LAYER_MEDIA_TYPE_WKG: &str = "application/wasm";
/// Media type of a file layer.
pub const DATA_LAYER_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+data";
/// Media type of the locked-app layer.
pub const LOCKED_APP_MEDIA_TYPE: &str = "application/vnd.fermyon.spin.application.v1+config";
/// Media type of Spin's archive layers (a tar.gz of a files directory).
pub const ARCHIVE_LAYER_MEDIA_TYPE: &str = "application/vnd.wasm.content.bundle.v1.tar+gzip";
/// The image-config label naming the locked-app layer.
pub const LOCKED_APP_DIGEST_LABEL: &str = "com.fermyon.spin.lockedAppDigest";

/// The most an artifact's config or lock may be: both are read into memory,
/// and a Spin app's are a few KiB (files up to 128 bytes are inlined).
const MAX_METADATA_BYTES: i64 = 16 << 20;

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The reference does not parse.
    #[error("`{0}` is not a registry reference (expected e.g. `ghcr.io/me/app:v1`): {1}")]
    Reference(String, String),
    /// The registry refused or failed a request.
    #[error("{action} {reference}: {message}")]
    Registry {
        /// What was being done.
        action: &'static str,
        /// The reference.
        reference: String,
        /// What the registry or the connection said.
        message: String,
    },
    /// The artifact is not a Spin app, or uses what Bantam cannot run.
    #[error("the artifact is not a Spin application Bantam can run: {0}")]
    NotAnApp(String),
    /// The artifact needs a feature Bantam does not have.
    #[error("the artifact needs {0}, which Bantam does not support")]
    Unsupported(String),
    /// A blob the lock names was not in the artifact.
    #[error("the artifact names content {0} that it does not carry")]
    MissingContent(String),
    /// A local file could not be read.
    #[error("cannot read {}: {error}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A local file could not be written.
    #[error("cannot write {}: {error}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// Plain HTTP instead of HTTPS (`-k/--insecure`), for local registries.
    pub insecure: bool,
}

/// Reports progress of layer transfers (a progress bar in the CLI).
pub type Progress<'a> = &'a (dyn Fn(TransferEvent) + Sync);

/// One step of a push or pull, for progress display.
#[derive(Debug, Clone)]
pub enum TransferEvent {
    /// The transfer of `count` layers of `bytes` in all starts.
    Start {
        /// How many layers will move.
        count: usize,
        /// Their total size.
        bytes: u64,
    },
    /// One layer of `bytes` moved (or was already there, `cached`).
    Layer {
        /// Its size.
        bytes: u64,
        /// Whether nothing had to move.
        cached: bool,
    },
}

/// The local store of pulled artifacts: blobs by digest, and the manifest
/// and lock of each pulled reference.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// A cache at `root`.
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// The user's cache (`~/.cache/bantam/registry`), if there is a home.
    pub fn user_default() -> Option<Self> {
        dirs::cache_dir().map(|dir| Self::new(dir.join("bantam").join("registry")))
    }

    /// The file holding the blob with `digest` (`sha256:<hex>`).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        // Only a well-formed digest names a file: a hostile manifest must
        // not pick the path.
        let safe: String =
            digest.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        self.root.join("blobs").join(safe)
    }

    fn reference_dir(&self, reference: &Reference) -> PathBuf {
        let segment = |s: &str| -> String {
            s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '_' }).collect()
        };
        let tag = reference.tag().or(reference.digest()).unwrap_or("latest");
        self.root
            .join("manifests")
            .join(segment(reference.resolve_registry()))
            .join(segment(reference.repository()))
            .join(segment(tag))
    }
}

/// Parse an OCI reference (`registry/repo[:tag][@digest]`).
pub fn parse_reference(text: &str) -> Result<Reference, RegistryError> {
    text.parse::<Reference>().map_err(|e| RegistryError::Reference(text.to_owned(), e.to_string()))
}

/// Whether `text` looks like a registry reference rather than a path: a
/// registry host (with a dot or port, or `localhost`) then a repository.
pub fn looks_like_reference(text: &str) -> bool {
    let Some((host, rest)) = text.split_once('/') else { return false };
    !rest.is_empty()
        && (host.contains('.') || host.contains(':') || host == "localhost")
        && !Path::new(text).exists()
        && parse_reference(text).is_ok()
}

fn client(options: &ClientOptions) -> Client {
    Client::new(ClientConfig {
        protocol: if options.insecure { ClientProtocol::Http } else { ClientProtocol::Https },
        ..ClientConfig::default()
    })
}

/// A writer for a config or lock blob, refused up front if its descriptor
/// declares more than [`MAX_METADATA_BYTES`].
fn metadata<'a>(
    descriptor: &OciDescriptor,
    what: &str,
    into: &'a mut Vec<u8>,
) -> Result<Declared<&'a mut Vec<u8>>, RegistryError> {
    if descriptor.size > MAX_METADATA_BYTES {
        return Err(RegistryError::NotAnApp(format!(
            "its {what} is {} bytes, more than the {} MiB a Spin app's can be",
            descriptor.size,
            MAX_METADATA_BYTES >> 20
        )));
    }
    Ok(Declared::new(into, descriptor))
}

/// A blob's destination that takes no more than the blob's descriptor
/// declares. oci-client checks the digest only once the whole body has
/// arrived, so without this a registry could send any amount, into
/// memory or onto the disk, before the pull failed.
struct Declared<W> {
    inner: W,
    left: u64,
    declared: u64,
}

impl<W> Declared<W> {
    fn new(inner: W, descriptor: &OciDescriptor) -> Self {
        let declared = descriptor.size.max(0) as u64;
        Self { inner, left: declared, declared }
    }
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Declared<W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if buf.len() as u64 > self.left {
            let declared = self.declared;
            return std::task::Poll::Ready(Err(std::io::Error::other(format!(
                "the registry sent more than the {declared} bytes the manifest declares"
            ))));
        }
        let written = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &written {
            self.left -= *n as u64;
        }
        written
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn registry_error(
    action: &'static str,
    reference: &Reference,
) -> impl Fn(oci_client::errors::OciDistributionError) -> RegistryError {
    let reference = reference.whole();
    move |e| {
        let mut message = error_chain(&e);
        if message.contains("manifest unknown") {
            message.push_str(" (there is no such repository or tag)");
        } else if message.contains("UNAUTHORIZED") || message.contains("code: 401") {
            let registry = reference.split('/').next().unwrap_or_default();
            message = format!(
                "the registry wants credentials: run `bantam registry login {registry}` ({message})"
            );
        } else if message.contains("InvalidContentType") || message.contains("corrupt message") {
            message.push_str(" (does the registry speak plain HTTP? pass -k/--insecure)");
        }
        RegistryError::Registry { action, reference: reference.clone(), message }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Push `app` to `reference`; the manifest digest.
pub async fn push(
    app: &bantam_app::App,
    reference: &str,
    options: &ClientOptions,
    annotations: BTreeMap<String, String>,
    progress: Progress<'_>,
) -> Result<String, RegistryError> {
    let reference = parse_reference(reference)?;
    let (lock, blobs) = locked::lock_app(app)?;
    let lock_json = serde_json::to_vec(&lock).expect("a lock serialises");
    let lock_digest = locked::digest(&lock_json);

    let mut layers: Vec<(&str, &[u8], String)> = Vec::new();
    let mut seen = HashSet::new();
    for blob in &blobs {
        let digest = locked::digest(&blob.data);
        if seen.insert(digest.clone()) {
            layers.push((blob.media_type, &blob.data, digest));
        }
    }
    layers.push((LOCKED_APP_MEDIA_TYPE, &lock_json, lock_digest.clone()));

    let config_file = ConfigFile {
        architecture: Architecture::Wasm,
        os: Os::Wasip1,
        config: Some(oci_client::config::Config {
            labels: Some(HashMap::from([(LOCKED_APP_DIGEST_LABEL.to_string(), lock_digest)])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let config = Config::oci_v1_from_config_file(config_file, None)
        .map_err(registry_error("preparing", &reference))?;

    let mut manifest = OciImageManifest {
        media_type: Some(oci_client::manifest::OCI_IMAGE_MEDIA_TYPE.to_string()),
        config: OciDescriptor {
            media_type: config.media_type.clone(),
            digest: config.sha256_digest(),
            size: config.data.len() as i64,
            ..Default::default()
        },
        annotations: Some(inferred_annotations(app, annotations)),
        ..Default::default()
    };
    for (media_type, data, digest) in &layers {
        manifest.layers.push(OciDescriptor {
            media_type: (*media_type).to_string(),
            digest: digest.clone(),
            size: data.len() as i64,
            ..Default::default()
        });
    }

    let client = client(options);
    let auth = credentials::for_registry(reference.resolve_registry());
    client
        .auth(&reference, &auth, RegistryOperation::Push)
        .await
        .map_err(registry_error("authenticating to push", &reference))?;
    let total = layers.iter().map(|(_, data, _)| data.len() as u64).sum();
    progress(TransferEvent::Start { count: layers.len() + 1, bytes: total });
    for (_, data, digest) in &layers {
        client
            .push_blob(&reference, data, digest)
            .await
            .map_err(registry_error("pushing a layer of", &reference))?;
        progress(TransferEvent::Layer { bytes: data.len() as u64, cached: false });
    }
    client
        .push_blob(&reference, &config.data, &manifest.config.digest)
        .await
        .map_err(registry_error("pushing the config of", &reference))?;
    progress(TransferEvent::Layer { bytes: config.data.len() as u64, cached: false });

    let body = serde_json::to_vec(&manifest).expect("a manifest serialises");
    let digest = locked::digest(&body);
    client
        .push_manifest_raw(
            &reference,
            body,
            oci_client::manifest::OCI_IMAGE_MEDIA_TYPE.parse().expect("a valid header value"),
        )
        .await
        .map_err(registry_error("pushing the manifest of", &reference))?;
    Ok(digest)
}

/// The OCI annotations Spin infers (title, version, description,
/// authors, created), under those given explicitly.
fn inferred_annotations(
    app: &bantam_app::App,
    mut explicit: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut infer = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            explicit.entry(key.to_string()).or_insert(value);
        }
    };
    infer("org.opencontainers.image.title", Some(app.name.clone()));
    infer("org.opencontainers.image.version", app.version.clone());
    infer("org.opencontainers.image.description", app.description.clone());
    infer(
        "org.opencontainers.image.authors",
        (!app.authors.is_empty()).then(|| app.authors.join(", ")),
    );
    infer("org.opencontainers.image.created", Some(rfc3339_now()));
    explicit
}

fn rfc3339_now() -> String {
    // oci-client already brings chrono.
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A pulled app: its lock, the manifest digest, and the cache holding
/// its content.
#[derive(Debug)]
pub struct PulledApp {
    /// The locked app.
    pub lock: LockedApp,
    /// `sha256:<hex>` of the OCI manifest.
    pub digest: String,
    /// Where its blobs are.
    pub cache: Cache,
}

impl PulledApp {
    /// Lay the app out in `dir` (a spin.toml, and files under `assets/`);
    /// the manifest path, ready for [`bantam_app::load`].
    pub fn write_app_dir(&self, dir: &Path) -> Result<PathBuf, RegistryError> {
        locked::write_app_dir(&self.lock, &self.cache, dir)
    }
}

/// Pull `reference` into `cache`: layers already cached are not fetched.
pub async fn pull(
    reference: &str,
    cache: &Cache,
    options: &ClientOptions,
    progress: Progress<'_>,
) -> Result<PulledApp, RegistryError> {
    let reference = parse_reference(reference)?;
    let client = client(options);
    let auth = credentials::for_registry(reference.resolve_registry());
    let (manifest, digest) = client
        .pull_image_manifest(&reference, &auth)
        .await
        .map_err(registry_error("pulling", &reference))?;

    let mut config = Vec::new();
    client
        .pull_blob(&reference, &manifest.config, metadata(&manifest.config, "config", &mut config)?)
        .await
        .map_err(registry_error("pulling the config of", &reference))?;
    let config_file: serde_json::Value = serde_json::from_slice(&config)
        .map_err(|e| RegistryError::NotAnApp(format!("its config is not JSON: {e}")))?;
    let label = config_file
        .pointer(&format!("/config/Labels/{}", LOCKED_APP_DIGEST_LABEL.replace('/', "~1")))
        .and_then(|v| v.as_str())
        .map(str::to_owned);

    let total = manifest.layers.iter().map(|l| l.size.max(0) as u64).sum();
    progress(TransferEvent::Start { count: manifest.layers.len(), bytes: total });
    let mut lock_bytes = None;
    for layer in &manifest.layers {
        let size = layer.size.max(0) as u64;
        match layer.media_type.as_str() {
            LOCKED_APP_MEDIA_TYPE => {
                let mut bytes = Vec::new();
                client
                    .pull_blob(&reference, layer, metadata(layer, "lock", &mut bytes)?)
                    .await
                    .map_err(registry_error("pulling the lock of", &reference))?;
                if label.as_deref().is_none_or(|l| l == layer.digest) {
                    lock_bytes = Some(bytes);
                }
                progress(TransferEvent::Layer { bytes: size, cached: false });
            }
            WASM_LAYER_MEDIA_TYPE | WASM_LAYER_MEDIA_TYPE_WKG | DATA_LAYER_MEDIA_TYPE => {
                let path = cache.blob_path(&layer.digest);
                if path.is_file() {
                    progress(TransferEvent::Layer { bytes: size, cached: true });
                    continue;
                }
                let parent = path.parent().expect("blobs live in a folder");
                std::fs::create_dir_all(parent)
                    .map_err(|e| RegistryError::Write { path: parent.to_path_buf(), error: e })?;
                // Download beside, then rename: a cut-off pull never
                // leaves a partial blob under its digest.
                let partial = path.with_extension("partial");
                let file = tokio::fs::File::create(&partial)
                    .await
                    .map_err(|e| RegistryError::Write { path: partial.clone(), error: e })?;
                let mut file = Declared::new(file, layer);
                client
                    .pull_blob(&reference, layer, &mut file)
                    .await
                    .map_err(registry_error("pulling a layer of", &reference))?;
                // tokio's file writes on a blocking thread: the last write
                // may still be under way until flushed, and the blob must
                // be whole before it takes its name.
                tokio::io::AsyncWriteExt::flush(&mut file.inner)
                    .await
                    .map_err(|e| RegistryError::Write { path: partial.clone(), error: e })?;
                std::fs::rename(&partial, &path)
                    .map_err(|e| RegistryError::Write { path: path.clone(), error: e })?;
                progress(TransferEvent::Layer { bytes: size, cached: false });
            }
            ARCHIVE_LAYER_MEDIA_TYPE => {
                return Err(RegistryError::Unsupported(
                    "archive layers (pushed with SPIN_OCI_ARCHIVE_LAYERS)".into(),
                ));
            }
            other => {
                tracing::debug!(media_type = other, "skipping a layer of unknown type");
                progress(TransferEvent::Layer { bytes: size, cached: true });
            }
        }
    }
    // Older Spin pushes carry the lock as the config blob itself.
    let lock_bytes = match lock_bytes {
        Some(bytes) => bytes,
        None if config_file.get("spin_lock_version").is_some() => config,
        None => {
            return Err(RegistryError::NotAnApp(format!(
                "{} has no {LOCKED_APP_MEDIA_TYPE} layer",
                reference.whole()
            )));
        }
    };
    let lock: LockedApp = serde_json::from_slice(&lock_bytes)
        .map_err(|e| RegistryError::NotAnApp(format!("its lock does not parse: {e}")))?;

    let dir = cache.reference_dir(&reference);
    std::fs::create_dir_all(&dir)
        .map_err(|e| RegistryError::Write { path: dir.clone(), error: e })?;
    let manifest_json = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
    for (name, bytes) in [("manifest.json", &manifest_json), ("config.json", &lock_bytes)] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| RegistryError::Write { path, error: e })?;
    }
    Ok(PulledApp { lock, digest, cache: cache.clone() })
}

pub mod credentials;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A registry on loopback serving one manifest whose config descriptor
    /// declares `declared` bytes for a config blob of `config`: the
    /// registry's port.
    async fn registry_lying_about(declared: i64, config: Vec<u8>) -> u16 {
        let digest = locked::digest(&config);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest,
                "size": declared,
            },
            "layers": [],
        })
        .to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && socket.read(&mut byte).await.unwrap_or(0) == 1
                {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or_default().to_string();
                let (kind, body) = if path.contains("/manifests/") {
                    ("application/vnd.oci.image.manifest.v1+json", manifest.clone().into_bytes())
                } else if path.contains("/blobs/") {
                    ("application/octet-stream", config.clone())
                } else {
                    ("application/json", b"{}".to_vec())
                };
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {kind}\r\ncontent-length: {}\r\n\
                     docker-content-digest: {}\r\nconnection: close\r\n\r\n",
                    body.len(),
                    locked::digest(&body)
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.write_all(&body).await;
            }
        });
        port
    }

    async fn pull_from(port: u16) -> RegistryError {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().to_path_buf());
        let options = ClientOptions { insecure: true };
        let reference = format!("127.0.0.1:{port}/app:latest");
        pull(&reference, &cache, &options, &|_| {}).await.expect_err("the pull must fail")
    }

    #[tokio::test]
    async fn a_registry_sending_more_than_its_manifest_declares_is_cut_off() {
        // Valid JSON, and its digest is the one declared: only its size lies.
        let config = format!("{{\"padding\": \"{}\"}}", "x".repeat(64 << 10)).into_bytes();
        let error = pull_from(registry_lying_about(2, config).await).await.to_string();
        assert!(
            error.contains("the registry sent more than the 2 bytes the manifest declares"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_config_declared_larger_than_an_apps_can_be_is_not_fetched() {
        let error = pull_from(registry_lying_about(1 << 30, b"{}".to_vec()).await).await;
        assert_eq!(
            error.to_string(),
            "the artifact is not a Spin application Bantam can run: its config is 1073741824 \
             bytes, more than the 16 MiB a Spin app's can be"
        );
    }
}
