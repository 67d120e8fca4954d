//! Accepting connections and shutting down gracefully.
//!
//! HTTP/1.1 and HTTP/2 (prior knowledge) on one listener, served by one
//! thread per core, each with its own single-threaded async runtime that
//! accepts from the shared listener. A connection, the guest instances
//! serving its requests and their response bodies all stay on one thread:
//! no task is stolen by another worker, so an instance's memory-management
//! system calls and wake-ups stay on one core (measured in
//! `BENCHMARKS.md`: 10–15% less CPU per request than tokio's work-stealing
//! runtime). A thread serves the connections it accepts unless another
//! serves fewer (`Placement`): a burst of new connections, which one
//! thread would otherwise accept alone, is spread over all of them.
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
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};

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
    let placement = Arc::new(Placement::new(threads));
    let mut inboxes = Vec::with_capacity(threads);
    let mut senders = Vec::with_capacity(threads);
    for _ in 0..threads {
        let (sender, inbox) = tokio::sync::mpsc::unbounded_channel();
        senders.push(sender);
        inboxes.push(inbox);
    }
    let senders: Arc<[Handoff]> = senders.into();
    let mut workers = Vec::with_capacity(threads);
    for (index, inbox) in inboxes.into_iter().enumerate() {
        let listener = listener.try_clone()?;
        let handler = handler.clone();
        let mut stopped = stopped.clone();
        let thread =
            ServingThread { index, placement: placement.clone(), senders: senders.clone() };
        let worker = std::thread::Builder::new().name(format!("bantam-serve-{index}")).spawn(
            move || -> std::io::Result<Shutdown> {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener)?;
                    let stop = async move {
                        // An error means the sender is gone: stop too.
                        let _ = stopped.wait_for(|stop| *stop).await;
                    };
                    Ok(accept_loop(handler, listener, thread, inbox, stop, grace).await)
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

/// A connection handed from the thread that accepted it to the one that
/// serves it.
type Handoff = tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr, Served)>;

/// How many connections each serving thread serves. A thread that accepts
/// a connection serves it itself unless another thread has fewer: clients
/// that open many connections at once (load balancers, benchmarks) would
/// otherwise all land on whichever thread woke first, and leave the other
/// cores idle for as long as the connections live.
struct Placement {
    connections: Box<[AtomicUsize]>,
}

impl Placement {
    fn new(threads: usize) -> Self {
        Self { connections: (0..threads).map(|_| AtomicUsize::new(0)).collect() }
    }

    /// The thread that should serve a connection `me` accepted: `me`
    /// unless another serves fewer. The connection is counted at once, so
    /// that the next placement, on any thread, sees it, until the returned
    /// guard is dropped with the connection (wherever that happens).
    fn place(self: &Arc<Self>, me: usize) -> Served {
        let load = |thread: usize| self.connections[thread].load(Ordering::Relaxed);
        let mut chosen = me;
        for thread in 0..self.connections.len() {
            if load(thread) < load(chosen) {
                chosen = thread;
            }
        }
        self.connections[chosen].fetch_add(1, Ordering::Relaxed);
        Served { placement: self.clone(), thread: chosen }
    }
}

/// Who a serving thread is, and how it reaches the others.
struct ServingThread {
    index: usize,
    placement: Arc<Placement>,
    senders: Arc<[Handoff]>,
}

/// Counts a connection against its serving thread until it ends.
struct Served {
    placement: Arc<Placement>,
    thread: usize,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.placement.connections[self.thread].fetch_sub(1, Ordering::Relaxed);
    }
}

/// One serving thread: accept connections, serve those placed here (its
/// own, and those other threads hand over), until `shutdown`; then drain
/// for at most `grace`.
async fn accept_loop<H: Handler>(
    handler: Arc<H>,
    listener: TcpListener,
    thread: ServingThread,
    mut inbox: tokio::sync::mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr, Served)>,
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
        let (stream, client, served) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, client)) => {
                    let served = thread.placement.place(thread.index);
                    if served.thread == thread.index {
                        (stream, client, served)
                    } else {
                        // If the other thread has stopped, the connection
                        // is dropped (closed): it is shutting down anyway.
                        let target = served.thread;
                        if let Ok(stream) = stream.into_std() {
                            let _ = thread.senders[target].send((stream, client, served));
                        }
                        continue;
                    }
                }
                Err(error) => {
                    // Out of file descriptors and the like: keep serving the
                    // connections we have, try again shortly.
                    tracing::warn!("accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            Some((stream, client, served)) = inbox.recv() => match TcpStream::from_std(stream) {
                Ok(stream) => (stream, client, served),
                Err(error) => {
                    tracing::warn!(%client, "cannot take over a connection: {error}");
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
            drop(served);
        });
    }
    drop(listener);
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => Shutdown::Drained,
        Err(_) => Shutdown::TimedOut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_connections_is_spread_over_the_threads() {
        let placement = Arc::new(Placement::new(2));
        // Thread 0 accepts them all, as it does when it wakes first.
        let mut served: Vec<Served> = (0..6).map(|_| placement.place(0)).collect();
        let threads = |served: &[Served]| served.iter().map(|s| s.thread).collect::<Vec<_>>();
        assert_eq!(threads(&served), [0, 1, 0, 1, 0, 1]);
        // Thread 1's connections end: it takes the next ones, whoever
        // accepts them, until it serves as many as thread 0.
        served.retain(|s| s.thread == 0);
        let next: Vec<Served> = (0..4).map(|_| placement.place(0)).collect();
        assert_eq!(threads(&next), [1, 1, 1, 0]);
        // A thread keeps what it accepts while it serves no more than any
        // other.
        assert_eq!(placement.place(1).thread, 1);
    }
}
