//! Exercises the host capabilities through spin-sdk 7: `spin:key-value@3`,
//! `spin:sqlite@3.1`, `spin:variables@3`, and `wasi:keyvalue` and
//! `wasi:config` (the SDK's experimental bindings).
//!
//! The query picks what to do (`cap=...&op=...`); the answer is 200 with a
//! text result, or 500 with `error: <wit-error-case>[: message]`.

use spin_sdk::experimental::wasi::config::store as wasi_config;
use spin_sdk::experimental::wasi::keyvalue::{atomics, batch, store as wasi_kv};
use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;
use spin_sdk::{key_value, sqlite, variables};

type Answer = Result<String, String>;

#[http_service]
async fn handle(request: Request) -> impl IntoResponse {
    let q = probe_logic::query_params(&request.uri().to_string());
    let arg = |name: &str| q.get(name).cloned().unwrap_or_default();
    let answer = match arg("cap").as_str() {
        "kv" => kv(&arg("store"), &arg("op"), &arg("key"), &arg("value")).await,
        "wasi-kv" => wasi_keyvalue(&arg("store"), &arg("op"), &arg("key"), &arg("value")),
        "sqlite" => sql(&arg("db"), &arg("sql"), &arg("args")).await,
        "var" => variables::get(arg("name")).await.map_err(|e| match e {
            variables::Error::InvalidName(m) => format!("invalid-name: {m}"),
            variables::Error::Undefined(m) => format!("undefined: {m}"),
            variables::Error::Provider(m) => format!("provider: {m}"),
            variables::Error::Other(m) => format!("other: {m}"),
        }),
        "config" => config(&arg("name")),
        "redis" => outbound_redis(&arg("url"), &arg("op"), &arg("key"), &arg("value")).await,
        "mqtt" => mqtt(&arg("url"), &arg("key"), &arg("value"), &arg("qos")).await,
        "http" => outbound_http(&arg("url"), &arg("body")).await,
        "pg" => postgres(&arg("url"), &arg("op"), &arg("sql"), &arg("args")).await,
        "mysql" => mysql(&arg("url"), &arg("op"), &arg("sql"), &arg("args")).await,
        other => Err(format!("unknown cap `{other}`")),
    };
    let (status, body) = match answer {
        Ok(text) => (200, text),
        Err(error) => (500, format!("error: {error}")),
    };
    spin_sdk::http::Response::builder()
        .status(status)
        .body(spin_sdk::http::FullBody::new(bytes::Bytes::from(body)))
        .unwrap()
}

fn kv_error(error: key_value::Error) -> String {
    match error {
        key_value::Error::StoreTableFull => "store-table-full".into(),
        key_value::Error::NoSuchStore => "no-such-store".into(),
        key_value::Error::AccessDenied => "access-denied".into(),
        key_value::Error::Other(m) => format!("other: {m}"),
    }
}

async fn kv(store: &str, op: &str, key: &str, value: &str) -> Answer {
    if op == "open-many" {
        // Hold `value` open stores at once (a guest that never drops its
        // handles): how many opened, or the error that stopped it.
        let mut open = Vec::new();
        for _ in 0..value.parse::<usize>().unwrap_or(0) {
            open.push(
                key_value::Store::open(store)
                    .await
                    .map_err(|e| format!("{} after {} opened", kv_error(e), open.len()))?,
            );
        }
        return Ok(format!("{} opened", open.len()));
    }
    let store = key_value::Store::open(store).await.map_err(kv_error)?;
    match op {
        "open" => Ok("opened".into()),
        "get" => Ok(match store.get(key).await.map_err(kv_error)? {
            Some(value) => String::from_utf8_lossy(&value).into_owned(),
            None => "<none>".into(),
        }),
        "set" => store.set(key, value.as_bytes()).await.map(|()| "ok".into()).map_err(kv_error),
        "delete" => store.delete(key).await.map(|()| "ok".into()).map_err(kv_error),
        "exists" => store.exists(key).await.map(|e| e.to_string()).map_err(kv_error),
        "keys" => store.get_keys().await.collect().await.map(|k| k.join(",")).map_err(kv_error),
        other => Err(format!("unknown op `{other}`")),
    }
}

fn wasi_kv_error(error: wasi_kv::Error) -> String {
    match error {
        wasi_kv::Error::NoSuchStore => "no-such-store".into(),
        wasi_kv::Error::AccessDenied => "access-denied".into(),
        wasi_kv::Error::Other(m) => format!("other: {m}"),
    }
}

fn show(value: Option<Vec<u8>>) -> String {
    value.map_or("<none>".into(), |v| String::from_utf8_lossy(&v).into_owned())
}

fn wasi_keyvalue(store: &str, op: &str, key: &str, value: &str) -> Answer {
    let bucket = wasi_kv::open(store).map_err(wasi_kv_error)?;
    match op {
        "get" => bucket.get(key).map(show).map_err(wasi_kv_error),
        "set" => bucket.set(key, value.as_bytes()).map(|()| "ok".into()).map_err(wasi_kv_error),
        "delete" => bucket.delete(key).map(|()| "ok".into()).map_err(wasi_kv_error),
        "exists" => bucket.exists(key).map(|e| e.to_string()).map_err(wasi_kv_error),
        "keys" => bucket.list_keys(None).map(|r| r.keys.join(",")).map_err(wasi_kv_error),
        "increment" => atomics::increment(&bucket, key, value.parse().unwrap_or(1))
            .map(|n| n.to_string())
            .map_err(wasi_kv_error),
        // Read, then swap in `value`: `swapped`, or `cas-failed` when the
        // key changed in between (`race=1` changes it in between).
        "cas" => {
            let cas = atomics::Cas::new(&bucket, key).map_err(wasi_kv_error)?;
            let before = show(cas.current().map_err(wasi_kv_error)?);
            if value.ends_with("race") {
                bucket.set(key, b"raced").map_err(wasi_kv_error)?;
            }
            match atomics::swap(cas, value.as_bytes()) {
                Ok(()) => Ok(format!("swapped {before}")),
                Err(atomics::CasError::CasFailed(_)) => Ok(format!("cas-failed {before}")),
                Err(atomics::CasError::StoreError(e)) => Err(wasi_kv_error(e)),
            }
        }
        // `key` is a comma-separated list; `value` gives `k=v` pairs.
        "get-many" => {
            batch::get_many(&bucket, &key.split(',').map(String::from).collect::<Vec<_>>())
                .map(|found| {
                    found
                        .into_iter()
                        .map(|(k, v)| format!("{k}={}", show(v)))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .map_err(wasi_kv_error)
        }
        "set-many" => {
            let pairs = value
                .split(',')
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect::<Vec<_>>();
            batch::set_many(&bucket, &pairs).map(|()| "ok".into()).map_err(wasi_kv_error)
        }
        "delete-many" => {
            batch::delete_many(&bucket, &key.split(',').map(String::from).collect::<Vec<_>>())
                .map(|()| "ok".into())
                .map_err(wasi_kv_error)
        }
        other => Err(format!("unknown op `{other}`")),
    }
}

fn sql_error(error: sqlite::Error) -> String {
    match error {
        sqlite::Error::NoSuchDatabase => "no-such-database".into(),
        sqlite::Error::AccessDenied => "access-denied".into(),
        sqlite::Error::InvalidConnection => "invalid-connection".into(),
        sqlite::Error::DatabaseFull => "database-full".into(),
        sqlite::Error::Io(m) => format!("io: {m}"),
    }
}

/// Columns on the first line, then one line per row, then
/// `rowid=<last insert rowid> changes=<changes>`. Statements before the
/// last `;` run first on the same connection, without parameters, and
/// only their errors are shown. The connection is dropped when this
/// returns: a transaction left open is the host's to roll back.
async fn sql(db: &str, statements: &str, args: &str) -> Answer {
    let connection = sqlite::Connection::open(db).await.map_err(sql_error)?;
    let (before, statement) = statements.rsplit_once(';').unwrap_or(("", statements));
    for earlier in before.split(';').filter(|s| !s.trim().is_empty()) {
        connection
            .execute(earlier, [])
            .await
            .map_err(sql_error)?
            .collect()
            .await
            .map_err(sql_error)?;
    }
    let params = probe_logic::sql_params(args).into_iter().map(|p| match p {
        probe_logic::SqlParam::Integer(i) => sqlite::Value::Integer(i),
        probe_logic::SqlParam::Real(r) => sqlite::Value::Real(r),
        probe_logic::SqlParam::Text(t) => sqlite::Value::Text(t),
        probe_logic::SqlParam::Blob(b) => sqlite::Value::Blob(b),
        probe_logic::SqlParam::Null => sqlite::Value::Null,
    });
    let result = connection.execute(statement, params).await.map_err(sql_error)?;
    let mut out = result.columns().join("|");
    for row in result.collect().await.map_err(sql_error)? {
        let values = row.values.into_iter().map(|v| match v {
            sqlite::Value::Integer(i) => probe_logic::SqlParam::Integer(i),
            sqlite::Value::Real(r) => probe_logic::SqlParam::Real(r),
            sqlite::Value::Text(t) => probe_logic::SqlParam::Text(t),
            sqlite::Value::Blob(b) => probe_logic::SqlParam::Blob(b),
            sqlite::Value::Null => probe_logic::SqlParam::Null,
        });
        out.push('\n');
        out.push_str(&values.map(|v| v.show()).collect::<Vec<_>>().join("|"));
    }
    let rowid = connection.last_insert_rowid().await;
    let changes = connection.changes().await;
    out.push_str(&format!("\nrowid={rowid} changes={changes}"));
    Ok(out)
}

fn config(name: &str) -> Answer {
    let error = |e: wasi_config::Error| match e {
        wasi_config::Error::Upstream(m) => format!("upstream: {m}"),
        wasi_config::Error::Io(m) => format!("io: {m}"),
    };
    if name.is_empty() {
        let all = wasi_config::get_all().map_err(error)?;
        return Ok(all.into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","));
    }
    Ok(wasi_config::get(name).map_err(error)?.unwrap_or_else(|| "<none>".into()))
}

fn redis_error(error: spin_sdk::redis::Error) -> String {
    use spin_sdk::redis::Error;
    match error {
        Error::InvalidAddress => "invalid-address".into(),
        Error::TooManyConnections => "too-many-connections".into(),
        Error::TypeError => "type-error".into(),
        Error::Other(m) => format!("other: {m}"),
    }
}

/// Outbound Redis (spin:redis@3): `value` holds comma-separated members
/// for the set operations and space-separated arguments for `execute`
/// (`key` is then the command).
async fn outbound_redis(url: &str, op: &str, key: &str, value: &str) -> Answer {
    use spin_sdk::redis::{Connection, RedisParameter, RedisResult};
    let connection = Connection::open(url).await.map_err(redis_error)?;
    let list = || value.split(',').filter(|v| !v.is_empty()).map(String::from).collect::<Vec<_>>();
    match op {
        "set" => connection.set(key, value.as_bytes()).await.map(|()| "ok".into()),
        "get" => connection.get(key).await.map(show),
        "incr" => connection.incr(key).await.map(|n| n.to_string()),
        "del" => connection.del(list()).await.map(|n| n.to_string()),
        "sadd" => connection.sadd(key, list()).await.map(|n| n.to_string()),
        "srem" => connection.srem(key, list()).await.map(|n| n.to_string()),
        "smembers" => connection.smembers(key).await.map(|mut m| {
            m.sort();
            m.join(",")
        }),
        "publish" => connection.publish(key, value.as_bytes()).await.map(|()| "ok".into()),
        "execute" => {
            let arguments =
                value.split(' ').filter(|v| !v.is_empty()).map(|v| match v.parse::<i64>() {
                    Ok(i) => RedisParameter::Int64(i),
                    Err(_) => RedisParameter::Binary(v.as_bytes().to_vec()),
                });
            connection.execute(key, arguments).await.map(|results| {
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
    .map_err(redis_error)
}

/// Outbound MQTT: publish `value` to topic `key` at `qos` (0, 1 or 2).
async fn mqtt(url: &str, topic: &str, value: &str, qos: &str) -> Answer {
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
    let connection = Connection::open(url, "", "", 30).await.map_err(error)?;
    connection.publish(topic, value.as_bytes().to_vec(), qos).await.map_err(error)?;
    Ok("published".into())
}

/// Outbound HTTP (wasi:http 0.3 client): GET `url`, or POST `body` to it;
/// the answer is `<status> <body>`, or the WIT error code.
async fn outbound_http(url: &str, body: &str) -> Answer {
    use spin_sdk::http::body::IncomingBodyExt;
    let response = if body.is_empty() {
        spin_sdk::http::get(url).await
    } else {
        spin_sdk::http::post(url, body.to_string()).await
    };
    let response = response.map_err(|code| format!("{code:?}"))?;
    let status = response.status().as_u16();
    let body = response.into_body().bytes().await.map_err(|code| format!("{code:?}"))?;
    Ok(format!("{status} {}", String::from_utf8_lossy(&body)))
}

fn pg_error(error: spin_sdk::pg::Error) -> String {
    use spin_sdk::pg::{Error, PgError, QueryError};
    match error {
        Error::PgError(PgError::ConnectionFailed(m)) => format!("connection-failed: {m}"),
        Error::PgError(PgError::BadParameter(m)) => format!("bad-parameter: {m}"),
        Error::PgError(PgError::QueryFailed(QueryError::DbError(e))) => {
            format!("query-failed: db-error {} {}: {}", e.severity, e.code, e.message)
        }
        Error::PgError(PgError::QueryFailed(QueryError::Text(m))) => format!("query-failed: {m}"),
        Error::PgError(PgError::ValueConversionFailed(m)) => {
            format!("value-conversion-failed: {m}")
        }
        Error::PgError(PgError::Other(m)) => format!("other: {m}"),
        Error::Decode(m) => format!("decode: {m}"),
    }
}

/// PostgreSQL parameters from text: comma-separated `kind:value` with
/// kinds `bool`, `i16`, `i32`, `i64`, `f64`, `t` (text), `hex` (binary),
/// `date` (Y-M-D), `ts` (Unix seconds), `uuid`, `json`, `dec`, `ai32`
/// (`;`-separated, `null` for NULL), `iv` (micros;days;months), or `null`.
fn pg_params(text: &str) -> Vec<spin_sdk::pg::ParameterValue> {
    use spin_sdk::pg::{Interval, ParameterValue as P};
    let num = |v: &str| v.parse::<i64>().unwrap_or(0);
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once(':').unwrap_or((p, "")) {
            ("bool", v) => P::Boolean(v == "true"),
            ("i16", v) => P::Int16(num(v) as i16),
            ("i32", v) => P::Int32(num(v) as i32),
            ("i64", v) => P::Int64(num(v)),
            ("f64", v) => P::Floating64(v.parse().unwrap_or(0.0)),
            ("t", v) => P::Str(v.to_string()),
            ("hex", v) => P::Binary(
                (0..v.len() / 2)
                    .map(|i| u8::from_str_radix(&v[2 * i..2 * i + 2], 16).unwrap_or(0))
                    .collect(),
            ),
            ("date", v) => {
                let part: Vec<i64> = v.split('-').map(num).collect();
                P::Date((part[0] as i32, part[1] as u8, part[2] as u8))
            }
            ("ts", v) => P::Timestamp(num(v)),
            ("uuid", v) => P::Uuid(v.to_string()),
            ("json", v) => P::Jsonb(v.as_bytes().to_vec()),
            ("dec", v) => P::Decimal(v.to_string()),
            ("ai32", v) => P::ArrayInt32(
                v.split(';')
                    .map(|x| if x == "null" { None } else { Some(num(x) as i32) })
                    .collect(),
            ),
            ("iv", v) => {
                let part: Vec<i64> = v.split(';').map(num).collect();
                P::Interval(Interval {
                    micros: part[0],
                    days: part[1] as i32,
                    months: part[2] as i32,
                })
            }
            _ => P::DbNull,
        })
        .collect()
}

/// Outbound PostgreSQL (spin:postgres@4.2): `execute` answers the row
/// count; `query` answers `name:type` columns, then one line per row of
/// `|`-separated values in the WIT's shape.
async fn postgres(url: &str, op: &str, sql: &str, args: &str) -> Answer {
    use spin_sdk::pg::Connection;
    let db = Connection::open(url).await.map_err(pg_error)?;
    match op {
        "execute" => {
            db.execute(sql, pg_params(args)).await.map(|n| n.to_string()).map_err(pg_error)
        }
        "query" => {
            let result = db.query(sql, pg_params(args)).await.map_err(pg_error)?;
            let columns: Vec<(String, spin_sdk::pg::DbDataType)> =
                result.columns().iter().map(|c| (c.name.clone(), c.data_type.clone())).collect();
            let rows = result.collect().await.map_err(pg_error)?;
            let rows: Vec<Vec<_>> = rows
                .iter()
                .map(|row| (0..columns.len()).map(|i| row[i].clone()).collect())
                .collect();
            Ok(probe_logic::render_rows(&columns, &rows))
        }
        other => Err(format!("unknown op `{other}`")),
    }
}

/// Outbound MySQL (spin:mysql@3): like `postgres`, with parameters
/// `i:` (int64), `u:` (uint64), `f:` (float64), `t:` (text), `hex:`
/// (binary) or `null`.
async fn mysql(url: &str, op: &str, sql: &str, args: &str) -> Answer {
    use spin_sdk::mysql::{Connection, Error, MysqlError, ParameterValue as P};
    let error = |e: Error| match e {
        Error::MysqlError(MysqlError::ConnectionFailed(m)) => format!("connection-failed: {m}"),
        Error::MysqlError(MysqlError::BadParameter(m)) => format!("bad-parameter: {m}"),
        Error::MysqlError(MysqlError::QueryFailed(m)) => format!("query-failed: {m}"),
        Error::MysqlError(MysqlError::ValueConversionFailed(m)) => {
            format!("value-conversion-failed: {m}")
        }
        Error::MysqlError(MysqlError::Other(m)) => format!("other: {m}"),
        Error::Decode(m) => format!("decode: {m}"),
    };
    let params: Vec<P> = probe_logic::sql_params(args)
        .into_iter()
        .map(|p| match p {
            probe_logic::SqlParam::Integer(i) => P::Int64(i),
            probe_logic::SqlParam::Real(r) => P::Floating64(r),
            probe_logic::SqlParam::Text(t) => P::Str(t),
            probe_logic::SqlParam::Blob(b) => P::Binary(b),
            probe_logic::SqlParam::Null => P::DbNull,
        })
        .collect();
    let db = Connection::open(url).await.map_err(error)?;
    match op {
        "execute" => db.execute(sql, params).await.map(|()| "ok".into()).map_err(error),
        "query" => {
            let result = db.query(sql, params).await.map_err(error)?;
            let columns: Vec<(String, spin_sdk::mysql::DbDataType)> =
                result.columns().iter().map(|c| (c.name.clone(), c.data_type)).collect();
            let rows = result.collect().await.map_err(error)?;
            let rows: Vec<Vec<_>> = rows
                .iter()
                .map(|row| (0..columns.len()).map(|i| row[i].clone()).collect())
                .collect();
            Ok(probe_logic::render_rows(&columns, &rows))
        }
        other => Err(format!("unknown op `{other}`")),
    }
}
