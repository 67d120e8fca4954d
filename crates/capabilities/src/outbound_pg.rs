//! Outbound PostgreSQL: `spin:postgres/postgres@4.2.0`, as spin-sdk 7
//! imports it (guests importing 4.0.0 or 4.1.0, such as spin-sdk 5's
//! `pg4`, link to it by semver), and `fermyon:spin/postgres@2.0.0`
//! (spin-sdk 2 to 5's `pg`), whose smaller set of types is mapped onto
//! 4.2's: values it has no case for arrive as `unsupported`.
//!
//! `open(address)` takes a connection string, a URL
//! (`postgres://user:pw@host:5432/db`) or key-value pairs
//! (`host=... port=... user=...`). Every host and port it names must be
//! granted as `postgres://host:port` in `allowed_outbound_hosts`;
//! otherwise the guest gets `connection-failed`, as on Spin, and the log
//! says which entry is missing. TLS follows the string's `sslmode`
//! (`prefer` by default) with the webpki roots, plus a root the guest adds
//! with `connection-builder.set-ca-root`. Each open is its own connection,
//! made to the addresses the grant check resolved and checked (`hostaddr`),
//! TLS still verifying the host name; a guest's own `hostaddr` is refused.
//! The server is the tenant's choice, so Bantam opens the socket itself
//! and holds each reply to a budget (`ReplyBudget`): tokio-postgres
//! would gather a message of any declared length.

// The WIT's error type is large (a structured database error); it is what
// the guest gets, so it is returned as it is rather than boxed.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use rustls_pki_types::pem::PemObject;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type};
use wasmtime::component::{Accessor, FutureReader, Resource, StreamReader};

use crate::bindings::fermyon::spin::postgres as v2_pg;
use crate::bindings::fermyon::spin::rdbms_types as v2;
use crate::bindings::spin::postgres3_0_0::postgres as v3;
use crate::bindings::spin::postgres4_2_0::postgres as v4;
use crate::{Capabilities, CapabilitiesView, CheckedTarget, ComponentCapabilities, ReplyBudget};

/// How long connecting (TLS included) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An open connection, as a guest holds it. The client is shared with the
/// task driving the connection, and cloned out of the table for each call.
#[derive(Clone)]
pub struct PgConnection {
    client: Arc<tokio_postgres::Client>,
    /// Held while a query or statement is in flight: one at a time, so
    /// that what the connection's [`ReplyBudget`] reads after a request
    /// is that request's reply.
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// A connection being configured (`connection-builder`, 4.1 and later).
pub struct PgConnectionBuilder {
    address: String,
    ca_roots: Vec<String>,
}

/// Connect to `address` if the component may reach every host it names.
async fn connect(
    component: &ComponentCapabilities,
    address: &str,
    ca_roots: &[String],
) -> Result<PgConnection, v4::Error> {
    let config: tokio_postgres::Config = address
        .parse()
        .map_err(|e| v4::Error::ConnectionFailed(format!("invalid address: {e}")))?;
    // A `hostaddr` would be connected to instead of the host the grant
    // names; Bantam sets it to the addresses it checked.
    if !config.get_hostaddrs().is_empty() {
        return Err(v4::Error::ConnectionFailed(
            "hostaddr is not available to components: name the address as the host".into(),
        ));
    }
    let ports = config.get_ports();
    let mut checked = Vec::new();
    for (i, host) in config.get_hosts().iter().enumerate() {
        let tokio_postgres::config::Host::Tcp(host) = host else {
            return Err(v4::Error::ConnectionFailed(
                "Unix sockets are not available to components".into(),
            ));
        };
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        let host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
        let target =
            crate::check_outbound_resolved(component, &format!("postgres://{host}:{port}"))
                .await
                .map_err(v4::Error::ConnectionFailed)?;
        checked.push(target);
    }
    connect_checked(&component.id, &pinned(&config, &checked), ca_roots).await
}

/// `config` connecting only to the `checked` addresses of its hosts, in
/// order: each host is repeated once per address with that address as its
/// `hostaddr`, so `connect_checked` tries them in turn as tokio-postgres
/// would the addresses of the name, and still verifies TLS against the
/// name.
fn pinned(config: &tokio_postgres::Config, checked: &[CheckedTarget]) -> tokio_postgres::Config {
    // Config cannot drop hosts, so everything else is copied to a new one.
    let mut pinned = tokio_postgres::Config::new();
    if let Some(user) = config.get_user() {
        pinned.user(user);
    }
    if let Some(password) = config.get_password() {
        pinned.password(password);
    }
    if let Some(dbname) = config.get_dbname() {
        pinned.dbname(dbname);
    }
    if let Some(options) = config.get_options() {
        pinned.options(options);
    }
    if let Some(name) = config.get_application_name() {
        pinned.application_name(name);
    }
    if let Some(timeout) = config.get_connect_timeout() {
        pinned.connect_timeout(*timeout);
    }
    if let Some(timeout) = config.get_tcp_user_timeout() {
        pinned.tcp_user_timeout(*timeout);
    }
    if let Some(interval) = config.get_keepalives_interval() {
        pinned.keepalives_interval(interval);
    }
    if let Some(retries) = config.get_keepalives_retries() {
        pinned.keepalives_retries(retries);
    }
    pinned
        .ssl_mode(config.get_ssl_mode())
        .ssl_negotiation(config.get_ssl_negotiation())
        .keepalives(config.get_keepalives())
        .keepalives_idle(config.get_keepalives_idle())
        .target_session_attrs(config.get_target_session_attrs())
        .channel_binding(config.get_channel_binding())
        .load_balance_hosts(config.get_load_balance_hosts());
    for (host, checked) in config.get_hosts().iter().zip(checked) {
        let tokio_postgres::config::Host::Tcp(name) = host else { continue };
        for ip in &checked.addresses {
            pinned.host(name).hostaddr(*ip).port(checked.target.port);
        }
    }
    pinned
}

/// Connect with `config` (TLS as its `sslmode` says, trusting the webpki
/// roots and `ca_roots`) for component `component`.
async fn connect_checked(
    component: &str,
    config: &tokio_postgres::Config,
    ca_roots: &[String],
) -> Result<PgConnection, v4::Error> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.into() };
    for pem in ca_roots {
        for certificate in rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let certificate = certificate
                .map_err(|e| v4::Error::ConnectionFailed(format!("invalid CA root: {e}")))?;
            roots
                .add(certificate)
                .map_err(|e| v4::Error::ConnectionFailed(format!("invalid CA root: {e}")))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| v4::Error::Other(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
    let mut targets: Vec<(&str, std::net::IpAddr, u16)> = config
        .get_hosts()
        .iter()
        .zip(config.get_hostaddrs())
        .zip(config.get_ports())
        .filter_map(|((host, ip), port)| match host {
            tokio_postgres::config::Host::Tcp(name) => Some((name.as_str(), *ip, *port)),
            _ => None,
        })
        .collect();
    if config.get_load_balance_hosts() == tokio_postgres::config::LoadBalanceHosts::Random {
        shuffle(&mut targets);
    }
    let attempts = async {
        let mut failed = String::from("no address to connect to");
        for (name, ip, port) in targets {
            let attempt = connect_one(component, config, tls.clone(), name, (ip, port).into());
            let attempt = match config.get_connect_timeout() {
                Some(limit) => tokio::time::timeout(*limit, attempt)
                    .await
                    .unwrap_or_else(|_| Err(format!("timed out connecting to {ip}"))),
                None => attempt.await,
            };
            match attempt {
                Ok(client) => return Ok(client),
                // The next address may answer, as tokio-postgres would try it.
                Err(error) => failed = error,
            }
        }
        Err(failed)
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempts).await {
        Ok(Ok(client)) => Ok(PgConnection { client: Arc::new(client), turn: Default::default() }),
        Ok(Err(error)) => Err(v4::Error::ConnectionFailed(error)),
        Err(_) => Err(v4::Error::ConnectionFailed("timed out connecting".into())),
    }
}

/// Connect to `address` (TLS verifying `name`, as `config` says) over a
/// socket whose replies are held to [`MAX_REPLY_BYTES`], and check the
/// session is of the kind `target_session_attrs` asks for.
async fn connect_one(
    component: &str,
    config: &tokio_postgres::Config,
    mut tls: tokio_postgres_rustls::MakeRustlsConnect,
    name: &str,
    address: std::net::SocketAddr,
) -> Result<tokio_postgres::Client, String> {
    use tokio_postgres::config::TargetSessionAttrs;
    use tokio_postgres::tls::MakeTlsConnect;

    let stream = tokio::net::TcpStream::connect(address).await.map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let socket = socket2::SockRef::from(&stream);
    if config.get_keepalives() {
        let mut keepalive = socket2::TcpKeepalive::new().with_time(config.get_keepalives_idle());
        if let Some(interval) = config.get_keepalives_interval() {
            keepalive = keepalive.with_interval(interval);
        }
        if let Some(retries) = config.get_keepalives_retries() {
            keepalive = keepalive.with_retries(retries);
        }
        socket.set_tcp_keepalive(&keepalive).map_err(|e| e.to_string())?;
    }
    if let Some(timeout) = config.get_tcp_user_timeout() {
        socket.set_tcp_user_timeout(Some(*timeout)).map_err(|e| e.to_string())?;
    }
    let stream = ReplyBudget::new(stream, MAX_REPLY_BYTES);
    let tls = MakeTlsConnect::<ReplyBudget>::make_tls_connect(&mut tls, name)
        .map_err(|e| e.to_string())?;
    let (client, connection) =
        config.connect_raw(stream, tls).await.map_err(|e| error_chain(&e))?;
    let component = component.to_string();
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!("component `{component}`: PostgreSQL connection ended: {error}");
        }
    });
    // As tokio-postgres checks it, with its words.
    let (wanted, otherwise) = match config.get_target_session_attrs() {
        TargetSessionAttrs::ReadWrite => ("off", "database does not allow writes"),
        TargetSessionAttrs::ReadOnly => ("on", "database is not read only"),
        _ => return Ok(client),
    };
    let answer = client.simple_query("SHOW transaction_read_only").await;
    let read_only = answer.map_err(|e| error_chain(&e))?.into_iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    });
    match read_only.as_deref() == Some(wanted) {
        true => Ok(client),
        false => Err(format!("{address}: {otherwise}")),
    }
}

/// The most a server's reply may hold: twice what a result may hold of the
/// host's memory, since a result is counted as its rows arrive and its
/// messages on the wire are never larger than what they cost the host
/// (see [`crate::ResultSize`]).
const MAX_REPLY_BYTES: usize = 2 * crate::MAX_RESULT_BYTES;

/// `items` in a random order (`load_balance_hosts=random`).
fn shuffle<T>(items: &mut [T]) {
    use std::hash::{BuildHasher, RandomState};
    let random = RandomState::new();
    for i in (1..items.len()).rev() {
        let j = (random.hash_one(i) % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// `error` and its sources: tokio-postgres keeps the useful part in the
/// source ("cannot convert between the Rust type `i64` and the Postgres
/// type `int4`", "the server's reply is larger than 128 MiB"), so the
/// guest gets the whole chain.
fn error_chain(error: &tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// A query's failure: the server's structured error when there is one.
fn query_failed(error: tokio_postgres::Error) -> v4::Error {
    let Some(db) = error.as_db_error() else {
        return v4::Error::QueryFailed(v4::QueryError::Text(error_chain(&error)));
    };
    let mut extras = Vec::new();
    let mut extra = |name: &str, value: Option<&str>| {
        if let Some(value) = value {
            extras.push((name.to_string(), value.to_string()));
        }
    };
    extra("hint", db.hint());
    extra("schema", db.schema());
    extra("table", db.table());
    extra("column", db.column());
    extra("constraint", db.constraint());
    v4::Error::QueryFailed(v4::QueryError::DbError(v4::DbError {
        as_text: db.to_string(),
        severity: db.severity().to_string(),
        code: db.code().code().to_string(),
        message: db.message().to_string(),
        detail: db.detail().map(str::to_string),
        extras,
    }))
}

/// A parameter as tokio-postgres takes it.
type Param = Box<dyn ToSql + Send + Sync>;

fn param(value: v4::ParameterValue) -> Result<Param, v4::Error> {
    use v4::ParameterValue as P;
    let bad = |what: &str| v4::Error::BadParameter(what.to_string());
    Ok(match value {
        P::Boolean(v) => Box::new(v),
        P::Int8(v) => Box::new(v),
        P::Int16(v) => Box::new(v),
        P::Int32(v) => Box::new(v),
        P::Int64(v) => Box::new(v),
        P::Floating32(v) => Box::new(v),
        P::Floating64(v) => Box::new(v),
        P::Str(v) => Box::new(v),
        P::Binary(v) => Box::new(v),
        P::Date((y, m, d)) => Box::new(
            chrono::NaiveDate::from_ymd_opt(y, m.into(), d.into())
                .ok_or_else(|| bad("invalid date"))?,
        ),
        P::Time((h, m, s, ns)) => Box::new(
            chrono::NaiveTime::from_hms_nano_opt(h.into(), m.into(), s.into(), ns)
                .ok_or_else(|| bad("invalid time"))?,
        ),
        P::Datetime((y, mo, d, h, mi, s, ns)) => Box::new(
            chrono::NaiveDate::from_ymd_opt(y, mo.into(), d.into())
                .and_then(|date| date.and_hms_nano_opt(h.into(), mi.into(), s.into(), ns))
                .ok_or_else(|| bad("invalid datetime"))?,
        ),
        P::Timestamp(v) => Box::new(
            chrono::DateTime::<chrono::Utc>::from_timestamp(v, 0)
                .ok_or_else(|| bad("invalid timestamp"))?,
        ),
        P::Uuid(v) => Box::new(uuid::Uuid::parse_str(&v).map_err(|e| bad(&e.to_string()))?),
        P::Jsonb(v) => Box::new(
            serde_json::from_slice::<serde_json::Value>(&v).map_err(|e| bad(&e.to_string()))?,
        ),
        P::Decimal(v) => {
            Box::new(v.parse::<rust_decimal::Decimal>().map_err(|e| bad(&e.to_string()))?)
        }
        P::ArrayInt32(v) => Box::new(v),
        P::ArrayInt64(v) => Box::new(v),
        P::ArrayStr(v) => Box::new(v),
        P::ArrayDecimal(v) => Box::new(
            v.into_iter()
                .map(|d| d.map(|d| d.parse::<rust_decimal::Decimal>()).transpose())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(&e.to_string()))?,
        ),
        P::Interval(v) => Box::new(Interval(v)),
        P::DbNull => Box::new(Null),
        P::RangeInt32(_) | P::RangeInt64(_) | P::RangeDecimal(_) => {
            return Err(bad("range parameters are not supported by Bantam yet"));
        }
    })
}

/// `db-null`: SQL NULL for a parameter of any type.
#[derive(Debug)]
struct Null;

impl ToSql for Null {
    fn to_sql(
        &self,
        _: &Type,
        _: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull::Yes)
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    tokio_postgres::types::to_sql_checked!();
}

/// An `interval`, in PostgreSQL's binary form: microseconds, days, months.
#[derive(Debug)]
struct Interval(v4::Interval);

impl ToSql for Interval {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.0.micros.to_be_bytes());
        out.extend_from_slice(&self.0.days.to_be_bytes());
        out.extend_from_slice(&self.0.months.to_be_bytes());
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
    tokio_postgres::types::to_sql_checked!();
}

impl<'a> FromSql<'a> for Interval {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let field = |range: std::ops::Range<usize>| raw.get(range).ok_or("short interval");
        Ok(Interval(v4::Interval {
            micros: i64::from_be_bytes(field(0..8)?.try_into()?),
            days: i32::from_be_bytes(field(8..12)?.try_into()?),
            months: i32::from_be_bytes(field(12..16)?.try_into()?),
        }))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
}

/// Any value, as the server sent it: for types without a mapping.
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// How many bytes a value takes on the wire, whatever its type (a null,
/// none).
struct RawSize(usize);

impl<'a> FromSql<'a> for RawSize {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawSize(raw.len()))
    }
    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawSize(0))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// The WIT's type for a column of PostgreSQL type `ty`.
fn data_type(ty: &Type) -> v4::DbDataType {
    use v4::DbDataType as D;
    match *ty {
        Type::BOOL => D::Boolean,
        Type::CHAR => D::Int8,
        Type::INT2 => D::Int16,
        Type::INT4 => D::Int32,
        Type::INT8 => D::Int64,
        Type::FLOAT4 => D::Floating32,
        Type::FLOAT8 => D::Floating64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => D::Str,
        Type::BYTEA => D::Binary,
        Type::DATE => D::Date,
        Type::TIME => D::Time,
        Type::TIMESTAMP => D::Datetime,
        Type::TIMESTAMPTZ => D::Timestamp,
        Type::UUID => D::Uuid,
        Type::JSON | Type::JSONB => D::Jsonb,
        Type::NUMERIC => D::Decimal,
        Type::INT4_RANGE => D::RangeInt32,
        Type::INT8_RANGE => D::RangeInt64,
        Type::NUM_RANGE => D::RangeDecimal,
        Type::INT4_ARRAY => D::ArrayInt32,
        Type::INT8_ARRAY => D::ArrayInt64,
        Type::NUMERIC_ARRAY => D::ArrayDecimal,
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY => D::ArrayStr,
        Type::INTERVAL => D::Interval,
        ref other => D::Other(other.name().to_string()),
    }
}

/// Column `i` of `row` as a WIT value.
fn value(row: &tokio_postgres::Row, i: usize) -> Result<v4::DbValue, v4::Error> {
    use chrono::{Datelike, Timelike};
    use v4::DbValue as V;
    fn get<'a, T: FromSql<'a>>(
        row: &'a tokio_postgres::Row,
        i: usize,
    ) -> Result<Option<T>, v4::Error> {
        row.try_get(i).map_err(|e| v4::Error::ValueConversionFailed(e.to_string()))
    }
    macro_rules! map {
        ($ty:ty, $wrap:expr) => {
            get::<$ty>(row, i)?.map_or(V::DbNull, $wrap)
        };
    }
    let ty = row.columns()[i].type_();
    Ok(match *ty {
        Type::BOOL => map!(bool, V::Boolean),
        Type::CHAR => map!(i8, V::Int8),
        Type::INT2 => map!(i16, V::Int16),
        Type::INT4 => map!(i32, V::Int32),
        Type::INT8 => map!(i64, V::Int64),
        Type::FLOAT4 => map!(f32, V::Floating32),
        Type::FLOAT8 => map!(f64, V::Floating64),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => map!(String, V::Str),
        Type::BYTEA => map!(Vec<u8>, V::Binary),
        Type::DATE => {
            map!(chrono::NaiveDate, |d| V::Date((d.year(), d.month() as u8, d.day() as u8)))
        }
        Type::TIME => map!(chrono::NaiveTime, |t| V::Time((
            t.hour() as u8,
            t.minute() as u8,
            t.second() as u8,
            t.nanosecond()
        ))),
        Type::TIMESTAMP => map!(chrono::NaiveDateTime, |t| V::Datetime((
            t.year(),
            t.month() as u8,
            t.day() as u8,
            t.hour() as u8,
            t.minute() as u8,
            t.second() as u8,
            t.nanosecond()
        ))),
        Type::TIMESTAMPTZ => map!(chrono::DateTime<chrono::Utc>, |t| V::Timestamp(t.timestamp())),
        Type::UUID => map!(uuid::Uuid, |u| V::Uuid(u.to_string())),
        Type::JSON | Type::JSONB => {
            map!(serde_json::Value, |j| V::Jsonb(serde_json::to_vec(&j).unwrap_or_default()))
        }
        Type::NUMERIC => map!(rust_decimal::Decimal, |d| V::Decimal(d.to_string())),
        Type::INT4_ARRAY => map!(Vec<Option<i32>>, V::ArrayInt32),
        Type::INT8_ARRAY => map!(Vec<Option<i64>>, V::ArrayInt64),
        Type::NUMERIC_ARRAY => map!(Vec<Option<rust_decimal::Decimal>>, |v| V::ArrayDecimal(
            v.into_iter().map(|d| d.map(|d| d.to_string())).collect()
        )),
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY => map!(Vec<Option<String>>, V::ArrayStr),
        Type::INTERVAL => map!(Interval, |i| V::Interval(i.0)),
        _ => map!(Raw, |raw| V::Unsupported(raw.0)),
    })
}

/// Run a query; its columns and rows.
async fn query(
    connection: &PgConnection,
    statement: &str,
    params: Vec<v4::ParameterValue>,
) -> Result<(Vec<v4::Column>, Vec<v4::Row>), v4::Error> {
    let (_turn, client) = (connection.turn.lock().await, &connection.client);
    let params = params.into_iter().map(param).collect::<Result<Vec<_>, _>>()?;
    let prepared = client.prepare(statement).await.map_err(query_failed)?;
    let refs: Vec<&(dyn ToSql + Sync)> =
        params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
    let columns = prepared
        .columns()
        .iter()
        .map(|c| v4::Column { name: c.name().to_string(), data_type: data_type(c.type_()) })
        .collect();
    // Row by row, so that a result past the cap stops there rather than
    // first filling the host's memory.
    let stream = client.query_raw(&prepared, refs).await.map_err(query_failed)?;
    let mut stream = std::pin::pin!(stream);
    let mut rows = Vec::new();
    let mut size = crate::ResultSize::rows();
    while let Some(row) = stream.try_next().await.map_err(query_failed)? {
        let bytes = (0..row.len()).map(|i| row.get::<_, RawSize>(i).0).sum();
        size.add_row::<v4::DbValue>(row.len(), bytes)
            .map_err(|e| v4::Error::QueryFailed(v4::QueryError::Text(e)))?;
        rows.push((0..row.len()).map(|i| value(&row, i)).collect::<Result<Vec<_>, _>>()?);
    }
    Ok((columns, rows))
}

/// Run a statement; the number of rows it changed.
async fn execute(
    connection: &PgConnection,
    statement: &str,
    params: Vec<v4::ParameterValue>,
) -> Result<u64, v4::Error> {
    let (_turn, client) = (connection.turn.lock().await, &connection.client);
    let params = params.into_iter().map(param).collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<&(dyn ToSql + Sync)> =
        params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
    client.execute(statement, &refs).await.map_err(query_failed)
}

type V4<T> = wasmtime::Result<Result<T, v4::Error>>;

impl CapabilitiesView<'_> {
    fn pg_connection(&self, handle: &Resource<PgConnection>) -> wasmtime::Result<PgConnection> {
        Ok(self.table.get(handle)?.clone())
    }

    fn push_pg(
        &mut self,
        connected: Result<PgConnection, v4::Error>,
    ) -> V4<Resource<PgConnection>> {
        Ok(match connected {
            Ok(connection) => Ok(self.table.push(connection)?),
            Err(error) => Err(error),
        })
    }
}

fn pg_connection_of<T>(
    accessor: &Accessor<T, Capabilities>,
    handle: &Resource<PgConnection>,
) -> wasmtime::Result<PgConnection> {
    accessor.with(|mut access| access.get().pg_connection(handle))
}

fn component_of<T>(accessor: &Accessor<T, Capabilities>) -> Arc<ComponentCapabilities> {
    accessor.with(|mut access| Arc::clone(access.get().state.component()))
}

impl v4::Host for CapabilitiesView<'_> {}

impl v4::HostConnection for CapabilitiesView<'_> {
    async fn open(&mut self, address: String) -> V4<Resource<PgConnection>> {
        let component = Arc::clone(self.state.component());
        let connected = connect(&component, &address, &[]).await;
        self.push_pg(connected)
    }

    async fn query(
        &mut self,
        this: Resource<PgConnection>,
        statement: String,
        params: Vec<v4::ParameterValue>,
    ) -> V4<v4::RowSet> {
        let connection = self.pg_connection(&this)?;
        Ok(query(&connection, &statement, params)
            .await
            .map(|(columns, rows)| v4::RowSet { columns, rows }))
    }

    async fn execute(
        &mut self,
        this: Resource<PgConnection>,
        statement: String,
        params: Vec<v4::ParameterValue>,
    ) -> V4<u64> {
        let connection = self.pg_connection(&this)?;
        Ok(execute(&connection, &statement, params).await)
    }

    async fn drop(&mut self, this: Resource<PgConnection>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl<T> v4::HostConnectionWithStore<T> for Capabilities {
    async fn open_async(
        accessor: &Accessor<T, Self>,
        address: String,
    ) -> V4<Resource<PgConnection>> {
        let component = component_of(accessor);
        let connected = connect(&component, &address, &[]).await;
        accessor.with(|mut access| access.get().push_pg(connected))
    }

    async fn query_async(
        accessor: &Accessor<T, Self>,
        this: Resource<PgConnection>,
        statement: String,
        params: Vec<v4::ParameterValue>,
    ) -> V4<(Vec<v4::Column>, StreamReader<v4::Row>, FutureReader<Result<(), v4::Error>>)> {
        let connection = pg_connection_of(accessor, &this)?;
        let (columns, rows) = match query(&connection, &statement, params).await {
            Ok(result) => result,
            Err(error) => return Ok(Err(error)),
        };
        accessor.with(|mut access| {
            let rows = StreamReader::new(&mut access, rows)?;
            let done = FutureReader::new(&mut access, async { Ok::<_, wasmtime::Error>(Ok(())) })?;
            Ok(Ok((columns, rows, done)))
        })
    }

    async fn execute_async(
        accessor: &Accessor<T, Self>,
        this: Resource<PgConnection>,
        statement: String,
        params: Vec<v4::ParameterValue>,
    ) -> V4<u64> {
        let connection = pg_connection_of(accessor, &this)?;
        Ok(execute(&connection, &statement, params).await)
    }
}

impl v4::HostConnectionBuilder for CapabilitiesView<'_> {
    async fn new(&mut self, address: String) -> wasmtime::Result<Resource<PgConnectionBuilder>> {
        Ok(self.table.push(PgConnectionBuilder { address, ca_roots: Vec::new() })?)
    }

    async fn set_ca_root(
        &mut self,
        this: Resource<PgConnectionBuilder>,
        certificate: String,
    ) -> V4<()> {
        self.table.get_mut(&this)?.ca_roots.push(certificate);
        Ok(Ok(()))
    }

    async fn build(&mut self, this: Resource<PgConnectionBuilder>) -> V4<Resource<PgConnection>> {
        let builder = self.table.get(&this)?;
        let (address, roots) = (builder.address.clone(), builder.ca_roots.clone());
        let component = Arc::clone(self.state.component());
        let connected = connect(&component, &address, &roots).await;
        self.push_pg(connected)
    }

    async fn drop(&mut self, this: Resource<PgConnectionBuilder>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl<T> v4::HostConnectionBuilderWithStore<T> for Capabilities {
    async fn build_async(
        accessor: &Accessor<T, Self>,
        this: Resource<PgConnectionBuilder>,
    ) -> V4<Resource<PgConnection>> {
        let (component, address, roots) = accessor.with(|mut access| -> wasmtime::Result<_> {
            let view = access.get();
            let builder = view.table.get(&this)?;
            Ok((
                Arc::clone(view.state.component()),
                builder.address.clone(),
                builder.ca_roots.clone(),
            ))
        })?;
        let connected = connect(&component, &address, &roots).await;
        accessor.with(|mut access| access.get().push_pg(connected))
    }
}

/// A 2.0 parameter as 4.2 has it.
fn v2_param(value: v2::ParameterValue) -> v4::ParameterValue {
    use v2::ParameterValue as P2;
    use v4::ParameterValue as P;
    match value {
        P2::Boolean(v) => P::Boolean(v),
        P2::Int8(v) => P::Int8(v),
        P2::Int16(v) => P::Int16(v),
        P2::Int32(v) => P::Int32(v),
        P2::Int64(v) => P::Int64(v),
        // PostgreSQL has no unsigned integers: the next wider signed type.
        P2::Uint8(v) => P::Int16(v.into()),
        P2::Uint16(v) => P::Int32(v.into()),
        P2::Uint32(v) => P::Int64(v.into()),
        P2::Uint64(v) => P::Int64(v as i64),
        P2::Floating32(v) => P::Floating32(v),
        P2::Floating64(v) => P::Floating64(v),
        P2::Str(v) => P::Str(v),
        P2::Binary(v) => P::Binary(v),
        P2::DbNull => P::DbNull,
    }
}

/// A 4.2 error as 2.0 has it.
fn v2_error(error: v4::Error) -> v2::Error {
    match error {
        v4::Error::ConnectionFailed(m) => v2::Error::ConnectionFailed(m),
        v4::Error::BadParameter(m) => v2::Error::BadParameter(m),
        v4::Error::QueryFailed(v4::QueryError::Text(m)) => v2::Error::QueryFailed(m),
        v4::Error::QueryFailed(v4::QueryError::DbError(e)) => v2::Error::QueryFailed(e.as_text),
        v4::Error::ValueConversionFailed(m) => v2::Error::ValueConversionFailed(m),
        v4::Error::Other(m) => v2::Error::Other(m),
    }
}

/// A 4.2 column type as 2.0 has it.
fn v2_data_type(ty: v4::DbDataType) -> v2::DbDataType {
    use v2::DbDataType as D2;
    use v4::DbDataType as D;
    match ty {
        D::Boolean => D2::Boolean,
        D::Int8 => D2::Int8,
        D::Int16 => D2::Int16,
        D::Int32 => D2::Int32,
        D::Int64 => D2::Int64,
        D::Floating32 => D2::Floating32,
        D::Floating64 => D2::Floating64,
        D::Str => D2::Str,
        D::Binary => D2::Binary,
        _ => D2::Other,
    }
}

/// A 4.2 value as 2.0 has it.
fn v2_value(value: v4::DbValue) -> v2::DbValue {
    use v2::DbValue as V2;
    use v4::DbValue as V;
    match value {
        V::Boolean(v) => V2::Boolean(v),
        V::Int8(v) => V2::Int8(v),
        V::Int16(v) => V2::Int16(v),
        V::Int32(v) => V2::Int32(v),
        V::Int64(v) => V2::Int64(v),
        V::Floating32(v) => V2::Floating32(v),
        V::Floating64(v) => V2::Floating64(v),
        V::Str(v) => V2::Str(v),
        V::Binary(v) => V2::Binary(v),
        V::DbNull => V2::DbNull,
        _ => V2::Unsupported,
    }
}

type V2<T> = wasmtime::Result<Result<T, v2::Error>>;

impl v2_pg::Host for CapabilitiesView<'_> {}

impl v2_pg::HostConnection for CapabilitiesView<'_> {
    async fn open(&mut self, address: String) -> V2<Resource<PgConnection>> {
        let component = Arc::clone(self.state.component());
        let connected = connect(&component, &address, &[]).await;
        Ok(self.push_pg(connected)?.map_err(v2_error))
    }

    async fn query(
        &mut self,
        this: Resource<PgConnection>,
        statement: String,
        params: Vec<v2::ParameterValue>,
    ) -> V2<v2::RowSet> {
        let connection = self.pg_connection(&this)?;
        let params = params.into_iter().map(v2_param).collect();
        Ok(query(&connection, &statement, params)
            .await
            .map(|(columns, rows)| v2::RowSet {
                columns: columns
                    .into_iter()
                    .map(|c| v2::Column { name: c.name, data_type: v2_data_type(c.data_type) })
                    .collect(),
                rows: rows.into_iter().map(|row| row.into_iter().map(v2_value).collect()).collect(),
            })
            .map_err(v2_error))
    }

    async fn execute(
        &mut self,
        this: Resource<PgConnection>,
        statement: String,
        params: Vec<v2::ParameterValue>,
    ) -> V2<u64> {
        let connection = self.pg_connection(&this)?;
        let params = params.into_iter().map(v2_param).collect();
        Ok(execute(&connection, &statement, params).await.map_err(v2_error))
    }

    async fn drop(&mut self, this: Resource<PgConnection>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

/// A 3.0 parameter as 4.2 has it (3.0's cases are a subset).
fn v3_param(value: v3::ParameterValue) -> v4::ParameterValue {
    use v3::ParameterValue as P3;
    use v4::ParameterValue as P;
    match value {
        P3::Boolean(v) => P::Boolean(v),
        P3::Int8(v) => P::Int8(v),
        P3::Int16(v) => P::Int16(v),
        P3::Int32(v) => P::Int32(v),
        P3::Int64(v) => P::Int64(v),
        P3::Floating32(v) => P::Floating32(v),
        P3::Floating64(v) => P::Floating64(v),
        P3::Str(v) => P::Str(v),
        P3::Binary(v) => P::Binary(v),
        P3::Date(v) => P::Date(v),
        P3::Time(v) => P::Time(v),
        P3::Datetime(v) => P::Datetime(v),
        P3::Timestamp(v) => P::Timestamp(v),
        P3::DbNull => P::DbNull,
    }
}

/// A 4.2 error as 3.0 has it.
fn v3_error(error: v4::Error) -> v3::Error {
    match v2_error(error) {
        v2::Error::ConnectionFailed(m) => v3::Error::ConnectionFailed(m),
        v2::Error::BadParameter(m) => v3::Error::BadParameter(m),
        v2::Error::QueryFailed(m) => v3::Error::QueryFailed(m),
        v2::Error::ValueConversionFailed(m) => v3::Error::ValueConversionFailed(m),
        v2::Error::Other(m) => v3::Error::Other(m),
    }
}

/// A 4.2 column as 3.0 has it.
fn v3_column(column: v4::Column) -> v3::Column {
    use v3::DbDataType as D3;
    use v4::DbDataType as D;
    let data_type = match column.data_type {
        D::Boolean => D3::Boolean,
        D::Int8 => D3::Int8,
        D::Int16 => D3::Int16,
        D::Int32 => D3::Int32,
        D::Int64 => D3::Int64,
        D::Floating32 => D3::Floating32,
        D::Floating64 => D3::Floating64,
        D::Str => D3::Str,
        D::Binary => D3::Binary,
        D::Date => D3::Date,
        D::Time => D3::Time,
        D::Datetime => D3::Datetime,
        D::Timestamp => D3::Timestamp,
        _ => D3::Other,
    };
    v3::Column { name: column.name, data_type }
}

/// A 4.2 value as 3.0 has it.
fn v3_value(value: v4::DbValue) -> v3::DbValue {
    use v3::DbValue as V3;
    use v4::DbValue as V;
    match value {
        V::Boolean(v) => V3::Boolean(v),
        V::Int8(v) => V3::Int8(v),
        V::Int16(v) => V3::Int16(v),
        V::Int32(v) => V3::Int32(v),
        V::Int64(v) => V3::Int64(v),
        V::Floating32(v) => V3::Floating32(v),
        V::Floating64(v) => V3::Floating64(v),
        V::Str(v) => V3::Str(v),
        V::Binary(v) => V3::Binary(v),
        V::Date(v) => V3::Date(v),
        V::Time(v) => V3::Time(v),
        V::Datetime(v) => V3::Datetime(v),
        V::Timestamp(v) => V3::Timestamp(v),
        V::DbNull => V3::DbNull,
        _ => V3::Unsupported,
    }
}

type V3<T> = wasmtime::Result<Result<T, v3::Error>>;

impl v3::Host for CapabilitiesView<'_> {}

impl v3::HostConnection for CapabilitiesView<'_> {
    async fn open(&mut self, address: String) -> V3<Resource<PgConnection>> {
        let component = Arc::clone(self.state.component());
        let connected = connect(&component, &address, &[]).await;
        Ok(self.push_pg(connected)?.map_err(v3_error))
    }

    async fn query(
        &mut self,
        this: Resource<PgConnection>,
        statement: String,
        params: Vec<v3::ParameterValue>,
    ) -> V3<v3::RowSet> {
        let connection = self.pg_connection(&this)?;
        let params = params.into_iter().map(v3_param).collect();
        Ok(query(&connection, &statement, params)
            .await
            .map(|(columns, rows)| v3::RowSet {
                columns: columns.into_iter().map(v3_column).collect(),
                rows: rows.into_iter().map(|row| row.into_iter().map(v3_value).collect()).collect(),
            })
            .map_err(v3_error))
    }

    async fn execute(
        &mut self,
        this: Resource<PgConnection>,
        statement: String,
        params: Vec<v3::ParameterValue>,
    ) -> V3<u64> {
        let connection = self.pg_connection(&this)?;
        let params = params.into_iter().map(v3_param).collect();
        Ok(execute(&connection, &statement, params).await.map_err(v3_error))
    }

    async fn drop(&mut self, this: Resource<PgConnection>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bantam_manifest::allowed_hosts::OutboundTarget;
    use tokio_postgres::Config;

    use super::*;
    use crate::testing::{UNRESOLVABLE, checked, listener, reaches};

    #[test]
    fn the_pinned_config_keeps_every_setting_and_the_name_for_tls() {
        let settings = "user=u password=p dbname=d options=-cx application_name=a \
            sslmode=require sslnegotiation=direct connect_timeout=3 tcp_user_timeout=4 \
            keepalives=0 keepalives_idle=5 keepalives_interval=6 keepalives_retries=7 \
            target_session_attrs=read-write channel_binding=disable load_balance_hosts=random";
        let config: Config = format!("host=db.example.com port=6543 {settings}").parse().unwrap();
        let checked = CheckedTarget {
            target: OutboundTarget {
                scheme: "postgres".into(),
                host: "db.example.com".into(),
                port: 6543,
            },
            addresses: vec!["203.0.113.7".parse().unwrap(), "2001:db8::7".parse().unwrap()],
        };
        // The name once per checked address, each with that address.
        let expected: Config = format!(
            "host=db.example.com,db.example.com hostaddr=203.0.113.7,2001:db8::7 port=6543,6543 {settings}"
        )
        .parse()
        .unwrap();
        assert_eq!(pinned(&config, &[checked]), expected);
    }

    /// A guest's address naming a host nobody resolves, pinned to the
    /// loopback address as if the grant check had resolved it so.
    async fn on_loopback(port: u16, sslmode: &str) -> Config {
        let config: Config =
            format!("postgres://u@{UNRESOLVABLE}:{port}/db?sslmode={sslmode}").parse().unwrap();
        pinned(&config, &[checked("postgres", port, &["127.0.0.1"]).await])
    }

    #[tokio::test]
    async fn connects_to_the_checked_address_never_the_name() {
        let (listener, port) = listener().await;
        let config = on_loopback(port, "disable").await;
        let connecting = async move { drop(connect_checked("test", &config, &[]).await) };
        assert!(reaches(&listener, connecting).await);
    }

    #[tokio::test]
    async fn a_guests_own_hostaddr_is_refused() {
        let component = ComponentCapabilities::none("test");
        let address = "host=db.example.com hostaddr=169.254.169.254 port=80";
        let Err(v4::Error::ConnectionFailed(message)) = connect(&component, address, &[]).await
        else {
            panic!("a hostaddr was accepted");
        };
        assert!(message.starts_with("hostaddr is not available to components"), "{message}");
    }

    /// A server (the tenant's own) that sends a message of a gigabyte gets
    /// the guest an error once 128 MiB have arrived, not a host that holds
    /// the gigabyte (postgres-protocol gathers a message whole).
    #[tokio::test]
    async fn a_message_larger_than_128_mib_is_refused_as_it_arrives() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (listener, port) = listener().await;
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = sent.clone();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            // The startup message, then: authenticated, and a parameter
            // status a gigabyte long.
            let length = socket.read_u32().await.unwrap() as usize;
            socket.read_exact(&mut vec![0; length - 4]).await.unwrap();
            socket.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0]).await.unwrap();
            socket.write_all(&[b'S', 0x40, 0, 0, 0]).await.unwrap();
            let chunk = vec![b'x'; 1 << 20];
            while socket.write_all(&chunk).await.is_ok() {
                counted.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
            }
        });
        let config = on_loopback(port, "disable").await;
        let Err(v4::Error::ConnectionFailed(message)) = connect_checked("test", &config, &[]).await
        else {
            panic!("a gigabyte message is refused")
        };
        assert!(message.contains("the server's reply is larger than 128 MiB"), "{message}");
        let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
        assert!(sent < 300 << 20, "the client stopped reading early, after {sent} bytes");
    }

    /// With `sslmode=require`, the connection Bantam opens itself is TLS,
    /// verified against the host's name with the guest's CA root, and
    /// reaches a session.
    #[tokio::test]
    async fn tls_is_negotiated_on_the_connection_bantam_opens() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let key = rcgen::generate_simple_self_signed(vec![UNRESOLVABLE.into()]).unwrap();
        let ca_root = key.cert.pem();
        let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![key.cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.key_pair.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let (trusting, port) = listener().await;
        tokio::spawn(async move {
            let (mut socket, _) = trusting.accept().await.unwrap();
            let mut ssl_request = [0; 8];
            socket.read_exact(&mut ssl_request).await.unwrap();
            socket.write_all(b"S").await.unwrap();
            let mut tls = acceptor.accept(socket).await.unwrap();
            let length = tls.read_u32().await.unwrap() as usize;
            tls.read_exact(&mut vec![0; length - 4]).await.unwrap();
            // Authenticated, ready for a query.
            tls.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0, b'Z', 0, 0, 0, 5, b'I']).await.unwrap();
            tls.flush().await.unwrap();
            // Hold the connection while the client looks at it.
            let _ = tls.read(&mut [0; 64]).await;
        });
        let config = on_loopback(port, "require").await;
        let Ok(connection) = connect_checked("test", &config, &[ca_root]).await else {
            panic!("connects over TLS")
        };
        assert!(!connection.client.is_closed());
        // Without the CA root the server's certificate is not trusted.
        let (untrusting, port) = listener().await;
        tokio::spawn(async move {
            let (mut socket, _) = untrusting.accept().await.unwrap();
            socket.read_exact(&mut [0; 8]).await.unwrap();
            socket.write_all(b"S").await.unwrap();
            let _ = socket.read(&mut [0; 4096]).await;
        });
        let config = on_loopback(port, "require").await;
        let Err(v4::Error::ConnectionFailed(message)) = connect_checked("test", &config, &[]).await
        else {
            panic!("an untrusted certificate is refused")
        };
        assert!(message.contains("tls") || message.contains("certificate"), "{message}");
    }
}
