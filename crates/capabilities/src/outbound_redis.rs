//! Outbound Redis: `spin:redis/redis@3.0.0` (spin-sdk 7) and
//! `fermyon:spin/redis@2.0.0` (spin-sdk 2 to 5).
//!
//! `open(address)` takes a `redis://` URL. The component must be granted
//! its host and port in `allowed_outbound_hosts`; otherwise the guest gets
//! `invalid-address`, as on Spin, and the log says which entry is missing.
//! Each open is its own connection, never shared: a guest may change a
//! connection's state (`SELECT`, `AUTH`) with `execute`, and that must not
//! reach another request. The connection goes to an address the grant
//! check resolved and checked, never to the name resolved anew.
//!
//! The server is one the tenant chose, so it is not trusted: its replies
//! are held to 64 MiB each (see `ReplyBudget`).

use std::sync::Arc;
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};
use wasmtime::component::{Accessor, Resource};

use crate::bindings::fermyon::spin::redis as v2;
use crate::bindings::spin::redis::redis as v3;
use crate::{Capabilities, CapabilitiesView, CheckedTarget, ReplyBudget};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one command may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// An open Redis connection, as a guest holds it; a clone is the same
/// connection.
#[derive(Clone)]
pub struct RedisConnection {
    connection: redis::aio::MultiplexedConnection,
    /// Held while a command is in flight: one at a time, so that what
    /// its [`ReplyBudget`] reads after a command is that command's reply.
    turn: Arc<tokio::sync::Mutex<()>>,
}

/// A command's failure, before mapping to each interface's error.
enum Failure {
    InvalidAddress,
    TypeError,
    Other(String),
}

impl From<redis::RedisError> for Failure {
    fn from(error: redis::RedisError) -> Self {
        if error.kind() == redis::ErrorKind::TypeError {
            Failure::TypeError
        } else {
            Failure::Other(error.to_string())
        }
    }
}

/// A parameter or result value, independent of the interface version.
enum Value {
    Nil,
    Status(String),
    Int64(i64),
    Binary(Vec<u8>),
}

/// Results of `execute`: one value per reply element, as Spin flattens an
/// array reply one level deep.
fn results(value: redis::Value) -> Result<Vec<Value>, Failure> {
    fn one(value: redis::Value) -> Result<Value, Failure> {
        Ok(match value {
            redis::Value::Nil => Value::Nil,
            redis::Value::Int(i) => Value::Int64(i),
            redis::Value::BulkString(bytes) => Value::Binary(bytes),
            redis::Value::SimpleString(text) => Value::Status(text),
            redis::Value::Okay => Value::Status("OK".into()),
            redis::Value::Boolean(b) => Value::Int64(b.into()),
            redis::Value::Double(d) => Value::Binary(d.to_string().into_bytes()),
            redis::Value::VerbatimString { text, .. } => Value::Binary(text.into_bytes()),
            redis::Value::ServerError(error) => {
                return Err(Failure::Other(format!(
                    "{:?}: {}",
                    error.code(),
                    error.details().unwrap_or("")
                )));
            }
            _ => return Err(Failure::TypeError),
        })
    }
    match value {
        redis::Value::Array(items) | redis::Value::Set(items) => {
            items.into_iter().map(one).collect()
        }
        other => Ok(vec![one(other)?]),
    }
}

/// Connect to `address` if the component may.
async fn connect(
    component: &crate::ComponentCapabilities,
    address: &str,
) -> Result<RedisConnection, Failure> {
    let info = address.into_connection_info().map_err(|_| Failure::InvalidAddress)?;
    let Ok(checked) = crate::check_outbound_resolved(component, address).await else {
        return Err(Failure::InvalidAddress);
    };
    connect_checked(info, &checked).await
}

/// Connect with `info`'s credentials and database to the first of the
/// checked addresses that answers, never to the name in `info`.
async fn connect_checked(
    info: ConnectionInfo,
    checked: &CheckedTarget,
) -> Result<RedisConnection, Failure> {
    // Plain TCP only: this build has no TLS for Redis (`rediss://` fails
    // to parse), and a Unix socket is no host a grant could name.
    let ConnectionAddr::Tcp(..) = info.addr else {
        return Err(Failure::InvalidAddress);
    };
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(RESPONSE_TIMEOUT);
    let mut unreachable = None;
    for ip in &checked.addresses {
        let address = std::net::SocketAddr::new(*ip, checked.target.port);
        let connecting = async {
            let stream = tokio::net::TcpStream::connect(address).await?;
            stream.set_nodelay(true)?;
            // A reply is held to what a database result may hold.
            let stream = ReplyBudget::new(stream, crate::MAX_RESULT_BYTES);
            // Authenticates and selects the database as the URL says.
            let (connection, driver) = redis::aio::MultiplexedConnection::new_with_config(
                &info.redis,
                stream,
                config.clone(),
            )
            .await?;
            tokio::spawn(driver);
            Ok::<_, redis::RedisError>(connection)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(connection)) => {
                return Ok(RedisConnection { connection, turn: Default::default() });
            }
            // The next address may answer, as connecting by name would try it.
            Ok(Err(error)) if error.is_io_error() => unreachable = Some(error.to_string()),
            Ok(Err(error)) => return Err(error.into()),
            Err(_) => unreachable = Some(format!("timed out connecting to {address}")),
        }
    }
    Err(unreachable.map_or(Failure::InvalidAddress, Failure::Other))
}

/// The operations both interface versions share, on a connection taken out
/// of the table (cheap to clone; commands on it are pipelined).
async fn run<T: redis::FromRedisValue>(
    mut connection: RedisConnection,
    command: redis::Cmd,
) -> Result<T, Failure> {
    let _turn = connection.turn.lock().await;
    Ok(command.query_async(&mut connection.connection).await?)
}

fn cmd(name: &str) -> redis::Cmd {
    redis::cmd(name)
}

/// Generates the per-version glue: error and value conversions.
macro_rules! conversions {
    ($wit:ident) => {
        impl From<Failure> for $wit::Error {
            fn from(failure: Failure) -> Self {
                match failure {
                    Failure::InvalidAddress => $wit::Error::InvalidAddress,
                    Failure::TypeError => $wit::Error::TypeError,
                    Failure::Other(message) => $wit::Error::Other(message),
                }
            }
        }

        impl From<Value> for $wit::RedisResult {
            fn from(value: Value) -> Self {
                match value {
                    Value::Nil => $wit::RedisResult::Nil,
                    Value::Status(s) => $wit::RedisResult::Status(s),
                    Value::Int64(i) => $wit::RedisResult::Int64(i),
                    Value::Binary(b) => $wit::RedisResult::Binary(b),
                }
            }
        }

        pub(super) fn command_with(name: &str, arguments: Vec<$wit::RedisParameter>) -> redis::Cmd {
            let mut command = cmd(name);
            for argument in arguments {
                match argument {
                    $wit::RedisParameter::Int64(i) => command.arg(i),
                    $wit::RedisParameter::Binary(b) => command.arg(b),
                };
            }
            command
        }
    };
}

mod v3_glue {
    use super::*;
    conversions!(v3);
    pub(super) use command_with as command;
}

mod v2_glue {
    use super::*;
    conversions!(v2);
    pub(super) use command_with as command;
}

type V3<T> = wasmtime::Result<Result<T, v3::Error>>;

fn connection_of<T>(
    accessor: &Accessor<T, Capabilities>,
    handle: &Resource<RedisConnection>,
) -> wasmtime::Result<RedisConnection> {
    accessor.with(|mut access| Ok(access.get().table.get(handle)?.clone()))
}

impl v3::Host for CapabilitiesView<'_> {}

impl v3::HostConnection for CapabilitiesView<'_> {
    async fn drop(&mut self, connection: Resource<RedisConnection>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}

impl<T> v3::HostConnectionWithStore<T> for Capabilities {
    async fn open(accessor: &Accessor<T, Self>, address: String) -> V3<Resource<RedisConnection>> {
        let component =
            accessor.with(|mut access| std::sync::Arc::clone(access.get().state.component()));
        let connection = match connect(&component, &address).await {
            Ok(connection) => connection,
            Err(failure) => return Ok(Err(failure.into())),
        };
        accessor.with(|mut access| match access.get().table.push(connection) {
            Ok(handle) => Ok(Ok(handle)),
            Err(_) => Ok(Err(v3::Error::TooManyConnections)),
        })
    }

    async fn publish(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        channel: String,
        payload: Vec<u8>,
    ) -> V3<()> {
        let connection = connection_of(accessor, &this)?;
        Ok(run::<i64>(connection, cmd("PUBLISH").arg(channel).arg(payload).clone())
            .await
            .map(drop)
            .map_err(Into::into))
    }

    async fn get(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        key: String,
    ) -> V3<Option<Vec<u8>>> {
        let connection = connection_of(accessor, &this)?;
        Ok(run(connection, cmd("GET").arg(key).clone()).await.map_err(Into::into))
    }

    async fn set(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        key: String,
        value: Vec<u8>,
    ) -> V3<()> {
        let connection = connection_of(accessor, &this)?;
        Ok(run::<()>(connection, cmd("SET").arg(key).arg(value).clone()).await.map_err(Into::into))
    }

    async fn incr(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        key: String,
    ) -> V3<i64> {
        let connection = connection_of(accessor, &this)?;
        Ok(run(connection, cmd("INCR").arg(key).clone()).await.map_err(Into::into))
    }

    async fn del(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        keys: Vec<String>,
    ) -> V3<u32> {
        let connection = connection_of(accessor, &this)?;
        Ok(run(connection, cmd("DEL").arg(keys).clone()).await.map_err(Into::into))
    }

    async fn sadd(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> V3<u32> {
        let connection = connection_of(accessor, &this)?;
        Ok(run(connection, cmd("SADD").arg(key).arg(values).clone()).await.map_err(Into::into))
    }

    async fn smembers(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        key: String,
    ) -> V3<Vec<String>> {
        let connection = connection_of(accessor, &this)?;
        Ok(run(connection, cmd("SMEMBERS").arg(key).clone()).await.map_err(Into::into))
    }

    async fn srem(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> V3<u32> {
        let connection = connection_of(accessor, &this)?;
        Ok(run(connection, cmd("SREM").arg(key).arg(values).clone()).await.map_err(Into::into))
    }

    async fn execute(
        accessor: &Accessor<T, Self>,
        this: Resource<RedisConnection>,
        command: String,
        arguments: Vec<v3::RedisParameter>,
    ) -> V3<Vec<v3::RedisResult>> {
        let connection = connection_of(accessor, &this)?;
        let reply = run::<redis::Value>(connection, v3_glue::command(&command, arguments)).await;
        Ok(reply
            .and_then(results)
            .map(|values| values.into_iter().map(Into::into).collect())
            .map_err(Into::into))
    }
}

type V2<T> = wasmtime::Result<Result<T, v2::Error>>;

impl CapabilitiesView<'_> {
    fn redis_connection(
        &self,
        handle: &Resource<RedisConnection>,
    ) -> wasmtime::Result<RedisConnection> {
        Ok(self.table.get(handle)?.clone())
    }
}

impl v2::Host for CapabilitiesView<'_> {}

impl v2::HostConnection for CapabilitiesView<'_> {
    async fn open(&mut self, address: String) -> V2<Resource<RedisConnection>> {
        let component = std::sync::Arc::clone(self.state.component());
        let connection = match connect(&component, &address).await {
            Ok(connection) => connection,
            Err(failure) => return Ok(Err(failure.into())),
        };
        Ok(self.table.push(connection).map_err(|_| v2::Error::TooManyConnections))
    }

    async fn publish(
        &mut self,
        this: Resource<RedisConnection>,
        channel: String,
        payload: Vec<u8>,
    ) -> V2<()> {
        let connection = self.redis_connection(&this)?;
        Ok(run::<i64>(connection, cmd("PUBLISH").arg(channel).arg(payload).clone())
            .await
            .map(drop)
            .map_err(Into::into))
    }

    async fn get(&mut self, this: Resource<RedisConnection>, key: String) -> V2<Option<Vec<u8>>> {
        let connection = self.redis_connection(&this)?;
        Ok(run(connection, cmd("GET").arg(key).clone()).await.map_err(Into::into))
    }

    async fn set(
        &mut self,
        this: Resource<RedisConnection>,
        key: String,
        value: Vec<u8>,
    ) -> V2<()> {
        let connection = self.redis_connection(&this)?;
        Ok(run::<()>(connection, cmd("SET").arg(key).arg(value).clone()).await.map_err(Into::into))
    }

    async fn incr(&mut self, this: Resource<RedisConnection>, key: String) -> V2<i64> {
        let connection = self.redis_connection(&this)?;
        Ok(run(connection, cmd("INCR").arg(key).clone()).await.map_err(Into::into))
    }

    async fn del(&mut self, this: Resource<RedisConnection>, keys: Vec<String>) -> V2<u32> {
        let connection = self.redis_connection(&this)?;
        Ok(run(connection, cmd("DEL").arg(keys).clone()).await.map_err(Into::into))
    }

    async fn sadd(
        &mut self,
        this: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> V2<u32> {
        let connection = self.redis_connection(&this)?;
        Ok(run(connection, cmd("SADD").arg(key).arg(values).clone()).await.map_err(Into::into))
    }

    async fn smembers(&mut self, this: Resource<RedisConnection>, key: String) -> V2<Vec<String>> {
        let connection = self.redis_connection(&this)?;
        Ok(run(connection, cmd("SMEMBERS").arg(key).clone()).await.map_err(Into::into))
    }

    async fn srem(
        &mut self,
        this: Resource<RedisConnection>,
        key: String,
        values: Vec<String>,
    ) -> V2<u32> {
        let connection = self.redis_connection(&this)?;
        Ok(run(connection, cmd("SREM").arg(key).arg(values).clone()).await.map_err(Into::into))
    }

    async fn execute(
        &mut self,
        this: Resource<RedisConnection>,
        command: String,
        arguments: Vec<v2::RedisParameter>,
    ) -> V2<Vec<v2::RedisResult>> {
        let connection = self.redis_connection(&this)?;
        let reply = run::<redis::Value>(connection, v2_glue::command(&command, arguments)).await;
        Ok(reply
            .and_then(results)
            .map(|values| values.into_iter().map(Into::into).collect())
            .map_err(Into::into))
    }

    async fn drop(&mut self, connection: Resource<RedisConnection>) -> wasmtime::Result<()> {
        self.table.delete(connection)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use redis::IntoConnectionInfo;

    use crate::testing::{UNRESOLVABLE, checked, listener, reaches};

    #[tokio::test]
    async fn connects_to_the_checked_address_never_the_name() {
        let (listener, port) = listener().await;
        let info = format!("redis://{UNRESOLVABLE}:{port}/2").into_connection_info().unwrap();
        let checked = checked("redis", port, &["127.0.0.1"]).await;
        let connecting = async move { drop(super::connect_checked(info, &checked).await) };
        assert!(reaches(&listener, connecting).await);
    }

    #[tokio::test]
    async fn tries_the_next_checked_address_when_one_does_not_answer() {
        let (listener, port) = listener().await;
        let info = format!("redis://{UNRESOLVABLE}:{port}").into_connection_info().unwrap();
        // Loopback too, but nothing listens there on this port.
        let checked = checked("redis", port, &["127.0.0.2", "127.0.0.1"]).await;
        let connecting = async move { drop(super::connect_checked(info, &checked).await) };
        assert!(reaches(&listener, connecting).await);
    }

    /// A server (the tenant's own) that answers with a bulk string of a
    /// gigabyte gets the guest an error once 64 MiB have arrived, not a
    /// host that holds the gigabyte; a reply within the cap arrives whole.
    #[tokio::test]
    async fn a_reply_larger_than_64_mib_is_refused_as_it_arrives() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (listener, port) = listener().await;
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = sent.clone();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0; 4096];
            loop {
                let n = socket.read(&mut request).await.unwrap();
                let text = String::from_utf8_lossy(&request[..n]).into_owned();
                // The client's set-up: CLIENT SETINFO, twice.
                for _ in text.matches("SETINFO") {
                    socket.write_all(b"+OK\r\n").await.unwrap();
                }
                if text.contains("small") {
                    socket.write_all(b"$5\r\nhello\r\n").await.unwrap();
                } else if text.contains("GET") {
                    socket.write_all(b"$1073741824\r\n").await.unwrap();
                    let chunk = vec![b'x'; 1 << 20];
                    while socket.write_all(&chunk).await.is_ok() {
                        counted.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
                    }
                    return;
                }
            }
        });
        let info = format!("redis://{UNRESOLVABLE}:{port}").into_connection_info().unwrap();
        let checked = checked("redis", port, &["127.0.0.1"]).await;
        let Ok(connection) = super::connect_checked(info, &checked).await else {
            panic!("connects to the fake server")
        };
        let small: Vec<u8> = super::run(connection.clone(), super::cmd("GET").arg("small").clone())
            .await
            .ok()
            .unwrap();
        assert_eq!(small, b"hello");
        let huge = super::run::<Vec<u8>>(connection, super::cmd("GET").arg("huge").clone());
        let Err(super::Failure::Other(message)) =
            tokio::time::timeout(std::time::Duration::from_secs(30), huge).await.unwrap()
        else {
            panic!("a gigabyte reply is refused")
        };
        assert!(message.contains("the server's reply is larger than 64 MiB"), "{message}");
        let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
        assert!(sent < 200 << 20, "the client stopped reading early, after {sent} bytes");
    }
}
