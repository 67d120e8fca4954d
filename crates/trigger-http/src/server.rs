//! Accepting connections and shutting down gracefully.
//!
//! HTTP/1.1 and HTTP/2 (prior knowledge) on one listener, served by one
//! thread per core, each with its own single-threaded async runtime that
//! accepts from the shared listener. A connection, the guest instances
//! serving its requests and their response bodies all stay on the thread
//! that accepted it: no task is stolen by another worker, so an instance's
//! memory-management system calls and wake-ups stay on one core (measured
//! in `BENCHMARKS.md`: 10–15% less CPU per request than tokio's
//! work-stealing runtime). An idle thread is the one waiting in `accept`,
//! so new connections go where there is room.
//!
//! On shutdown the listener closes at once, connections finish their
//! in-flight requests (keep-alive connections are told to close), and
//! whatever is still running after the grace period is abandoned.
//!
//! The trigger being served is a [`LiveTrigger`]: storing a new one swaps
//! the app (a rebuild under `bantam watch`, a redeploy) with no dropped
//! request. Each request takes the trigger current when it arrives and
//! keeps it to the end, so in-flight requests finish on the old app, and
//! the old app's instances and stores go when its last request does.
//!
//! Slow or greedy clients are bounded: request headers must arrive within
//! [`HEADER_READ_TIMEOUT`], and there may be at most [`MAX_HEADERS`] of
//! them (HTTP/1) or [`MAX_HEADER_LIST_SIZE`] bytes of them (HTTP/2).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::{ClientConnection, HttpTrigger};

/// How long a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The most headers one HTTP/1 request may have.
pub const MAX_HEADERS: usize = 100;
/// The most bytes of headers one HTTP/2 request may have.
pub const MAX_HEADER_LIST_SIZE: u32 = 64 << 10;

/// How a shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Every in-flight request finished.
    Drained,
    /// The grace period ran out with requests still in flight.
    TimedOut,
}

/// The trigger a server is serving, swappable while it serves.
pub type LiveTrigger = arc_swap::ArcSwap<HttpTrigger>;

/// What a server hands each request to: one app's [`LiveTrigger`]
/// (`bantam up`), or a host of many apps that picks one by the request's
/// host name (`bantam serve`).
pub trait Handler: Send + Sync + 'static {
    /// Answer one request that arrived on `connection`.
    fn handle(
        &self,
        request: http::Request<hyper::body::Incoming>,
        connection: Arc<ClientConnection>,
    ) -> impl Future<Output = http::Response<wasmtime_wasi_http::WasiBody>> + Send + use<Self>;
}

impl Handler for LiveTrigger {
    fn handle(
        &self,
        request: http::Request<hyper::body::Incoming>,
        connection: Arc<ClientConnection>,
    ) -> impl Future<Output = http::Response<wasmtime_wasi_http::WasiBody>> + Send + use<> {
        // The request keeps the trigger current on arrival to its end.
        let trigger = self.load_full();
        async move { trigger.handle(request, &connection).await }
    }
}

/// Serve requests with `handler` on `listener` with `threads` serving
/// threads until `shutdown` resolves, then drain in-flight requests for
/// at most `grace`.
pub async fn serve<H: Handler>(
    handler: Arc<H>,
    listener: TcpListener,
    threads: usize,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<Shutdown> {
    let listener = listener.into_std()?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let threads = threads.max(1);
    let mut workers = Vec::with_capacity(threads);
    for index in 0..threads {
        let listener = listener.try_clone()?;
        let handler = handler.clone();
        let mut stopped = stopped.clone();
        let worker = std::thread::Builder::new().name(format!("bantam-serve-{index}")).spawn(
            move || -> std::io::Result<Shutdown> {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener)?;
                    let stop = async move {
                        // An error means the sender is gone: stop too.
                        let _ = stopped.wait_for(|stop| *stop).await;
                    };
                    Ok(accept_loop(handler, listener, stop, grace).await)
                })
            },
        )?;
        workers.push(worker);
    }
    drop(listener);
    shutdown.await;
    let _ = stop.send(true);
    // Joining blocks: leave the caller's runtime free meanwhile.
    let outcomes = tokio::task::spawn_blocking(move || {
        workers
            .into_iter()
            .map(|worker| worker.join().unwrap_or(Ok(Shutdown::TimedOut)))
            .collect::<std::io::Result<Vec<_>>>()
    })
    .await
    .map_err(std::io::Error::other)??;
    Ok(match outcomes.iter().all(|outcome| *outcome == Shutdown::Drained) {
        true => Shutdown::Drained,
        false => Shutdown::TimedOut,
    })
}

/// One serving thread: accept connections and serve them on this thread
/// until `shutdown`, then drain for at most `grace`.
async fn accept_loop<H: Handler>(
    handler: Arc<H>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Shutdown {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(MAX_HEADERS);
    builder.http2().timer(TokioTimer::new()).max_header_list_size(MAX_HEADER_LIST_SIZE);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: keep serving the
                    // connections we have, try again shortly.
                    tracing::warn!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        // Dropped with the connection's service: instances kept for its
        // requests go then.
        let connection = Arc::new(ClientConnection::new(client));
        let service = hyper::service::service_fn(move |request| {
            let response = handler.handle(request, connection.clone());
            async move { Ok::<_, Infallible>(response.await) }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%client, "connection ended: {error}");
            }
        });
    }
    drop(listener);
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => Shutdown::Drained,
        Err(_) => Shutdown::TimedOut,
    }
}
