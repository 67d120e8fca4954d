//! Exercises the host capabilities through spin-sdk 5.2 (wasi:http 0.2):
//! `fermyon:spin/key-value@2`, `fermyon:spin/sqlite@2`,
//! `spin:sqlite/sqlite@3.0.0`, `fermyon:spin/variables@2`, `wasi:keyvalue`
//! and `wasi:config`.
//!
//! Same protocol as the spin-sdk 7 guest (`capabilities-p3`): the query
//! picks what to do; 200 with a text result, or 500 with
//! `error: <wit-error-case>[: message]`.

use probe_logic::SqlParam;
use spin_sdk::http::{IncomingRequest, IntoResponse, Response};
use spin_sdk::http_component;
use spin_sdk::wit::wasi::config::store as wasi_config;
use spin_sdk::wit::wasi::keyvalue::store as wasi_kv;
use spin_sdk::{key_value, sqlite, sqlite3, variables};

type Answer = Result<String, String>;

#[http_component]
fn handle(request: IncomingRequest) -> anyhow::Result<impl IntoResponse> {
    let q = probe_logic::query_params(&request.uri());
    let arg = |name: &str| q.get(name).cloned().unwrap_or_default();
    let answer = match arg("cap").as_str() {
        "kv" => kv(&arg("store"), &arg("op"), &arg("key"), &arg("value")),
        "wasi-kv" => wasi_keyvalue(&arg("store"), &arg("op"), &arg("key"), &arg("value")),
        "sqlite" => sql_v2(&arg("db"), &arg("sql"), &arg("args")),
        "sqlite3" => sql_v3(&arg("db"), &arg("sql"), &arg("args")),
        "var" => variables::get(&arg("name")).map_err(|e| match e {
            variables::Error::InvalidName(m) => format!("invalid-name: {m}"),
            variables::Error::Undefined(m) => format!("undefined: {m}"),
            variables::Error::Provider(m) => format!("provider: {m}"),
            variables::Error::Other(m) => format!("other: {m}"),
        }),
        "config" => wasi_config::get(&arg("name"))
            .map(|v| v.unwrap_or_else(|| "<none>".into()))
            .map_err(|e| format!("{e:?}")),
        "redis" => outbound_redis(&arg("url"), &arg("op"), &arg("key"), &arg("value")),
        "mqtt" => mqtt(&arg("url"), &arg("key"), &arg("value"), &arg("qos")),
        "http" => spin_sdk::http::run(outbound_http(&arg("url"), &arg("body"))),
        "mysql" => mysql(&arg("url"), &arg("op"), &arg("sql"), &arg("args")),
        "pg" => postgres(&arg("url"), &arg("op"), &arg("sql"), &arg("args")),
        "pg3" => postgres3(&arg("url"), &arg("op"), &arg("sql"), &arg("args")),
        other => Err(format!("unknown cap `{other}`")),
    };
    let (status, body) = match answer {
        Ok(text) => (200, text),
        Err(error) => (500, format!("error: {error}")),
    };
    Ok(Response::new(status, body))
}

fn kv_error(error: key_value::Error) -> String {
    match error {
        key_value::Error::StoreTableFull => "store-table-full".into(),
        key_value::Error::NoSuchStore => "no-such-store".into(),
        key_value::Error::AccessDenied => "access-denied".into(),
        key_value::Error::Other(m) => format!("other: {m}"),
    }
}

fn show(value: Option<Vec<u8>>) -> String {
    value.map_or("<none>".into(), |v| String::from_utf8_lossy(&v).into_owned())
}

fn kv(store: &str, op: &str, key: &str, value: &str) -> Answer {
    let store = key_value::Store::open(store).map_err(kv_error)?;
    match op {
        "open" => Ok("opened".into()),
        "get" => store.get(key).map(show).map_err(kv_error),
        "set" => store.set(key, value.as_bytes()).map(|()| "ok".into()).map_err(kv_error),
        "delete" => store.delete(key).map(|()| "ok".into()).map_err(kv_error),
        "exists" => store.exists(key).map(|e| e.to_string()).map_err(kv_error),
        "keys" => store.get_keys().map(|k| k.join(",")).map_err(kv_error),
        other => Err(format!("unknown op `{other}`")),
    }
}

fn wasi_keyvalue(store: &str, op: &str, key: &str, value: &str) -> Answer {
    let error = |e: wasi_kv::Error| match e {
        wasi_kv::Error::NoSuchStore => "no-such-store".to_string(),
        wasi_kv::Error::AccessDenied => "access-denied".to_string(),
        wasi_kv::Error::Other(m) => format!("other: {m}"),
    };
    let bucket = wasi_kv::open(store).map_err(error)?;
    match op {
        "get" => bucket.get(key).map(show).map_err(error),
        "set" => bucket.set(key, value.as_bytes()).map(|()| "ok".into()).map_err(error),
        other => Err(format!("unknown op `{other}`")),
    }
}

fn sql_error_v2(error: sqlite::Error) -> String {
    match error {
        sqlite::Error::NoSuchDatabase => "no-such-database".into(),
        sqlite::Error::AccessDenied => "access-denied".into(),
        sqlite::Error::InvalidConnection => "invalid-connection".into(),
        sqlite::Error::DatabaseFull => "database-full".into(),
        sqlite::Error::Io(m) => format!("io: {m}"),
    }
}

fn sql_error_v3(error: sqlite3::Error) -> String {
    match error {
        sqlite3::Error::NoSuchDatabase => "no-such-database".into(),
        sqlite3::Error::AccessDenied => "access-denied".into(),
        sqlite3::Error::InvalidConnection => "invalid-connection".into(),
        sqlite3::Error::DatabaseFull => "database-full".into(),
        sqlite3::Error::Io(m) => format!("io: {m}"),
    }
}

/// Columns on the first line, then one line per row.
fn table(columns: Vec<String>, rows: Vec<Vec<SqlParam>>) -> String {
    let mut out = columns.join("|");
    for row in rows {
        out.push('\n');
        out.push_str(&row.iter().map(SqlParam::show).collect::<Vec<_>>().join("|"));
    }
    out
}

fn sql_v2(db: &str, statement: &str, args: &str) -> Answer {
    let connection = sqlite::Connection::open(db).map_err(sql_error_v2)?;
    let params: Vec<sqlite::Value> = probe_logic::sql_params(args)
        .into_iter()
        .map(|p| match p {
            SqlParam::Integer(i) => sqlite::Value::Integer(i),
            SqlParam::Real(r) => sqlite::Value::Real(r),
            SqlParam::Text(t) => sqlite::Value::Text(t),
            SqlParam::Blob(b) => sqlite::Value::Blob(b),
            SqlParam::Null => sqlite::Value::Null,
        })
        .collect();
    let result = connection.execute(statement, &params).map_err(sql_error_v2)?;
    let rows = result
        .rows
        .into_iter()
        .map(|row| {
            row.values
                .into_iter()
                .map(|v| match v {
                    sqlite::Value::Integer(i) => SqlParam::Integer(i),
                    sqlite::Value::Real(r) => SqlParam::Real(r),
                    sqlite::Value::Text(t) => SqlParam::Text(t),
                    sqlite::Value::Blob(b) => SqlParam::Blob(b),
                    sqlite::Value::Null => SqlParam::Null,
                })
                .collect()
        })
        .collect();
    Ok(table(result.columns, rows))
}

/// As `sql_v2`, plus a last line `rowid=<last insert rowid> changes=<n>`.
fn sql_v3(db: &str, statement: &str, args: &str) -> Answer {
    let connection = sqlite3::Connection::open(db).map_err(sql_error_v3)?;
    let params: Vec<sqlite3::Value> = probe_logic::sql_params(args)
        .into_iter()
        .map(|p| match p {
            SqlParam::Integer(i) => sqlite3::Value::Integer(i),
            SqlParam::Real(r) => sqlite3::Value::Real(r),
            SqlParam::Text(t) => sqlite3::Value::Text(t),
            SqlParam::Blob(b) => sqlite3::Value::Blob(b),
            SqlParam::Null => sqlite3::Value::Null,
        })
        .collect();
    let result = connection.execute(statement, &params).map_err(sql_error_v3)?;
    let rows = result
        .rows
        .into_iter()
        .map(|row| {
            row.values
                .into_iter()
                .map(|v| match v {
                    sqlite3::Value::Integer(i) => SqlParam::Integer(i),
                    sqlite3::Value::Real(r) => SqlParam::Real(r),
                    sqlite3::Value::Text(t) => SqlParam::Text(t),
                    sqlite3::Value::Blob(b) => SqlParam::Blob(b),
                    sqlite3::Value::Null => SqlParam::Null,
                })
                .collect()
        })
        .collect();
    let mut out = table(result.columns, rows);
    out.push_str(&format!(
        "\nrowid={} changes={}",
        connection.last_insert_rowid(),
        connection.changes()
    ));
    Ok(out)
}

/// Outbound Redis (fermyon:spin/redis@2), as in the spin-sdk 7 guest.
fn outbound_redis(url: &str, op: &str, key: &str, value: &str) -> Answer {
    use spin_sdk::redis::{Connection, Error, RedisParameter, RedisResult};
    let error = |e: Error| match e {
        Error::InvalidAddress => "invalid-address".to_string(),
        Error::TooManyConnections => "too-many-connections".to_string(),
        Error::TypeError => "type-error".to_string(),
        Error::Other(m) => format!("other: {m}"),
    };
    let connection = Connection::open(url).map_err(error)?;
    let list = || value.split(',').filter(|v| !v.is_empty()).map(String::from).collect::<Vec<_>>();
    match op {
        "set" => connection.set(key, &value.as_bytes().to_vec()).map(|()| "ok".into()),
        "get" => connection.get(key).map(show),
        "incr" => connection.incr(key).map(|n| n.to_string()),
        "del" => connection.del(&list()).map(|n| n.to_string()),
        "sadd" => connection.sadd(key, &list()).map(|n| n.to_string()),
        "smembers" => connection.smembers(key).map(|mut m| {
            m.sort();
            m.join(",")
        }),
        "execute" => {
            let arguments: Vec<RedisParameter> = value
                .split(' ')
                .filter(|v| !v.is_empty())
                .map(|v| match v.parse::<i64>() {
                    Ok(i) => RedisParameter::Int64(i),
                    Err(_) => RedisParameter::Binary(v.as_bytes().to_vec()),
                })
                .collect();
            connection.execute(key, &arguments).map(|results| {
                let shown = results.into_iter().map(|r| match r {
                    RedisResult::Nil => "nil".to_string(),
                    RedisResult::Status(s) => format!("status:{s}"),
                    RedisResult::Int64(i) => format!("int:{i}"),
                    RedisResult::Binary(b) => format!("bin:{}", String::from_utf8_lossy(&b)),
                });
                shown.collect::<Vec<_>>().join(",")
            })
        }
        other => return Err(format!("unknown op `{other}`")),
    }
    .map_err(error)
}

/// Outbound MQTT: publish `value` to topic `key` at `qos` (0, 1 or 2).
fn mqtt(url: &str, topic: &str, value: &str, qos: &str) -> Answer {
    use spin_sdk::mqtt::{Connection, Error, Qos};
    let error = |e: Error| match e {
        Error::InvalidAddress => "invalid-address".to_string(),
        Error::TooManyConnections => "too-many-connections".to_string(),
        Error::ConnectionFailed(m) => format!("connection-failed: {m}"),
        Error::Other(m) => format!("other: {m}"),
    };
    let qos = match qos {
        "2" => Qos::ExactlyOnce,
        "1" => Qos::AtLeastOnce,
        _ => Qos::AtMostOnce,
    };
    let connection = Connection::open(url, "", "", 30).map_err(error)?;
    connection.publish(topic, &value.as_bytes().to_vec(), qos).map_err(error)?;
    Ok("published".into())
}

/// Outbound HTTP (wasi:http 0.2 outgoing-handler): GET `url`, or POST
/// `body` to it; the answer is `<status> <body>`, or the WIT error code.
async fn outbound_http(url: &str, body: &str) -> Answer {
    use spin_sdk::http::{Method, Request, SendError};
    let method = if body.is_empty() { Method::Get } else { Method::Post };
    let request = Request::builder().method(method).uri(url).body(body.as_bytes().to_vec()).build();
    let response: Response = spin_sdk::http::send(request).await.map_err(|error| match error {
        SendError::Http(code) => format!("{code:?}"),
        other => format!("other: {other}"),
    })?;
    Ok(format!("{} {}", response.status(), String::from_utf8_lossy(response.body())))
}

/// Spin 2's MySQL and PostgreSQL interfaces share their error and value
/// types (`rdbms-types`).
fn rdbms_error(e: spin_sdk::mysql::MysqlError) -> String {
    use spin_sdk::mysql::MysqlError as E;
    match e {
        E::ConnectionFailed(m) => format!("connection-failed: {m}"),
        E::BadParameter(m) => format!("bad-parameter: {m}"),
        E::QueryFailed(m) => format!("query-failed: {m}"),
        E::ValueConversionFailed(m) => format!("value-conversion-failed: {m}"),
        E::Other(m) => format!("other: {m}"),
    }
}

fn rdbms_params(args: &str) -> Vec<spin_sdk::mysql::ParameterValue> {
    use spin_sdk::mysql::ParameterValue as P;
    probe_logic::sql_params(args)
        .into_iter()
        .map(|p| match p {
            SqlParam::Integer(i) => P::Int64(i),
            SqlParam::Real(r) => P::Floating64(r),
            SqlParam::Text(t) => P::Str(t),
            SqlParam::Blob(b) => P::Binary(b),
            SqlParam::Null => P::DbNull,
        })
        .collect()
}

fn render_row_set(set: spin_sdk::mysql::RowSet) -> String {
    let columns: Vec<(String, _)> =
        set.columns.iter().map(|c| (c.name.clone(), c.data_type)).collect();
    probe_logic::render_rows(&columns, &set.rows)
}

/// Outbound MySQL (fermyon:spin/mysql@2): same protocol as the spin-sdk 7
/// guest.
fn mysql(url: &str, op: &str, sql: &str, args: &str) -> Answer {
    let db = spin_sdk::mysql::Connection::open(url).map_err(rdbms_error)?;
    let params = rdbms_params(args);
    match op {
        "execute" => db.execute(sql, &params).map(|()| "ok".into()).map_err(rdbms_error),
        "query" => db.query(sql, &params).map(render_row_set).map_err(rdbms_error),
        other => Err(format!("unknown op `{other}`")),
    }
}

/// Outbound PostgreSQL (fermyon:spin/postgres@2): same protocol as
/// `mysql`; `execute` answers the row count.
fn postgres(url: &str, op: &str, sql: &str, args: &str) -> Answer {
    let db = spin_sdk::pg::Connection::open(url).map_err(rdbms_error)?;
    let params = rdbms_params(args);
    match op {
        "execute" => db.execute(sql, &params).map(|n| n.to_string()).map_err(rdbms_error),
        "query" => db.query(sql, &params).map(render_row_set).map_err(rdbms_error),
        other => Err(format!("unknown op `{other}`")),
    }
}

/// Outbound PostgreSQL (spin:postgres@3.0.0, spin-sdk 5.2's `pg3`): same
/// protocol as `postgres`.
fn postgres3(url: &str, op: &str, sql: &str, args: &str) -> Answer {
    use spin_sdk::pg3::{Connection, ParameterValue as P, PgError as Error};
    let error = |e: Error| match e {
        Error::ConnectionFailed(m) => format!("connection-failed: {m}"),
        Error::BadParameter(m) => format!("bad-parameter: {m}"),
        Error::QueryFailed(m) => format!("query-failed: {m}"),
        Error::ValueConversionFailed(m) => format!("value-conversion-failed: {m}"),
        Error::Other(m) => format!("other: {m}"),
    };
    let params: Vec<P> = probe_logic::sql_params(args)
        .into_iter()
        .map(|p| match p {
            SqlParam::Integer(i) => P::Int64(i),
            SqlParam::Real(r) => P::Floating64(r),
            // `d:Y-M-D` is a date here.
            SqlParam::Text(t) => match t.strip_prefix("d:") {
                Some(date) => {
                    let part: Vec<i64> = date.split('-').map(|x| x.parse().unwrap_or(0)).collect();
                    P::Date((part[0] as i32, part[1] as u8, part[2] as u8))
                }
                None => P::Str(t),
            },
            SqlParam::Blob(b) => P::Binary(b),
            SqlParam::Null => P::DbNull,
        })
        .collect();
    let db = Connection::open(url).map_err(error)?;
    match op {
        "execute" => db.execute(sql, &params).map(|n| n.to_string()).map_err(error),
        "query" => {
            let set = db.query(sql, &params).map_err(error)?;
            let columns: Vec<(String, _)> =
                set.columns.iter().map(|c| (c.name.clone(), c.data_type)).collect();
            Ok(probe_logic::render_rows(&columns, &set.rows))
        }
        other => Err(format!("unknown op `{other}`")),
    }
}
