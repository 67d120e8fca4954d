//! The HTTP trigger: Bantam's request path.
//!
//! HTTP in -> [`router`] picks the route -> [`headers`] adds Spin's
//! `spin-*` headers -> [`executor`] makes a fresh instance of the
//! component's pre-instance and calls its handler -> the response streams
//! back. [`server`] accepts connections and shuts down gracefully.
//!
//! Everything that can be decided once is decided in
//! [`HttpTrigger::prepare`] at start-up: routes are parsed and ordered, components are checked for
//! an HTTP export. The per-request path only matches and instantiates.

mod claim;
pub mod executor;
pub mod headers;
pub mod metrics;
pub mod router;
pub mod server;
pub mod telemetry;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bantam_app::{App, Executor, Route, RoutePattern};
use bantam_capabilities::{AppCapabilities, CapabilityError};
use bantam_engine::{AppLimits, ComponentPre, Engine, EngineError, LogConfig};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use wasmtime_wasi_http::WasiBody;

pub use executor::{ClientConnection, ExecutorError, HandleError, HttpComponent, HttpExport};
use metrics::AppMetrics;
use router::Router;

/// Requests under this prefix are answered by the host, never by the app.
const WELL_KNOWN_PREFIX: &str = "/.well-known/spin/";

/// Why the HTTP trigger could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// A component cannot serve HTTP.
    #[error(transparent)]
    Executor(#[from] ExecutorError),
    /// A trigger uses an executor Bantam does not run.
    #[error(
        "route {route}: component `{component}` uses the `{executor}` executor, which Bantam does not support"
    )]
    UnsupportedExecutor {
        /// The route as written.
        route: String,
        /// The component id.
        component: String,
        /// The executor type.
        executor: String,
    },
    /// A component's capabilities could not be granted.
    #[error(transparent)]
    Capability(#[from] CapabilityError),
    /// A component could not be compiled or linked.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A trigger names a component that was not prepared.
    #[error("route {route}: component `{component}` was not loaded")]
    MissingComponent {
        /// The route as written.
        route: String,
        /// The component id.
        component: String,
    },
}

/// What a route leads to: its component, and Spin's headers for the
/// route, made once.
struct RouteTarget {
    component: Arc<HttpComponent>,
    headers: headers::RouteHeaders,
}

/// The HTTP trigger of one app: its routes and its components.
pub struct HttpTrigger {
    router: Router<RouteTarget>,
    /// Every component with a trigger, private ones included, by id: the
    /// targets of service chaining, matched as [`HttpTrigger::chained_route`].
    components: HashMap<String, RouteTarget>,
    /// `/...`: how a chained request matches its component, as in Spin.
    chained_route: RoutePattern,
    app_info: Bytes,
    /// The application's name, for traces.
    app_name: String,
    /// The app's limits; each component's pre-instance carries them too.
    limits: AppLimits,
}

/// The client address a chained request appears to come from, as in Spin.
const CHAINED_CLIENT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

impl HttpTrigger {
    /// Compile, link and pre-instantiate every component of `app` that a
    /// route reaches, granting each its capabilities and holding it to
    /// `limits`, and build the trigger, counting its requests in `metrics`. `on_component` is
    /// told each component id before it is prepared (compiling a large
    /// one can take seconds). Components no trigger reaches cost nothing
    /// and cannot stop the app.
    pub fn prepare(
        engine: &Arc<Engine>,
        app: &App,
        capabilities: &AppCapabilities,
        logs: &LogConfig,
        limits: AppLimits,
        metrics: &AppMetrics,
        mut on_component: impl FnMut(&str),
    ) -> Result<Arc<Self>, TriggerError> {
        let mut prepared = Vec::with_capacity(app.components.len());
        for component in &app.components {
            if app.http_routes.iter().any(|r| r.component == component.id) {
                let granted = capabilities.for_component(component)?;
                on_component(&component.id);
                prepared.push(engine.prepare(component, logs, granted, limits)?);
            }
        }
        let trigger = Arc::new(Self::new(engine.clone(), app, prepared, limits, metrics)?);
        capabilities.serve_local_requests(trigger.local_handler());
        Ok(trigger)
    }

    /// Build the trigger from a loaded app and its prepared components.
    fn new(
        engine: Arc<Engine>,
        app: &App,
        prepared: Vec<ComponentPre>,
        limits: AppLimits,
        metrics: &AppMetrics,
    ) -> Result<Self, TriggerError> {
        let mut by_id: HashMap<String, ComponentPre> =
            prepared.into_iter().map(|pre| (pre.id.clone(), pre)).collect();
        let reuse: HashMap<&str, bantam_manifest::InstanceReuse> = app
            .components
            .iter()
            .filter_map(|c| Some((c.id.as_str(), c.instance_reuse?)))
            .collect();
        let chained_route = RoutePattern::parse("/...").expect("`/...` is a valid route");
        let mut components: HashMap<String, RouteTarget> = HashMap::new();
        let mut routes = Vec::new();
        for http_route in &app.http_routes {
            let route_text = match &http_route.route {
                Route::Public(pattern) => format!("\"{}\"", pattern.as_str()),
                Route::Private => "{ private = true }".to_string(),
            };
            if let Executor::Wagi { .. } = http_route.executor {
                return Err(TriggerError::UnsupportedExecutor {
                    route: route_text,
                    component: http_route.component.clone(),
                    executor: "wagi".into(),
                });
            }
            let component = match components.get(&http_route.component) {
                Some(target) => target.component.clone(),
                None => {
                    let pre = by_id.remove(&http_route.component).ok_or_else(|| {
                        TriggerError::MissingComponent {
                            route: route_text.clone(),
                            component: http_route.component.clone(),
                        }
                    })?;
                    let component = Arc::new(HttpComponent::new(
                        engine.clone(),
                        pre,
                        reuse.get(http_route.component.as_str()).copied(),
                        metrics.component(&http_route.component),
                    )?);
                    let headers = headers::RouteHeaders::new(&chained_route);
                    let chained = RouteTarget { component: component.clone(), headers };
                    components.insert(http_route.component.clone(), chained);
                    component
                }
            };
            if let Route::Public(pattern) = &http_route.route {
                let headers = headers::RouteHeaders::new(pattern);
                routes.push((pattern.clone(), RouteTarget { component, headers }));
            }
        }
        let app_info = serde_json::json!({ "name": app.name, "version": app.version });
        Ok(Self {
            router: Router::build(routes),
            components,
            chained_route,
            app_info: Bytes::from(app_info.to_string()),
            app_name: app.name.clone(),
            limits,
        })
    }

    /// The public routes and the component serving each, in manifest order.
    pub fn routes(&self) -> impl Iterator<Item = (&RoutePattern, &str)> {
        self.router.routes().map(|(pattern, target)| (pattern, target.component.id.as_str()))
    }

    /// Serve one request that arrived on `connection`.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        connection: &ClientConnection,
    ) -> Response<WasiBody> {
        let request =
            request.map(|body| body.map_err(wasmtime_wasi_http::Error::Hyper).boxed_unsync());
        self.handle_from(request, None, Some(connection)).await
    }

    /// Serve a request one of the app's components sent to
    /// `http://<callee>.spin.internal/...` (Spin's service chaining): it
    /// reaches `callee` directly, whatever its route (private ones too),
    /// matched as `/...`, without leaving the process.
    ///
    /// With no `callee`, the request is to a relative URL and is routed
    /// like any other.
    pub async fn handle_chained(
        &self,
        callee: Option<&str>,
        request: Request<WasiBody>,
    ) -> Result<Response<WasiBody>, wasmtime_wasi_http::Error> {
        if let Some(callee) = callee
            && !self.components.contains_key(callee)
        {
            tracing::info!("service chaining: no component `{callee}` with an HTTP trigger");
            return Err(wasmtime_wasi_http::Error::DestinationNotFound);
        }
        Ok(self.handle_from(request, callee, None).await)
    }

    /// Answer requests the app's components send to each other with this
    /// trigger. It holds the trigger weakly: the components hold the
    /// handler, and the trigger holds the components.
    pub fn local_handler(self: &Arc<Self>) -> bantam_capabilities::outbound_http::LocalHandler {
        let trigger = Arc::downgrade(self);
        Arc::new(move |callee, request| {
            let trigger = trigger.clone();
            Box::pin(async move {
                let trigger =
                    trigger.upgrade().ok_or(wasmtime_wasi_http::Error::DestinationUnavailable)?;
                trigger.handle_chained(callee.as_deref(), request).await
            })
        })
    }

    /// Route (or, chained, go straight to `callee`), inject Spin's
    /// headers, and run the component; a request from a client connection
    /// may be served by an instance kept for that connection, and one from
    /// none (chained) appears to come from [`CHAINED_CLIENT`].
    async fn handle_from(
        &self,
        request: Request<WasiBody>,
        callee: Option<&str>,
        connection: Option<&ClientConnection>,
    ) -> Response<WasiBody> {
        let (mut parts, body) = request.into_parts();
        // `Uri` is reference-counted: the clone lets the match borrow the
        // path while the request's parts are rewritten.
        let uri = parts.uri.clone();
        let path = uri.path();
        if let Some(rest) = path.strip_prefix(WELL_KNOWN_PREFIX) {
            return match rest {
                "health" => text(StatusCode::OK, Bytes::from_static(b"OK")),
                "info" => {
                    let mut response = text(StatusCode::OK, self.app_info.clone());
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    response
                }
                _ => empty(StatusCode::NOT_FOUND),
            };
        }
        let matched = match callee.and_then(|id| self.components.get(id)) {
            Some(target) => router::RouteMatch {
                target,
                pattern: &self.chained_route,
                path_info: path,
                params: Vec::new(),
            },
            None => match self.router.route(path) {
                Some(matched) => matched,
                None => return empty(StatusCode::NOT_FOUND),
            },
        };
        let component = matched.target.component.clone();
        let arrived = Instant::now();
        let span = telemetry::RequestSpan::start(
            &parts,
            matched.pattern.as_str(),
            &self.app_name,
            &component.id,
        );
        let outbound_headers = span.as_ref().map(telemetry::RequestSpan::outbound_headers);

        let host = parts.headers.get(http::header::HOST).and_then(|host| host.to_str().ok());
        let authority = uri.authority().map(|a| a.as_str()).or(host).unwrap_or("localhost");
        let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
        // One buffer for both the guest's URI and `spin-full-url`.
        let full_url = Bytes::from(format!("http://{authority}{path_and_query}"));
        let (Ok(full_uri), Ok(full_url)) = (
            http::Uri::from_maybe_shared(full_url.clone()),
            http::HeaderValue::from_maybe_shared(full_url),
        ) else {
            return empty(StatusCode::BAD_REQUEST);
        };
        parts.uri = full_uri;
        let client = connection.map_or(CHAINED_CLIENT, |connection| connection.client);
        headers::inject(&mut parts.headers, full_url, &matched.target.headers, &matched, client);
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let max = self.limits.max_request_body_size;
        let response = if declared.is_some_and(|length| length > max) {
            text(
                StatusCode::PAYLOAD_TOO_LARGE,
                Bytes::from(format!("request body larger than {max} bytes\n")),
            )
        } else {
            let body = limited(body, max, move || {
                wasmtime_wasi_http::Error::HttpRequestBodySize(Some(max))
            });
            let request = Request::from_parts(parts, body);
            self.run(&component, request, outbound_headers, connection).await
        };
        let status = response.status().as_u16();
        component.metrics.record_response(status, arrived.elapsed());
        if let Some(span) = span {
            span.end(status);
        }
        response
    }

    /// Run `component` on `request`, answering its failures as Spin does;
    /// the guest's outbound requests carry `outbound_headers`.
    async fn run(
        &self,
        component: &HttpComponent,
        request: Request<WasiBody>,
        outbound_headers: Option<http::HeaderMap>,
        connection: Option<&ClientConnection>,
    ) -> Response<WasiBody> {
        match component.handle(request, outbound_headers, connection).await {
            Ok(response) => self.limit_response(&component.id, response),
            // Spin answers a failed handler with an empty 500; the cause is
            // in the log, never in the response.
            Err(HandleError::Failed) => {
                component.metrics.record_failure();
                empty(StatusCode::INTERNAL_SERVER_ERROR)
            }
            Err(HandleError::Busy) => {
                let mut response =
                    text(StatusCode::SERVICE_UNAVAILABLE, Bytes::from_static(b"busy, retry\n"));
                response
                    .headers_mut()
                    .insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
                response
            }
            Err(HandleError::TimedOut) => {
                text(StatusCode::GATEWAY_TIMEOUT, Bytes::from_static(b"request timed out\n"))
            }
        }
    }
}

impl HttpTrigger {
    /// Hold a guest's response to the response body limit.
    fn limit_response(&self, component: &str, response: Response<WasiBody>) -> Response<WasiBody> {
        let max = self.limits.max_response_body_size;
        let declared = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > max) {
            tracing::error!(
                "component `{component}` answered with a {} byte body, over the {max} byte limit (--max-response-body-size): 500",
                declared.unwrap_or_default()
            );
            return empty(StatusCode::INTERNAL_SERVER_ERROR);
        }
        let component = component.to_string();
        response.map(|body| {
            limited(body, max, move || {
                tracing::error!(
                    "component `{component}` streamed more than {max} bytes (--max-response-body-size): response cut off"
                );
                wasmtime_wasi_http::Error::HttpResponseBodySize(Some(max))
            })
        })
    }
}

/// `body`, failing with `exceeded()` once more than `max` bytes pass.
fn limited(
    body: WasiBody,
    max: u64,
    exceeded: impl Fn() -> wasmtime_wasi_http::Error + Send + Sync + 'static,
) -> WasiBody {
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    http_body_util::Limited::new(body, limit)
        .map_err(move |error| match error.downcast::<wasmtime_wasi_http::Error>() {
            Ok(error) => *error,
            // The only other error is the limit's own.
            Err(_) => exceeded(),
        })
        .boxed_unsync()
}

fn text(status: StatusCode, body: Bytes) -> Response<WasiBody> {
    let mut response =
        Response::new(Full::new(body).map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = status;
    response
}

fn empty(status: StatusCode) -> Response<WasiBody> {
    text(status, Bytes::new())
}
