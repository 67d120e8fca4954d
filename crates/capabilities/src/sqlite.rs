//! SQLite databases and the interfaces guests query them through:
//! `spin:sqlite/sqlite@3.1.0` (spin-sdk 7; guests importing 3.0.0 link to
//! it too) and `fermyon:spin/sqlite@2.0.0` (spin-sdk 2 to 5).
//!
//! A database is opened by label; a component may open only the labels in
//! its `sqlite_databases`, any other is `access-denied`. Each database is
//! one SQLite connection shared by all instances: rusqlite is blocking, so
//! statements run on tokio's blocking pool, one at a time per database.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::types::{Value as SqlValue, ValueRef};
use wasmtime::component::{Accessor, FutureReader, Resource, StreamReader};

use crate::bindings::fermyon::spin::sqlite as v2;
use crate::bindings::spin::sqlite::sqlite as v3;
use crate::{Capabilities, CapabilitiesView, CapabilityError};

/// One SQLite database.
pub struct SqliteDatabase {
    label: String,
    path: Option<PathBuf>,
    connection: Arc<Mutex<rusqlite::Connection>>,
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

impl SqliteDatabase {
    /// Open (creating if needed) the database `label` at `path`, or in
    /// memory.
    pub fn open(label: &str, path: Option<PathBuf>) -> Result<Self, CapabilityError> {
        let opened = match &path {
            Some(path) => {
                if let Some(dir) = path.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                rusqlite::Connection::open(path)
            }
            None => rusqlite::Connection::open_in_memory(),
        };
        let connection = opened.map_err(|e| CapabilityError::Open {
            what: format!(
                "SQLite database `{label}` ({})",
                crate::describe_path(path.as_ref(), None)
            ),
            message: e.to_string(),
        })?;
        Ok(Self { label: label.to_string(), path, connection: Arc::new(Mutex::new(connection)) })
    }

    /// Where the data lives, for messages.
    pub fn describe(&self) -> String {
        crate::describe_path(self.path.as_ref(), None)
    }

    /// Where the data lives, with the path shown relative to `base`.
    pub fn describe_relative_to(&self, base: &Path) -> String {
        crate::describe_path(self.path.as_ref(), Some(base))
    }

    /// Run a batch of statements (`bantam up --sqlite`).
    pub fn execute_batch(&self, sql: &str) -> Result<(), String> {
        let connection = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        connection.execute_batch(sql).map_err(|e| format!("SQLite database `{}`: {e}", self.label))
    }

    /// Run one statement with parameters, off the async worker threads.
    async fn execute(
        &self,
        statement: String,
        parameters: Vec<SqlValue>,
    ) -> Result<QueryOutput, String> {
        let connection = Arc::clone(&self.connection);
        let result = tokio::task::spawn_blocking(move || {
            let connection = connection.lock().unwrap_or_else(|e| e.into_inner());
            let mut prepared = connection.prepare_cached(&statement)?;
            let columns: Vec<String> =
                prepared.column_names().into_iter().map(String::from).collect();
            let mut rows = Vec::new();
            let mut cursor = prepared.query(rusqlite::params_from_iter(parameters))?;
            while let Some(row) = cursor.next()? {
                let values = (0..columns.len())
                    .map(|i| row.get_ref(i).map(to_sql_value))
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                rows.push(values);
            }
            drop(cursor);
            Ok::<_, rusqlite::Error>(QueryOutput {
                columns,
                rows,
                last_insert_rowid: connection.last_insert_rowid(),
                changes: connection.changes(),
            })
        })
        .await;
        match result {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(error)) => Err(error.to_string()),
            Err(error) => Err(error.to_string()),
        }
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
    database: Arc<SqliteDatabase>,
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
        let connection =
            Connection { database: Arc::clone(database), last_insert_rowid: 0, changes: 0 };
        Ok(self.table.push(connection).map_err(|_| OpenError::TableFull))
    }

    /// Run a statement on an open connection and record its outcome there.
    async fn execute_on(
        &mut self,
        connection: &Resource<Connection>,
        statement: String,
        parameters: Vec<SqlValue>,
    ) -> wasmtime::Result<Result<QueryOutput, String>> {
        let database = Arc::clone(&self.table.get(connection)?.database);
        let output = database.execute(statement, parameters).await;
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
        let database = accessor.with(|mut access| -> wasmtime::Result<Arc<SqliteDatabase>> {
            Ok(Arc::clone(&access.get().table.get(&connection)?.database))
        })?;
        let output = match database.execute(statement, parameters(params)).await {
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
