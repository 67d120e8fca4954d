//! SQLite databases and the interfaces guests query them through:
//! `spin:sqlite/sqlite@3.1.0` (spin-sdk 7; guests importing 3.0.0 link to
//! it too) and `fermyon:spin/sqlite@2.0.0` (spin-sdk 2 to 5).
//!
//! A database is opened by label; a component may open only the labels in
//! its `sqlite_databases`, any other is `access-denied`.
//!
//! Each connection a guest opens is its own as far as the guest can tell,
//! as in Spin, where every `open` makes a new SQLite connection: a
//! transaction the guest begins spans its own statements and no one
//! else's, and one it leaves open is rolled back when the connection is
//! dropped (at the latest with the instance). Behind that, the database
//! keeps its SQLite connections in a pool: a guest's connection takes one
//! for each statement and gives it back after, keeping it while its
//! transaction is open, and for good once the guest changes the
//! connection's own state (a pragma, a temporary table, an attached
//! database), which then no other guest inherits. Statements outside
//! transactions take turns, one at a time per database. rusqlite is
//! blocking, so statements run on tokio's blocking pool. A database in
//! memory lives in its one SQLite connection, so guests take turns at it,
//! a transaction at a time.
//!
//! Guest SQL is confined (SQLite's "Defense Against the Dark Arts",
//! <https://www.sqlite.org/security.html>): defensive mode on, schema
//! functions untrusted, no `ATTACH` of a file (nor `VACUUM INTO` one: either
//! would open or create any file the host can reach), at most
//! 64 MiB of host memory per result (`MAX_RESULT_BYTES`), and a statement whose
//! caller gives up (the request timed out, the client left) is interrupted
//! rather than left running on a blocking thread.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::types::{Value as SqlValue, ValueRef};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Accessor, FutureReader, Resource, StreamReader};

use crate::bindings::fermyon::spin::sqlite as v2;
use crate::bindings::spin::sqlite::sqlite as v3;
use crate::{Capabilities, CapabilitiesView, CapabilityError, MAX_RESULT_BYTES, ResultSize};

/// How many idle SQLite connections a database file keeps for the next
/// statements; connections beyond these, opened in a burst, are closed.
const IDLE_CONNECTIONS: usize = 16;

/// How long a statement waits for the database in memory while another
/// guest's transaction holds it: SQLite's own busy timeout for a file, as
/// rusqlite sets it.
const MEMORY_TURN_TIMEOUT: Duration = Duration::from_secs(5);

/// One SQLite database.
pub struct SqliteDatabase {
    label: String,
    path: Option<PathBuf>,
    /// The most bytes the database may hold (see [`limit_size`]).
    max_size: Option<u64>,
    /// SQLite connections that no statement or open transaction holds.
    idle: Mutex<Vec<Pooled>>,
    /// For a database in memory, the one turn at its one connection. A
    /// file has as many connections as there are open transactions, plus
    /// one, and SQLite's file locks order their writes.
    memory_turn: Option<Arc<Semaphore>>,
    /// The turn of statements outside a guest's transaction, which run one
    /// at a time.
    outside_transactions: Mutex<()>,
}

impl std::fmt::Debug for SqliteDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SqliteDatabase({}: {})", self.label, self.describe())
    }
}

/// The result of one statement.
struct QueryOutput {
    columns: Vec<String>,
    rows: Vec<Vec<SqlValue>>,
    last_insert_rowid: i64,
    changes: u64,
}

/// A SQLite connection as its database's pool keeps it.
struct Pooled {
    sqlite: rusqlite::Connection,
    /// Set when a guest changes the connection's own state: sets a pragma,
    /// makes a temporary table (or index, view, trigger), attaches a
    /// database. As with Spin's new connection per `open`, the guest's
    /// connection keeps it from then on, and no other guest inherits it:
    /// such a connection is closed rather than pooled. Never set for a
    /// database in memory, which lives in its one connection, whose state
    /// all guests share: holding it for one guest's pragma would hold up
    /// every other guest, and closing it would lose the data.
    changed: Arc<AtomicBool>,
}

/// A SQLite connection taken from its database's pool, for a statement or
/// for the rest of a guest's open transaction. Dropped, it goes back to the
/// pool, after rolling back a transaction left open.
struct Lease {
    database: Arc<SqliteDatabase>,
    /// `None` until the statement's blocking task takes an idle connection
    /// or opens one (opening touches the file, so it is not done on the
    /// async threads).
    connection: Option<Pooled>,
    /// The turn at a database in memory, released after the connection is
    /// back in the pool.
    turn: Option<OwnedSemaphorePermit>,
}

impl Lease {
    /// Whether the connection holds state of the guest's that its next
    /// statements must see: an open transaction, or a change to the
    /// connection's own state.
    fn holds_guest_state(&self) -> bool {
        self.connection
            .as_ref()
            .is_some_and(|c| !c.sqlite.is_autocommit() || c.changed.load(Ordering::Relaxed))
    }

    /// The SQLite connection, opened if the pool had none idle; on a
    /// blocking thread.
    fn connection(&mut self) -> rusqlite::Result<&mut rusqlite::Connection> {
        if self.connection.is_none() {
            self.connection = Some(self.database.open_connection()?);
        }
        Ok(&mut self.connection.as_mut().expect("opened above").sqlite)
    }

    /// Run one statement, on a blocking thread, interruptible through
    /// `interrupt` while it runs.
    fn run(
        &mut self,
        statement: &str,
        parameters: Vec<SqlValue>,
        interrupt: &Interrupt,
    ) -> Result<QueryOutput, String> {
        let database = Arc::clone(&self.database);
        let connection = self.connection().map_err(|e| e.to_string())?;
        // Statements outside a transaction take turns, as on one SQLite
        // connection. SQLite's file locks would order the writers among
        // them too, but by sleeping in its busy handler, a millisecond and
        // more each time two meet.
        let _one_at_a_time = connection
            .is_autocommit()
            .then(|| database.outside_transactions.lock().unwrap_or_else(|e| e.into_inner()));
        if !interrupt.arm(connection) {
            return Err("interrupted".into());
        }
        let output = query(connection, statement, parameters, database.max_size);
        interrupt.disarm();
        output
    }
}

fn query(
    connection: &rusqlite::Connection,
    statement: &str,
    parameters: Vec<SqlValue>,
    max_size: Option<u64>,
) -> Result<QueryOutput, String> {
    let message = |error: rusqlite::Error| error_message(&error, max_size);
    let mut prepared = connection.prepare_cached(statement).map_err(message)?;
    let columns: Vec<String> = prepared.column_names().into_iter().map(String::from).collect();
    let mut rows = Vec::new();
    let mut size = ResultSize::rows();
    let mut cursor = prepared.query(rusqlite::params_from_iter(parameters)).map_err(message)?;
    while let Some(row) = cursor.next().map_err(message)? {
        let values = (0..columns.len())
            .map(|i| row.get_ref(i).map(to_sql_value))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| e.to_string())?;
        size.add_row::<SqlValue>(values.len(), values.iter().map(heap_bytes).sum())?;
        rows.push(values);
    }
    Ok(QueryOutput {
        columns,
        rows,
        last_insert_rowid: connection.last_insert_rowid(),
        changes: connection.changes(),
    })
}

/// What a value holds of the host's memory besides itself.
fn heap_bytes(value: &SqlValue) -> usize {
    match value {
        SqlValue::Text(text) => text.len(),
        SqlValue::Blob(blob) => blob.len(),
        SqlValue::Null | SqlValue::Integer(_) | SqlValue::Real(_) => 0,
    }
}

/// Pragmas whose setting reaches past the connection: the heap limits and
/// directories are the whole process's, temporary tables in memory would
/// grow the host's memory, and the largest page count and the page size
/// (which a `VACUUM` applies) are what hold the file to its size limit.
const REFUSED_PRAGMAS: [&str; 7] = [
    "hard_heap_limit",
    "soft_heap_limit",
    "temp_store",
    "temp_store_directory",
    "data_store_directory",
    "max_page_count",
    "page_size",
];

/// Hold the database of `connection` to `max_size` bytes, if given:
/// SQLite then fails a write that would grow it past that many pages with
/// "database or disk is full", and a database already larger takes no
/// more pages. The limit is the connection's, not the file's, so each
/// connection sets it, and guests may not (`REFUSED_PRAGMAS`). A database
/// in memory is held the same way, which bounds the host memory it takes.
pub(crate) fn limit_size(
    connection: &rusqlite::Connection,
    max_size: Option<u64>,
) -> rusqlite::Result<()> {
    let Some(max_size) = max_size else { return Ok(()) };
    let page_size: i64 = connection.pragma_query_value(None, "page_size", |row| row.get(0))?;
    let pages = (max_size / page_size.max(1) as u64).clamp(1, i64::MAX as u64) as i64;
    connection.pragma_update_and_check(None, "max_page_count", pages, |_| Ok(()))
}

/// A SQLite error as a guest reads it: a write that the size limit
/// refused says so, with the limit.
pub(crate) fn error_message(error: &rusqlite::Error, max_size: Option<u64>) -> String {
    match (error.sqlite_error_code(), max_size) {
        (Some(rusqlite::ErrorCode::DiskFull), Some(max_size)) => format!(
            "{error}: it may hold at most {} (the max-store-size limit)",
            bantam_manifest::units::format_size(max_size)
        ),
        _ => error.to_string(),
    }
}

/// Guest SQL reaches nothing but its database, with SQLite's defences on;
/// `changed`, if given, is set when a statement changes the connection's
/// own state.
fn confine(
    connection: &rusqlite::Connection,
    changed: Option<Arc<AtomicBool>>,
) -> rusqlite::Result<()> {
    use rusqlite::config::DbConfig;
    use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
    use rusqlite::limits::Limit;
    connection.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    connection.set_db_config(DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false)?;
    // No one string or blob longer than a whole result may be.
    connection.set_limit(Limit::SQLITE_LIMIT_LENGTH, MAX_RESULT_BYTES as i32)?;
    connection.authorizer(Some(move |context: AuthContext<'_>| {
        let changes_state = match context.action {
            // `ATTACH` opens (or creates) the file it names, and `VACUUM
            // INTO` attaches its target the same way; plain `VACUUM`
            // attaches a nameless temporary database, and `:memory:` is no
            // file.
            AuthAction::Attach { filename } if !filename.is_empty() && filename != ":memory:" => {
                return Authorization::Deny;
            }
            AuthAction::Pragma { pragma_name, pragma_value: Some(_) }
                if REFUSED_PRAGMAS
                    .iter()
                    .any(|refused| pragma_name.eq_ignore_ascii_case(refused)) =>
            {
                return Authorization::Deny;
            }
            AuthAction::Pragma { pragma_value: Some(_), .. }
            | AuthAction::Attach { .. }
            | AuthAction::Detach { .. }
            | AuthAction::CreateTempIndex { .. }
            | AuthAction::CreateTempTable { .. }
            | AuthAction::CreateTempTrigger { .. }
            | AuthAction::CreateTempView { .. } => true,
            _ => context.database_name == Some("temp"),
        };
        if changes_state && let Some(changed) = &changed {
            changed.store(true, Ordering::Relaxed);
        }
        Authorization::Allow
    }));
    Ok(())
}

/// How a statement's caller stops it: SQLite's interrupt, armed only while
/// the statement runs, so that it can never reach the connection's next
/// statement, which may be another guest's.
#[derive(Default)]
struct Interrupt(Mutex<InterruptState>);

#[derive(Default)]
struct InterruptState {
    cancelled: bool,
    running: Option<rusqlite::InterruptHandle>,
}

impl Interrupt {
    /// Arm with the connection about to run the statement; `false` if the
    /// caller gave up before it started.
    fn arm(&self, connection: &rusqlite::Connection) -> bool {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !state.cancelled {
            state.running = Some(connection.get_interrupt_handle());
        }
        !state.cancelled
    }

    fn disarm(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).running = None;
    }

    fn cancel(&self) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.cancelled = true;
        if let Some(running) = &state.running {
            running.interrupt();
        }
    }
}

/// Cancels its statement when dropped: the statement's caller either has
/// its answer by then, or gave up waiting.
struct CancelOnDrop(Arc<Interrupt>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(connection) = self.connection.take() else { return };
        if connection.sqlite.is_autocommit() {
            self.database.give_back(connection);
            return;
        }
        // A transaction the guest left open is rolled back, as closing its
        // connection would do in Spin. That writes to the file, so it runs
        // off the async threads; the turn at a database in memory goes with
        // it, and is released only when the connection is back.
        let turn = self.turn.take();
        let database = Arc::clone(&self.database);
        let roll_back = move || {
            let rolled_back = connection.sqlite.execute_batch("ROLLBACK").is_ok();
            if rolled_back && connection.sqlite.is_autocommit() {
                database.give_back(connection);
            }
            drop(turn);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(roll_back)),
            Err(_) => roll_back(),
        }
    }
}

impl SqliteDatabase {
    /// Open (creating if needed) the database `label` at `path`, or in
    /// memory, held to `max_size` bytes if given (see `limit_size`).
    pub fn open(
        label: &str,
        path: Option<PathBuf>,
        max_size: Option<u64>,
    ) -> Result<Self, CapabilityError> {
        if let Some(dir) = path.as_ref().and_then(|path| path.parent()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut database = Self {
            label: label.to_string(),
            memory_turn: path.is_none().then(|| Arc::new(Semaphore::new(1))),
            path,
            max_size,
            idle: Mutex::new(Vec::new()),
            outside_transactions: Mutex::new(()),
        };
        // The first connection is opened now, so that a file that cannot be
        // opened fails the start, and so that a database in memory exists.
        let connection = database.open_connection().map_err(|e| CapabilityError::Open {
            what: format!("SQLite database `{label}` ({})", database.describe()),
            message: e.to_string(),
        })?;
        database.idle.get_mut().unwrap_or_else(|e| e.into_inner()).push(connection);
        Ok(database)
    }

    /// A new SQLite connection. A database in memory is opened once, at
    /// its start: its one connection always goes back to the pool after,
    /// unless a rollback failed, which closes it and leaves the next
    /// statement a new, empty database.
    fn open_connection(&self) -> rusqlite::Result<Pooled> {
        let sqlite = match &self.path {
            Some(path) => rusqlite::Connection::open(path)?,
            None => rusqlite::Connection::open_in_memory()?,
        };
        let changed = Arc::new(AtomicBool::new(false));
        // Before `confine`, whose authorizer refuses the pragma.
        limit_size(&sqlite, self.max_size)?;
        // A database in memory's changes are not tracked (see `Pooled`).
        confine(&sqlite, self.path.is_some().then(|| Arc::clone(&changed)))?;
        Ok(Pooled { sqlite, changed })
    }

    /// Put a connection out of a transaction back in the pool, or close it
    /// if a guest changed its state or the pool has enough.
    fn give_back(&self, connection: Pooled) {
        if connection.changed.load(Ordering::Relaxed) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_CONNECTIONS {
            idle.push(connection);
        }
    }

    /// Where the data lives, for messages.
    pub fn describe(&self) -> String {
        crate::describe_path(self.path.as_ref(), None)
    }

    /// Where the data lives, with the path shown relative to `base`.
    pub fn describe_relative_to(&self, base: &Path) -> String {
        crate::describe_path(self.path.as_ref(), Some(base))
    }

    /// Run a batch of statements (`bantam up --sqlite`), before any guest
    /// runs.
    pub fn execute_batch(self: &Arc<Self>, sql: &str) -> Result<(), String> {
        let error = |e: &dyn std::fmt::Display| format!("SQLite database `{}`: {e}", self.label);
        let mut lease = self.try_lease().ok_or_else(|| error(&"database is locked"))?;
        lease
            .connection()
            .and_then(|connection| connection.execute_batch(sql))
            .map_err(|e| error(&e))
    }

    /// A connection from the pool, if one may be taken at once.
    fn try_lease(self: &Arc<Self>) -> Option<Lease> {
        let turn = match &self.memory_turn {
            Some(turn) => Some(Arc::clone(turn).try_acquire_owned().ok()?),
            None => None,
        };
        Some(self.lease_with(turn))
    }

    /// A connection from the pool, waiting for the turn at a database in
    /// memory.
    async fn lease(self: &Arc<Self>) -> Result<Lease, String> {
        let turn = match &self.memory_turn {
            Some(turn) => {
                let waited =
                    tokio::time::timeout(MEMORY_TURN_TIMEOUT, Arc::clone(turn).acquire_owned());
                Some(waited.await.ok().and_then(Result::ok).ok_or("database is locked")?)
            }
            None => None,
        };
        Ok(self.lease_with(turn))
    }

    fn lease_with(self: &Arc<Self>, turn: Option<OwnedSemaphorePermit>) -> Lease {
        let connection = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        Lease { database: Arc::clone(self), connection, turn }
    }
}

/// A guest's connection to a database, shared with the statements it
/// runs.
struct GuestConnection {
    database: Arc<SqliteDatabase>,
    /// The SQLite connection the guest's open transaction, or its change to
    /// the connection's state, holds; locked for each statement, so that
    /// they run one at a time, as on one SQLite connection.
    held: tokio::sync::Mutex<Option<Lease>>,
}

impl GuestConnection {
    fn new(database: &Arc<SqliteDatabase>) -> Self {
        Self { database: Arc::clone(database), held: tokio::sync::Mutex::new(None) }
    }

    /// Run one statement: on the SQLite connection the guest's transaction
    /// or state holds, or on one from the pool.
    async fn execute(
        &self,
        statement: String,
        parameters: Vec<SqlValue>,
    ) -> Result<QueryOutput, String> {
        let mut held = self.held.lock().await;
        let lease = match held.take() {
            Some(lease) => lease,
            None => self.database.lease().await?,
        };
        let interrupt = Arc::new(Interrupt::default());
        let _cancel = CancelOnDrop(Arc::clone(&interrupt));
        let ran = tokio::task::spawn_blocking(move || {
            let mut lease = lease;
            let output = lease.run(&statement, parameters, &interrupt);
            (lease, output)
        })
        .await;
        let (lease, output) = ran.map_err(|e| e.to_string())?;
        if lease.holds_guest_state() {
            *held = Some(lease);
        }
        output
    }
}

fn to_sql_value(value: ValueRef<'_>) -> SqlValue {
    match value {
        ValueRef::Null => SqlValue::Null,
        ValueRef::Integer(i) => SqlValue::Integer(i),
        ValueRef::Real(r) => SqlValue::Real(r),
        ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
    }
}

/// An open database, as a guest holds it, with the outcome of its last
/// statement (`last-insert-rowid`, `changes`).
pub struct Connection {
    guest: Arc<GuestConnection>,
    last_insert_rowid: i64,
    changes: u64,
}

/// Why a database could not be opened, before mapping to each WIT's error.
enum OpenError {
    AccessDenied,
    TableFull,
}

impl CapabilitiesView<'_> {
    fn open_database(
        &mut self,
        label: &str,
    ) -> wasmtime::Result<Result<Resource<Connection>, OpenError>> {
        let component = self.state.component();
        let Some(database) = component.sqlite_databases.get(label) else {
            tracing::warn!(
                "component `{}`: SQLite database `{label}` denied: it is not in the component's sqlite_databases",
                component.id
            );
            return Ok(Err(OpenError::AccessDenied));
        };
        let connection = Connection {
            guest: Arc::new(GuestConnection::new(database)),
            last_insert_rowid: 0,
            changes: 0,
        };
        Ok(self.table.push(connection).map_err(|_| OpenError::TableFull))
    }

    /// Run a statement on an open connection and record its outcome there.
    async fn execute_on(
        &mut self,
        connection: &Resource<Connection>,
        statement: String,
        parameters: Vec<SqlValue>,
    ) -> wasmtime::Result<Result<QueryOutput, String>> {
        let guest = Arc::clone(&self.table.get(connection)?.guest);
        let output = guest.execute(statement, parameters).await;
        if let Ok(output) = &output {
            let connection = self.table.get_mut(connection)?;
            connection.last_insert_rowid = output.last_insert_rowid;
            connection.changes = output.changes;
        }
        Ok(output)
    }
}

/// Conversions between rusqlite values and one interface version's types,
/// which are the same records in different modules.
macro_rules! conversions {
    ($wit:ident) => {
        impl From<$wit::Value> for SqlValue {
            fn from(value: $wit::Value) -> Self {
                match value {
                    $wit::Value::Integer(i) => SqlValue::Integer(i),
                    $wit::Value::Real(r) => SqlValue::Real(r),
                    $wit::Value::Text(t) => SqlValue::Text(t),
                    $wit::Value::Blob(b) => SqlValue::Blob(b),
                    $wit::Value::Null => SqlValue::Null,
                }
            }
        }

        impl From<SqlValue> for $wit::Value {
            fn from(value: SqlValue) -> Self {
                match value {
                    SqlValue::Integer(i) => $wit::Value::Integer(i),
                    SqlValue::Real(r) => $wit::Value::Real(r),
                    SqlValue::Text(t) => $wit::Value::Text(t),
                    SqlValue::Blob(b) => $wit::Value::Blob(b),
                    SqlValue::Null => $wit::Value::Null,
                }
            }
        }

        impl From<Vec<SqlValue>> for $wit::RowResult {
            fn from(values: Vec<SqlValue>) -> Self {
                $wit::RowResult { values: values.into_iter().map(Into::into).collect() }
            }
        }

        impl From<QueryOutput> for $wit::QueryResult {
            fn from(output: QueryOutput) -> Self {
                $wit::QueryResult {
                    columns: output.columns,
                    rows: output.rows.into_iter().map(Into::into).collect(),
                }
            }
        }

        impl From<OpenError> for $wit::Error {
            fn from(error: OpenError) -> Self {
                match error {
                    OpenError::AccessDenied => $wit::Error::AccessDenied,
                    OpenError::TableFull => $wit::Error::Io("too many open connections".into()),
                }
            }
        }
    };
}

conversions!(v3);
conversions!(v2);

fn parameters<V: Into<SqlValue>>(parameters: Vec<V>) -> Vec<SqlValue> {
    parameters.into_iter().map(Into::into).collect()
}

// spin:sqlite@3.1.0

impl v3::Host for CapabilitiesView<'_> {}

impl v3::HostConnection for CapabilitiesView<'_> {
    async fn open(
        &mut self,
        database: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, v3::Error>> {
        Ok(self.open_database(&database)?.map_err(Into::into))
    }

    async fn execute(
        &mut self,
        connection: Resource<Connection>,
        statement: String,
        params: Vec<v3::Value>,
    ) -> wasmtime::Result<Result<v3::QueryResult, v3::Error>> {
        Ok(self
            .execute_on(&connection, statement, parameters(params))
            .await?
            .map(Into::into)
            .map_err(v3::Error::Io))
    }

    async fn last_insert_rowid(
        &mut self,
        connection: Resource<Connection>,
    ) -> wasmtime::Result<i64> {
        Ok(self.table.get(&connection)?.last_insert_rowid)
    }

    async fn changes(&mut self, connection: Resource<Connection>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&connection)?.changes)
    }

    async fn drop(&mut self, connection: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}

impl<T> v3::HostConnectionWithStore<T> for Capabilities {
    async fn open_async(
        accessor: &Accessor<T, Self>,
        database: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, v3::Error>> {
        Ok(accessor.with(|mut access| access.get().open_database(&database))?.map_err(Into::into))
    }

    async fn execute_async(
        accessor: &Accessor<T, Self>,
        connection: Resource<Connection>,
        statement: String,
        params: Vec<v3::Value>,
    ) -> wasmtime::Result<
        Result<
            (Vec<String>, StreamReader<v3::RowResult>, FutureReader<Result<(), v3::Error>>),
            v3::Error,
        >,
    > {
        let guest = accessor.with(|mut access| {
            Ok::<_, wasmtime::Error>(Arc::clone(&access.get().table.get(&connection)?.guest))
        })?;
        let output = match guest.execute(statement, parameters(params)).await {
            Ok(output) => output,
            Err(message) => return Ok(Err(v3::Error::Io(message))),
        };
        accessor.with(|mut access| {
            let view = access.get();
            let handle = view.table.get_mut(&connection)?;
            handle.last_insert_rowid = output.last_insert_rowid;
            handle.changes = output.changes;
            let rows: Vec<v3::RowResult> = output.rows.into_iter().map(Into::into).collect();
            let rows = StreamReader::new(&mut access, rows)?;
            let done = FutureReader::new(&mut access, async { Ok::<_, wasmtime::Error>(Ok(())) })?;
            Ok(Ok((output.columns, rows, done)))
        })
    }

    async fn last_insert_rowid_async(
        accessor: &Accessor<T, Self>,
        connection: Resource<Connection>,
    ) -> wasmtime::Result<i64> {
        accessor.with(|mut access| Ok(access.get().table.get(&connection)?.last_insert_rowid))
    }

    async fn changes_async(
        accessor: &Accessor<T, Self>,
        connection: Resource<Connection>,
    ) -> wasmtime::Result<u64> {
        accessor.with(|mut access| Ok(access.get().table.get(&connection)?.changes))
    }
}

// fermyon:spin/sqlite@2.0.0

impl v2::Host for CapabilitiesView<'_> {}

impl v2::HostConnection for CapabilitiesView<'_> {
    async fn open(
        &mut self,
        database: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, v2::Error>> {
        Ok(self.open_database(&database)?.map_err(Into::into))
    }

    async fn execute(
        &mut self,
        connection: Resource<Connection>,
        statement: String,
        params: Vec<v2::Value>,
    ) -> wasmtime::Result<Result<v2::QueryResult, v2::Error>> {
        Ok(self
            .execute_on(&connection, statement, parameters(params))
            .await?
            .map(Into::into)
            .map_err(v2::Error::Io))
    }

    async fn drop(&mut self, connection: Resource<Connection>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(guest: &GuestConnection, sql: &str) -> String {
        match guest.execute(sql.to_string(), Vec::new()).await {
            Ok(output) => {
                output.rows.iter().map(|row| format!("{row:?}")).collect::<Vec<_>>().join(",")
            }
            Err(message) => format!("error: {message}"),
        }
    }

    fn numbers_in_file(path: &Path) -> Vec<i64> {
        let connection = rusqlite::Connection::open(path).unwrap();
        let mut statement = connection.prepare("SELECT n FROM t ORDER BY n").unwrap();
        statement.query_map([], |row| row.get(0)).unwrap().map(Result::unwrap).collect()
    }

    #[tokio::test]
    async fn a_guest_transaction_spans_its_own_statements_and_no_one_elses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let database = Arc::new(SqliteDatabase::open("default", Some(path.clone()), None).unwrap());
        run(&GuestConnection::new(&database), "CREATE TABLE t (n INTEGER)").await;

        // One guest commits its own transaction ...
        let committing = GuestConnection::new(&database);
        for sql in ["BEGIN", "INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)", "COMMIT"] {
            assert_eq!(run(&committing, sql).await, "");
        }
        assert!(committing.held.lock().await.is_none(), "the connection went back after COMMIT");
        assert_eq!(numbers_in_file(&path), [1, 2]);

        // ... another leaves one open: no one else sees its writes, and
        // dropping its connection rolls them back.
        let leaving = GuestConnection::new(&database);
        run(&leaving, "BEGIN").await;
        run(&leaving, "INSERT INTO t VALUES (3)").await;
        assert_eq!(run(&leaving, "SELECT count(*) FROM t").await, "[Integer(3)]");
        let other = GuestConnection::new(&database);
        assert_eq!(run(&other, "SELECT count(*) FROM t").await, "[Integer(2)]");
        drop(leaving);
        // A later write is its own, committed at once (it waits, as
        // SQLite's writers do, for the rollback to release the file).
        assert_eq!(run(&other, "INSERT INTO t VALUES (4)").await, "");
        assert!(other.held.lock().await.is_none());
        assert_eq!(numbers_in_file(&path), [1, 2, 4]);
        // And a new transaction can begin, which it could not inside the
        // one left open.
        assert_eq!(run(&other, "BEGIN").await, "");
        assert_eq!(run(&other, "COMMIT").await, "");
    }

    #[tokio::test]
    async fn a_database_in_memory_serves_one_transaction_at_a_time_and_keeps_its_data() {
        let database = Arc::new(SqliteDatabase::open("mem", None, None).unwrap());
        run(&GuestConnection::new(&database), "CREATE TABLE t (n INTEGER)").await;
        run(&GuestConnection::new(&database), "INSERT INTO t VALUES (1)").await;

        let holding = GuestConnection::new(&database);
        run(&holding, "BEGIN").await;
        run(&holding, "INSERT INTO t VALUES (2)").await;
        let waiting = tokio::spawn({
            let database = Arc::clone(&database);
            async move { run(&GuestConnection::new(&database), "SELECT n FROM t").await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "a statement waits for the open transaction");
        drop(holding);
        assert_eq!(waiting.await.unwrap(), "[Integer(1)]");
    }

    #[tokio::test]
    async fn a_pragma_on_a_database_in_memory_holds_up_no_one() {
        let database = Arc::new(SqliteDatabase::open("mem", None, None).unwrap());
        let setting = GuestConnection::new(&database);
        assert_eq!(run(&setting, "PRAGMA foreign_keys = ON").await, "");
        let other = GuestConnection::new(&database);
        let answer = tokio::time::timeout(Duration::from_secs(2), run(&other, "SELECT 1")).await;
        assert_eq!(answer.expect("the pragma's guest holds the database"), "[Integer(1)]");
    }

    #[tokio::test]
    async fn a_database_holds_no_more_than_its_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let database =
            Arc::new(SqliteDatabase::open("default", Some(path.clone()), Some(64 << 10)).unwrap());
        let guest = GuestConnection::new(&database);
        assert_eq!(run(&guest, "CREATE TABLE t (b BLOB)").await, "");
        let insert = "INSERT INTO t VALUES (zeroblob(8000))";
        let mut written = 0;
        let refused = loop {
            let answer = run(&guest, insert).await;
            if answer.starts_with("error") {
                break answer;
            }
            written += 1;
            assert!(written < 100, "64 KiB took {written} rows of 8 kB");
        };
        assert_eq!(
            refused,
            "error: database or disk is full: it may hold at most 64KiB (the max-store-size limit)"
        );
        assert!(written >= 4, "only {written} rows fitted in 64 KiB");
        assert!(std::fs::metadata(&path).unwrap().len() <= 64 << 10);
        // What it holds is still read, and deleting makes room again.
        assert_eq!(run(&guest, "SELECT count(*) FROM t").await, format!("[Integer({written})]"));
        assert_eq!(run(&guest, "DELETE FROM t").await, "");
        assert_eq!(run(&guest, insert).await, "");
        // A guest cannot lift the limit, nor change the page size under it.
        for refused in ["PRAGMA max_page_count = 1000000", "PRAGMA page_size = 65536"] {
            assert_eq!(run(&guest, refused).await, "error: not authorized", "{refused}");
        }
        assert_eq!(run(&guest, "PRAGMA max_page_count").await, "[Integer(16)]");

        // In memory the same: the limit is what the host's memory gives it.
        let memory = Arc::new(SqliteDatabase::open("mem", None, Some(64 << 10)).unwrap());
        let guest = GuestConnection::new(&memory);
        assert_eq!(run(&guest, "CREATE TABLE t (b BLOB)").await, "");
        let refused = run(&guest, "INSERT INTO t VALUES (zeroblob(100000))").await;
        assert!(refused.contains("at most 64KiB (the max-store-size limit)"), "{refused}");
    }

    #[tokio::test]
    async fn the_start_up_batch_runs_on_the_pool() {
        let database = Arc::new(SqliteDatabase::open("mem", None, None).unwrap());
        database.execute_batch("CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (7);").unwrap();
        let guest = GuestConnection::new(&database);
        assert_eq!(run(&guest, "SELECT n FROM t").await, "[Integer(7)]");
        let error = database.execute_batch("SELEC 1").unwrap_err();
        assert!(
            error.starts_with("SQLite database `mem`: ") && error.contains("syntax"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn guest_sql_reaches_no_file_but_its_own_database() {
        let dir = tempfile::tempdir().unwrap();
        let database = Arc::new(
            SqliteDatabase::open("default", Some(dir.path().join("db.sqlite")), None).unwrap(),
        );
        let guest = GuestConnection::new(&database);
        let escape = dir.path().join("escape.db");
        let attach = format!("ATTACH DATABASE '{}' AS outside", escape.display());
        assert_eq!(run(&guest, &attach).await, "error: not authorized");
        let copy = dir.path().join("copy.db");
        let vacuum_into = format!("VACUUM INTO '{}'", copy.display());
        assert_eq!(run(&guest, &vacuum_into).await, "error: authorization denied");
        assert!(!escape.exists() && !copy.exists());
        // What touches no other file still works.
        assert_eq!(run(&guest, "VACUUM").await, "");
        assert_eq!(run(&guest, "ATTACH ':memory:' AS scratch").await, "");
        assert_eq!(run(&guest, "DETACH scratch").await, "");
        // Nor does anything set for the whole process, or that grows the
        // host's memory, or loads code.
        for refused in [
            "PRAGMA hard_heap_limit = 1000",
            "PRAGMA soft_heap_limit = 1",
            "PRAGMA temp_store = MEMORY",
            "SELECT load_extension('/lib/x86_64-linux-gnu/libc.so.6')",
        ] {
            assert_eq!(run(&guest, refused).await, "error: not authorized", "{refused}");
        }
        // Defensive mode: the schema cannot be written around SQLite.
        run(&guest, "CREATE TABLE t (n INTEGER)").await;
        run(&guest, "PRAGMA writable_schema = ON").await;
        let forged = run(&guest, "UPDATE sqlite_schema SET sql = 'x'").await;
        assert!(forged.starts_with("error: "), "{forged}");
    }

    #[test]
    fn a_statement_whose_caller_gives_up_stops_running() {
        // A runtime of its own, left without waiting for its blocking
        // threads: if the runaway went on, the test fails instead of hanging.
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let answer = runtime.block_on(async {
            let database = Arc::new(SqliteDatabase::open("mem", None, None).unwrap());
            let forever = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) \
                           SELECT count(*) FROM c";
            let caller = tokio::spawn({
                let database = Arc::clone(&database);
                async move { run(&GuestConnection::new(&database), forever).await }
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
            caller.abort();
            // The database in memory is free again (the runaway held its one
            // connection), long before a turn's 5 s timeout.
            let guest = GuestConnection::new(&database);
            tokio::time::timeout(Duration::from_secs(2), run(&guest, "SELECT 1")).await
        });
        runtime.shutdown_background();
        assert_eq!(answer.expect("the runaway statement still holds the database"), "[Integer(1)]");
    }

    #[tokio::test]
    async fn a_result_past_the_cap_is_an_error_not_host_memory() {
        let database = Arc::new(SqliteDatabase::open("mem", None, None).unwrap());
        let guest = GuestConnection::new(&database);
        let many = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 100) \
                    SELECT randomblob(1048576) FROM c";
        assert_eq!(
            run(&guest, many).await,
            "error: the result is larger than 64 MiB; ask for fewer rows or columns"
        );
        let huge = run(&guest, "SELECT length(randomblob(100000000))").await;
        assert_eq!(huge, "error: string or blob too big");
        // NULLs hold no bytes, but each row and value costs the host.
        let nulls = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 3000000) \
                     SELECT NULL FROM c";
        assert_eq!(
            run(&guest, nulls).await,
            "error: the result is larger than 64 MiB; ask for fewer rows or columns"
        );
    }

    #[tokio::test]
    async fn a_guest_connection_keeps_its_own_state_and_passes_none_on() {
        let dir = tempfile::tempdir().unwrap();
        let database = Arc::new(
            SqliteDatabase::open("default", Some(dir.path().join("db.sqlite")), None).unwrap(),
        );
        run(&GuestConnection::new(&database), "CREATE TABLE t (n INTEGER)").await;

        // A temporary table and a pragma last for the guest's connection ...
        let first = GuestConnection::new(&database);
        assert_eq!(run(&first, "CREATE TEMP TABLE scratch (n)").await, "");
        assert_eq!(run(&first, "INSERT INTO scratch VALUES (1)").await, "");
        assert_eq!(run(&first, "PRAGMA query_only = ON").await, "");
        assert_eq!(run(&first, "SELECT count(*) FROM scratch").await, "[Integer(1)]");
        let refused = run(&first, "INSERT INTO t VALUES (1)").await;
        assert_eq!(refused, "error: attempt to write a readonly database");
        drop(first);

        // ... and no further: the next guest has neither.
        let next = GuestConnection::new(&database);
        assert_eq!(run(&next, "CREATE TEMP TABLE scratch (n)").await, "");
        assert_eq!(run(&next, "INSERT INTO t VALUES (2)").await, "");
        let other = GuestConnection::new(&database);
        assert_eq!(run(&other, "INSERT INTO t VALUES (3)").await, "");
        assert_eq!(numbers_in_file(&dir.path().join("db.sqlite")), [2, 3]);
    }
}
