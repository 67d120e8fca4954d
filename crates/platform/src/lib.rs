//! Platform mode: one host serving many apps (`bantam serve`).
//!
//! Apps arrive through the admin API ([`admin`]) as a bundle
//! ([`bundle`]: Spin's locked app plus its blobs) or an OCI reference,
//! are prepared exactly as `bantam up` prepares one (the same
//! [`HttpTrigger::prepare`]), and are served on the shared public
//! listener, picked by the request's host name: `<app>.localhost` and any
//! custom domains the deploy declared.
//!
//! Each app has its own state directory (`<data dir>/apps/<name>`: default
//! key-value store, default SQLite database, logs), its own variables, its
//! own limits (the host's flags where its deploys set none) and its own
//! metrics; nothing of one app is reachable from another. The apps and
//! their settings are kept in `<data dir>/bantam.db` ([`store`]) and
//! prepared again when the host restarts.
//!
//! An update is prepared completely (compiled, linked, stores open)
//! before it takes any request, then swapped in atomically: requests in
//! flight finish on the release they started on. A failed update leaves
//! the running release serving.

pub mod admin;
pub mod bundle;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::{ArcSwap, ArcSwapOption};
use bantam_capabilities::runtime_config::{LimitName, Limits};
use bantam_capabilities::{AppCapabilities, CapabilityConfig, VariableSources};
use bantam_engine::{AppLimits, Engine, LogConfig};
use bantam_manifest::units::format_size;
use bantam_registry::{Cache, LockedApp};
use bantam_trigger_http::HttpTrigger;
use bantam_trigger_http::metrics::AppMetrics;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};
use wasmtime_wasi_http::WasiBody;

use store::{Store, StoredApp};

/// Why a platform operation failed. Every message is fit to show the
/// person deploying: it names the app and what is wrong, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// The app name cannot be a host name label.
    #[error(
        "`{0}` is not a valid app name: use 1 to 63 lower-case letters, digits and `-`, not starting or ending with `-`"
    )]
    BadName(String),
    /// A custom domain is not a host name.
    #[error("`{0}` is not a valid domain name")]
    BadDomain(String),
    /// A limit the deploy sets cannot be used on this host.
    #[error("app `{app}`: {message}")]
    BadLimit {
        /// The app name.
        app: String,
        /// Which limit, and why not.
        message: String,
    },
    /// A host name is already another app's.
    #[error("{domain} already belongs to app `{app}`")]
    DomainTaken {
        /// The host name.
        domain: String,
        /// The app answering on it.
        app: String,
    },
    /// No app of that name.
    #[error("no app named `{0}`")]
    NotFound(String),
    /// The uploaded bundle is malformed.
    #[error("bad bundle: {0}")]
    BadBundle(String),
    /// The app could not be laid out, loaded or prepared.
    #[error("app `{app}` cannot be deployed: {message}")]
    Prepare {
        /// The app name.
        app: String,
        /// What went wrong, with its causes.
        message: String,
    },
    /// The registry refused or failed.
    #[error(transparent)]
    Registry(bantam_registry::RegistryError),
    /// The host's database failed.
    #[error("the host database: {0}")]
    Database(String),
    /// A file of the host could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        error: std::io::Error,
    },
}

impl PlatformError {
    fn bundle(error: std::io::Error) -> Self {
        Self::BadBundle(error.to_string())
    }
}

/// How the host is set up.
#[derive(Debug, Clone)]
pub struct PlatformConfig {
    /// Where apps, their state and the database live.
    pub data_dir: PathBuf,
    /// The port of the public listener, for the URLs the API reports.
    pub public_port: u16,
    /// The limits of an app whose deploys set none: the host's flags.
    pub limits: AppLimits,
    /// The size at which an app's log file is rotated.
    pub max_log_file_size: u64,
}

/// What a deploy sets besides the app itself.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySettings {
    /// Variable values; they are merged over the values already set, so
    /// an update need not repeat them.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Custom domains; `None` keeps the ones already set.
    #[serde(default)]
    pub domains: Option<Vec<String>>,
    /// The app's own limits, in the `[limits]` table's syntax; each one
    /// set replaces the app's current one, the others are kept. Those no
    /// deploy ever set are the host's.
    #[serde(default)]
    pub limits: Limits,
    /// Own limits the app gives up, before `limits` are applied: each then
    /// follows the host's flag again (a value set later, or after a
    /// restart with other flags), as if no deploy had set it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reset_limits: Vec<ResetLimit>,
}

/// Which of an app's own limits a deploy resets: one by its flag's name
/// (`max-memory`, or `max_memory` as in the `[limits]` table), or `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ResetLimit {
    /// Every limit.
    All,
    /// This one.
    One(LimitName),
}

impl ResetLimit {
    /// Unset the limits this names in `own`.
    pub fn apply(self, own: &mut Limits) {
        match self {
            ResetLimit::All => *own = Limits::default(),
            ResetLimit::One(name) => own.clear(name),
        }
    }
}

impl std::str::FromStr for ResetLimit {
    type Err = UnknownLimit;

    fn from_str(name: &str) -> Result<Self, UnknownLimit> {
        if name == "all" {
            return Ok(ResetLimit::All);
        }
        match LimitName::from_name(name) {
            Some(name) if is_app_limit(name) => Ok(ResetLimit::One(name)),
            _ => Err(UnknownLimit(name.into())),
        }
    }
}

impl TryFrom<String> for ResetLimit {
    type Error = UnknownLimit;

    fn try_from(name: String) -> Result<Self, UnknownLimit> {
        name.parse()
    }
}

impl From<ResetLimit> for String {
    fn from(reset: ResetLimit) -> String {
        match reset {
            ResetLimit::All => "all".into(),
            ResetLimit::One(name) => name.as_str().into(),
        }
    }
}

/// Whether an app may have limit `name` of its own: all but the stack
/// size, which is the engine's, one for the whole host (`limits_of`
/// refuses it).
fn is_app_limit(name: LimitName) -> bool {
    name != LimitName::MaxStackSize
}

/// A limit to reset that an app cannot have.
#[derive(Debug, thiserror::Error)]
#[error(
    "there is no limit `{0}` to reset: name one of {known}, or `all`",
    known = LimitName::ALL
        .into_iter()
        .filter(|name| is_app_limit(*name))
        .map(LimitName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
)]
pub struct UnknownLimit(String);

/// One deployed version of an app, serving.
struct Release {
    trigger: Arc<HttpTrigger>,
    /// The loaded app owns the directories its components' files are
    /// mounted from: it lives as long as a request on this release.
    _app: bantam_app::App,
    /// The app directory the lock was laid out in.
    _layout: tempfile::TempDir,
}

/// An app on this host.
struct DeployedApp {
    name: String,
    /// `None` when the app could not be prepared at start-up.
    live: ArcSwapOption<Release>,
    metrics: Arc<AppMetrics>,
    state: RwLock<AppState>,
}

/// What the API shows of an app, and what a redeploy starts from.
struct AppState {
    stored: StoredApp,
    lock: LockedApp,
    /// Why the app is not serving, if it is not.
    error: Option<String>,
}

/// The host of many apps.
pub struct Platform {
    config: PlatformConfig,
    engine: Arc<Engine>,
    store: Store,
    blobs: Cache,
    apps: RwLock<BTreeMap<String, Arc<DeployedApp>>>,
    /// Host name (lower case, no port) to app: read on every request.
    hosts: ArcSwap<HashMap<String, Arc<DeployedApp>>>,
    /// Held while the set of apps changes, so deploys do not interleave.
    changing: Mutex<()>,
}

/// The suffix of every app's own host name.
pub const APP_DOMAIN: &str = "localhost";

impl Platform {
    /// Open the data directory and prepare every app stored in it. An
    /// app that no longer prepares is listed as failed, not fatal.
    pub fn open(config: PlatformConfig, engine: Arc<Engine>) -> Result<Arc<Self>, PlatformError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| PlatformError::Io { path, error }
        };
        std::fs::create_dir_all(&config.data_dir).map_err(io(&config.data_dir))?;
        // Layouts of a previous run that ended abruptly.
        let scratch = config.data_dir.join("tmp");
        if scratch.exists() {
            std::fs::remove_dir_all(&scratch).map_err(io(&scratch))?;
        }
        let store = Store::open(&config.data_dir.join("bantam.db"))?;
        let platform = Arc::new(Self {
            blobs: Cache::new(config.data_dir.join("registry")),
            engine,
            store,
            apps: RwLock::default(),
            hosts: ArcSwap::default(),
            changing: Mutex::new(()),
            config,
        });
        for stored in platform.store.apps()? {
            let name = stored.name.clone();
            let lock: LockedApp = match serde_json::from_str(&stored.lock) {
                Ok(lock) => lock,
                Err(e) => {
                    tracing::error!("app `{name}`: its stored lock does not parse ({e}); skipped");
                    continue;
                }
            };
            let metrics = Arc::new(AppMetrics::default());
            // The host may have restarted with other flags: an app whose
            // own limits no longer fit is listed as failed, to be changed.
            let prepared = platform.limits_of(&name, &stored.limits).and_then(|limits| {
                platform.prepare(&name, &lock, &stored.variables, limits, &metrics)
            });
            let (release, error) = match prepared {
                Ok(release) => (Some(Arc::new(release)), None),
                Err(error) => {
                    tracing::error!("{error}; it is not served");
                    (None, Some(error.to_string()))
                }
            };
            let app = Arc::new(DeployedApp {
                name: name.clone(),
                live: ArcSwapOption::new(release),
                metrics,
                state: RwLock::new(AppState { stored, lock, error }),
            });
            platform.write_apps().insert(name, app);
        }
        platform.rebuild_hosts();
        Ok(platform)
    }

    /// The blob cache bundles are unpacked into and references pulled into.
    pub fn blobs(&self) -> &Cache {
        &self.blobs
    }

    /// How many apps are deployed.
    pub fn app_count(&self) -> usize {
        self.read_apps().len()
    }

    /// Deploy `lock` as app `name` (`source` says where it came from, for
    /// the history): a new app, or a new release of an existing one that
    /// takes over once it is fully prepared. Blocks while compiling.
    pub fn deploy(
        &self,
        name: &str,
        lock: LockedApp,
        source: &str,
        settings: DeploySettings,
    ) -> Result<AppSummary, PlatformError> {
        check_name(name)?;
        let domains = match &settings.domains {
            Some(domains) => Some(normalize_domains(domains)?),
            None => None,
        };
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let existing = self.read_apps().get(name).cloned();
        let (mut variables, old_domains, mut old_limits, created_at) = match &existing {
            Some(app) => {
                let state = app.state.read().unwrap_or_else(|e| e.into_inner());
                let stored = &state.stored;
                (
                    stored.variables.clone(),
                    stored.domains.clone(),
                    stored.limits.clone(),
                    stored.created_at.clone(),
                )
            }
            None => (BTreeMap::new(), Vec::new(), Limits::default(), store::now()),
        };
        variables.extend(settings.variables);
        let domains = domains.unwrap_or(old_domains);
        self.check_domains_free(name, &domains)?;
        for reset in &settings.reset_limits {
            reset.apply(&mut old_limits);
        }
        let own_limits = settings.limits.or(old_limits);
        let limits = self.limits_of(name, &own_limits)?;

        let version = lock.metadata.get("version").and_then(|v| v.as_str()).map(str::to_owned);
        let number = self.store.begin_deployment(name, version.as_deref(), source)?;
        let metrics = existing.as_ref().map_or_else(Default::default, |app| app.metrics.clone());
        let release = match self.prepare(name, &lock, &variables, limits, &metrics) {
            Ok(release) => Arc::new(release),
            Err(error) => {
                self.store.finish_deployment(name, number, &format!("failed: {error}"))?;
                return Err(error);
            }
        };
        let stored = StoredApp {
            name: name.to_string(),
            lock: serde_json::to_string(&lock).expect("a lock serialises"),
            variables,
            domains,
            limits: own_limits,
            deployment: number,
            created_at,
        };
        self.store.save_app(&stored)?;
        self.store.finish_deployment(name, number, "live")?;
        let state = AppState { stored, lock, error: None };
        let app = match existing {
            Some(app) => {
                // The swap: new requests take the new release; those in
                // flight hold the old one until they finish.
                *app.state.write().unwrap_or_else(|e| e.into_inner()) = state;
                app.live.store(Some(release));
                app
            }
            None => {
                let app = Arc::new(DeployedApp {
                    name: name.to_string(),
                    live: ArcSwapOption::new(Some(release)),
                    metrics,
                    state: RwLock::new(state),
                });
                self.write_apps().insert(name.to_string(), app.clone());
                app
            }
        };
        self.rebuild_hosts();
        tracing::info!("app `{name}`: deployment {number} is live");
        Ok(self.summary(&app))
    }

    /// Change the variables, domains or limits of app `name`: a new
    /// deployment of the release it runs.
    pub fn update_settings(
        &self,
        name: &str,
        settings: DeploySettings,
    ) -> Result<AppSummary, PlatformError> {
        let lock = {
            let apps = self.read_apps();
            let app = apps.get(name).ok_or_else(|| PlatformError::NotFound(name.into()))?;
            app.state.read().unwrap_or_else(|e| e.into_inner()).lock.clone()
        };
        self.deploy(name, lock, "settings", settings)
    }

    /// Remove app `name` and its state (stores, databases, logs). Requests
    /// in flight finish; new ones get 404.
    pub fn delete(&self, name: &str) -> Result<(), PlatformError> {
        let _changing = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let removed = self.write_apps().remove(name);
        let stored = self.store.delete_app(name)?;
        if removed.is_none() && !stored {
            return Err(PlatformError::NotFound(name.into()));
        }
        self.rebuild_hosts();
        let dir = self.state_dir(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|error| PlatformError::Io { path: dir, error })?;
        }
        tracing::info!("app `{name}` deleted");
        Ok(())
    }

    /// Every app, by name.
    pub fn list(&self) -> Vec<AppSummary> {
        let apps: Vec<_> = self.read_apps().values().cloned().collect();
        apps.iter().map(|app| self.summary(app)).collect()
    }

    /// App `name`, with its deployment history.
    pub fn get(&self, name: &str) -> Result<AppDetails, PlatformError> {
        let app = self.find(name)?;
        Ok(AppDetails { summary: self.summary(&app), history: self.store.history(name)? })
    }

    /// The last `lines` lines each component of app `name` wrote to its
    /// stdout and stderr.
    pub fn logs(&self, name: &str, lines: usize) -> Result<Vec<ComponentLogs>, PlatformError> {
        let app = self.find(name)?;
        let components: Vec<String> = {
            let state = app.state.read().unwrap_or_else(|e| e.into_inner());
            state.lock.components.iter().map(|c| c.id.clone()).collect()
        };
        let dir = self.state_dir(name).join("logs");
        Ok(components
            .into_iter()
            .map(|id| ComponentLogs {
                stdout: tail(&dir.join(format!("{id}_stdout.txt")), lines),
                stderr: tail(&dir.join(format!("{id}_stderr.txt")), lines),
                component: id,
            })
            .collect())
    }

    /// Each app's metrics, by name.
    pub fn metrics(&self) -> Vec<(String, Arc<AppMetrics>)> {
        self.read_apps().iter().map(|(name, app)| (name.clone(), app.metrics.clone())).collect()
    }

    fn find(&self, name: &str) -> Result<Arc<DeployedApp>, PlatformError> {
        self.read_apps().get(name).cloned().ok_or_else(|| PlatformError::NotFound(name.into()))
    }

    fn read_apps(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<DeployedApp>>> {
        self.apps.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_apps(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<DeployedApp>>> {
        self.apps.write().unwrap_or_else(|e| e.into_inner())
    }

    fn state_dir(&self, name: &str) -> PathBuf {
        self.config.data_dir.join("apps").join(name)
    }

    /// The limits of app `name`, whose deploys set `own`: those, and the
    /// host's for the rest. Refused: a stack size (the engine's, one for
    /// every instance) and more memory than the host's slots hold.
    fn limits_of(&self, name: &str, own: &Limits) -> Result<AppLimits, PlatformError> {
        let refuse = |message: String| PlatformError::BadLimit { app: name.into(), message };
        if own.max_stack_size.is_some() {
            return Err(refuse(
                "the stack size is the host's (bantam serve --max-stack-size), not an app's".into(),
            ));
        }
        let limits = self.config.limits.with(own).map_err(|e| refuse(e.to_string()))?;
        let most = self.engine.max_instance_memory();
        if limits.max_memory > most {
            return Err(refuse(format!(
                "--max-memory {} is more than this host allows: its --max-memory is {}, the size of every instance's memory slot",
                format_size(limits.max_memory as u64),
                format_size(most as u64)
            )));
        }
        Ok(limits)
    }

    /// Lay the lock out, load it as an app whose state lives in the app's
    /// own directory, open its capabilities and prepare its components,
    /// held to `limits`.
    fn prepare(
        &self,
        name: &str,
        lock: &LockedApp,
        variables: &BTreeMap<String, String>,
        limits: AppLimits,
        metrics: &AppMetrics,
    ) -> Result<Release, PlatformError> {
        let failed = |message: String| PlatformError::Prepare { app: name.into(), message };
        let scratch = self.config.data_dir.join("tmp");
        std::fs::create_dir_all(&scratch)
            .map_err(|error| PlatformError::Io { path: scratch.clone(), error })?;
        let layout = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir_in(&scratch)
            .map_err(|error| PlatformError::Io { path: scratch.clone(), error })?;
        let manifest = bantam_registry::locked::write_app_dir(lock, &self.blobs, layout.path())
            .map_err(|e| failed(e.to_string()))?;
        let mut app = bantam_app::load(&manifest).map_err(|e| failed(e.to_string()))?;
        app.state_dir = self.state_dir(name);
        // On this host the app is known by the name it was deployed as
        // (several apps may share a manifest): in its traces and its
        // `/.well-known/spin/info`, as in its metrics.
        app.name = name.to_string();
        // The host's environment is not the tenant's: variables come
        // from the deploy only.
        let variable_sources = VariableSources {
            flags: variables.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            environment: HashMap::new(),
        };
        let capabilities = AppCapabilities::new(
            &app,
            CapabilityConfig {
                runtime_config: None,
                variable_sources,
                max_outbound_connections: limits.max_outbound_connections,
                max_store_size: limits.max_store_size,
            },
        )
        .map_err(|e| failed(e.to_string()))?;
        let logs = LogConfig {
            log_dir: Some(app.state_dir.join("logs")),
            terminal_rate: None,
            truncate: false,
            max_file_size: self.config.max_log_file_size,
        };
        let trigger =
            HttpTrigger::prepare(&self.engine, &app, &capabilities, &logs, limits, metrics, |_| {})
                .map_err(|e| failed(e.to_string()))?;
        Ok(Release { trigger, _app: app, _layout: layout })
    }

    fn check_domains_free(&self, name: &str, domains: &[String]) -> Result<(), PlatformError> {
        let hosts = self.hosts.load();
        for domain in domains {
            if let Some(owner) = hosts.get(domain).filter(|owner| owner.name != name) {
                return Err(PlatformError::DomainTaken {
                    domain: domain.clone(),
                    app: owner.name.clone(),
                });
            }
        }
        Ok(())
    }

    fn rebuild_hosts(&self) {
        let mut hosts = HashMap::new();
        for app in self.read_apps().values() {
            hosts.insert(format!("{}.{APP_DOMAIN}", app.name), app.clone());
            let state = app.state.read().unwrap_or_else(|e| e.into_inner());
            for domain in &state.stored.domains {
                hosts.insert(domain.clone(), app.clone());
            }
        }
        self.hosts.store(Arc::new(hosts));
    }

    fn summary(&self, app: &DeployedApp) -> AppSummary {
        let state = app.state.read().unwrap_or_else(|e| e.into_inner());
        let mut hosts = vec![format!("{}.{APP_DOMAIN}", app.name)];
        hosts.extend(state.stored.domains.iter().cloned());
        let port = self.config.public_port;
        let routes = match app.live.load_full() {
            Some(release) => release
                .trigger
                .routes()
                .map(|(pattern, component)| RouteSummary {
                    route: pattern.as_str().to_string(),
                    component: component.to_string(),
                })
                .collect(),
            None => Vec::new(),
        };
        let metrics = MetricsSummary::of(&app.metrics);
        let own = state.stored.limits.entries();
        let in_force = state.stored.limits.clone().or(self.config.limits.to_table()).entries();
        let limits = in_force
            .into_iter()
            .zip(own)
            .filter_map(|((name, value), (_, own))| {
                Some(LimitSummary { name, value: value?, set: own.is_some() })
            })
            .collect();
        AppSummary {
            name: app.name.clone(),
            status: if state.error.is_none() { "serving" } else { "failed" },
            error: state.error.clone(),
            version: state.lock.metadata.get("version").and_then(|v| v.as_str()).map(Into::into),
            deployment: state.stored.deployment,
            created_at: state.stored.created_at.clone(),
            urls: hosts.iter().map(|host| format!("http://{host}:{port}/")).collect(),
            hosts,
            routes,
            variables: state
                .lock
                .variables
                .iter()
                .map(|(name, variable)| VariableSummary {
                    name: name.clone(),
                    secret: variable.secret,
                    set: state.stored.variables.contains_key(name),
                })
                .collect(),
            limits,
            metrics,
        }
    }
}

impl bantam_trigger_http::server::Handler for Platform {
    fn handle(
        &self,
        request: http::Request<hyper::body::Incoming>,
        connection: Arc<bantam_trigger_http::ClientConnection>,
    ) -> impl Future<Output = http::Response<WasiBody>> + Send + use<> {
        let host = request_host(&request);
        let app = self.hosts.load().get(&host).cloned();
        // The request keeps the release current on arrival to its end.
        let release = app.as_ref().and_then(|app| app.live.load_full());
        async move {
            match (app, release) {
                (_, Some(release)) => release.trigger.handle(request, &connection).await,
                (Some(app), None) => text(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    format!("app `{}` failed to start; see the host's log\n", app.name),
                ),
                (None, None) => {
                    text(http::StatusCode::NOT_FOUND, format!("no app is deployed at {host}\n"))
                }
            }
        }
    }
}

/// An app as the admin API lists it. Variable values never appear.
#[derive(Debug, Clone, Serialize)]
pub struct AppSummary {
    /// Its name on this host.
    pub name: String,
    /// `serving` or `failed`.
    pub status: &'static str,
    /// Why it is not serving.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The app's own version, if it has one.
    pub version: Option<String>,
    /// The number of the live deployment.
    pub deployment: u64,
    /// When it was first deployed.
    pub created_at: String,
    /// The host names it answers on.
    pub hosts: Vec<String>,
    /// Where to reach it.
    pub urls: Vec<String>,
    /// Its public routes.
    pub routes: Vec<RouteSummary>,
    /// Its variables: names and whether set, never values.
    pub variables: Vec<VariableSummary>,
    /// Its limits, the host's where its deploys set none.
    pub limits: Vec<LimitSummary>,
    /// Its traffic so far.
    pub metrics: MetricsSummary,
}

/// A route and the component serving it.
#[derive(Debug, Clone, Serialize)]
pub struct RouteSummary {
    /// The route pattern.
    pub route: String,
    /// The component id.
    pub component: String,
}

/// A variable, without its value.
#[derive(Debug, Clone, Serialize)]
pub struct VariableSummary {
    /// Its name.
    pub name: String,
    /// Whether the manifest marks it secret.
    pub secret: bool,
    /// Whether a deploy set a value (else the default is used).
    pub set: bool,
}

/// A limit of an app.
#[derive(Debug, Clone, Serialize)]
pub struct LimitSummary {
    /// The name of the flag that sets it (`max-memory`).
    pub name: &'static str,
    /// Its value, as the flag writes it (`64MiB`, `30s`; a zero
    /// `request-timeout` is none).
    pub value: String,
    /// Whether the app's deploys set it (else it is the host's).
    pub set: bool,
}

/// An app's traffic so far, over all its components: enough for a
/// dashboard to chart rates and quantiles from two readings.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsSummary {
    /// Requests answered.
    pub requests: u64,
    /// Requests answered with a 5xx status.
    pub errors: u64,
    /// Guest traps, panics and no-answers.
    pub traps: u64,
    /// Instances alive now.
    pub in_flight: i64,
    /// Latency bucket bounds in seconds.
    pub latency_bounds: &'static [f64],
    /// Requests per latency bucket (not cumulative; one more than the
    /// bounds, for `+Inf`).
    pub latency_counts: Vec<u64>,
}

impl MetricsSummary {
    fn of(metrics: &AppMetrics) -> Self {
        let bounds = &bantam_trigger_http::metrics::LATENCY_BUCKETS;
        let mut summary = Self {
            requests: 0,
            errors: 0,
            traps: 0,
            in_flight: 0,
            latency_bounds: bounds,
            latency_counts: vec![0; bounds.len() + 1],
        };
        for (_, component) in metrics.components() {
            for (status, count) in component.statuses() {
                summary.requests += count;
                if status >= 500 {
                    summary.errors += count;
                }
            }
            summary.traps += component.failures();
            summary.in_flight += component.in_flight();
            let latency = component.latency.snapshot();
            for (total, count) in summary.latency_counts.iter_mut().zip(latency.counts) {
                *total += count;
            }
        }
        summary
    }
}

/// An app with its deployment history.
#[derive(Debug, Clone, Serialize)]
pub struct AppDetails {
    /// The app.
    #[serde(flatten)]
    pub summary: AppSummary,
    /// Its deployments, newest first.
    pub history: Vec<store::DeploymentRecord>,
}

/// The recent output of one component.
#[derive(Debug, Clone, Serialize)]
pub struct ComponentLogs {
    /// The component id.
    pub component: String,
    /// The last lines of its stdout.
    pub stdout: String,
    /// The last lines of its stderr.
    pub stderr: String,
}

/// Whether `name` can be an app name: a host name label.
pub fn check_name(name: &str) -> Result<(), PlatformError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok { Ok(()) } else { Err(PlatformError::BadName(name.into())) }
}

/// Lower-case host names, each checked; no `*.localhost` names, which
/// are the apps' own.
fn normalize_domains(domains: &[String]) -> Result<Vec<String>, PlatformError> {
    let mut out = Vec::new();
    for domain in domains {
        let lower = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let labels_ok = lower.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
        let reserved = lower == APP_DOMAIN || lower.ends_with(&format!(".{APP_DOMAIN}"));
        if lower.len() > 253 || !lower.contains('.') || !labels_ok || reserved {
            return Err(PlatformError::BadDomain(domain.clone()));
        }
        if !out.contains(&lower) {
            out.push(lower);
        }
    }
    Ok(out)
}

/// The host name a request is for: HTTP/2's authority or HTTP/1's `Host`,
/// lower case, without port or trailing dot.
fn request_host<B>(request: &http::Request<B>) -> String {
    let authority = request.uri().authority().map(|a| a.host().to_string()).or_else(|| {
        let host = request.headers().get(http::header::HOST)?.to_str().ok()?;
        let host = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        Some(host.to_string())
    });
    authority.unwrap_or_default().trim_end_matches('.').to_ascii_lowercase()
}

/// The last `lines` lines of the file at `path` (empty if there is none),
/// reading at most its last 256 KiB.
fn tail(path: &Path, lines: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    const MAX_READ: u64 = 256 << 10;
    let Ok(mut file) = std::fs::File::open(path) else { return String::new() };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = length.saturating_sub(MAX_READ);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    let keep = &all[all.len().saturating_sub(lines)..];
    let mut out = keep.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

fn text(status: http::StatusCode, body: String) -> http::Response<WasiBody> {
    let mut response = http::Response::new(
        Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed_unsync(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_are_host_name_labels() {
        for good in ["shop", "a", "my-app-2", &"x".repeat(63)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Shop", "-a", "a-", "a.b", "a_b", &"x".repeat(64), "../etc"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_to_reset_are_named_as_flags_or_all() {
        let settings: DeploySettings =
            serde_json::from_str(r#"{ "reset_limits": ["max-memory", "request_timeout", "all"] }"#)
                .unwrap();
        assert_eq!(
            settings.reset_limits,
            [
                ResetLimit::One(LimitName::MaxMemory),
                ResetLimit::One(LimitName::RequestTimeout),
                ResetLimit::All
            ]
        );
        let json = serde_json::to_string(&settings).unwrap();
        assert!(
            json.contains(r#""reset_limits":["max-memory","request-timeout","all"]"#),
            "{json}"
        );
        let error = serde_json::from_str::<DeploySettings>(r#"{ "reset_limits": ["max-cpu"] }"#)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(
                "there is no limit `max-cpu` to reset: name one of request-timeout, max-memory,"
            ) && error.contains("max-outbound-connections, max-store-size, or `all`"),
            "{error}"
        );
        // The stack size is the host's alone: an app has none to reset.
        let error = "max-stack-size".parse::<ResetLimit>().unwrap_err().to_string();
        assert!(
            error.starts_with("there is no limit `max-stack-size` to reset")
                && !error.contains("one of request-timeout, max-memory, max-stack-size"),
            "{error}"
        );

        let mut own = Limits {
            max_memory: Some(1 << 20),
            max_outbound_connections: Some(2),
            ..Limits::default()
        };
        ResetLimit::One(LimitName::MaxMemory).apply(&mut own);
        assert_eq!(own, Limits { max_outbound_connections: Some(2), ..Limits::default() });
        ResetLimit::All.apply(&mut own);
        assert_eq!(own, Limits::default());
    }

    #[test]
    fn domains_are_normalised_and_checked() {
        let domains = normalize_domains(&["Shop.Example.COM.".into(), "shop.example.com".into()]);
        assert_eq!(domains.unwrap(), ["shop.example.com"]);
        for bad in ["localhost", "other.localhost", "nodot", "a..b", "-a.com", "a b.com", ""] {
            assert!(normalize_domains(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_host_comes_from_the_authority_or_the_host_header() {
        let request = |uri: &str, host: Option<&str>| {
            let mut builder = http::Request::builder().uri(uri);
            if let Some(host) = host {
                builder = builder.header("host", host);
            }
            builder.body(()).unwrap()
        };
        assert_eq!(request_host(&request("/", Some("Shop.localhost:3000"))), "shop.localhost");
        assert_eq!(request_host(&request("/", Some("shop.example.com."))), "shop.example.com");
        assert_eq!(request_host(&request("http://a.localhost:80/x", Some("b"))), "a.localhost");
        assert_eq!(request_host(&request("/", None)), "");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.txt");
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
        assert_eq!(tail(&path, 2), "two\nthree\n");
        assert_eq!(tail(&path, 10), "one\ntwo\nthree\n");
        assert_eq!(tail(&dir.path().join("none"), 2), "");
    }
}
