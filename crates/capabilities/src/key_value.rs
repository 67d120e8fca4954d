//! Key-value stores and the three interfaces guests use them through:
//! `spin:key-value/key-value@3.0.0` (spin-sdk 7), `fermyon:spin/key-value@2.0.0`
//! (spin-sdk 2 to 5) and `wasi:keyvalue` (store, atomics, batch,
//! `0.2.0-draft2`).
//!
//! A store is opened by label. A component may open only the labels in its
//! `key_value_stores`; any other label is `access-denied`, whether or not it
//! exists, so a component cannot probe for other stores (as in Spin).
//! Labels sharing one backend never see each other's keys: SQLite rows are
//! keyed by (label, key) in Spin's own table layout, and Redis keys are
//! used as they are, one Redis database per store being the user's choice
//! in the URL, as in Spin.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::OptionalExtension;
use wasmtime::component::{Accessor, FutureReader, Resource, StreamReader};

use crate::bindings::fermyon::spin::key_value as v2;
use crate::bindings::spin::key_value::key_value as v3;
use crate::bindings::wasi::keyvalue::{atomics, batch, store as wasi_store};
use crate::runtime_config::KeyValueConfig;
use crate::{Capabilities, CapabilitiesView, CapabilityError, ResultSize};

/// A store failed; the message is given to the guest as the WIT's `other`
/// error and logged.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(String);

impl StoreError {
    fn new(label: &str, error: impl std::fmt::Display) -> Self {
        let message = format!("key-value store `{label}`: {error}");
        tracing::warn!("{message}");
        Self(message)
    }
}

/// One key-value store, shared by every instance that was granted it.
pub struct KeyValueStore {
    /// Shared with each SQLite call, which names its rows by it: a count,
    /// not a copy, per call.
    label: Arc<str>,
    backend: Backend,
}

enum Backend {
    /// Rows of Spin's `spin_key_value` table.
    Sqlite { connection: SqliteQueue, path: Option<PathBuf> },
    /// A Redis server, connected on first use (it may start after
    /// Bantam). The connection manager reconnects after the server goes
    /// away, so a guest gets an error meanwhile, not a dead store.
    Redis {
        client: redis::Client,
        connection: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
        url: String,
    },
}

impl std::fmt::Debug for KeyValueStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyValueStore({}: {})", self.label, self.describe())
    }
}

/// Spin's table layout, so a `.spin/sqlite_key_value.db` written by Spin is
/// read by Bantam and the other way round.
const SQLITE_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS spin_key_value (
    store TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (store, key)
)";

impl KeyValueStore {
    /// Open (creating if needed) the store `label` as configured; one in
    /// SQLite is held to `max_size` bytes if given (a Redis server holds
    /// what its operator lets it).
    pub fn open(
        label: &str,
        config: KeyValueConfig,
        max_size: Option<u64>,
    ) -> Result<Self, CapabilityError> {
        let backend = match config {
            KeyValueConfig::Spin { path } => {
                let opened = match &path {
                    Some(path) => {
                        if let Some(dir) = path.parent() {
                            let _ = std::fs::create_dir_all(dir);
                        }
                        rusqlite::Connection::open(path)
                    }
                    None => rusqlite::Connection::open_in_memory(),
                };
                let connection = opened
                    .and_then(|c| crate::sqlite::limit_size(&c, max_size).map(|()| c))
                    .and_then(|c| c.execute_batch(SQLITE_SCHEMA).map(|()| c))
                    .map_err(|e| open_error(label, &path, e))?;
                Backend::Sqlite { connection: SqliteQueue::new(connection, max_size), path }
            }
            KeyValueConfig::Redis { url } => {
                let client =
                    redis::Client::open(url.as_str()).map_err(|e| CapabilityError::Open {
                        what: format!("key-value store `{label}` ({})", redact_url(&url)),
                        message: e.to_string(),
                    })?;
                Backend::Redis { client, connection: tokio::sync::OnceCell::new(), url }
            }
        };
        Ok(Self { label: label.into(), backend })
    }

    /// Where the data lives, for messages.
    pub fn describe(&self) -> String {
        self.describe_at(None)
    }

    /// Where the data lives, with a path shown relative to `base`.
    pub fn describe_relative_to(&self, base: &Path) -> String {
        self.describe_at(Some(base))
    }

    fn describe_at(&self, base: Option<&Path>) -> String {
        match &self.backend {
            Backend::Sqlite { path, .. } => crate::describe_path(path.as_ref(), base),
            Backend::Redis { url, .. } => redact_url(url),
        }
    }

    /// Run `f` on the SQLite connection, atomically, off the async worker
    /// threads (see [`SqliteQueue`]); `access` says whether it writes.
    async fn sqlite<R: Send + 'static>(
        &self,
        connection: &SqliteQueue,
        access: Access,
        f: impl FnOnce(&rusqlite::Connection, &str) -> rusqlite::Result<R> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (send, receive) = tokio::sync::oneshot::channel();
        let label = Arc::clone(&self.label);
        let max_size = connection.max_size;
        connection.push(Call::new(access, move |connection| {
            let result = in_savepoint(connection, |c| f(c, &label));
            Box::new(move |group_failed: Option<&str>| {
                let _ = send.send(match group_failed {
                    Some(error) => Err(error.to_string()),
                    None => result.map_err(|e| crate::sqlite::error_message(&e, max_size)),
                });
            })
        }));
        match receive.await {
            Ok(result) => result.map_err(|e| StoreError::new(&self.label, e)),
            Err(_) => Err(StoreError::new(&self.label, "the store's connection is gone")),
        }
    }

    fn redis_error(&self, error: redis::RedisError) -> StoreError {
        StoreError::new(&self.label, error)
    }

    /// The Redis connection, made on first use; a failed attempt is
    /// retried by the next call.
    async fn redis(
        &self,
        client: &redis::Client,
        connection: &tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    ) -> Result<redis::aio::ConnectionManager, StoreError> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_connection_timeout(std::time::Duration::from_secs(2))
            .set_response_timeout(std::time::Duration::from_secs(5));
        connection
            .get_or_try_init(|| {
                redis::aio::ConnectionManager::new_with_config(client.clone(), config)
            })
            .await
            .cloned()
            .map_err(|e| self.redis_error(e))
    }

    /// The value of `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match &self.backend {
            Backend::Sqlite { connection, .. } => {
                let key = key.to_string();
                self.sqlite(connection, Access::Read, move |c, store| {
                    c.prepare_cached(
                        "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2",
                    )?
                    .query_row((store, &key), |row| row.get(0))
                    .optional()
                })
                .await
            }
            Backend::Redis { client, connection, .. } => redis::cmd("GET")
                .arg(key)
                .query_async(&mut self.redis(client, connection).await?)
                .await
                .map_err(|e| self.redis_error(e)),
        }
    }

    /// Set `key` to `value`.
    pub async fn set(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.set_many(vec![(key.to_string(), value)]).await
    }

    /// Set several keys at once (atomically on SQLite).
    pub async fn set_many(&self, entries: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Sqlite { connection, .. } => {
                self.sqlite(connection, Access::Write, move |c, store| {
                    let mut insert = c.prepare_cached(
                        "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                         ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
                    )?;
                    for (key, value) in &entries {
                        insert.execute((store, key, value))?;
                    }
                    Ok(())
                })
                .await
            }
            Backend::Redis { client, connection, .. } => {
                let mut cmd = redis::cmd("MSET");
                for (key, value) in &entries {
                    cmd.arg(key).arg(value);
                }
                cmd.query_async(&mut self.redis(client, connection).await?)
                    .await
                    .map_err(|e| self.redis_error(e))
            }
        }
    }

    /// Delete `key`; deleting a missing key is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.delete_many(vec![key.to_string()]).await
    }

    /// Delete several keys.
    pub async fn delete_many(&self, keys: Vec<String>) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Sqlite { connection, .. } => {
                self.sqlite(connection, Access::Write, move |c, store| {
                    let mut delete = c.prepare_cached(
                        "DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2",
                    )?;
                    for key in &keys {
                        delete.execute((store, key))?;
                    }
                    Ok(())
                })
                .await
            }
            Backend::Redis { client, connection, .. } => redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut self.redis(client, connection).await?)
                .await
                .map_err(|e| self.redis_error(e)),
        }
    }

    /// Whether `key` has a value.
    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Sqlite { .. } => Ok(self.get(key).await?.is_some()),
            Backend::Redis { client, connection, .. } => redis::cmd("EXISTS")
                .arg(key)
                .query_async(&mut self.redis(client, connection).await?)
                .await
                .map_err(|e| self.redis_error(e)),
        }
    }

    /// The values of several keys, in order, each `None` if absent. The
    /// keys and values together are held to 64 MiB, as a database result
    /// is: a guest could otherwise ask for one large value a thousand
    /// times.
    pub async fn get_many(
        &self,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, StoreError> {
        let mut size = ResultSize::keys();
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            let value = self.get(&key).await?;
            size.add(key.len() + value.as_ref().map_or(0, Vec::len))
                .map_err(|e| StoreError::new(&self.label, e))?;
            found.push((key, value));
        }
        Ok(found)
    }

    /// Every key in the store, held to 64 MiB in all, as a database
    /// result is: a store may hold more keys than the host should copy at
    /// once.
    pub async fn keys(&self) -> Result<Vec<String>, StoreError> {
        let too_large = |e| StoreError::new(&self.label, e);
        match &self.backend {
            Backend::Sqlite { connection, .. } => self
                .sqlite(connection, Access::Read, |c, store| {
                    let mut select = c.prepare_cached(
                        "SELECT key FROM spin_key_value WHERE store = ?1 ORDER BY key",
                    )?;
                    let mut rows = select.query([store])?;
                    let (mut keys, mut size) = (Vec::new(), ResultSize::keys());
                    while let Some(row) = rows.next()? {
                        let key: String = row.get(0)?;
                        if let Err(e) = size.add(key.len()) {
                            return Ok(Err(e));
                        }
                        keys.push(key);
                    }
                    Ok(Ok(keys))
                })
                .await?
                .map_err(too_large),
            Backend::Redis { client, connection, .. } => {
                let mut connection = self.redis(client, connection).await?;
                let (mut keys, mut size) = (Vec::<String>::new(), ResultSize::keys());
                let mut cursor: u64 = 0;
                loop {
                    let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut connection)
                        .await
                        .map_err(|e| self.redis_error(e))?;
                    size.add(batch.iter().map(String::len).sum()).map_err(too_large)?;
                    keys.extend(batch);
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
                keys.sort();
                keys.dedup();
                Ok(keys)
            }
        }
    }

    /// Add `delta` to the integer stored at `key` (0 if absent) and return
    /// the new value. Values are stored as decimal text, as Redis does.
    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        match &self.backend {
            Backend::Sqlite { connection, .. } => {
                let key = key.to_string();
                let result = self
                    .sqlite(connection, Access::Write, move |c, store| {
                        let current: Option<Vec<u8>> = c
                            .query_row(
                                "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2",
                                (store, &key),
                                |row| row.get(0),
                            )
                            .optional()?;
                        let current = match current {
                            None => 0,
                            Some(bytes) => match std::str::from_utf8(&bytes)
                                .ok()
                                .and_then(|t| t.parse::<i64>().ok())
                            {
                                Some(n) => n,
                                None => return Ok(Err("the value is not an integer")),
                            },
                        };
                        let Some(next) = current.checked_add(delta) else {
                            return Ok(Err("the increment overflows"));
                        };
                        c.execute(
                            "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                             ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
                            (store, &key, next.to_string().into_bytes()),
                        )?;
                        Ok(Ok(next))
                    })
                    .await?;
                result.map_err(|problem| StoreError::new(&self.label, problem))
            }
            Backend::Redis { client, connection, .. } => redis::cmd("INCRBY")
                .arg(key)
                .arg(delta)
                .query_async(&mut self.redis(client, connection).await?)
                .await
                .map_err(|e| self.redis_error(e)),
        }
    }

    /// Set `key` to `value` only if it still holds `expected` (`None`:
    /// absent). Returns whether it was set.
    pub async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> Result<bool, StoreError> {
        match &self.backend {
            Backend::Sqlite { connection, .. } => {
                let key = key.to_string();
                self.sqlite(connection, Access::Write, move |c, store| {
                    let current: Option<Vec<u8>> = c
                        .query_row(
                            "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2",
                            (store, &key),
                            |row| row.get(0),
                        )
                        .optional()?;
                    if current != expected {
                        return Ok(false);
                    }
                    c.execute(
                        "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                         ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
                        (store, &key, &value),
                    )?;
                    Ok(true)
                })
                .await
            }
            Backend::Redis { client, connection, .. } => {
                // One script, so the comparison and the write are atomic.
                let script = redis::Script::new(
                    r"local current = redis.call('GET', KEYS[1])
                      if (ARGV[1] == '0' and current == false) or (ARGV[1] == '1' and current == ARGV[2]) then
                        redis.call('SET', KEYS[1], ARGV[3])
                        return 1
                      end
                      return 0",
                );
                let swapped: i64 = script
                    .key(key)
                    .arg(if expected.is_some() { "1" } else { "0" })
                    .arg(expected.unwrap_or_default())
                    .arg(value)
                    .invoke_async(&mut self.redis(client, connection).await?)
                    .await
                    .map_err(|e| self.redis_error(e))?;
                Ok(swapped == 1)
            }
        }
    }
}

/// One call's work on a store's connection: `run` runs its statements and
/// returns how to answer its caller once the group it ran in has
/// committed, or failed (`Some(why)`).
struct Call {
    access: Access,
    run: Box<dyn FnOnce(&mut rusqlite::Connection) -> Answer + Send>,
}

type Answer = Box<dyn FnOnce(Option<&str>) + Send>;

/// Whether a call writes to the store.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

impl Call {
    fn new(
        access: Access,
        run: impl FnOnce(&mut rusqlite::Connection) -> Answer + Send + 'static,
    ) -> Self {
        Self { access, run: Box::new(run) }
    }
}

/// Run `f` in a savepoint of its own, so that a call that fails undoes
/// only its own writes, also within a group.
fn in_savepoint<R>(
    connection: &mut rusqlite::Connection,
    f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<R>,
) -> rusqlite::Result<R> {
    let savepoint = connection.savepoint()?;
    let result = f(&savepoint)?;
    savepoint.commit()?;
    Ok(result)
}

/// The most calls committed as one transaction.
const MAX_GROUP: usize = 64;

/// A SQLite store's connection and the calls waiting for it, run one after
/// the other by a single task on tokio's blocking pool (rusqlite blocks).
///
/// The task drains the queue, then gives the connection back and ends;
/// the next call starts another. Under load it keeps running, so calls
/// cost no thread wake-up and no lock handed between threads, as one
/// blocking task per call contending for a locked connection did. The
/// calls waiting when it looks are run as a group in one transaction,
/// each in a savepoint of its own: a group of writes is committed, and
/// synced to disk, once (group commit), and each caller is answered only
/// after that commit. Measured in BENCHMARKS.md ("Key-value, examined").
struct SqliteQueue {
    state: Arc<Mutex<QueueState>>,
    /// The most bytes the store may hold, for the message of a write past it.
    max_size: Option<u64>,
}

struct QueueState {
    calls: VecDeque<Call>,
    /// The connection while no task runs calls on it.
    idle: Option<rusqlite::Connection>,
}

impl SqliteQueue {
    fn new(connection: rusqlite::Connection, max_size: Option<u64>) -> Self {
        Self {
            state: Arc::new(Mutex::new(QueueState {
                calls: VecDeque::new(),
                idle: Some(connection),
            })),
            max_size,
        }
    }

    /// Queue `call`, starting a task to run the queue if none is running.
    fn push(&self, call: Call) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.calls.push_back(call);
        if let Some(connection) = state.idle.take() {
            drop(state);
            let mut runner =
                Runner { state: Arc::clone(&self.state), connection: Some(connection) };
            tokio::task::spawn_blocking(move || runner.run());
        }
    }
}

/// The task running a queue's calls. It holds the connection, and gives it
/// back when dropped: also if the runtime drops the task unrun at shutdown,
/// so that the store is never left without its connection.
struct Runner {
    state: Arc<Mutex<QueueState>>,
    connection: Option<rusqlite::Connection>,
}

impl Runner {
    fn run(&mut self) {
        loop {
            let group: Vec<Call> = {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if state.calls.is_empty() {
                    // Given back under the lock: a call queued after this
                    // finds the connection idle and starts a new task.
                    state.idle = self.connection.take();
                    return;
                }
                let n = state.calls.len().min(MAX_GROUP);
                state.calls.drain(..n).collect()
            };
            let connection = self.connection.as_mut().expect("a runner holds the connection");
            run_group(connection, group);
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            // Dropped unfinished: the runtime shutting down, or a call that
            // panicked. A group's transaction left open would swallow the
            // next task's calls, which would never commit.
            if !connection.is_autocommit() {
                let _ = connection.execute_batch("ROLLBACK");
            }
            // The calls still queued would wait for a task no one starts,
            // so their callers are told the connection is gone instead.
            let abandoned = {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                state.idle = Some(connection);
                std::mem::take(&mut state.calls)
            };
            drop(abandoned);
        }
    }
}

/// Run `group` in one transaction (a single read is its own), then answer
/// each call.
///
/// A group that writes takes the write lock at its start (`BEGIN
/// IMMEDIATE`, waiting out another process's writer for up to the busy
/// timeout): a group that first read and then wanted to write could not
/// wait for it, and SQLite would fail the write at once.
fn run_group(connection: &mut rusqlite::Connection, group: Vec<Call>) {
    let writes = group.iter().any(|call| call.access == Access::Write);
    let begin = if writes { "BEGIN IMMEDIATE" } else { "BEGIN" };
    let grouped = (group.len() > 1 || writes) && connection.execute_batch(begin).is_ok();
    // Calls whose writes wait for the group's commit.
    let mut pending: Vec<Answer> = Vec::with_capacity(group.len());
    for call in group {
        let answer = (call.run)(connection);
        if grouped && connection.is_autocommit() {
            // An error (a full disk, an I/O error) made SQLite roll back the
            // whole transaction: the calls before lost their writes. The
            // rest run one by one, each its own transaction.
            for earlier in pending.drain(..) {
                earlier(Some("a write in the same transaction failed, and SQLite rolled it back"));
            }
            answer(None);
        } else if grouped {
            pending.push(answer);
        } else {
            answer(None);
        }
    }
    if grouped && !connection.is_autocommit() {
        let committed = connection.execute_batch("COMMIT");
        let failed = committed.as_ref().err().map(|e| e.to_string());
        if failed.is_some() {
            let _ = connection.execute_batch("ROLLBACK");
        }
        for answer in pending {
            answer(failed.as_deref());
        }
    }
}

fn open_error(label: &str, path: &Option<PathBuf>, error: rusqlite::Error) -> CapabilityError {
    CapabilityError::Open {
        what: format!("key-value store `{label}` ({})", crate::describe_path(path.as_ref(), None)),
        message: error.to_string(),
    }
}

/// A Redis URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// An open store, as a guest holds it.
pub struct OpenStore {
    store: Arc<KeyValueStore>,
}

/// A `wasi:keyvalue/atomics` compare-and-swap handle: the value a key had
/// when the handle was made.
pub struct Cas {
    store: Arc<KeyValueStore>,
    key: String,
    current: Option<Vec<u8>>,
}

/// Why a store could not be opened, before mapping to each WIT's error.
enum OpenError {
    AccessDenied,
    TableFull,
}

impl CapabilitiesView<'_> {
    /// Open `label` if the component was granted it.
    fn open_store(
        &mut self,
        label: &str,
    ) -> wasmtime::Result<Result<Resource<OpenStore>, OpenError>> {
        let component = self.state.component();
        let Some(store) = component.key_value_stores.get(label) else {
            tracing::warn!(
                "component `{}`: key-value store `{label}` denied: it is not in the component's key_value_stores",
                component.id
            );
            return Ok(Err(OpenError::AccessDenied));
        };
        let store = OpenStore { store: Arc::clone(store) };
        Ok(self.table.push(store).map_err(|_| OpenError::TableFull))
    }

    fn store(&self, handle: &Resource<OpenStore>) -> wasmtime::Result<Arc<KeyValueStore>> {
        Ok(Arc::clone(&self.table.get(handle)?.store))
    }
}

fn store_of<T>(
    accessor: &Accessor<T, Capabilities>,
    handle: &Resource<OpenStore>,
) -> wasmtime::Result<Arc<KeyValueStore>> {
    accessor.with(|mut access| access.get().store(handle))
}

// spin:key-value@3.0.0 (spin-sdk 7): concurrent host functions.

impl v3::Host for CapabilitiesView<'_> {}

impl v3::HostStore for CapabilitiesView<'_> {
    async fn drop(&mut self, store: Resource<v3::Store>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

fn v3_error(error: StoreError) -> v3::Error {
    v3::Error::Other(error.0)
}

impl<T> v3::HostStoreWithStore<T> for Capabilities {
    async fn open(
        accessor: &Accessor<T, Self>,
        label: String,
    ) -> wasmtime::Result<Result<Resource<OpenStore>, v3::Error>> {
        let opened = accessor.with(|mut access| access.get().open_store(&label))?;
        Ok(opened.map_err(|error| match error {
            OpenError::AccessDenied => v3::Error::AccessDenied,
            OpenError::TableFull => v3::Error::StoreTableFull,
        }))
    }

    async fn get(
        accessor: &Accessor<T, Self>,
        store: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, v3::Error>> {
        let store = store_of(accessor, &store)?;
        Ok(store.get(&key).await.map_err(v3_error))
    }

    async fn set(
        accessor: &Accessor<T, Self>,
        store: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), v3::Error>> {
        let store = store_of(accessor, &store)?;
        Ok(store.set(&key, value).await.map_err(v3_error))
    }

    async fn delete(
        accessor: &Accessor<T, Self>,
        store: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<(), v3::Error>> {
        let store = store_of(accessor, &store)?;
        Ok(store.delete(&key).await.map_err(v3_error))
    }

    async fn exists(
        accessor: &Accessor<T, Self>,
        store: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<bool, v3::Error>> {
        let store = store_of(accessor, &store)?;
        Ok(store.exists(&key).await.map_err(v3_error))
    }

    async fn get_keys(
        accessor: &Accessor<T, Self>,
        store: Resource<OpenStore>,
    ) -> wasmtime::Result<(StreamReader<String>, FutureReader<Result<(), v3::Error>>)> {
        let store = store_of(accessor, &store)?;
        let (keys, result) = match store.keys().await {
            Ok(keys) => (keys, Ok(())),
            Err(error) => (Vec::new(), Err(v3_error(error))),
        };
        accessor.with(|mut access| {
            let keys = StreamReader::new(&mut access, keys)?;
            let result =
                FutureReader::new(&mut access, async move { Ok::<_, wasmtime::Error>(result) })?;
            Ok((keys, result))
        })
    }
}

// fermyon:spin/key-value@2.0.0 (spin-sdk 2 to 5).

impl v2::Host for CapabilitiesView<'_> {}

fn v2_error(error: StoreError) -> v2::Error {
    v2::Error::Other(error.0)
}

impl v2::HostStore for CapabilitiesView<'_> {
    async fn open(
        &mut self,
        label: String,
    ) -> wasmtime::Result<Result<Resource<OpenStore>, v2::Error>> {
        Ok(self.open_store(&label)?.map_err(|error| match error {
            OpenError::AccessDenied => v2::Error::AccessDenied,
            OpenError::TableFull => v2::Error::StoreTableFull,
        }))
    }

    async fn get(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, v2::Error>> {
        Ok(self.store(&store)?.get(&key).await.map_err(v2_error))
    }

    async fn set(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), v2::Error>> {
        Ok(self.store(&store)?.set(&key, value).await.map_err(v2_error))
    }

    async fn delete(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<(), v2::Error>> {
        Ok(self.store(&store)?.delete(&key).await.map_err(v2_error))
    }

    async fn exists(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<bool, v2::Error>> {
        Ok(self.store(&store)?.exists(&key).await.map_err(v2_error))
    }

    async fn get_keys(
        &mut self,
        store: Resource<OpenStore>,
    ) -> wasmtime::Result<Result<Vec<String>, v2::Error>> {
        Ok(self.store(&store)?.keys().await.map_err(v2_error))
    }

    async fn drop(&mut self, store: Resource<OpenStore>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

// wasi:keyvalue@0.2.0-draft2: store, atomics and batch.

fn wasi_error(error: StoreError) -> wasi_store::Error {
    wasi_store::Error::Other(error.0)
}

impl wasi_store::Host for CapabilitiesView<'_> {
    async fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<OpenStore>, wasi_store::Error>> {
        Ok(self.open_store(&identifier)?.map_err(|error| match error {
            OpenError::AccessDenied => wasi_store::Error::AccessDenied,
            OpenError::TableFull => wasi_store::Error::Other("too many open stores".into()),
        }))
    }
}

impl wasi_store::HostBucket for CapabilitiesView<'_> {
    async fn get(
        &mut self,
        bucket: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wasi_store::Error>> {
        Ok(self.store(&bucket)?.get(&key).await.map_err(wasi_error))
    }

    async fn set(
        &mut self,
        bucket: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wasi_store::Error>> {
        Ok(self.store(&bucket)?.set(&key, value).await.map_err(wasi_error))
    }

    async fn delete(
        &mut self,
        bucket: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<(), wasi_store::Error>> {
        Ok(self.store(&bucket)?.delete(&key).await.map_err(wasi_error))
    }

    async fn exists(
        &mut self,
        bucket: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<bool, wasi_store::Error>> {
        Ok(self.store(&bucket)?.exists(&key).await.map_err(wasi_error))
    }

    /// All keys in one response, with no cursor (as Spin answers).
    async fn list_keys(
        &mut self,
        bucket: Resource<OpenStore>,
        _cursor: Option<String>,
    ) -> wasmtime::Result<Result<wasi_store::KeyResponse, wasi_store::Error>> {
        Ok(self
            .store(&bucket)?
            .keys()
            .await
            .map(|keys| wasi_store::KeyResponse { keys, cursor: None })
            .map_err(wasi_error))
    }

    async fn drop(&mut self, bucket: Resource<OpenStore>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for CapabilitiesView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<OpenStore>,
        key: String,
        delta: i64,
    ) -> wasmtime::Result<Result<i64, wasi_store::Error>> {
        Ok(self.store(&bucket)?.increment(&key, delta).await.map_err(wasi_error))
    }

    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let handle = self.table.get(&cas)?;
        let (store, key, expected) =
            (Arc::clone(&handle.store), handle.key.clone(), handle.current.clone());
        match store.compare_and_swap(&key, expected, value).await {
            Ok(true) => {
                self.table.delete(cas)?;
                Ok(Ok(()))
            }
            // The guest gets its handle back to retry with.
            Ok(false) => Ok(Err(atomics::CasError::CasFailed(cas))),
            Err(error) => {
                self.table.delete(cas)?;
                Ok(Err(atomics::CasError::StoreError(wasi_error(error))))
            }
        }
    }
}

impl atomics::HostCas for CapabilitiesView<'_> {
    async fn new(
        &mut self,
        bucket: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<Resource<Cas>, wasi_store::Error>> {
        let store = self.store(&bucket)?;
        let current = match store.get(&key).await {
            Ok(current) => current,
            Err(error) => return Ok(Err(wasi_error(error))),
        };
        match self.table.push(Cas { store, key, current }) {
            Ok(cas) => Ok(Ok(cas)),
            Err(_) => Ok(Err(wasi_store::Error::Other("too many open handles".into()))),
        }
    }

    async fn current(
        &mut self,
        cas: Resource<Cas>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wasi_store::Error>> {
        Ok(Ok(self.table.get(&cas)?.current.clone()))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for CapabilitiesView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<OpenStore>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<(String, Option<Vec<u8>>)>, wasi_store::Error>> {
        Ok(self.store(&bucket)?.get_many(keys).await.map_err(wasi_error))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<OpenStore>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<(), wasi_store::Error>> {
        Ok(self.store(&bucket)?.set_many(key_values).await.map_err(wasi_error))
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<OpenStore>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<(), wasi_store::Error>> {
        Ok(self.store(&bucket)?.delete_many(keys).await.map_err(wasi_error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_store(dir: &Path) -> KeyValueStore {
        let path = dir.join("kv.db");
        KeyValueStore::open("default", KeyValueConfig::Spin { path: Some(path) }, None).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_made_together_all_answer_and_all_reach_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(file_store(dir.path()));
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..200 {
            let store = Arc::clone(&store);
            calls.spawn(async move {
                let key = format!("key-{i}");
                store.set(&key, i.to_string().into_bytes()).await.unwrap();
                let counted = store.increment("count", 1).await.unwrap();
                let read = store.get(&key).await.unwrap();
                (read, counted)
            });
        }
        let mut counts = Vec::new();
        while let Some(joined) = calls.join_next().await {
            let (read, counted) = joined.unwrap();
            assert!(read.is_some(), "a set key reads back");
            counts.push(counted);
        }
        // Each increment saw the ones before it: no two callers got the
        // same count.
        counts.sort();
        assert_eq!(counts, (1..=200).collect::<Vec<i64>>());

        // Another connection to the file sees every write: each was
        // committed before its caller was answered.
        let other = rusqlite::Connection::open(dir.path().join("kv.db")).unwrap();
        let rows: i64 = other
            .query_row("SELECT count(*) FROM spin_key_value WHERE store = 'default'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(rows, 201);
        let value: Vec<u8> = other
            .query_row("SELECT value FROM spin_key_value WHERE key = 'key-7'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(value, b"7");
    }

    /// A call running `sql` as `KeyValueStore::sqlite` runs each call,
    /// whose answer is added to `answers` as text.
    fn call(sql: &'static str, answers: &Arc<Mutex<Vec<String>>>) -> Call {
        let answers = Arc::clone(answers);
        Call::new(Access::Write, move |connection| -> Answer {
            let result = in_savepoint(connection, |c| c.execute_batch(sql));
            Box::new(move |failed: Option<&str>| {
                let answer = match (failed, result) {
                    (Some(why), _) => format!("group failed: {why}"),
                    (None, Ok(())) => "ok".to_string(),
                    (None, Err(error)) => format!("error: {error}"),
                };
                answers.lock().unwrap().push(answer);
            })
        })
    }

    /// Answers of a group, in order.
    fn run_calls(connection: &mut rusqlite::Connection, sqls: &[&'static str]) -> Vec<String> {
        let answers = Arc::new(Mutex::new(Vec::new()));
        run_group(connection, sqls.iter().map(|&sql| call(sql, &answers)).collect());
        Arc::try_unwrap(answers).unwrap().into_inner().unwrap()
    }

    /// A connection to `path` (in memory if `None`) with a table `t` of
    /// numbers.
    fn with_numbers(path: Option<&Path>) -> rusqlite::Connection {
        let connection = match path {
            Some(path) => rusqlite::Connection::open(path),
            None => rusqlite::Connection::open_in_memory(),
        };
        let connection = connection.unwrap();
        connection.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY)").unwrap();
        connection
    }

    /// The numbers in table `t`, in order.
    fn numbers(connection: &rusqlite::Connection) -> Vec<i64> {
        let mut select = connection.prepare("SELECT n FROM t ORDER BY n").unwrap();
        let rows = select.query_map([], |row| row.get(0)).unwrap();
        rows.collect::<rusqlite::Result<_>>().unwrap()
    }

    #[test]
    fn a_call_that_fails_in_a_group_undoes_only_its_own_writes() {
        let mut connection = with_numbers(None);
        let answers = run_calls(
            &mut connection,
            &[
                "INSERT INTO t VALUES (1)",
                // Its first insert is undone with it.
                "INSERT INTO t VALUES (2); INSERT INTO t VALUES (1)",
                "INSERT INTO t VALUES (3)",
            ],
        );
        assert_eq!(answers[0], "ok");
        assert!(answers[1].starts_with("error: UNIQUE constraint failed"), "{answers:?}");
        assert_eq!(answers[2], "ok");
        assert_eq!(numbers(&connection), [1, 3]);
        assert!(connection.is_autocommit(), "the group's transaction is over");
    }

    #[test]
    fn when_sqlite_rolls_back_a_group_the_calls_before_are_told() {
        let mut connection = with_numbers(None);
        // A call that ends the transaction itself stands for the errors
        // (a full disk, an I/O error) after which SQLite rolls back the
        // whole transaction.
        let answers = run_calls(
            &mut connection,
            &["INSERT INTO t VALUES (1)", "ROLLBACK", "INSERT INTO t VALUES (3)"],
        );
        assert!(answers[0].starts_with("group failed:"), "{answers:?}");
        assert_eq!(answers[2], "ok", "{answers:?}");
        assert_eq!(
            numbers(&connection),
            [3],
            "the first insert was rolled back, the last committed"
        );
    }

    #[test]
    fn a_call_that_panics_leaves_the_store_usable_and_no_caller_waiting() {
        let queue = SqliteQueue::new(with_numbers(None), None);
        let answers = Arc::new(Mutex::new(Vec::new()));
        let panics = Call::new(Access::Write, |_| -> Answer { panic!("a bug") });
        // Three calls waiting together, the second of which panics, run
        // as the blocking task would run them.
        let mut runner = {
            let mut state = queue.state.lock().unwrap();
            state.calls.extend([call("INSERT INTO t VALUES (1)", &answers), panics]);
            state.calls.push_back(call("INSERT INTO t VALUES (3)", &answers));
            Runner { state: Arc::clone(&queue.state), connection: state.idle.take() }
        };
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runner.run()));
        assert!(run.is_err());
        drop(runner);

        let mut state = queue.state.lock().unwrap();
        assert!(state.calls.is_empty(), "the third call was dropped, its caller told");
        assert!(answers.lock().unwrap().is_empty(), "no caller was told it succeeded");
        let connection = state.idle.as_mut().expect("the connection is back");
        assert!(connection.is_autocommit(), "the group's transaction was rolled back");
        assert_eq!(run_calls(connection, &["INSERT INTO t VALUES (4)"]), ["ok"]);
        assert_eq!(numbers(connection), [4]);
    }

    #[test]
    fn a_group_that_reads_then_writes_waits_for_another_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.db");
        let mut connection = with_numbers(Some(&path));
        // Another process's writer, holding the write lock for a while.
        let other = rusqlite::Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (2)").unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            other.execute_batch("COMMIT").unwrap();
        });

        let answers = Arc::new(Mutex::new(Vec::new()));
        let read = {
            let answers = Arc::clone(&answers);
            Call::new(Access::Read, move |connection| -> Answer {
                let rows: rusqlite::Result<i64> =
                    connection.query_row("SELECT count(*) FROM t", [], |row| row.get(0));
                Box::new(move |failed: Option<&str>| {
                    answers.lock().unwrap().push(format!("{failed:?} {rows:?}"));
                })
            })
        };
        run_group(&mut connection, vec![read, call("INSERT INTO t VALUES (1)", &answers)]);
        writer.join().unwrap();

        // The group began after the other writer committed: it read that
        // writer's row, and its own write went in.
        assert_eq!(*answers.lock().unwrap(), ["None Ok(1)", "ok"]);
        assert_eq!(numbers(&connection), [1, 2]);
    }

    /// A listing or a batch larger than the host should copy at once
    /// fails with a message that says why; one within the cap is whole.
    #[tokio::test]
    async fn listings_and_batches_are_held_to_64_mib() {
        let store =
            KeyValueStore::open("default", KeyValueConfig::Spin { path: None }, None).unwrap();
        let mebibyte = vec![b'x'; 1 << 20];
        store.set("big", mebibyte.clone()).await.unwrap();
        let many = vec!["big".to_string(); 60];
        assert_eq!(store.get_many(many).await.unwrap().len(), 60);
        let too_many = vec!["big".to_string(); 65];
        let error = store.get_many(too_many).await.unwrap_err().to_string();
        assert!(error.ends_with("the result is larger than 64 MiB; ask for fewer keys"), "{error}");

        // Keys of 1 MiB each, 65 of them: the listing stops at the cap.
        let key = |i: usize| format!("{i:02}{}", "k".repeat((1 << 20) - 2));
        store.set_many((0..60).map(|i| (key(i), Vec::new())).collect()).await.unwrap();
        assert_eq!(store.keys().await.unwrap().len(), 61);
        store.set_many((60..65).map(|i| (key(i), Vec::new())).collect()).await.unwrap();
        let error = store.keys().await.unwrap_err().to_string();
        assert!(error.ends_with("the result is larger than 64 MiB; ask for fewer keys"), "{error}");
        assert!(store.get("big").await.unwrap().is_some(), "the store is unharmed");
    }

    /// A store's file grows to its size limit and no further: the write
    /// past it fails with a message naming the limit, and loses nothing
    /// written before.
    #[tokio::test]
    async fn a_store_holds_no_more_than_its_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.db");
        let config = || KeyValueConfig::Spin { path: Some(path.clone()) };
        let store = KeyValueStore::open("default", config(), Some(256 << 10)).unwrap();
        let value = vec![b'v'; 100 << 10];
        store.set("first", value.clone()).await.unwrap();
        store.set("second", value.clone()).await.unwrap();
        let error = store.set("third", value.clone()).await.unwrap_err().to_string();
        assert_eq!(
            error,
            "key-value store `default`: database or disk is full: it may hold at most 256KiB \
             (the max-store-size limit)"
        );
        assert_eq!(store.get("second").await.unwrap(), Some(value.clone()));
        assert_eq!(store.get("third").await.unwrap(), None);
        assert!(std::fs::metadata(&path).unwrap().len() <= 256 << 10);
        // Opened again with a larger limit (the operator's), it takes more.
        drop(store);
        let store = KeyValueStore::open("default", config(), Some(1 << 20)).unwrap();
        store.set("third", value).await.unwrap();
    }
}
