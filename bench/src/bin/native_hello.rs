//! The native ceiling: a hyper server doing what the benchmark guests do,
//! with no WebAssembly. `/` answers `Hello, World!`; `/kv?op=set|get`
//! writes or reads one key in a SQLite file laid out as Bantam's embedded
//! key-value store, with the same statements; `/?stream` answers with the
//! request body, streamed back frame by frame as it arrives;
//! `/?burn=<µs>` answers `Hello, World!` after keeping its core busy that
//! long, to be as costly per request as a Bantam guest (the latency
//! benchmark's control).
//!
//! `native-hello <addr> [<sqlite file>]`; prints `listening <addr>`.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// The allocator the `bantam` binary uses, so that the comparison is of
/// the work done, not of the allocators.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: std::net::SocketAddr = args.next().unwrap_or("127.0.0.1:0".into()).parse()?;
    let db = args.next().unwrap_or(":memory:".into());
    let connection = rusqlite::Connection::open(&db)?;
    connection.execute_batch(
        "CREATE TABLE IF NOT EXISTS spin_key_value (
            store TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
            PRIMARY KEY (store, key))",
    )?;
    let db = Arc::new(Mutex::new(connection));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("listening {}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let db = db.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let db = db.clone();
                        async move {
                            if request.uri().query() == Some("stream") {
                                return Ok(Response::new(request.into_body().boxed()));
                            }
                            let answer = answer(&request, &db).await;
                            Ok::<_, Infallible>(
                                answer.map(|body| body.map_err(|never| match never {}).boxed()),
                            )
                        }
                    });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn answer(
    request: &Request<hyper::body::Incoming>,
    db: &Arc<Mutex<rusqlite::Connection>>,
) -> Response<Full<Bytes>> {
    let text = match (request.uri().path(), request.uri().query().unwrap_or_default()) {
        ("/kv", query) => {
            let db = db.clone();
            let set = query.contains("op=set");
            // SQLite is blocking, as it is for the guest's store.
            tokio::task::spawn_blocking(move || {
                let db = db.lock().unwrap();
                if set {
                    db.prepare_cached(
                        "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                         ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
                    )
                    .and_then(|mut s| s.execute(("default", "k", b"v".as_slice())))
                    .map(|_| "ok".to_string())
                } else {
                    db.prepare_cached(
                        "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2",
                    )
                    .and_then(|mut s| s.query_row(("default", "k"), |row| row.get::<_, Vec<u8>>(0)))
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                }
                .unwrap_or_else(|e| format!("error: {e}"))
            })
            .await
            .unwrap_or_default()
        }
        (_, query) if query.starts_with("burn=") => {
            // Busy, not asleep: the core is taken for that long, as a
            // guest's instantiation and run take it.
            let micros = query.trim_start_matches("burn=").parse().unwrap_or(0);
            let until = std::time::Instant::now() + std::time::Duration::from_micros(micros);
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
            "Hello, World!".to_string()
        }
        _ => "Hello, World!".to_string(),
    };
    Response::new(Full::new(Bytes::from(text)))
}
