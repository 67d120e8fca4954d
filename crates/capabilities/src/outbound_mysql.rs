//! Outbound MySQL: `spin:mysql/mysql@3.0.0` (spin-sdk 7) and
//! `fermyon:spin/mysql@2.0.0` (spin-sdk 2 to 5), on `mysql_async` with
//! rustls.
//!
//! `open(address)` takes a `mysql://user:password@host:port/db` URL. The
//! component must be granted `mysql://host:port` in
//! `allowed_outbound_hosts`; otherwise the guest gets `connection-failed`,
//! as on Spin, and the log says which entry is missing. Each open is its
//! own connection (session state such as `USE` or variables stays in it),
//! made over TCP to the addresses the grant check resolved and checked.

use std::sync::Arc;
use std::time::Duration;

use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::prelude::Queryable;
use wasmtime::component::{Accessor, FutureReader, Resource, StreamReader};

use crate::bindings::fermyon::spin::mysql as v2_mysql;
use crate::bindings::fermyon::spin::rdbms_types as v2;
use crate::bindings::spin::mysql::mysql as v3;
use crate::{
    Capabilities, CapabilitiesView, CheckedTarget, ComponentCapabilities, MAX_RESULT_BYTES,
};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An open connection, as a guest holds it; locked for each call, which
/// may outlive the borrow of the table.
pub struct MysqlConnection {
    connection: Arc<tokio::sync::Mutex<mysql_async::Conn>>,
}

/// A failure, before mapping to each interface's error (same cases, named
/// as the WIT names them).
#[allow(clippy::enum_variant_names)]
enum Failure {
    ConnectionFailed(String),
    QueryFailed(String),
    ValueConversionFailed(String),
}

/// A column type, independent of the interface version.
#[derive(Clone, Copy)]
enum DataType {
    Int8,
    Int16,
    Int32,
    Int64,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Floating32,
    Floating64,
    Str,
    Binary,
    Other,
}

impl DataType {
    fn is_unsigned(self) -> bool {
        matches!(self, DataType::Uint8 | DataType::Uint16 | DataType::Uint32 | DataType::Uint64)
    }
}

/// A value, independent of the interface version.
enum Value {
    Int(i64, DataType),
    Uint(u64, DataType),
    Floating32(f32),
    Floating64(f64),
    Str(String),
    Binary(Vec<u8>),
    Null,
}

async fn connect(
    component: &ComponentCapabilities,
    address: &str,
) -> Result<MysqlConnection, Failure> {
    let checked = crate::check_outbound_resolved(component, address)
        .await
        .map_err(Failure::ConnectionFailed)?;
    let options = mysql_async::Opts::from_url(address)
        .map_err(|e| Failure::ConnectionFailed(format!("invalid address: {e}")))?;
    let connection =
        tokio::time::timeout(CONNECT_TIMEOUT, mysql_async::Conn::new(pinned(options, &checked)?))
            .await
            .map_err(|_| Failure::ConnectionFailed("timed out connecting".into()))?
            .map_err(|e| Failure::ConnectionFailed(e.to_string()))?;
    Ok(MysqlConnection { connection: Arc::new(tokio::sync::Mutex::new(connection)) })
}

/// `options` connecting only to the `checked` addresses, over TCP: TLS
/// still verifies the host name of the URL. Unix sockets are no host a
/// grant could name: mysql_async would open one named by `?socket=`, or
/// by the server's `@@socket` after connecting (`prefer_socket`), so
/// neither is allowed. No packet may be larger than a whole result: left
/// unset, the limit is whatever the server announces (up to 1 GiB), and
/// a packet is buffered whole before its row reaches the result's count.
fn pinned(
    options: mysql_async::Opts,
    checked: &CheckedTarget,
) -> Result<mysql_async::Opts, Failure> {
    if options.socket().is_some() {
        return Err(Failure::ConnectionFailed(
            "Unix sockets are not available to components".into(),
        ));
    }
    let max_packet =
        options.max_allowed_packet().map_or(MAX_RESULT_BYTES, |own| own.min(MAX_RESULT_BYTES));
    Ok(mysql_async::OptsBuilder::from_opts(options)
        .max_allowed_packet(Some(max_packet))
        .tcp_port(checked.target.port)
        .resolved_ips(Some(checked.addresses.clone()))
        .prefer_socket(false)
        .into())
}

/// The WIT's type for a column.
fn data_type(column: &mysql_async::Column) -> DataType {
    let unsigned = column.flags().contains(ColumnFlags::UNSIGNED_FLAG);
    // Character set 63 is `binary`: BLOB and VARBINARY share their column
    // types with TEXT and VARCHAR.
    let binary = column.character_set() == 63;
    let text_or_blob = matches!(
        column.column_type(),
        ColumnType::MYSQL_TYPE_VARCHAR
            | ColumnType::MYSQL_TYPE_VAR_STRING
            | ColumnType::MYSQL_TYPE_STRING
            | ColumnType::MYSQL_TYPE_TINY_BLOB
            | ColumnType::MYSQL_TYPE_MEDIUM_BLOB
            | ColumnType::MYSQL_TYPE_LONG_BLOB
            | ColumnType::MYSQL_TYPE_BLOB
    );
    match (column.column_type(), unsigned) {
        _ if text_or_blob && binary => DataType::Binary,
        _ if text_or_blob => DataType::Str,
        (ColumnType::MYSQL_TYPE_TINY, false) => DataType::Int8,
        (ColumnType::MYSQL_TYPE_TINY, true) => DataType::Uint8,
        (ColumnType::MYSQL_TYPE_SHORT | ColumnType::MYSQL_TYPE_YEAR, false) => DataType::Int16,
        (ColumnType::MYSQL_TYPE_SHORT | ColumnType::MYSQL_TYPE_YEAR, true) => DataType::Uint16,
        (ColumnType::MYSQL_TYPE_INT24 | ColumnType::MYSQL_TYPE_LONG, false) => DataType::Int32,
        (ColumnType::MYSQL_TYPE_INT24 | ColumnType::MYSQL_TYPE_LONG, true) => DataType::Uint32,
        (ColumnType::MYSQL_TYPE_LONGLONG, false) => DataType::Int64,
        (ColumnType::MYSQL_TYPE_LONGLONG, true) => DataType::Uint64,
        (ColumnType::MYSQL_TYPE_FLOAT, _) => DataType::Floating32,
        (ColumnType::MYSQL_TYPE_DOUBLE, _) => DataType::Floating64,
        (
            ColumnType::MYSQL_TYPE_JSON
            | ColumnType::MYSQL_TYPE_DECIMAL
            | ColumnType::MYSQL_TYPE_NEWDECIMAL
            | ColumnType::MYSQL_TYPE_ENUM
            | ColumnType::MYSQL_TYPE_SET
            | ColumnType::MYSQL_TYPE_DATE
            | ColumnType::MYSQL_TYPE_TIME
            | ColumnType::MYSQL_TYPE_DATETIME
            | ColumnType::MYSQL_TYPE_TIMESTAMP,
            _,
        ) => DataType::Str,
        (ColumnType::MYSQL_TYPE_BIT, _) => DataType::Binary,
        _ => DataType::Other,
    }
}

/// One value of a column of type `ty`.
fn value(raw: mysql_async::Value, ty: DataType) -> Result<Value, Failure> {
    use mysql_async::Value as M;
    Ok(match raw {
        M::NULL => Value::Null,
        // The server may send an unsigned column's value as a signed
        // integer and the other way round: the column's type decides.
        M::Int(i) if ty.is_unsigned() => Value::Uint(i as u64, ty),
        M::Int(i) => Value::Int(i, ty),
        M::UInt(u) if ty.is_unsigned() => Value::Uint(u, ty),
        M::UInt(u) => Value::Int(u as i64, ty),
        M::Float(f) => Value::Floating32(f),
        M::Double(d) => Value::Floating64(d),
        M::Bytes(bytes) => match ty {
            DataType::Binary | DataType::Other => Value::Binary(bytes),
            _ => Value::Str(String::from_utf8(bytes).map_err(|e| {
                Failure::ValueConversionFailed(format!("text column is not UTF-8: {e}"))
            })?),
        },
        // The binary protocol sends dates and times as values; they are
        // text to the guest, as MySQL prints them.
        date @ (M::Date(..) | M::Time(..)) => {
            Value::Str(date.as_sql(true).trim_matches('\'').to_string())
        }
    })
}

/// What a value holds of the host's memory besides itself.
fn heap_bytes(value: &mysql_async::Value) -> usize {
    match value {
        mysql_async::Value::Bytes(bytes) => bytes.len(),
        _ => 0,
    }
}

/// Run a query: its column names and types, and its rows.
async fn query(
    connection: &tokio::sync::Mutex<mysql_async::Conn>,
    statement: &str,
    params: Vec<mysql_async::Value>,
) -> Result<(Vec<(String, DataType)>, Vec<Vec<Value>>), Failure> {
    let mut connection = connection.lock().await;
    let params = if params.is_empty() {
        mysql_async::Params::Empty
    } else {
        mysql_async::Params::Positional(params)
    };
    let mut result = connection
        .exec_iter(statement, params)
        .await
        .map_err(|e| Failure::QueryFailed(e.to_string()))?;
    let columns: Vec<(String, DataType)> =
        result.columns_ref().iter().map(|c| (c.name_str().into_owned(), data_type(c))).collect();
    // Row by row, so that a result past the cap stops there rather than
    // first filling the host's memory.
    let mut rows = Vec::new();
    let mut size = crate::ResultSize::rows();
    while let Some(row) = result.next().await.map_err(|e| Failure::QueryFailed(e.to_string()))? {
        let row = row.unwrap();
        size.add_row::<Value>(row.len(), row.iter().map(heap_bytes).sum())
            .map_err(Failure::QueryFailed)?;
        let values = row.into_iter().zip(&columns).map(|(raw, (_, ty))| value(raw, *ty));
        rows.push(values.collect::<Result<Vec<_>, _>>()?);
    }
    Ok((columns, rows))
}

async fn execute(
    connection: &tokio::sync::Mutex<mysql_async::Conn>,
    statement: &str,
    params: Vec<mysql_async::Value>,
) -> Result<(), Failure> {
    let mut connection = connection.lock().await;
    let params = if params.is_empty() {
        mysql_async::Params::Empty
    } else {
        mysql_async::Params::Positional(params)
    };
    connection.exec_drop(statement, params).await.map_err(|e| Failure::QueryFailed(e.to_string()))
}

/// Generates one interface version's conversions: both versions have the
/// same types, under different names.
macro_rules! conversions {
    ($wit:ident) => {
        impl From<Failure> for $wit::Error {
            fn from(failure: Failure) -> Self {
                match failure {
                    Failure::ConnectionFailed(m) => $wit::Error::ConnectionFailed(m),
                    Failure::QueryFailed(m) => $wit::Error::QueryFailed(m),
                    Failure::ValueConversionFailed(m) => $wit::Error::ValueConversionFailed(m),
                }
            }
        }

        impl From<DataType> for $wit::DbDataType {
            fn from(ty: DataType) -> Self {
                match ty {
                    DataType::Int8 => $wit::DbDataType::Int8,
                    DataType::Int16 => $wit::DbDataType::Int16,
                    DataType::Int32 => $wit::DbDataType::Int32,
                    DataType::Int64 => $wit::DbDataType::Int64,
                    DataType::Uint8 => $wit::DbDataType::Uint8,
                    DataType::Uint16 => $wit::DbDataType::Uint16,
                    DataType::Uint32 => $wit::DbDataType::Uint32,
                    DataType::Uint64 => $wit::DbDataType::Uint64,
                    DataType::Floating32 => $wit::DbDataType::Floating32,
                    DataType::Floating64 => $wit::DbDataType::Floating64,
                    DataType::Str => $wit::DbDataType::Str,
                    DataType::Binary => $wit::DbDataType::Binary,
                    DataType::Other => $wit::DbDataType::Other,
                }
            }
        }

        impl From<Value> for $wit::DbValue {
            fn from(value: Value) -> Self {
                // Integers take the width of their column, as in Spin.
                match value {
                    Value::Int(i, DataType::Int8) => $wit::DbValue::Int8(i as i8),
                    Value::Int(i, DataType::Int16) => $wit::DbValue::Int16(i as i16),
                    Value::Int(i, DataType::Int32) => $wit::DbValue::Int32(i as i32),
                    Value::Int(i, _) => $wit::DbValue::Int64(i),
                    Value::Uint(u, DataType::Uint8) => $wit::DbValue::Uint8(u as u8),
                    Value::Uint(u, DataType::Uint16) => $wit::DbValue::Uint16(u as u16),
                    Value::Uint(u, DataType::Uint32) => $wit::DbValue::Uint32(u as u32),
                    Value::Uint(u, _) => $wit::DbValue::Uint64(u),
                    Value::Floating32(f) => $wit::DbValue::Floating32(f),
                    Value::Floating64(d) => $wit::DbValue::Floating64(d),
                    Value::Str(s) => $wit::DbValue::Str(s),
                    Value::Binary(b) => $wit::DbValue::Binary(b),
                    Value::Null => $wit::DbValue::DbNull,
                }
            }
        }

        pub(super) fn params(params: Vec<$wit::ParameterValue>) -> Vec<mysql_async::Value> {
            use mysql_async::Value as M;
            params
                .into_iter()
                .map(|p| match p {
                    $wit::ParameterValue::Boolean(b) => M::Int(b.into()),
                    $wit::ParameterValue::Int8(i) => M::Int(i.into()),
                    $wit::ParameterValue::Int16(i) => M::Int(i.into()),
                    $wit::ParameterValue::Int32(i) => M::Int(i.into()),
                    $wit::ParameterValue::Int64(i) => M::Int(i),
                    $wit::ParameterValue::Uint8(u) => M::UInt(u.into()),
                    $wit::ParameterValue::Uint16(u) => M::UInt(u.into()),
                    $wit::ParameterValue::Uint32(u) => M::UInt(u.into()),
                    $wit::ParameterValue::Uint64(u) => M::UInt(u),
                    $wit::ParameterValue::Floating32(f) => M::Float(f),
                    $wit::ParameterValue::Floating64(d) => M::Double(d),
                    $wit::ParameterValue::Str(s) => M::Bytes(s.into_bytes()),
                    $wit::ParameterValue::Binary(b) => M::Bytes(b),
                    $wit::ParameterValue::DbNull => M::NULL,
                })
                .collect()
        }

        pub(super) fn columns(columns: Vec<(String, DataType)>) -> Vec<$wit::Column> {
            columns
                .into_iter()
                .map(|(name, ty)| $wit::Column { name, data_type: ty.into() })
                .collect()
        }

        pub(super) fn rows(rows: Vec<Vec<Value>>) -> Vec<Vec<$wit::DbValue>> {
            rows.into_iter().map(|row| row.into_iter().map(Into::into).collect()).collect()
        }
    };
}

mod v3_glue {
    use super::*;
    conversions!(v3);
}

mod v2_glue {
    use super::*;
    conversions!(v2);
}

impl CapabilitiesView<'_> {
    fn mysql(
        &self,
        handle: &Resource<MysqlConnection>,
    ) -> wasmtime::Result<Arc<tokio::sync::Mutex<mysql_async::Conn>>> {
        Ok(Arc::clone(&self.table.get(handle)?.connection))
    }
}

type V3<T> = wasmtime::Result<Result<T, v3::Error>>;

impl v3::Host for CapabilitiesView<'_> {}

impl v3::HostConnection for CapabilitiesView<'_> {
    async fn drop(&mut self, this: Resource<MysqlConnection>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl<T> v3::HostConnectionWithStore<T> for Capabilities {
    async fn open(accessor: &Accessor<T, Self>, address: String) -> V3<Resource<MysqlConnection>> {
        let component = accessor.with(|mut access| Arc::clone(access.get().state.component()));
        let connected = connect(&component, &address).await;
        accessor.with(|mut access| match connected {
            Ok(connection) => Ok(Ok(access.get().table.push(connection)?)),
            Err(failure) => Ok(Err(failure.into())),
        })
    }

    async fn query(
        accessor: &Accessor<T, Self>,
        this: Resource<MysqlConnection>,
        statement: String,
        params: Vec<v3::ParameterValue>,
    ) -> V3<(Vec<v3::Column>, StreamReader<v3::Row>, FutureReader<Result<(), v3::Error>>)> {
        let connection = accessor.with(|mut access| access.get().mysql(&this))?;
        let (columns, rows) = match query(&connection, &statement, v3_glue::params(params)).await {
            Ok(result) => result,
            Err(failure) => return Ok(Err(failure.into())),
        };
        accessor.with(|mut access| {
            let rows = StreamReader::new(&mut access, v3_glue::rows(rows))?;
            let done = FutureReader::new(&mut access, async { Ok::<_, wasmtime::Error>(Ok(())) })?;
            Ok(Ok((v3_glue::columns(columns), rows, done)))
        })
    }

    async fn execute(
        accessor: &Accessor<T, Self>,
        this: Resource<MysqlConnection>,
        statement: String,
        params: Vec<v3::ParameterValue>,
    ) -> V3<()> {
        let connection = accessor.with(|mut access| access.get().mysql(&this))?;
        Ok(execute(&connection, &statement, v3_glue::params(params)).await.map_err(Into::into))
    }
}

type V2<T> = wasmtime::Result<Result<T, v2::Error>>;

impl v2::Host for CapabilitiesView<'_> {}
impl v2_mysql::Host for CapabilitiesView<'_> {}

impl v2_mysql::HostConnection for CapabilitiesView<'_> {
    async fn open(&mut self, address: String) -> V2<Resource<MysqlConnection>> {
        let component = Arc::clone(self.state.component());
        Ok(match connect(&component, &address).await {
            Ok(connection) => Ok(self.table.push(connection)?),
            Err(failure) => Err(failure.into()),
        })
    }

    async fn query(
        &mut self,
        this: Resource<MysqlConnection>,
        statement: String,
        params: Vec<v2::ParameterValue>,
    ) -> V2<v2::RowSet> {
        let connection = self.mysql(&this)?;
        Ok(query(&connection, &statement, v2_glue::params(params))
            .await
            .map(|(columns, rows)| v2::RowSet {
                columns: v2_glue::columns(columns),
                rows: v2_glue::rows(rows),
            })
            .map_err(Into::into))
    }

    async fn execute(
        &mut self,
        this: Resource<MysqlConnection>,
        statement: String,
        params: Vec<v2::ParameterValue>,
    ) -> V2<()> {
        let connection = self.mysql(&this)?;
        Ok(execute(&connection, &statement, v2_glue::params(params)).await.map_err(Into::into))
    }

    async fn drop(&mut self, this: Resource<MysqlConnection>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bantam_manifest::allowed_hosts::OutboundTarget;
    use mysql_async::Opts;

    use super::*;
    use crate::testing::{UNRESOLVABLE, checked, listener, reaches};

    fn target(host: &str, port: u16) -> CheckedTarget {
        CheckedTarget {
            target: OutboundTarget { scheme: "mysql".into(), host: host.into(), port },
            addresses: vec!["203.0.113.7".parse().unwrap()],
        }
    }

    #[test]
    fn the_pinned_options_keep_the_name_for_tls_and_no_socket() {
        let options = Opts::from_url("mysql://u:p@db.example.com:3307/d?require_ssl=true").unwrap();
        let Ok(pinned) = pinned(options, &target("db.example.com", 3307)) else {
            panic!("refused");
        };
        assert_eq!(pinned.resolved_ips(), &Some(vec!["203.0.113.7".parse().unwrap()]));
        assert_eq!((pinned.ip_or_hostname(), pinned.tcp_port()), ("db.example.com", 3307));
        assert!(pinned.ssl_opts().is_some());
        // The server's @@socket is never followed.
        assert!(!pinned.prefer_socket());
        // Nor its word on how large a packet may be.
        assert_eq!(pinned.max_allowed_packet(), Some(MAX_RESULT_BYTES));
        let packet_limit = |query: &str| {
            let url = format!("mysql://u@db.example.com/d?{query}");
            let options =
                super::pinned(Opts::from_url(&url).unwrap(), &target("db.example.com", 3306));
            options.ok().unwrap().max_allowed_packet()
        };
        assert_eq!(packet_limit("max_allowed_packet=1073741824"), Some(MAX_RESULT_BYTES));
        assert_eq!(packet_limit("max_allowed_packet=65536"), Some(65536));
    }

    #[test]
    fn a_unix_socket_is_refused() {
        let url = "mysql://u@db.example.com/d?socket=/run/mysqld/mysqld.sock";
        let pinned = pinned(Opts::from_url(url).unwrap(), &target("db.example.com", 3306));
        assert!(matches!(pinned, Err(Failure::ConnectionFailed(m)) if m.contains("Unix sockets")));
    }

    #[tokio::test]
    async fn connects_to_the_checked_address_never_the_name() {
        let (listener, port) = listener().await;
        let options = Opts::from_url(&format!("mysql://u@{UNRESOLVABLE}:{port}/d")).unwrap();
        let Ok(options) = pinned(options, &checked("mysql", port, &["127.0.0.1"]).await) else {
            panic!("refused");
        };
        let connecting = async move { drop(mysql_async::Conn::new(options).await) };
        assert!(reaches(&listener, connecting).await);
    }
}
