//! Spin's locked application format (`spin_lock_version = 1`), the JSON
//! that an OCI artifact carries as its `application/vnd.fermyon.spin.
//! application.v1+config` layer.
//!
//! Two conversions: a loaded [`bantam_app::App`] becomes a lock whose
//! content is referenced by digest (for `push`), and a pulled lock becomes
//! a spin.toml (for `pull` and `up --from`), so that a pulled app is an
//! ordinary app directory that the manifest crate validates like any other.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::{Cache, RegistryError};

/// The `must_understand` feature for host requirements.
const MUST_UNDERSTAND_HOST_REQUIREMENTS: &str = "host_requirements";
/// The one host requirement Bantam meets: in-process service chaining.
const SERVICE_CHAINING_REQUIREMENT: &str = "local_service_chaining";
/// Content up to this size is inlined in the lock (base64) and not pushed
/// as a layer, as Spin does: some registries refuse very small blobs.
pub const INLINE_MAX_SIZE: usize = 128;

/// A locked Spin application.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockedApp {
    /// Always 1 when written; 0 and 1 are read.
    pub spin_lock_version: u32,
    /// Features a runtime must support to run the app.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub must_understand: Vec<String>,
    /// `name`, `version`, `description`, `authors`, `trigger`, ...
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    /// App-wide requirements of the host.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub host_requirements: Map<String, Value>,
    /// Application variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, LockedVariable>,
    /// The triggers (HTTP only, for Bantam).
    pub triggers: Vec<LockedTrigger>,
    /// The components.
    pub components: Vec<LockedComponent>,
}

/// An application variable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockedVariable {
    /// What it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Its default; a variable without one is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Whether it must never be shown.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
}

/// A trigger: for HTTP, `trigger_config` holds `component`, `route` and
/// `executor`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockedTrigger {
    /// Unique within the app.
    pub id: String,
    /// `http`, `redis`, ...
    pub trigger_type: String,
    /// The trigger's settings.
    pub trigger_config: Value,
    /// Per-trigger dependencies (not supported by Bantam).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub trigger_dependencies: Map<String, Value>,
}

/// A component.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockedComponent {
    /// The component id.
    pub id: String,
    /// `description`, `allowed_outbound_hosts`, `key_value_stores`,
    /// `databases`, `ai_models`, ...
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    /// The Wasm component.
    pub source: LockedSource,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Files, each at a path relative to the guest's `/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ContentPath>,
    /// Component variables (templates over the app variables).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// Component dependencies (not supported by Bantam).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub dependencies: Map<String, Value>,
    /// Per-trigger dependencies (not supported by Bantam).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub trigger_dependencies: Map<String, Value>,
    /// Requirements of the host.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub host_requirements: Map<String, Value>,
}

/// A component's Wasm: its content type and where the bytes are.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockedSource {
    /// `application/wasm`.
    pub content_type: String,
    /// Where the bytes are.
    #[serde(flatten)]
    pub content: ContentRef,
}

/// Content at a path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContentPath {
    /// Where the bytes are.
    #[serde(flatten)]
    pub content: ContentRef,
    /// The path, relative to the mount point.
    pub path: PathBuf,
}

/// Where some content is: a URL, inline bytes, and/or a digest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContentRef {
    /// A URL (`file://...` in local locks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The bytes themselves, base64 without padding.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "inline_base64")]
    pub inline: Option<Vec<u8>>,
    /// `sha256:<hex>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

mod inline_base64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => s.serialize_str(&STANDARD_NO_PAD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else { return Ok(None) };
        let trimmed = text.trim_end_matches('=');
        STANDARD_NO_PAD
            .decode(trimmed)
            .or_else(|_| STANDARD.decode(&text))
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// Content to push: bytes and their media type.
pub struct Blob {
    /// The layer's media type.
    pub media_type: &'static str,
    /// The bytes.
    pub data: Vec<u8>,
}

/// `sha256:<hex>` of `data`.
pub fn digest(data: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{:x}", sha2::Sha256::digest(data))
}

/// The reference to `data`: its digest, and the bytes inline when small.
fn content_ref(data: &[u8]) -> ContentRef {
    ContentRef {
        source: None,
        inline: (data.len() <= INLINE_MAX_SIZE).then(|| data.to_vec()),
        digest: Some(digest(data)),
    }
}

/// Lock a loaded app for pushing: every component and file referenced by
/// digest, and the blobs to push (small files only inline, as Spin does).
pub fn lock_app(app: &bantam_app::App) -> Result<(LockedApp, Vec<Blob>), RegistryError> {
    let mut blobs = Vec::new();
    let mut metadata = Map::new();
    metadata.insert("name".into(), app.name.clone().into());
    if let Some(version) = &app.version {
        metadata.insert("version".into(), version.clone().into());
    }
    if let Some(description) = &app.description {
        metadata.insert("description".into(), description.clone().into());
    }
    if !app.authors.is_empty() {
        metadata.insert("authors".into(), json!(app.authors));
    }
    metadata.insert("triggers".into(), json!({}));
    metadata.insert("trigger".into(), json!({ "type": "http" }));

    let mut components = Vec::with_capacity(app.components.len());
    let mut needs_chaining = false;
    for component in &app.components {
        let wasm = std::fs::read(&component.source)
            .map_err(|e| RegistryError::Read { path: component.source.clone(), error: e })?;
        let source = LockedSource {
            content_type: "application/wasm".into(),
            content: ContentRef { source: None, inline: None, digest: Some(digest(&wasm)) },
        };
        blobs.push(Blob { media_type: crate::WASM_LAYER_MEDIA_TYPE, data: wasm });

        let mut files = Vec::new();
        if let Some(root) = &component.files_root {
            for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
                let entry = entry.map_err(|e| RegistryError::Read {
                    path: root.clone(),
                    error: std::io::Error::other(e.to_string()),
                })?;
                if !entry.file_type().is_file() {
                    continue;
                }
                let data = std::fs::read(entry.path()).map_err(|e| RegistryError::Read {
                    path: entry.path().to_path_buf(),
                    error: e,
                })?;
                let relative = entry.path().strip_prefix(root).expect("walked under root");
                let portable: Vec<String> = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                let content = content_ref(&data);
                if content.inline.is_none() {
                    blobs.push(Blob { media_type: crate::DATA_LAYER_MEDIA_TYPE, data });
                }
                files.push(ContentPath { content, path: PathBuf::from(portable.join("/")) });
            }
        }

        let mut component_metadata = Map::new();
        if let Some(description) = &component.description {
            component_metadata.insert("description".into(), description.clone().into());
        }
        component_metadata
            .insert("allowed_outbound_hosts".into(), json!(component.allowed_outbound_hosts));
        component_metadata.insert("key_value_stores".into(), json!(component.key_value_stores));
        component_metadata.insert("databases".into(), json!(component.sqlite_databases));
        // Bantam's own opt-in, as the manifest writes it (Spin ignores it
        // here as it ignores `tool` tables there).
        if let Some(reuse) = &component.instance_reuse {
            component_metadata.insert(
                "tool".into(),
                json!({ "bantam": { "instance_reuse": {
                    "max_requests": reuse.max_requests,
                    "max_concurrent": reuse.max_concurrent,
                    "idle_timeout": format!("{}ms", reuse.idle_timeout.as_millis()),
                } } }),
            );
        }
        let chaining =
            component.allowed_outbound_hosts.iter().any(|h| h.contains(".spin.internal"));
        let mut host_requirements = Map::new();
        if chaining {
            needs_chaining = true;
            host_requirements.insert(SERVICE_CHAINING_REQUIREMENT.into(), "required".into());
        }
        components.push(LockedComponent {
            id: component.id.clone(),
            metadata: component_metadata,
            source,
            env: component.environment.iter().cloned().collect(),
            files,
            config: component.variables.iter().cloned().collect(),
            dependencies: Map::new(),
            trigger_dependencies: Map::new(),
            host_requirements,
        });
    }

    let triggers = app
        .http_routes
        .iter()
        .enumerate()
        .map(|(n, route)| {
            let mut config = Map::new();
            config.insert("component".into(), route.component.clone().into());
            config.insert(
                "route".into(),
                match &route.route {
                    bantam_app::Route::Public(pattern) => pattern.as_str().into(),
                    bantam_app::Route::Private => json!({ "private": true }),
                },
            );
            if let bantam_app::Executor::Wagi { argv, entrypoint } = &route.executor {
                let mut executor = Map::new();
                executor.insert("type".into(), "wagi".into());
                if let Some(argv) = argv {
                    executor.insert("argv".into(), argv.clone().into());
                }
                if let Some(entrypoint) = entrypoint {
                    executor.insert("entrypoint".into(), entrypoint.clone().into());
                }
                config.insert("executor".into(), executor.into());
            }
            LockedTrigger {
                id: format!("trigger-{}-{n}", route.component),
                trigger_type: "http".into(),
                trigger_config: config.into(),
                trigger_dependencies: Map::new(),
            }
        })
        .collect();

    let variables = app
        .variables
        .iter()
        .map(|(name, v)| {
            let variable = LockedVariable {
                description: v.description.clone(),
                default: v.default.clone(),
                secret: v.secret,
            };
            (name.clone(), variable)
        })
        .collect();
    let lock = LockedApp {
        spin_lock_version: 1,
        must_understand: if needs_chaining {
            vec![MUST_UNDERSTAND_HOST_REQUIREMENTS.into()]
        } else {
            Vec::new()
        },
        metadata,
        host_requirements: Map::new(),
        variables,
        triggers,
        components,
    };
    Ok((lock, blobs))
}

/// Turn a pulled lock into an app directory at `dir`: a spin.toml whose
/// sources point at the pulled Wasm, and each component's files under
/// `assets/<component id>/`, mounted at `/` (as `spin up` lays them out).
pub fn write_app_dir(
    lock: &LockedApp,
    blobs: &Cache,
    dir: &Path,
) -> Result<PathBuf, RegistryError> {
    if lock.spin_lock_version > 1 {
        return Err(RegistryError::Unsupported(format!(
            "lock version {} (Bantam reads version 1)",
            lock.spin_lock_version
        )));
    }
    for feature in &lock.must_understand {
        if feature != MUST_UNDERSTAND_HOST_REQUIREMENTS {
            return Err(RegistryError::Unsupported(format!("the feature `{feature}`")));
        }
    }
    let requirements = lock
        .host_requirements
        .keys()
        .chain(lock.components.iter().flat_map(|c| c.host_requirements.keys()));
    for requirement in requirements {
        if requirement != SERVICE_CHAINING_REQUIREMENT {
            return Err(RegistryError::Unsupported(format!(
                "the host requirement `{requirement}`"
            )));
        }
    }

    let mut manifest = Map::new();
    manifest.insert("spin_manifest_version".into(), 2.into());
    let mut application = Map::new();
    let name = lock.metadata.get("name").and_then(Value::as_str).unwrap_or("app");
    application.insert("name".into(), name.into());
    for key in ["version", "description"] {
        if let Some(value) = lock.metadata.get(key).and_then(Value::as_str) {
            application.insert(key.into(), value.into());
        }
    }
    if let Some(authors) = lock.metadata.get("authors").filter(|a| a.is_array()) {
        application.insert("authors".into(), authors.clone());
    }
    manifest.insert("application".into(), application.into());

    let mut variables = Map::new();
    for (name, variable) in &lock.variables {
        let mut table = Map::new();
        match &variable.default {
            Some(default) => table.insert("default".into(), default.clone().into()),
            None => table.insert("required".into(), true.into()),
        };
        if variable.secret {
            table.insert("secret".into(), true.into());
        }
        if let Some(description) = &variable.description {
            table.insert("description".into(), description.clone().into());
        }
        variables.insert(name.clone(), table.into());
    }
    if !variables.is_empty() {
        manifest.insert("variables".into(), variables.into());
    }

    let mut http = Vec::new();
    for trigger in &lock.triggers {
        if trigger.trigger_type != "http" {
            return Err(RegistryError::Unsupported(format!(
                "the `{}` trigger (of `{}`)",
                trigger.trigger_type, trigger.id
            )));
        }
        let config = trigger.trigger_config.as_object().cloned().unwrap_or_default();
        let mut table = Map::new();
        for key in ["component", "route", "executor"] {
            if let Some(value) = config.get(key) {
                table.insert(key.into(), value.clone());
            }
        }
        http.push(Value::Object(table));
    }
    manifest.insert("trigger".into(), json!({ "http": http }));

    let mut components = Map::new();
    for component in &lock.components {
        if !component.dependencies.is_empty() || !component.trigger_dependencies.is_empty() {
            return Err(RegistryError::Unsupported(format!(
                "component dependencies (of `{}`)",
                component.id
            )));
        }
        let mut table = Map::new();
        for key in
            ["description", "allowed_outbound_hosts", "key_value_stores", "ai_models", "tool"]
        {
            if let Some(value) = component.metadata.get(key) {
                table.insert(key.into(), value.clone());
            }
        }
        if let Some(databases) = component.metadata.get("databases") {
            table.insert("sqlite_databases".into(), databases.clone());
        }
        let source = materialise(&component.source.content, blobs, None)?;
        table.insert("source".into(), source.to_string_lossy().into_owned().into());
        if !component.env.is_empty() {
            table.insert("environment".into(), json!(component.env));
        }
        if !component.config.is_empty() {
            table.insert("variables".into(), json!(component.config));
        }
        if !component.files.is_empty() {
            let root = dir.join("assets").join(safe_segment(&component.id)?);
            for file in &component.files {
                let target = root.join(safe_relative(&file.path)?);
                materialise(&file.content, blobs, Some(&target))?;
            }
            let mount = format!("assets/{}", component.id);
            table.insert("files".into(), json!([{ "source": mount, "destination": "/" }]));
        }
        components.insert(component.id.clone(), table.into());
    }
    manifest.insert("component".into(), components.into());

    let text = toml::to_string(&Value::Object(manifest))
        .map_err(|e| RegistryError::Unsupported(format!("a lock that is not a manifest: {e}")))?;
    let path = dir.join(bantam_app::DEFAULT_MANIFEST_FILE);
    std::fs::create_dir_all(dir)
        .map_err(|e| RegistryError::Write { path: dir.to_path_buf(), error: e })?;
    std::fs::write(&path, text)
        .map_err(|e| RegistryError::Write { path: path.clone(), error: e })?;
    Ok(path)
}

/// Where `content` is on disk. With `target`, the bytes are copied there
/// (inline content is written); without, the pulled blob's own path.
fn materialise(
    content: &ContentRef,
    blobs: &Cache,
    target: Option<&Path>,
) -> Result<PathBuf, RegistryError> {
    let from_blob = |digest: &str| {
        let path = blobs.blob_path(digest);
        if path.is_file() {
            Ok(path)
        } else {
            Err(RegistryError::MissingContent(digest.to_owned()))
        }
    };
    match (target, &content.inline, &content.digest) {
        (Some(target), Some(bytes), _) => {
            write_file(target, |t| std::fs::write(t, bytes))?;
            Ok(target.to_path_buf())
        }
        (Some(target), None, Some(digest)) => {
            let blob = from_blob(digest)?;
            write_file(target, |t| std::fs::copy(&blob, t).map(drop))?;
            Ok(target.to_path_buf())
        }
        (None, _, Some(digest)) => from_blob(digest),
        _ => Err(RegistryError::MissingContent(format!("{content:?}"))),
    }
}

fn write_file(
    target: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), RegistryError> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| RegistryError::Write { path: parent.to_path_buf(), error: e })?;
    }
    write(target).map_err(|e| RegistryError::Write { path: target.to_path_buf(), error: e })
}

/// A file path from an artifact, refused if it could leave its folder: a
/// hostile artifact must not write outside the app directory.
fn safe_relative(path: &Path) -> Result<PathBuf, RegistryError> {
    let text = path.to_string_lossy();
    let relative = Path::new(text.trim_start_matches('/'));
    let clean = relative.components().all(|c| matches!(c, Component::Normal(_)));
    if relative.as_os_str().is_empty() || !clean {
        return Err(RegistryError::Unsupported(format!("the file path {text:?}")));
    }
    Ok(relative.to_path_buf())
}

fn safe_segment(id: &str) -> Result<&str, RegistryError> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(RegistryError::Unsupported(format!("the component id {id:?}")));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_folder_are_refused() {
        assert!(safe_relative(Path::new("static/a.txt")).is_ok());
        assert_eq!(safe_relative(Path::new("/a/b")).unwrap(), PathBuf::from("a/b"));
        for bad in ["../x", "a/../../x", "", "a/./b/.."] {
            assert!(safe_relative(Path::new(bad)).is_err(), "{bad}");
        }
        assert!(safe_segment("../x").is_err());
    }

    #[test]
    fn inline_content_is_unpadded_base64() {
        let content = content_ref(b"hi!!");
        let json = serde_json::to_value(&content).unwrap();
        assert_eq!(json["inline"], "aGkhIQ");
        let back: ContentRef = serde_json::from_value(json!({"inline": "aGkhIQ=="})).unwrap();
        assert_eq!(back.inline.unwrap(), b"hi!!");
    }
}
