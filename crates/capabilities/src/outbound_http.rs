//! Outbound HTTP: `wasi:http/outgoing-handler@0.2.x` and the 0.3 client,
//! as wasmtime-wasi-http serves them, with Bantam deciding where a request
//! may go and how it is sent.
//!
//! Every request is checked against the component's
//! `allowed_outbound_hosts`; a refused one fails with the WIT's
//! `HTTP-request-denied` and a log line naming the entry to add, as on
//! Spin. Requests to `http://<component>.spin.internal/...` (Spin's service
//! chaining) and to relative URLs (`/api`, granted by `http://self`) never
//! touch the network: they are handed to the app's own trigger,
//! in-process. Everything else goes out through the component's
//! own pooled client: TLS with the webpki roots, a connect timeout, a
//! timeout for the response head, and a resolver that refuses loopback
//! and link-local addresses a wildcard grant would otherwise reach (a name
//! that resolves to 127.0.0.1 or the cloud metadata service is refused
//! unless an entry names it). The connection is made to the addresses
//! that were checked, so DNS cannot change its answer in between.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bantam_manifest::allowed_hosts::{AllowedHosts, SERVICE_CHAINING_SUFFIX};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::ComponentCapabilities;

/// How long connecting may take when the guest sets no timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the response head may take when the guest sets no timeout.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Outbound requests one instance may have in flight unless configured.
pub const DEFAULT_MAX_OUTBOUND_CONNECTIONS: usize = 32;
/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Serves a request from a component to its own app, in-process: given
/// the callee's component id (service chaining) or `None` (a relative URL,
/// routed as usual) and the request, it answers as the app's trigger would.
pub type LocalHandler = Arc<
    dyn Fn(
            Option<String>,
            http::Request<WasiBody>,
        ) -> Pin<Box<dyn Future<Output = Result<http::Response<WasiBody>, Error>> + Send>>
        + Send
        + Sync,
>;

/// One component's HTTP client: a connection pool whose resolver applies
/// the component's address rules.
pub struct HttpClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector<Resolver>>, WasiBody>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").finish_non_exhaustive()
    }
}

/// The TLS settings every client shares: webpki roots, HTTP/1.1.
static TLS_CONFIG: LazyLock<rustls::ClientConfig> = LazyLock::new(|| {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.into() };
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
});

impl HttpClient {
    /// The client of `component`, which may reach what `allowed` grants.
    pub(crate) fn new(component: &str, allowed: &AllowedHosts) -> Self {
        let resolver = Resolver { component: component.into(), allowed: allowed.clone() };
        let mut http = HttpConnector::new_with_resolver(resolver);
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(TLS_CONFIG.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(https);
        Self { client }
    }
}

/// Resolves host names for one component and keeps only the addresses it
/// may reach (see [`crate::check_address`]).
#[derive(Clone)]
struct Resolver {
    component: Arc<str>,
    allowed: AllowedHosts,
}

impl tower_service::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let Resolver { component, allowed } = self.clone();
        Box::pin(async move {
            let host = name.as_str();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
            let mut refusal = None;
            let reachable: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|address| {
                    crate::check_address(&component, &allowed, host, address.ip())
                        .map_err(|message| refusal = Some(message))
                        .is_ok()
                })
                .collect();
            match refusal {
                Some(message) if reachable.is_empty() => {
                    Err(io::Error::new(io::ErrorKind::PermissionDenied, message))
                }
                _ => Ok(reachable.into_iter()),
            }
        })
    }
}

/// The outbound HTTP policy of one instance: wasmtime-wasi-http calls
/// [`WasiHttpHooks::send_request`] for every request a guest sends.
pub struct OutboundHttp {
    component: Arc<ComponentCapabilities>,
    /// One permit per request in flight, held until its response body is
    /// done: a guest cannot fan out without bound.
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Headers added to each request that lacks them (trace context).
    headers: http::HeaderMap,
}

impl OutboundHttp {
    /// The policy of an instance of `component`.
    pub fn new(component: Arc<ComponentCapabilities>) -> Self {
        let in_flight = Arc::new(tokio::sync::Semaphore::new(component.max_outbound_connections));
        Self { component, in_flight, headers: http::HeaderMap::new() }
    }

    /// Add `headers` to every request this instance sends without them,
    /// in place of those set before.
    pub fn set_headers(&mut self, headers: http::HeaderMap) {
        self.headers = headers;
    }
}

/// What `send_request` returns: the response, and a future for the
/// connection's I/O (nothing here: the pool drives its connections).
type Sent = (http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>);

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _response_done: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Result<Sent, Error>> + Send> {
        let mut request = request;
        for (name, value) in &self.headers {
            if !request.headers().contains_key(name) {
                request.headers_mut().insert(name, value.clone());
            }
        }
        let component = Arc::clone(&self.component);
        let permit = Arc::clone(&self.in_flight).try_acquire_owned();
        Box::new(async move {
            let Ok(permit) = permit else {
                tracing::warn!(
                    "component `{}`: more than {} outbound HTTP requests in flight from one instance: {} refused",
                    component.id,
                    component.max_outbound_connections,
                    request.uri()
                );
                return Err(Error::ConnectionLimitReached);
            };
            let response = send(&component, request, options).await?;
            // The permit lives as long as the response body.
            let response = response.map(|body| {
                body.map_frame(move |frame| {
                    let _held = &permit;
                    frame
                })
                .boxed_unsync()
            });
            Ok((response, Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

/// Check and send one request.
async fn send(
    component: &ComponentCapabilities,
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<http::Response<WasiBody>, Error> {
    let uri = request.uri();
    // A relative URL: given `self` by the shims below, or, from spin-sdk
    // 2 to 5, an empty host (`https://:443/path`), as those SDKs send it.
    let relative = match uri.host() {
        None | Some("") => true,
        Some(host) => host == SELF_AUTHORITY && uri.port().is_none(),
    };
    if relative {
        return send_to_self(component, request).await;
    }
    let url = uri.to_string();
    let target = crate::check_outbound(component, &url).map_err(|_| Error::HttpRequestDenied)?;
    if let Some(callee) = target.host.strip_suffix(SERVICE_CHAINING_SUFFIX) {
        let Some(local) = component.local.get() else {
            return Err(Error::DestinationUnavailable);
        };
        return local(Some(callee.to_string()), request).await;
    }
    let options = options.unwrap_or_default();
    let connect = options.connect_timeout.unwrap_or(CONNECT_TIMEOUT);
    let head = options.first_byte_timeout.unwrap_or(RESPONSE_TIMEOUT);
    let sent = component.http.client.request(request);
    let response = match tokio::time::timeout(connect + head, sent).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => return Err(client_error(&component.id, &url, &error)),
        Err(_) => return Err(Error::ConnectionReadTimeout),
    };
    Ok(response.map(|body| body.map_err(Error::from).boxed_unsync()))
}

/// Serve a request to a relative URL from the app itself, as Spin does
/// when the component was granted `http://self` or `https://self`.
async fn send_to_self(
    component: &ComponentCapabilities,
    request: http::Request<WasiBody>,
) -> Result<http::Response<WasiBody>, Error> {
    let allowed = ["http", "https"].iter().any(|s| component.allowed_hosts.admits_relative(s));
    if !allowed {
        tracing::warn!(
            "component `{}`: request to the relative URL {} denied: add \"http://self\" to its allowed_outbound_hosts",
            component.id,
            request.uri().path_and_query().map_or("/", |p| p.as_str())
        );
        return Err(Error::HttpRequestDenied);
    }
    let Some(local) = component.local.get() else {
        return Err(Error::DestinationUnavailable);
    };
    // One spelling for the app itself, whichever way the guest wrote it.
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = format!("http://{SELF_AUTHORITY}{path}")
        .parse()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    parts.headers.insert(http::header::HOST, http::HeaderValue::from_static(SELF_AUTHORITY));
    local(None, http::Request::from_parts(parts, body)).await
}

/// The WIT error for a failed request, logged with its cause.
fn client_error(component: &str, url: &str, error: &hyper_util::client::legacy::Error) -> Error {
    use std::error::Error as _;
    let mut cause = error.source();
    let mut io_kind = None;
    let mut text = error.to_string();
    while let Some(inner) = cause {
        text = format!("{text}: {inner}");
        if let Some(io) = inner.downcast_ref::<io::Error>() {
            io_kind.get_or_insert(io.kind());
        }
        cause = inner.source();
    }
    tracing::info!("component `{component}`: HTTP request to {url} failed: {text}");
    match io_kind {
        // The resolver refused every address; it logged why.
        Some(io::ErrorKind::PermissionDenied) => Error::DestinationIpProhibited,
        Some(io::ErrorKind::ConnectionRefused) => Error::ConnectionRefused,
        Some(io::ErrorKind::TimedOut) => Error::ConnectionTimeout,
        Some(io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe) => {
            Error::ConnectionTerminated
        }
        _ if text.contains("dns error") => Error::DestinationNotFound,
        _ if text.contains("certificate") => Error::TlsCertificateError,
        _ if text.contains("tls") || text.contains("TLS") => Error::TlsProtocolError,
        _ if error.is_connect() => Error::DestinationUnavailable,
        _ => Error::HttpProtocolError,
    }
}

/// The authority a relative URL (`/api/x`) is given so that it reaches
/// [`WasiHttpHooks::send_request`]: Spin's name for the app itself.
const SELF_AUTHORITY: &str = "self";

/// Let guests send requests to relative URLs, which Spin serves from the
/// app itself. wasmtime-wasi-http cannot build a request URI without an
/// authority, so its `wasi:http` 0.2 `handle` and 0.3 `send` are shadowed
/// here by functions that give such a request the authority `self` and
/// then call the originals; `send_request` serves it in-process if the
/// component was granted `http://self` or `https://self`. Call after
/// wasmtime-wasi-http's own `add_to_linker`; the 0.3 `send` only if the
/// linker's engine is `concurrent` (has component-model concurrency).
pub fn add_relative_urls_to_linker<T: wasmtime_wasi_http::WasiHttpView + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    concurrent: bool,
) -> wasmtime::Result<()> {
    use wasmtime::component::{Accessor, Resource};
    use wasmtime_wasi_http::WasiHttp;
    use wasmtime_wasi_http::p2::bindings::http::outgoing_handler::Host as _;
    use wasmtime_wasi_http::p2::types::{HostFutureIncomingResponse, HostOutgoingRequest};
    use wasmtime_wasi_http::p3::bindings::http::client::HostWithStore as _;

    type P2Result = Result<
        Resource<HostFutureIncomingResponse>,
        wasmtime_wasi_http::p2::bindings::http::types::ErrorCode,
    >;
    type P3Result = Result<
        Resource<wasmtime_wasi_http::p3::Response>,
        wasmtime_wasi_http::p3::bindings::http::types::ErrorCode,
    >;

    linker.allow_shadowing(true);
    linker.instance("wasi:http/outgoing-handler@0.2.12")?.func_wrap_async(
        "handle",
        |mut store,
         (request, options): (
            Resource<HostOutgoingRequest>,
            Option<Resource<RequestOptions>>,
        )| {
            Box::new(async move {
                let mut http = store.data_mut().http();
                let outgoing = http.table.get_mut(&request)?;
                if outgoing.authority.as_deref().is_none_or(str::is_empty) {
                    outgoing.authority = Some(SELF_AUTHORITY.into());
                }
                let result: P2Result = match http.handle(request, options) {
                    Ok(response) => Ok(response),
                    Err(error) => Err(error.downcast()?),
                };
                Ok((result,))
            })
        },
    )?;
    if !concurrent {
        linker.allow_shadowing(false);
        return Ok(());
    }
    linker.instance("wasi:http/client@0.3.0")?.func_wrap_concurrent(
        "send",
        |accessor: &Accessor<T>, (request,): (Resource<wasmtime_wasi_http::p3::Request>,)| {
            Box::pin(async move {
                accessor.with(|mut access| -> wasmtime::Result<()> {
                    let outgoing = access.get().http().table.get_mut(&request)?;
                    if outgoing.authority.is_none() {
                        outgoing.authority =
                            Some(http::uri::Authority::from_static(SELF_AUTHORITY));
                    }
                    Ok(())
                })?;
                let http = accessor.with_getter::<WasiHttp>(T::http);
                let result: P3Result = match WasiHttp::send(&http, request).await {
                    Ok(response) => Ok(response),
                    Err(error) => Err(error.downcast()?),
                };
                Ok((result,))
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
