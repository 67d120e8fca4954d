//! The loaded application: what `bantam up` runs.
//!
//! [`load`] takes a validated [`bantam_manifest::AppManifest`] and resolves it
//! against the filesystem: component sources become absolute paths, `files`
//! mounts are materialised into a private directory per component, and HTTP
//! triggers become a flat list of [`HttpRoute`]s. Nothing here knows about
//! wasmtime or HTTP serving; the engine and triggers consume an [`App`].
//!
//! The manifest types are the user's format; the types here are the runtime
//! model. Keeping them apart lets the manifest evolve (or an OCI lock file
//! produce an `App`) without touching the engine.

mod files;

use std::path::{Path, PathBuf};

pub use bantam_manifest::{Executor, Route, RoutePattern};
pub use files::FilesError;

/// The name of the manifest file looked for when none is named.
pub const DEFAULT_MANIFEST_FILE: &str = "spin.toml";

/// A Spin application, loaded and ready to be run.
#[derive(Debug)]
pub struct App {
    /// The application name from `[application]`.
    pub name: String,
    /// The application version, if given.
    pub version: Option<String>,
    /// The application description, if given.
    pub description: Option<String>,
    /// The application authors.
    pub authors: Vec<String>,
    /// The manifest this app was loaded from (or the component file, for
    /// an app of one bare component).
    pub manifest_path: PathBuf,
    /// The directory holding the manifest; relative paths resolve against it.
    pub dir: PathBuf,
    /// Where the app keeps its state (logs, default stores): `.spin` next to
    /// the manifest, as Spin does.
    pub state_dir: PathBuf,
    /// The application variables from `[variables]`, by name.
    pub variables: indexmap::IndexMap<String, bantam_manifest::Variable>,
    /// The components, in manifest order.
    pub components: Vec<Component>,
    /// The HTTP routes, in manifest order.
    pub http_routes: Vec<HttpRoute>,
    /// Problems that do not stop the app (duplicate routes, ...), already
    /// formatted with their location.
    pub warnings: Vec<String>,
    /// Keeps the materialised `files` mounts alive as long as the app.
    _assets: Option<tempfile::TempDir>,
}

/// One component of an [`App`].
#[derive(Debug, Clone)]
pub struct Component {
    /// The component id (kebab-case), unique in the app.
    pub id: String,
    /// The description from the manifest.
    pub description: Option<String>,
    /// Absolute path of the Wasm component file.
    pub source: PathBuf,
    /// Environment variables the guest sees, and only these.
    pub environment: Vec<(String, String)>,
    /// A host directory holding exactly the files the manifest grants, laid
    /// out as the guest sees them; mounted read-only at `/`. `None` when the
    /// component has no `files`.
    pub files_root: Option<PathBuf>,
    /// `allowed_outbound_hosts`, as written (enforced by the capabilities).
    pub allowed_outbound_hosts: Vec<String>,
    /// Key-value store labels granted to the component.
    pub key_value_stores: Vec<String>,
    /// SQLite database labels granted to the component.
    pub sqlite_databases: Vec<String>,
    /// AI models the component may use (`ai_models`).
    pub ai_models: Vec<String>,
    /// Component variables (`{{ template }}` values unresolved).
    pub variables: Vec<(String, String)>,
    /// How to build the component, if the manifest says.
    pub build: Option<bantam_manifest::BuildConfig>,
    /// Whether instances may serve several requests of one client (the
    /// manifest's explicit opt-in); `None`: a fresh instance per request.
    pub instance_reuse: Option<bantam_manifest::InstanceReuse>,
}

/// An HTTP trigger: a route served by a component.
#[derive(Debug, Clone)]
pub struct HttpRoute {
    /// The route, public or private.
    pub route: Route,
    /// The id of the component serving it.
    pub component: String,
    /// How the component is called.
    pub executor: Executor,
}

/// Why an app could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The manifest is malformed or invalid.
    #[error(transparent)]
    Manifest(#[from] bantam_manifest::ManifestError),
    /// No manifest was found where one was looked for.
    #[error("no {DEFAULT_MANIFEST_FILE} found in {} or any parent directory", .0.display())]
    ManifestNotFound(PathBuf),
    /// A path named with `-f` does not exist.
    #[error("{}: no such file or directory", .0.display())]
    NoSuchPath(PathBuf),
    /// A component's Wasm file does not exist.
    #[error("{location}: component `{component}` source: file not found: {}", .path.display())]
    MissingSource {
        /// Where the manifest names the source.
        location: bantam_manifest::Location,
        /// The component id.
        component: String,
        /// The resolved path.
        path: PathBuf,
    },
    /// A component's `files` could not be prepared.
    #[error("component `{component}`: {source}")]
    Files {
        /// The component id.
        component: String,
        /// What went wrong.
        source: FilesError,
    },
    /// Creating the private directory for mounted files failed.
    #[error("cannot create a directory for component files: {0}")]
    AssetsDir(std::io::Error),
}

/// Find the manifest to run, the way `spin up` does: `from` may name a
/// manifest file or a directory holding `spin.toml`; with no `from`, look in
/// `cwd` and then its parents.
pub fn find_manifest(from: Option<&Path>, cwd: &Path) -> Result<PathBuf, LoadError> {
    match from {
        Some(path) => {
            let path = cwd.join(path);
            if path.is_dir() {
                let manifest = path.join(DEFAULT_MANIFEST_FILE);
                if manifest.is_file() { Ok(manifest) } else { Err(LoadError::NoSuchPath(manifest)) }
            } else if path.exists() {
                Ok(path)
            } else {
                Err(LoadError::NoSuchPath(path))
            }
        }
        None => cwd
            .ancestors()
            .map(|dir| dir.join(DEFAULT_MANIFEST_FILE))
            .find(|manifest| manifest.is_file())
            .ok_or_else(|| LoadError::ManifestNotFound(cwd.to_path_buf())),
    }
}

/// Load the app whose manifest is at `manifest_path`: parse and validate the
/// manifest, then resolve every component against the filesystem.
pub fn load(manifest_path: &Path) -> Result<App, LoadError> {
    let manifest = bantam_manifest::load(manifest_path)?;
    from_manifest(manifest)
}

/// Resolve an already-parsed manifest into an [`App`].
pub fn from_manifest(manifest: bantam_manifest::AppManifest) -> Result<App, LoadError> {
    let dir = manifest.manifest_dir.clone();
    let needs_assets = manifest.components.values().any(|c| !c.files.is_empty());
    let assets = if needs_assets {
        Some(
            tempfile::Builder::new()
                .prefix("bantam-files-")
                .tempdir()
                .map_err(LoadError::AssetsDir)?,
        )
    } else {
        None
    };

    let mut components = Vec::with_capacity(manifest.components.len());
    for (id, component) in &manifest.components {
        if !component.source_path.is_file() {
            return Err(LoadError::MissingSource {
                location: component.source_location.clone(),
                component: id.clone(),
                path: component.source_path.clone(),
            });
        }
        let files_root = match &assets {
            Some(assets) if !component.files.is_empty() => {
                let root = assets.path().join(id);
                files::materialise(&dir, &component.files, &component.exclude_files, &root)
                    .map_err(|source| LoadError::Files { component: id.clone(), source })?;
                Some(root)
            }
            _ => None,
        };
        components.push(Component {
            id: id.clone(),
            description: component.description.clone(),
            source: component.source_path.clone(),
            environment: component
                .environment
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            files_root,
            allowed_outbound_hosts: component.allowed_outbound_hosts.clone(),
            key_value_stores: component.key_value_stores.clone(),
            sqlite_databases: component.sqlite_databases.clone(),
            ai_models: component.ai_models.clone(),
            variables: component.variables.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            build: component.build.clone(),
            instance_reuse: component.instance_reuse,
        });
    }

    let http_routes = manifest
        .http_triggers
        .iter()
        .map(|trigger| HttpRoute {
            route: trigger.route.clone(),
            component: trigger.component.clone(),
            executor: trigger.executor.clone(),
        })
        .collect();

    Ok(App {
        name: manifest.application.name.clone(),
        version: manifest.application.version.clone(),
        description: manifest.application.description.clone(),
        authors: manifest.application.authors.clone(),
        manifest_path: manifest.manifest_path.clone(),
        state_dir: dir.join(".spin"),
        dir,
        variables: manifest.variables.clone(),
        components,
        http_routes,
        warnings: manifest.warnings.iter().map(ToString::to_string).collect(),
        _assets: assets,
    })
}

/// An app made of one bare component file serving every route, as
/// `spin up -f app.wasm` runs one. The component id is the file name in
/// kebab-case.
pub fn from_wasm_file(path: &Path) -> Result<App, LoadError> {
    if !path.is_file() {
        return Err(LoadError::NoSuchPath(path.to_path_buf()));
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy()).unwrap_or_default();
    let mut id = String::new();
    for c in stem.chars() {
        match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => id.push(c),
            _ if !id.is_empty() && !id.ends_with('-') => id.push('-'),
            _ => {}
        }
    }
    let id = match id.trim_end_matches('-') {
        "" => "component".to_string(),
        id if id.starts_with(|c: char| c.is_ascii_digit()) => format!("component-{id}"),
        id => id.to_string(),
    };
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(App {
        name: id.clone(),
        version: None,
        description: None,
        authors: Vec::new(),
        manifest_path: path.to_path_buf(),
        state_dir: dir.join(".spin"),
        dir,
        variables: indexmap::IndexMap::new(),
        components: vec![Component {
            id: id.clone(),
            description: None,
            source: path.to_path_buf(),
            environment: Vec::new(),
            files_root: None,
            allowed_outbound_hosts: Vec::new(),
            key_value_stores: Vec::new(),
            sqlite_databases: Vec::new(),
            ai_models: Vec::new(),
            variables: Vec::new(),
            build: None,
            instance_reuse: None,
        }],
        http_routes: vec![HttpRoute {
            route: Route::Public(RoutePattern::parse("/...").expect("a valid route")),
            component: id,
            executor: Executor::Http,
        }],
        warnings: Vec::new(),
        _assets: None,
    })
}

impl App {
    /// The component with this id.
    pub fn component(&self, id: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.id == id)
    }
}
