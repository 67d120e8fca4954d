//! Host capabilities: what a component may use beyond plain WASI, granted
//! per component by the manifest.
//!
//! Spin apps reach the host through Spin's WIT packages (key-value, SQLite,
//! variables, ...). This crate implements those interfaces, with Spin's
//! exact package names and versions (`wit/`), so that components built with
//! any Spin SDK link and behave as they do on Spin.
//!
//! Everything is decided at start-up:
//!
//! - [`AppCapabilities::new`] reads the runtime config and the variable
//!   sources, resolves every variable, and opens the stores and databases
//!   the app's components were granted.
//! - [`AppCapabilities::for_component`] gives each component its
//!   [`ComponentCapabilities`]: its own variables, the stores and databases
//!   its manifest names, and its resolved `allowed_outbound_hosts`.
//! - Every instance then holds a [`CapabilityState`] pointing at them; the
//!   host functions consult it and refuse anything not granted with the
//!   WIT's own error (`access-denied`, `no-such-store`, ...).
//!
//! Grants never widen at run time, and one component's grants are never
//! visible to another.

mod bindings;
pub mod key_value;
pub mod llm;
pub mod outbound_http;
pub mod outbound_mqtt;
pub mod outbound_mysql;
pub mod outbound_pg;
pub mod outbound_redis;
pub mod runtime_config;
pub mod sqlite;
pub mod variables;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bantam_manifest::allowed_hosts::{AllowedHosts, OutboundTarget};
use indexmap::IndexMap;
use wasmtime::component::{HasData, Linker, ResourceTable};

pub use key_value::KeyValueStore;
pub use runtime_config::RuntimeConfig;
pub use sqlite::SqliteDatabase;
pub use variables::{VariableSources, Variables};

/// Why the capabilities of an app could not be set up at start-up.
#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    /// The runtime config file is malformed.
    #[error(transparent)]
    RuntimeConfig(#[from] runtime_config::RuntimeConfigError),
    /// A variable is missing, malformed or refers to an undefined one.
    #[error(transparent)]
    Variables(#[from] variables::VariableError),
    /// A component names a store the runtime config does not define.
    #[error(
        "component `{component}` uses key-value store `{label}`, which is not defined: add `[key_value_store.{label}]` to the runtime config file"
    )]
    UndefinedKeyValueStore {
        /// The component id.
        component: String,
        /// The store label.
        label: String,
    },
    /// A component names a database the runtime config does not define.
    #[error(
        "component `{component}` uses SQLite database `{label}`, which is not defined: add `[sqlite_database.{label}]` to the runtime config file"
    )]
    UndefinedSqliteDatabase {
        /// The component id.
        component: String,
        /// The database label.
        label: String,
    },
    /// An `allowed_outbound_hosts` entry is malformed once its templates
    /// are expanded.
    #[error("component `{component}` allowed_outbound_hosts: {message}")]
    AllowedHost {
        /// The component id.
        component: String,
        /// What is wrong with which entry.
        message: String,
    },
    /// A store or database could not be opened.
    #[error("{what}: {message}")]
    Open {
        /// Which store or database, e.g. "key-value store `default` (.spin/sqlite_key_value.db)".
        what: String,
        /// Why.
        message: String,
    },
}

/// What the CLI tells the capabilities at start-up.
#[derive(Debug)]
pub struct CapabilityConfig {
    /// The parsed runtime config file, if one was given.
    pub runtime_config: Option<RuntimeConfig>,
    /// Where variable values come from besides the manifest's defaults.
    pub variable_sources: VariableSources,
    /// Outbound HTTP requests one instance may have in flight at once.
    pub max_outbound_connections: usize,
    /// The most bytes each key-value store's or SQLite database's file (or
    /// database in memory) may hold; `None` for no limit.
    pub max_store_size: Option<u64>,
}

impl Default for CapabilityConfig {
    fn default() -> Self {
        Self {
            runtime_config: None,
            variable_sources: VariableSources::default(),
            max_outbound_connections: outbound_http::DEFAULT_MAX_OUTBOUND_CONNECTIONS,
            max_store_size: None,
        }
    }
}

/// The capabilities of one app: its stores and databases, opened once, and
/// its resolved variables.
pub struct AppCapabilities {
    variables: Variables,
    key_value_stores: HashMap<String, Arc<KeyValueStore>>,
    sqlite_databases: HashMap<String, Arc<SqliteDatabase>>,
    local: Arc<OnceLock<outbound_http::LocalHandler>>,
    max_outbound_connections: usize,
}

impl AppCapabilities {
    /// Resolve the app's variables and open every store and database its
    /// components were granted. Fails, naming what is wrong, when a
    /// required variable has no value, a granted label is not defined, or
    /// a store cannot be opened.
    pub fn new(app: &bantam_app::App, config: CapabilityConfig) -> Result<Self, CapabilityError> {
        let runtime_config = config.runtime_config.unwrap_or_default();
        let variables = Variables::resolve(app, &config.variable_sources)?;
        let max_size = config.max_store_size;

        let mut key_value_stores = HashMap::new();
        let mut sqlite_databases = HashMap::new();
        for component in &app.components {
            for label in &component.key_value_stores {
                if key_value_stores.contains_key(label) {
                    continue;
                }
                let store =
                    runtime_config.key_value_store(label, &app.state_dir).ok_or_else(|| {
                        CapabilityError::UndefinedKeyValueStore {
                            component: component.id.clone(),
                            label: label.clone(),
                        }
                    })?;
                key_value_stores
                    .insert(label.clone(), Arc::new(KeyValueStore::open(label, store, max_size)?));
            }
            for label in &component.sqlite_databases {
                if sqlite_databases.contains_key(label) {
                    continue;
                }
                let path =
                    runtime_config.sqlite_database(label, &app.state_dir).ok_or_else(|| {
                        CapabilityError::UndefinedSqliteDatabase {
                            component: component.id.clone(),
                            label: label.clone(),
                        }
                    })?;
                sqlite_databases
                    .insert(label.clone(), Arc::new(SqliteDatabase::open(label, path, max_size)?));
            }
        }
        Ok(Self {
            variables,
            key_value_stores,
            sqlite_databases,
            local: Arc::default(),
            max_outbound_connections: config.max_outbound_connections,
        })
    }

    /// An opened key-value store, e.g. `default` for `bantam up --key-value`.
    pub fn key_value(&self, label: &str) -> Option<&KeyValueStore> {
        self.key_value_stores.get(label).map(AsRef::as_ref)
    }

    /// An opened SQLite database, e.g. `default` for `bantam up --sqlite`.
    pub fn sqlite(&self, label: &str) -> Option<&Arc<SqliteDatabase>> {
        self.sqlite_databases.get(label)
    }

    /// Where the default store and database live, if a component uses
    /// them, for the start-up summary as Spin words it; paths are shown
    /// relative to `app_dir`.
    pub fn storage_summary(&self, app_dir: &Path) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(store) = self.key_value_stores.get("default") {
            let place = store.describe_relative_to(app_dir);
            lines.push(format!("Storing default key-value data to {place}"));
        }
        if let Some(db) = self.sqlite_databases.get("default") {
            let place = db.describe_relative_to(app_dir);
            lines.push(format!("Storing default SQLite data to {place}"));
        }
        lines
    }

    /// Serve the app's requests to itself (`http://<component>.spin.internal/`)
    /// with `handler`, in-process. Set once the trigger exists; until then,
    /// and if never set, such requests fail.
    pub fn serve_local_requests(&self, handler: outbound_http::LocalHandler) {
        // Set once per app: a second trigger for the same app would be a
        // programming error, and the first handler stays in place.
        let _ = self.local.set(handler);
    }

    /// What one component may use.
    pub fn for_component(
        &self,
        component: &bantam_app::Component,
    ) -> Result<Arc<ComponentCapabilities>, CapabilityError> {
        let variables = self.variables.for_component(component)?;
        // Host templates refer to the component's variables, as in Spin.
        let allowed_outbound_hosts = variables::expand_entries(
            &component.id,
            "allowed_outbound_hosts",
            &component.allowed_outbound_hosts,
            &variables,
        )?;
        let allowed_hosts = AllowedHosts::parse(&allowed_outbound_hosts).map_err(|error| {
            CapabilityError::AllowedHost {
                component: component.id.clone(),
                message: error.to_string(),
            }
        })?;
        let http = outbound_http::HttpClient::new(&component.id, &allowed_hosts);
        Ok(Arc::new(ComponentCapabilities {
            id: component.id.clone(),
            variables,
            key_value_stores: grants(&component.key_value_stores, &self.key_value_stores),
            sqlite_databases: grants(&component.sqlite_databases, &self.sqlite_databases),
            allowed_hosts,
            http,
            local: Arc::clone(&self.local),
            max_outbound_connections: self.max_outbound_connections,
            ai_models: component.ai_models.clone(),
        }))
    }
}

/// What one component was granted. Immutable, shared by all its instances.
pub struct ComponentCapabilities {
    /// The component id, for log lines.
    pub id: String,
    /// The component's variables, resolved: name to value.
    variables: IndexMap<String, variables::Value>,
    /// The key-value stores it may open, by label.
    key_value_stores: IndexMap<String, Arc<KeyValueStore>>,
    /// The SQLite databases it may open, by label.
    sqlite_databases: IndexMap<String, Arc<SqliteDatabase>>,
    /// `allowed_outbound_hosts` with `{{ variable }}` templates expanded
    /// (entries that expanded to nothing are left out, as in Spin), parsed.
    allowed_hosts: AllowedHosts,
    /// The component's outbound HTTP client: its own connection pool.
    http: outbound_http::HttpClient,
    /// Where requests to the app itself go (service chaining).
    local: Arc<OnceLock<outbound_http::LocalHandler>>,
    /// Outbound HTTP requests one instance may have in flight at once.
    max_outbound_connections: usize,
    /// The AI models it may use.
    ai_models: Vec<String>,
}

impl std::fmt::Debug for ComponentCapabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentCapabilities")
            .field("id", &self.id)
            .field("key_value_stores", &self.key_value_stores.keys())
            .field("sqlite_databases", &self.sqlite_databases.keys())
            .field("allowed_hosts", &self.allowed_hosts)
            .finish_non_exhaustive()
    }
}

impl ComponentCapabilities {
    /// Capabilities that grant nothing (a bare component file).
    pub fn none(id: &str) -> Arc<Self> {
        Arc::new(Self {
            id: id.to_string(),
            variables: IndexMap::new(),
            key_value_stores: IndexMap::new(),
            sqlite_databases: IndexMap::new(),
            allowed_hosts: AllowedHosts::default(),
            http: outbound_http::HttpClient::new(id, &AllowedHosts::default()),
            local: Arc::default(),
            max_outbound_connections: outbound_http::DEFAULT_MAX_OUTBOUND_CONNECTIONS,
            ai_models: Vec::new(),
        })
    }
}

/// The capability state of one instance.
pub struct CapabilityState {
    component: Arc<ComponentCapabilities>,
}

impl CapabilityState {
    /// The state of a fresh instance of a component with these grants.
    pub fn new(component: Arc<ComponentCapabilities>) -> Self {
        Self { component }
    }

    /// What the component was granted.
    pub fn component(&self) -> &Arc<ComponentCapabilities> {
        &self.component
    }
}

/// What the host functions work on: the instance's capability state and
/// its resource table (open stores and connections live there).
pub struct CapabilitiesView<'a> {
    /// The instance's grants.
    pub state: &'a CapabilityState,
    /// The instance's resource table.
    pub table: &'a mut ResourceTable,
}

/// Marker naming [`CapabilitiesView`] as the data of the host functions.
struct Capabilities;

impl HasData for Capabilities {
    type Data<'a> = CapabilitiesView<'a>;
}

/// Add every capability interface to `linker`; `view` finds an instance's
/// [`CapabilitiesView`] in its store data.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> CapabilitiesView<'_>,
) -> wasmtime::Result<()> {
    bindings::Host_::add_to_linker::<T, Capabilities>(linker, view)
}

/// Add the capability interfaces that have no `async` function in their
/// WIT to `linker`, for an engine without component-model concurrency:
/// Spin's version 2 interfaces (`fermyon:spin/*@2.0.0`, spin-sdk 2 to 5),
/// `wasi:keyvalue` and `wasi:config`. Spin's version 3 interfaces are
/// `async` in their WIT and need [`add_to_linker`]'s engine.
pub fn add_sync_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> CapabilitiesView<'_>,
) -> wasmtime::Result<()> {
    use bindings::{fermyon::spin, wasi};
    spin::key_value::add_to_linker::<T, Capabilities>(linker, view)?;
    spin::variables::add_to_linker::<T, Capabilities>(linker, view)?;
    spin::sqlite::add_to_linker::<T, Capabilities>(linker, view)?;
    spin::redis::add_to_linker::<T, Capabilities>(linker, view)?;
    spin::mqtt::add_to_linker::<T, Capabilities>(linker, view)?;
    spin::postgres::add_to_linker::<T, Capabilities>(linker, view)?;
    spin::mysql::add_to_linker::<T, Capabilities>(linker, view)?;
    spin::llm::add_to_linker::<T, Capabilities>(linker, view)?;
    wasi::keyvalue::store::add_to_linker::<T, Capabilities>(linker, view)?;
    wasi::keyvalue::atomics::add_to_linker::<T, Capabilities>(linker, view)?;
    wasi::keyvalue::batch::add_to_linker::<T, Capabilities>(linker, view)?;
    wasi::config::store::add_to_linker::<T, Capabilities>(linker, view)?;
    Ok(())
}

/// Check that `component` may connect to `url` (`redis://host:port`,
/// `postgres://user@host/db`, ...), by its `allowed_outbound_hosts`, and
/// return where it leads. A refusal is logged, naming the entry that is
/// missing, and the message is returned for the guest's error.
pub(crate) fn check_outbound(
    component: &ComponentCapabilities,
    url: &str,
) -> Result<OutboundTarget, String> {
    let target = OutboundTarget::parse(url).map_err(|error| error.to_string())?;
    if !component.allowed_hosts.admits(&target) {
        let message = format!(
            "component `{}`: connection to {target} denied: add \"{}\" to its allowed_outbound_hosts",
            component.id,
            target.as_entry()
        );
        tracing::warn!("{message}");
        return Err(message);
    }
    if let Some(ip) = target.ip() {
        check_address(&component.id, &component.allowed_hosts, &target.host, ip)?;
    }
    Ok(target)
}

/// An outbound destination that passed [`check_outbound_resolved`]: the
/// target as the guest named it (its host name stays for TLS) and every
/// address that name resolved to, each checked. Clients connect to these
/// addresses only and never resolve the name again, so a DNS answer that
/// changes after the check (rebinding) cannot lead them anywhere else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckedTarget {
    /// Where the guest asked to connect.
    pub(crate) target: OutboundTarget,
    /// The addresses to connect to, in the resolver's order; never empty.
    pub(crate) addresses: Vec<IpAddr>,
}

/// [`check_outbound`], then resolve a host name and check every address
/// it resolves to with [`check_address`]: a name that leads to loopback or
/// the metadata service is refused like the address itself, unless an
/// entry names it. Any one special address refuses the name (HTTP instead
/// filters them out in its own resolver). The caller connects to the
/// addresses returned, not to the name.
pub(crate) async fn check_outbound_resolved(
    component: &ComponentCapabilities,
    url: &str,
) -> Result<CheckedTarget, String> {
    let target = check_outbound(component, url)?;
    if let Some(ip) = target.ip() {
        return Ok(CheckedTarget { target, addresses: vec![ip] });
    }
    let host = target.host.as_str();
    let unresolved = |error: &dyn std::fmt::Display| {
        let message = format!("component `{}`: cannot resolve {host}: {error}", component.id);
        tracing::warn!("{message}");
        message
    };
    let resolved =
        tokio::net::lookup_host((host, target.port)).await.map_err(|error| unresolved(&error))?;
    let mut addresses = Vec::new();
    for address in resolved {
        check_address(&component.id, &component.allowed_hosts, host, address.ip())?;
        addresses.push(address.ip());
    }
    if addresses.is_empty() {
        return Err(unresolved(&"no address"));
    }
    Ok(CheckedTarget { target, addresses })
}

/// Refuse a special address (loopback, link-local such as the cloud
/// metadata service 169.254.169.254, unspecified) unless an entry names
/// it or the host exactly: a wildcard grant never reaches the host's own
/// services, whatever a name resolves to.
pub(crate) fn check_address(
    component: &str,
    allowed: &AllowedHosts,
    host: &str,
    ip: IpAddr,
) -> Result<(), String> {
    let Some(kind) = special_address(ip) else { return Ok(()) };
    if allowed.names(host, ip) {
        return Ok(());
    }
    let message = format!(
        "component `{component}`: connection to {host} ({ip}) denied: it is a {kind} address, which only an allowed_outbound_hosts entry naming it (such as \"http://{ip}:<port>\") may reach"
    );
    tracing::warn!("{message}");
    Err(message)
}

/// What kind of special address `ip` is, if it is one.
fn special_address(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Some("loopback"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("link-local"),
        IpAddr::V4(v4) if v4.is_unspecified() || v4.is_broadcast() => Some("unspecified"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("loopback"),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some("link-local"),
        IpAddr::V6(v6) if v6.is_unspecified() => Some("unspecified"),
        _ => None,
    }
}

/// The entries of `opened` named in `labels`, in the manifest's order.
fn grants<T>(labels: &[String], opened: &HashMap<String, Arc<T>>) -> IndexMap<String, Arc<T>> {
    labels.iter().filter_map(|l| Some((l.clone(), Arc::clone(opened.get(l)?)))).collect()
}

/// Where a store or database lives, as shown to the user: quoted, and
/// relative to `base` when under it.
fn describe_path(path: Option<&PathBuf>, base: Option<&Path>) -> String {
    match path {
        Some(path) => {
            let shown = base.and_then(|base| path.strip_prefix(base).ok()).unwrap_or(path);
            format!("{:?}", shown.display().to_string())
        }
        None => "memory (not persisted)".to_string(),
    }
}

/// The most one database query (SQLite, PostgreSQL, MySQL) or key-value
/// listing or batch may hold of the host's memory: a result is held whole
/// in the host before it is copied into the guest, so without a cap a
/// query (or a hostile server) could fill the host's memory.
pub(crate) const MAX_RESULT_BYTES: usize = 64 << 20;

/// A result's bytes so far, against [`MAX_RESULT_BYTES`].
pub(crate) struct ResultSize {
    bytes: usize,
    /// What the result is made of, for the advice past the cap.
    of: &'static str,
}

impl ResultSize {
    /// A database query's result, counted from nothing.
    pub(crate) fn rows() -> Self {
        Self { bytes: 0, of: "rows or columns" }
    }

    /// A key-value store's listing or batch, counted from nothing.
    pub(crate) fn keys() -> Self {
        Self { bytes: 0, of: "keys" }
    }

    /// Count a row of `values` values of type `V` whose contents hold
    /// `heap_bytes` besides: what it costs the host, so that a million
    /// rows of NULLs (or of no columns at all) count too.
    pub(crate) fn add_row<V>(&mut self, values: usize, heap_bytes: usize) -> Result<(), String> {
        let row = size_of::<Vec<V>>() + values * size_of::<V>();
        self.add(row + heap_bytes)
    }

    /// Count `bytes` more of the result; past the cap, the message the
    /// guest gets.
    pub(crate) fn add(&mut self, bytes: usize) -> Result<(), String> {
        self.bytes += bytes;
        if self.bytes > MAX_RESULT_BYTES {
            return Err(format!(
                "the result is larger than {} MiB; ask for fewer {}",
                MAX_RESULT_BYTES >> 20,
                self.of
            ));
        }
        Ok(())
    }
}

/// The socket of a connection to a database server that a tenant chose,
/// refusing to read more than `limit` bytes after the last write: one
/// reply, when the connection's requests take turns. Client libraries
/// gather a reply unit whole before Bantam sees it (a Redis bulk string, a
/// PostgreSQL message, of whatever length the server declares), so without
/// this a server could hold any amount of the host's memory.
pub(crate) struct ReplyBudget {
    stream: tokio::net::TcpStream,
    read_since_write: usize,
    limit: usize,
}

impl ReplyBudget {
    /// `stream`, refusing replies of more than `limit` bytes.
    pub(crate) fn new(stream: tokio::net::TcpStream, limit: usize) -> Self {
        Self { stream, read_since_write: 0, limit }
    }
}

impl tokio::io::AsyncRead for ReplyBudget {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.read_since_write > this.limit {
            return std::task::Poll::Ready(Err(std::io::Error::other(format!(
                "the server's reply is larger than {} MiB",
                this.limit >> 20
            ))));
        }
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut this.stream).poll_read(cx, buf);
        this.read_since_write += buf.filled().len() - before;
        polled
    }
}

impl tokio::io::AsyncWrite for ReplyBudget {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.stream).poll_write(cx, data);
        if let std::task::Poll::Ready(Ok(written)) = polled
            && written > 0
        {
            this.read_since_write = 0;
        }
        polled
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// What the clients' tests share: a name no resolver knows, checked as if
/// it led to loopback, so a client that connects at all connected to the
/// checked address and not to the name.
#[cfg(test)]
pub(crate) mod testing {
    use std::net::IpAddr;
    use std::time::Duration;

    use bantam_manifest::allowed_hosts::OutboundTarget;

    use crate::CheckedTarget;

    /// A host name under `.invalid`, which never resolves (RFC 2606).
    pub(crate) const UNRESOLVABLE: &str = "bantam-test.invalid";

    /// A listener on a free loopback port, for a client to reach.
    pub(crate) async fn listener() -> (tokio::net::TcpListener, u16) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        (listener, port)
    }

    /// [`UNRESOLVABLE`] on `port`, checked as resolving to `addresses`.
    pub(crate) async fn checked(scheme: &str, port: u16, addresses: &[&str]) -> CheckedTarget {
        assert!(
            tokio::net::lookup_host((UNRESOLVABLE, port)).await.is_err(),
            "{UNRESOLVABLE} must not resolve, or these tests prove nothing"
        );
        CheckedTarget {
            target: OutboundTarget { scheme: scheme.into(), host: UNRESOLVABLE.into(), port },
            addresses: addresses.iter().map(|a| a.parse::<IpAddr>().unwrap()).collect(),
        }
    }

    /// Whether `connecting` reaches `listener` within five seconds; the
    /// client's own outcome does not matter (nothing answers it).
    pub(crate) async fn reaches<F: Future + Send + 'static>(
        listener: &tokio::net::TcpListener,
        connecting: F,
    ) -> bool
    where
        F::Output: Send,
    {
        let client = tokio::spawn(connecting);
        let accepted = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await;
        client.abort();
        accepted.is_ok_and(|accepted| accepted.is_ok())
    }
}
