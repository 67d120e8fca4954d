//! Spin application manifests (`spin.toml`, `spin_manifest_version = 2`).
//!
//! [`load`] reads a manifest and returns a validated [`AppManifest`], or a
//! [`ManifestError`] that names the file, line, column and field at fault,
//! the way a compiler reports an error. Parsing happens in two steps: the
//! private `raw` module mirrors the TOML the user writes (with source
//! spans, unknown fields rejected), and `validate` turns it into the
//! public, plain types here, checking everything the text alone can tell:
//! ids and names (with Spin's rules), routes, references between triggers
//! and components, variables. Whether a component's source file exists is
//! left to the app loader, because `bantam build` reads manifests whose
//! components are not built yet; [`Component::source_location`] lets that
//! error still point into the manifest.
//!
//! Where Spin accepts a manifest but logs a problem (a route given twice,
//! a route under the reserved `/.well-known/spin/`), the manifest loads and
//! [`AppManifest::warnings`] says so, with locations.
//!
//! This crate knows nothing about wasmtime or serving; it could back an
//! editor plugin.

#![deny(missing_docs)]

pub mod allowed_hosts;
mod raw;
mod route;
mod template;
pub mod units;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;

pub use route::{RouteError, RoutePattern, Segment};
pub use template::{Part, Template};

/// A validated Spin application manifest.
#[derive(Debug, Clone)]
pub struct AppManifest {
    /// The `[application]` table.
    pub application: Application,
    /// Application variables, by name, in file order.
    pub variables: IndexMap<String, Variable>,
    /// `[[trigger.http]]` entries, in file order.
    pub http_triggers: Vec<HttpTrigger>,
    /// Components by id, in file order (inline components included, under
    /// generated ids).
    pub components: IndexMap<String, Component>,
    /// Problems that do not stop the app, with their locations.
    pub warnings: Vec<ManifestWarning>,
    /// The manifest file.
    pub manifest_path: PathBuf,
    /// The directory holding the manifest: relative paths resolve here.
    pub manifest_dir: PathBuf,
}

/// The `[application]` table.
#[derive(Debug, Clone)]
pub struct Application {
    /// The application name.
    pub name: String,
    /// Its version, if given.
    pub version: Option<String>,
    /// Its description, if given.
    pub description: Option<String>,
    /// Its authors.
    pub authors: Vec<String>,
    /// `[application.trigger.http] base`, if given. Deprecated in Spin,
    /// which rejects any value but `/`; so is it here, and this is `/` or
    /// nothing.
    pub http_base: Option<String>,
}

/// An application variable from `[variables]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// The default value, used when no provider gives one.
    pub default: Option<String>,
    /// Whether start-up fails when no value is given.
    pub required: bool,
    /// Whether the value must never be logged or shown.
    pub secret: bool,
    /// What the variable is for.
    pub description: Option<String>,
}

/// One `[[trigger.http]]` entry.
#[derive(Debug, Clone)]
pub struct HttpTrigger {
    /// The trigger id, if given.
    pub id: Option<String>,
    /// Where the component is reachable.
    pub route: Route,
    /// The id of the component serving the route. An inline component
    /// gets the id Spin would give it (`<trigger id>-component`, else
    /// `inline-component<n>`) and is added to [`AppManifest::components`].
    pub component: String,
    /// How the component is called.
    pub executor: Executor,
}

/// Where an HTTP trigger's component is reachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Reachable at this route.
    Public(RoutePattern),
    /// `{ private = true }`: not routed from outside; reachable only from
    /// the app's own components.
    Private,
}

/// How the HTTP trigger calls a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Executor {
    /// `type = "http"` (or `"spin"`, or no executor): the component exports
    /// a `wasi:http` handler, detected from the component itself.
    Http,
    /// `type = "wagi"`: a WASI command run CGI-style.
    Wagi {
        /// The `argv` template, if given (Spin's default is
        /// `${SCRIPT_NAME} ${ARGS}`).
        argv: Option<String>,
        /// The deprecated `entrypoint`, if given (Spin's default is
        /// `_start`).
        entrypoint: Option<String>,
    },
}

/// A `[component.<id>]` table.
#[derive(Debug, Clone)]
pub struct Component {
    /// The component id.
    pub id: String,
    /// What the component does.
    pub description: Option<String>,
    /// Where the Wasm comes from, as written.
    pub source: ComponentSource,
    /// For a local source, the file resolved against the manifest
    /// directory. Whether it exists is not checked here: `bantam build`
    /// reads manifests whose components are not built yet.
    pub source_path: PathBuf,
    /// Where `source` is written, for messages about the file.
    pub source_location: Location,
    /// Files made visible to the guest.
    pub files: Vec<FileMount>,
    /// Glob patterns of files to leave out of `files`.
    pub exclude_files: Vec<String>,
    /// Environment variables for the guest.
    pub environment: IndexMap<String, String>,
    /// Network destinations the guest may reach.
    pub allowed_outbound_hosts: Vec<String>,
    /// Deprecated predecessor of `allowed_outbound_hosts`.
    pub allowed_http_hosts: Vec<String>,
    /// Key-value store labels the guest may open.
    pub key_value_stores: Vec<String>,
    /// SQLite database labels the guest may open.
    pub sqlite_databases: Vec<String>,
    /// AI models the guest may use.
    pub ai_models: Vec<String>,
    /// Component variables, as written (`{{ app_var }}` templates kept).
    pub variables: IndexMap<String, String>,
    /// How to build the component.
    pub build: Option<BuildConfig>,
    /// `dependencies_inherit_configuration`: whether dependencies see the
    /// component's grants. Kept for completeness: Bantam does not compose
    /// dependencies yet.
    pub dependencies_inherit_configuration: bool,
    /// Whether one instance may serve several requests of the same client,
    /// from `[component.<id>.tool.bantam] instance_reuse`. `None`, the
    /// default: a fresh instance for every request.
    pub instance_reuse: Option<InstanceReuse>,
}

/// An explicit opt-in to reusing a component's instances, written in
/// Bantam's own tool table (Spin ignores `tool` tables, so the manifest
/// still runs on Spin, with Spin's own instance policy):
///
/// ```toml
/// [component.api.tool.bantam]
/// instance_reuse = { max_requests = 128, max_concurrent = 1, idle_timeout = "1s" }
/// ```
///
/// An instance is only ever reused for requests on the same client
/// connection: requests of different clients never share an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceReuse {
    /// The most requests one instance serves before it is dropped (at
    /// least 1; 1 means no reuse).
    pub max_requests: u32,
    /// The most requests one instance serves at once (HTTP/2 streams of
    /// one connection; wasi:http 0.3 guests only); default 1.
    pub max_concurrent: u32,
    /// How long an instance waits for its connection's next request
    /// before it is dropped; default 1 s. It is dropped at once when the
    /// connection closes.
    pub idle_timeout: Duration,
}

impl InstanceReuse {
    /// The longest `idle_timeout` allowed: an idle instance holds a pooled
    /// memory slot, which other requests may need.
    pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
}

/// Where a component's Wasm comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentSource {
    /// A file, relative to the manifest.
    Local(String),
    /// A URL with the expected digest.
    Remote {
        /// Where to download from.
        url: String,
        /// `sha256:<hex>` of the content.
        digest: String,
    },
    /// A package from a Wasm registry.
    Registry {
        /// The registry, if not the default one.
        registry: Option<String>,
        /// `namespace:name`.
        package: String,
        /// The version.
        version: String,
    },
}

/// An entry of a component's `files`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileMount {
    /// A glob pattern relative to the manifest; matches keep their relative
    /// path in the guest.
    Glob(String),
    /// A file or directory placed at an absolute guest path.
    Mapping {
        /// The host file or directory, relative to the manifest.
        source: String,
        /// Where the guest sees it.
        destination: String,
    },
}

/// A component's `[component.<id>.build]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildConfig {
    /// Commands to run, in order (one string or a list in the manifest).
    pub command: Vec<String>,
    /// Directory to run them in, relative to the manifest.
    pub workdir: Option<PathBuf>,
    /// Globs whose changes trigger a rebuild under `watch`.
    pub watch: Vec<String>,
}

/// A place in a manifest file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The manifest file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
    }
}

/// Why a manifest could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("{}: cannot read the manifest: {source}", .path.display())]
    Read {
        /// The manifest file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The manifest is malformed or invalid at `location`.
    #[error("{location}: {message}")]
    Invalid {
        /// Where.
        location: Location,
        /// What is wrong, naming the field.
        message: String,
    },
}

impl ManifestError {
    /// Where the error is, when it is about the manifest's content.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Self::Read { .. } => None,
            Self::Invalid { location, .. } => Some(location),
        }
    }
}

/// A problem that does not stop the app, with its location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestWarning {
    /// Where.
    pub location: Location,
    /// What.
    pub message: String,
}

impl fmt::Display for ManifestWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Read, parse and validate the manifest at `path`.
pub fn load(path: &Path) -> Result<AppManifest, ManifestError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ManifestError::Read { path: path.to_path_buf(), source })?;
    parse(&text, path)
}

/// Parse and validate manifest `text`; `path` names it in messages and
/// anchors relative paths.
pub fn parse(text: &str, path: &Path) -> Result<AppManifest, ManifestError> {
    validate::validate(text, path)
}

/// Why `name` is not a valid variable name (Spin's lower_snake_case
/// rules), or `None` if it is. Guests asking for a variable by a malformed
/// name get this as the `invalid-name` error.
pub fn variable_name_problem(name: &str) -> Option<String> {
    validate::id_problem(name, '_', true)
}
