//! Calling a component's HTTP export with a fresh instance per request.
//!
//! A component serves HTTP by exporting either `wasi:http/handler@0.3.x`
//! (Rust `spin-sdk` 7) or `wasi:http/incoming-handler@0.2.x` (older SDKs,
//! JavaScript, Python, plain `wasi:http` components); [`HttpExport::detect`]
//! reads which from the component's type. A request to a 0.2 component gets
//! a fresh instance whose `handle` export is called directly (module `direct`).
//! Requests to 0.3 components are dispatched through wasmtime-wasi-http's
//! `ProxyHandler`, which drives the instance's component-model-async event
//! loop until its response body is complete; our `Instances` tell it to
//! make a fresh store and instance for every request, never reuse one.
//! Either way an instance is stopped as soon as its request lets go of it
//! (see the crate's `claim` module).
//!
//! A component whose manifest opts in (`[component.<id>.tool.bantam]
//! instance_reuse`) has its instances serve several requests, but only of
//! one [`ClientConnection`]: each connection gets its own pool of
//! instances, which end when it closes or after the idle timeout, or when
//! the guest works on while no request holds the instance. Each request in
//! a reused instance gets the full request timeout. Reused instances, of
//! either interface, go through `ProxyHandler`.

mod direct;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use crate::claim::{self, Claim, Claimed, Closed, Expiry, Holds, Idle, LetGo};
use crate::metrics::{ComponentMetrics, InFlight};
use bantam_engine::{ComponentPre, Engine, HostState};
use bantam_manifest::InstanceReuse;
use http_body_util::BodyExt;
use wasmtime::component::GuestTaskId;
use wasmtime::component::types::ComponentItem;
use wasmtime::{Store, StoreContextMut};
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, InstantiationError, Proxy, ProxyHandler, ProxyPre, ShouldAccept,
    TrapOrPanicError, WorkerState,
};

/// Which HTTP interface a component exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpExport {
    /// `wasi:http/handler@0.3.x`.
    Handler03,
    /// `wasi:http/incoming-handler@0.2.x`.
    IncomingHandler02,
}

impl HttpExport {
    /// Read the export from the component's type; `None` if it has neither.
    pub fn detect(pre: &ComponentPre) -> Option<Self> {
        let ty = pre.component.component_type();
        let mut found = None;
        for (name, item) in ty.exports(pre.component.engine()) {
            if !matches!(item.ty, ComponentItem::ComponentInstance(_)) {
                continue;
            }
            if name.starts_with("wasi:http/handler@0.3.") {
                return Some(Self::Handler03);
            }
            if name.starts_with("wasi:http/incoming-handler@0.2.") {
                found = Some(Self::IncomingHandler02);
            }
        }
        found
    }

    /// The interface name, for messages.
    pub fn interface(self) -> &'static str {
        match self {
            Self::Handler03 => "wasi:http/handler@0.3",
            Self::IncomingHandler02 => "wasi:http/incoming-handler@0.2",
        }
    }
}

/// Why a component cannot serve HTTP.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The component exports no HTTP handler Bantam knows.
    #[error(
        "component `{component}` exports neither `wasi:http/handler@0.3.x` nor \
         `wasi:http/incoming-handler@0.2.x`, so it cannot serve HTTP (it exports: {exports})"
    )]
    NoHttpExport {
        /// The component id.
        component: String,
        /// What it does export.
        exports: String,
    },
    /// The export is there but its shape does not match the interface.
    #[error(
        "component `{component}`: its {interface} export does not match the interface: {message}"
    )]
    BadExport {
        /// The component id.
        component: String,
        /// The interface that was expected.
        interface: &'static str,
        /// wasmtime's explanation.
        message: String,
    },
}

/// A component ready to handle HTTP requests.
pub struct HttpComponent {
    /// The component id.
    pub id: String,
    /// Which export is called.
    pub export: HttpExport,
    source: Arc<InstanceSource>,
    /// A fresh instance for every request of a 0.3 component: all its
    /// requests without `instance_reuse`, and those that come from no
    /// client connection (service chaining) otherwise. (A 0.2 component's
    /// single-use instances are called directly, see [`direct`].)
    single_use: ProxyHandler<Instances>,
    /// The manifest's explicit opt-in to reusing instances within one
    /// client connection.
    reuse: Option<InstanceReuse>,
    /// What its requests did, shared with the app's other versions.
    pub metrics: Arc<ComponentMetrics>,
}

/// Why a request got no response from its component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleError {
    /// The guest trapped, panicked, or never answered.
    Failed,
    /// The guest did not answer within the request timeout.
    TimedOut,
    /// The component already has its most instances alive.
    Busy,
}

impl HttpComponent {
    /// Wrap a prepared component, checking that it exports an HTTP handler;
    /// its requests are counted in `metrics`, and `reuse` is its opt-in to
    /// serving several requests of one connection per instance.
    pub fn new(
        engine: Arc<Engine>,
        pre: ComponentPre,
        reuse: Option<InstanceReuse>,
        metrics: Arc<ComponentMetrics>,
    ) -> Result<Self, ExecutorError> {
        let Some(export) = HttpExport::detect(&pre) else {
            let exports = pre
                .component
                .component_type()
                .exports(pre.component.engine())
                .map(|(name, _)| format!("`{name}`"))
                .collect::<Vec<_>>();
            return Err(ExecutorError::NoHttpExport {
                component: pre.id.clone(),
                exports: if exports.is_empty() { "nothing".into() } else { exports.join(", ") },
            });
        };
        let bad_export = |error: wasmtime::Error| ExecutorError::BadExport {
            component: pre.id.clone(),
            interface: export.interface(),
            message: bantam_engine::describe(&error),
        };
        let proxy_pre = match export {
            HttpExport::Handler03 => ProxyPre::P3(
                wasmtime_wasi_http::p3::bindings::ServicePre::new(pre.instance_pre.clone())
                    .map_err(bad_export)?,
            ),
            HttpExport::IncomingHandler02 => ProxyPre::P2(
                wasmtime_wasi_http::p2::bindings::ProxyPre::new(pre.instance_pre.clone())
                    .map_err(bad_export)?,
            ),
        };
        let source = Arc::new(InstanceSource {
            capacity: Arc::new(tokio::sync::Semaphore::new(pre.limits.max_instances_per_component)),
            timeout: pre.limits.request_timeout,
            engine,
            pre,
            proxy_pre,
            metrics: metrics.clone(),
        });
        Ok(Self {
            id: source.pre.id.clone(),
            export,
            single_use: ProxyHandler::new(Instances::single_use(&source)),
            source,
            reuse,
            metrics,
        })
    }

    /// Handle one request, within its app's request timeout: in a fresh
    /// instance, or, if the component opted in to reuse, in an instance
    /// kept for `connection`'s requests. The instance's outbound HTTP
    /// requests carry `outbound_headers` (trace context). An `Err` has been
    /// logged with the component id.
    pub async fn handle(
        &self,
        request: wasmtime_wasi_http::handler::Request,
        outbound_headers: Option<http::HeaderMap>,
        connection: Option<&ClientConnection>,
    ) -> Result<wasmtime_wasi_http::handler::Response, HandleError> {
        let alive = self.metrics.instance_alive();
        let started = Instant::now();
        let reused = match (self.reuse, connection) {
            (Some(reuse), Some(connection)) => Some(connection.instances(&self.source, reuse)),
            _ => None,
        };
        // Dropped on every way out: a timeout, a client gone before the
        // response, or the end of the response body.
        let (claim, claimed) = claim::new();
        let data = (outbound_headers, claimed);
        let handled = async {
            match (self.export, &reused) {
                (HttpExport::IncomingHandler02, None) => {
                    direct::handle(&self.source, request, data).await
                }
                (_, Some(reused)) => reused.handle(data, request).await,
                (_, None) => self.single_use.handle(data, request).await,
            }
        };
        let timeout = self.source.timeout;
        let timed_out = |timeout: std::time::Duration| {
            tracing::error!(
                "component `{}` did not answer within {timeout:?}: the request timed out",
                self.id
            );
            HandleError::TimedOut
        };
        let result = match timeout {
            // Returning drops the claim, which stops the instance (or, if it
            // holds the store, its epoch deadline interrupts it just after
            // this fires, see `Engine::new_store`).
            Some(timeout) => match tokio::time::timeout(timeout, handled).await {
                Ok(result) => result,
                Err(_) => return Err(timed_out(timeout)),
            },
            None => handled.await,
        };
        let result = result.map(|response| {
            response.map(|body| {
                let claim = claim.answered();
                InFlightBody { body, _alive: alive, _claim: claim }.boxed_unsync()
            })
        });
        result.map_err(|error| {
            // On a busy machine the instance's epoch deadline can interrupt
            // it before the timer above fires: that is still a timeout.
            if let Some(timeout) = timeout.filter(|timeout| started.elapsed() >= *timeout) {
                return timed_out(timeout);
            }
            let at_capacity = error.is::<AtCapacity>()
                || error
                    .downcast_ref::<InstantiationError<RequestData>>()
                    .is_some_and(|failed| failed.error.is::<AtCapacity>());
            if at_capacity {
                tracing::warn!(
                    "component `{}` is at its instance limit: request turned away",
                    self.id
                );
                return HandleError::Busy;
            }
            // A failed instance's cause is logged once, where it ended
            // (`log_instance_end`).
            if error.downcast_ref::<TrapOrPanicError>().is_none()
                && !error.is::<direct::InstanceFailed>()
            {
                tracing::error!(
                    "component `{}` failed: {}",
                    self.id,
                    bantam_engine::describe(&error)
                );
            }
            HandleError::Failed
        })
    }
}

/// One client connection, as far as instances care: the instances that
/// components with `instance_reuse` keep for its requests, and only its.
/// They go when the connection does (see `Closed`), so no instance ever
/// serves two clients' requests.
pub struct ClientConnection {
    /// The client's address.
    pub client: SocketAddr,
    /// One worker pool per reusing component (per version of it, under
    /// `bantam watch` or a redeploy).
    reused: Mutex<Vec<ProxyHandler<Instances>>>,
    closed: Arc<Closed>,
}

impl ClientConnection {
    /// A connection from `client`.
    pub fn new(client: SocketAddr) -> Self {
        Self { client, reused: Mutex::default(), closed: Arc::default() }
    }

    /// The pool of `source`'s instances kept for this connection.
    fn instances(
        &self,
        source: &Arc<InstanceSource>,
        reuse: InstanceReuse,
    ) -> ProxyHandler<Instances> {
        let mut reused = self.reused.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = reused.iter().find(|h| Arc::ptr_eq(&h.state().source, source)) {
            return found.clone();
        }
        // An older version of the same component (the app was replaced)
        // takes no more requests here; its idle instances expire.
        reused.retain(|h| h.state().source.pre.id != source.pre.id);
        let handler = ProxyHandler::new(Instances {
            source: source.clone(),
            reuse: Some(reuse),
            closed: Some(self.closed.clone()),
        });
        reused.push(handler.clone());
        handler
    }
}

impl Drop for ClientConnection {
    fn drop(&mut self) {
        self.closed.close();
    }
}

/// What every instance of one component is made from.
struct InstanceSource {
    engine: Arc<Engine>,
    pre: ComponentPre,
    proxy_pre: ProxyPre<HostState>,
    metrics: Arc<ComponentMetrics>,
    /// How long one request may take, if limited.
    timeout: Option<std::time::Duration>,
    /// One permit per instance alive: a full component turns requests
    /// away at once instead of queueing them without bound.
    capacity: Arc<tokio::sync::Semaphore>,
}

impl InstanceSource {
    /// A fresh store and instance, holding a place under the component's
    /// instance limit (the permit), or [`AtCapacity`]; its instantiation
    /// time goes to the metrics.
    async fn instantiate(
        &self,
    ) -> wasmtime::Result<(Store<HostState>, Proxy, tokio::sync::OwnedSemaphorePermit)> {
        let Ok(permit) = Arc::clone(&self.capacity).try_acquire_owned() else {
            return Err(AtCapacity.into());
        };
        let mut store = self.engine.new_store(&self.pre)?;
        let started = Instant::now();
        let proxy = self.proxy_pre.instantiate_async(&mut store).await?;
        let elapsed = started.elapsed();
        self.metrics.instantiation.observe(elapsed);
        tracing::trace!(component = %self.pre.id, ?elapsed, "instantiated");
        Ok((store, proxy, permit))
    }
}

/// The component has its most instances alive: the request is turned away.
#[derive(Debug, thiserror::Error)]
#[error("at the instance limit")]
struct AtCapacity;

/// Where a pool of workers gets its instances, and how long each serves.
struct Instances {
    source: Arc<InstanceSource>,
    /// `None`: one request per instance.
    reuse: Option<InstanceReuse>,
    /// The connection the instances serve, when they are reused.
    closed: Option<Arc<Closed>>,
}

impl Instances {
    fn single_use(source: &Arc<InstanceSource>) -> Self {
        Self { source: source.clone(), reuse: None, closed: None }
    }
}

impl HandlerState for Instances {
    type StoreData = HostState;
    type WorkerExpiration = Expiry;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<HostState, Expiry, Worker>> {
        let source = &self.source;
        let (store, proxy, permit) = source.instantiate().await?;
        let idle = self
            .reuse
            .zip(self.closed.clone())
            .map(|(reuse, closed)| Idle { timeout: reuse.idle_timeout, closed });
        let (expiration, holds) = Expiry::new(idle);
        Ok(Instance {
            store,
            proxy,
            view: wasmtime_wasi_http::WasiHttpView::http,
            expiration,
            state: Worker {
                component: source.pre.id.clone(),
                holds,
                max_requests: self.reuse.map_or(1, |reuse| reuse.max_requests as usize),
                max_concurrent: self.reuse.map_or(1, |reuse| reuse.max_concurrent as usize),
                _permit: permit,
            },
        })
    }
}

/// Headers for an instance's outbound requests (trace context), and the
/// request's claim on the instance.
type RequestData = (Option<http::HeaderMap>, Claimed);

/// The state of one instance: how many requests it may still take, which
/// hold it, and its place under the component's instance limit.
struct Worker {
    component: String,
    holds: Holds,
    max_requests: usize,
    max_concurrent: usize,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl WorkerState for Worker {
    type StoreData = HostState;
    type RequestData = RequestData;

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.max_requests {
            ShouldAccept::Never
        } else if concurrent >= self.max_concurrent {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        mut store: StoreContextMut<'_, HostState>,
        (outbound_headers, claimed): RequestData,
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync + 'static>> {
        store.data_mut().begin_request(outbound_headers);
        self.holds.take(claimed);
        Box::pin(std::future::pending())
    }

    fn drop(&self, store: Store<HostState>, result: wasmtime::Result<()>) {
        log_instance_end(&self.component, result, &self.holds);
        drop(store);
    }
}

/// Log how an instance of `component` ended, given how its requests let go
/// of it. A trap inside the instance (its event loop, or a 0.2 handler
/// after its response) ends it: this is where its cause arrives. An
/// instance stopped because no request holds it ends with an error too,
/// but nothing failed; nor did anything when a request already gave up
/// (its timeout is logged by `HttpComponent::handle`) and the instance is
/// then interrupted at its deadline.
fn log_instance_end(component: &str, result: wasmtime::Result<()>, holds: &Holds) {
    match (result, holds.let_go()) {
        (Ok(()), _) => {}
        (Err(_), Some(LetGo::RequestGivenUp)) => tracing::debug!(
            "component `{component}`: instance stopped, its request given up before the response"
        ),
        // Work after the responses, cut short.
        (Err(_), Some(LetGo::ResponsesDone)) if holds.stopped() => {}
        (Err(error), _) => {
            tracing::error!("component `{component}` failed: {}", bantam_engine::describe(&error))
        }
    }
}

/// A response body that keeps its request in the in-flight count, and
/// its claim on the instance, until the body is done or dropped.
struct InFlightBody {
    body: wasmtime_wasi_http::WasiBody,
    _alive: InFlight,
    _claim: Claim,
}

impl http_body::Body for InFlightBody {
    type Data = bytes::Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
