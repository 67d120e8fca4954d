//! Calling a component's HTTP export with a fresh instance per request.
//!
//! A component serves HTTP by exporting either `wasi:http/handler@0.3.x`
//! (Rust `spin-sdk` 7) or `wasi:http/incoming-handler@0.2.x` (older SDKs,
//! JavaScript, Python, plain `wasi:http` components); [`HttpExport::detect`]
//! reads which from the component's type. Requests are dispatched through
//! wasmtime-wasi-http's `ProxyHandler`, which drives the instance until its
//! response body is complete; our [`InstanceSource`] tells it to make a
//! fresh store and instance for every request and never reuse one.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::metrics::{ComponentMetrics, InFlight};
use bantam_engine::{ComponentPre, Engine, HostState};
use http_body_util::BodyExt;
use wasmtime::component::GuestTaskId;
use wasmtime::component::types::ComponentItem;
use wasmtime::{Store, StoreContextMut};
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, ProxyHandler, ProxyPre, ShouldAccept, TrapOrPanicError,
    WorkerExpiration, WorkerState, WorkerStatus,
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
    pub fn detect(pre: &ComponentPre, engine: &wasmtime::Engine) -> Option<Self> {
        let ty = pre.component.component_type();
        let mut found = None;
        for (name, item) in ty.exports(engine) {
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
    handler: ProxyHandler<InstanceSource>,
    timeout: Option<std::time::Duration>,
    /// One permit per instance alive: a full component turns requests
    /// away at once instead of queueing them without bound.
    capacity: Arc<tokio::sync::Semaphore>,
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
    /// its requests are counted in `metrics`.
    pub fn new(
        engine: Arc<Engine>,
        pre: ComponentPre,
        metrics: Arc<ComponentMetrics>,
    ) -> Result<Self, ExecutorError> {
        let wasmtime_engine = engine.wasmtime();
        let Some(export) = HttpExport::detect(&pre, wasmtime_engine) else {
            let exports = pre
                .component
                .component_type()
                .exports(wasmtime_engine)
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
        Ok(Self {
            id: pre.id.clone(),
            export,
            timeout: pre.limits.request_timeout,
            capacity: Arc::new(tokio::sync::Semaphore::new(pre.limits.max_instances_per_component)),
            handler: ProxyHandler::new(InstanceSource {
                engine,
                pre,
                proxy_pre,
                metrics: metrics.clone(),
            }),
            metrics,
        })
    }

    /// Handle one request in a fresh instance, within its app's request
    /// timeout; the instance's outbound HTTP requests carry
    /// `outbound_headers` (trace context). An `Err` has been logged with
    /// the component id.
    pub async fn handle(
        &self,
        request: wasmtime_wasi_http::handler::Request,
        outbound_headers: Option<http::HeaderMap>,
    ) -> Result<wasmtime_wasi_http::handler::Response, HandleError> {
        let Ok(permit) = Arc::clone(&self.capacity).try_acquire_owned() else {
            tracing::warn!("component `{}` is at its instance limit: request turned away", self.id);
            return Err(HandleError::Busy);
        };
        let alive = self.metrics.instance_alive();
        let started = Instant::now();
        let handled = self.handler.handle(outbound_headers, request);
        let result = match self.timeout {
            // The instance itself is interrupted by its epoch deadline just
            // after this fires (see `Engine::new_store`).
            Some(timeout) => match tokio::time::timeout(timeout, handled).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::error!(
                        "component `{}` did not answer within {timeout:?}: the request timed out",
                        self.id
                    );
                    return Err(HandleError::TimedOut);
                }
            },
            None => handled.await,
        };
        // The instance lives until its response body is complete; so does
        // its permit.
        let result = result.map(|response| {
            response.map(|body| PermitBody { body, _permit: permit, _alive: alive }.boxed_unsync())
        });
        result.map_err(|error| {
            // On a busy machine the instance's epoch deadline can interrupt
            // it before the timer above fires: that is still a timeout.
            if self.timeout.is_some_and(|timeout| started.elapsed() >= timeout) {
                tracing::error!(
                    "component `{}` did not answer within {:?}: the request timed out",
                    self.id,
                    self.timeout.unwrap_or_default()
                );
                return HandleError::TimedOut;
            }
            // A dead worker's cause is logged once, by `SingleUse::drop`.
            if error.downcast_ref::<TrapOrPanicError>().is_none() {
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

/// Makes a fresh store and instance for each request.
struct InstanceSource {
    engine: Arc<Engine>,
    pre: ComponentPre,
    proxy_pre: ProxyPre<HostState>,
    metrics: Arc<ComponentMetrics>,
}

impl HandlerState for InstanceSource {
    type StoreData = HostState;
    type WorkerExpiration = NoExpiration;
    type WorkerState = SingleUse;

    async fn instantiate(&self) -> wasmtime::Result<Instance<HostState, NoExpiration, SingleUse>> {
        let mut store = self.engine.new_store(&self.pre)?;
        let started = Instant::now();
        let proxy = self.proxy_pre.instantiate_async(&mut store).await?;
        let elapsed = started.elapsed();
        self.metrics.instantiation.observe(elapsed);
        tracing::trace!(component = %self.pre.id, ?elapsed, "instantiated");
        Ok(Instance {
            store,
            proxy,
            view: wasmtime_wasi_http::WasiHttpView::http,
            expiration: NoExpiration,
            state: SingleUse { component: self.pre.id.clone() },
        })
    }
}

/// Instances are never expired by time here; request deadlines belong to
/// the limits and are enforced by epoch interruption.
struct NoExpiration;

impl WorkerExpiration for NoExpiration {
    fn poll(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _state: WorkerStatus,
        _start: Instant,
    ) -> Poll<()> {
        Poll::Pending
    }
}

/// One request per instance: the isolation guarantee between requests.
struct SingleUse {
    component: String,
}

impl WorkerState for SingleUse {
    type StoreData = HostState;
    /// Headers for the instance's outbound requests (trace context).
    type RequestData = Option<http::HeaderMap>;

    fn should_accept_request(&self, _concurrent: usize, total: usize) -> ShouldAccept {
        if total == 0 { ShouldAccept::Yes } else { ShouldAccept::Never }
    }

    fn on_request_start(
        &self,
        mut store: StoreContextMut<'_, HostState>,
        outbound_headers: Option<http::HeaderMap>,
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync + 'static>> {
        if let Some(headers) = outbound_headers {
            store.data_mut().add_outbound_headers(headers);
        }
        Box::pin(std::future::pending())
    }

    fn drop(&self, store: Store<HostState>, result: wasmtime::Result<()>) {
        // A trap inside the instance's event loop ends the worker: this is
        // where its cause arrives (the request only learns that the worker
        // died, see `HttpComponent::handle`).
        if let Err(error) = result {
            tracing::error!(
                "component `{}` failed: {}",
                self.component,
                bantam_engine::describe(&error)
            );
        }
        drop(store);
    }
}

/// A response body that holds its instance's concurrency permit (and its
/// place in the in-flight count) until the body is done or dropped.
struct PermitBody {
    body: wasmtime_wasi_http::WasiBody,
    _permit: tokio::sync::OwnedSemaphorePermit,
    _alive: InFlight,
}

impl http_body::Body for PermitBody {
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
