//! The admin listener: the `/v1` HTTP/JSON API, Prometheus `/metrics`,
//! and the dashboard at `/`.
//!
//! Everything but the dashboard page itself requires `Authorization:
//! Bearer <token>` (401 otherwise). The page holds no data: its script
//! asks for the token and calls the API with it.
//!
//! | Method and path | Does |
//! |---|---|
//! | `GET /v1/apps` | list apps |
//! | `PUT /v1/apps/<name>` | deploy or update: a bundle (`application/gzip`) or `{"reference": ..}` (JSON) |
//! | `PATCH /v1/apps/<name>` | change variables, domains or limits, or reset limits to the host's (JSON: [`DeploySettings`]) |
//! | `GET /v1/apps/<name>` | one app with its deployment history |
//! | `GET /v1/apps/<name>/logs?lines=N` | its components' recent output |
//! | `DELETE /v1/apps/<name>` | remove it and its state |
//! | `GET /metrics` | Prometheus text format |

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::{DeploySettings, Platform, PlatformError, bundle};

/// The largest upload the API accepts: a bundle of a large app (a JS or
/// Python runtime is tens of MB) fits well within it.
pub const MAX_UPLOAD: usize = 512 << 20;

const DASHBOARD: &str = include_str!("dashboard.html");

/// A deploy from a registry: the JSON body of `PUT /v1/apps/<name>`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryDeploy {
    reference: String,
    #[serde(default)]
    insecure: bool,
    #[serde(flatten)]
    settings: DeploySettings,
}

/// Serve the admin API of `platform` on `listener`, accepting `token`,
/// until `shutdown` resolves; requests in flight then finish.
pub async fn serve(
    platform: Arc<Platform>,
    listener: TcpListener,
    token: String,
    shutdown: impl Future<Output = ()>,
) {
    let token: Arc<str> = token.into();
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!("admin accept failed: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let platform = platform.clone();
        let token = token.clone();
        let service = hyper::service::service_fn(move |request| {
            let platform = platform.clone();
            let token = token.clone();
            async move { Ok::<_, Infallible>(handle(&platform, &token, request).await) }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    graceful.shutdown().await;
}

type AdminResponse = Response<Full<Bytes>>;

async fn handle(
    platform: &Arc<Platform>,
    token: &str,
    request: Request<Incoming>,
) -> AdminResponse {
    let path = request.uri().path().to_string();
    if request.method() == Method::GET && (path == "/" || path == "/dashboard") {
        return respond(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD.into());
    }
    if !authorized(&request, token) {
        let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        response
            .headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
        return response;
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = request.method().clone();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["metrics"]) => {
            respond(StatusCode::OK, "text/plain; version=0.0.4", render_metrics(platform).into())
        }
        (&Method::GET, ["v1", "apps"]) => json(StatusCode::OK, &platform.list()),
        (&Method::GET, ["v1", "apps", name]) => result(platform.get(name), StatusCode::OK),
        (&Method::GET, ["v1", "apps", name, "logs"]) => {
            let lines = query_value(&request, "lines").and_then(|v| v.parse().ok()).unwrap_or(100);
            result(platform.logs(name, lines), StatusCode::OK)
        }
        (&Method::DELETE, ["v1", "apps", name]) => match platform.delete(name) {
            Ok(()) => respond(StatusCode::NO_CONTENT, "text/plain", Bytes::new()),
            Err(e) => platform_error(&e),
        },
        (&Method::PUT, ["v1", "apps", name]) => {
            let name = name.to_string();
            deploy(platform, name, request).await
        }
        (&Method::PATCH, ["v1", "apps", name]) => {
            let name = name.to_string();
            let body = match read_body(request).await {
                Ok(body) => body,
                Err(response) => return response,
            };
            let settings: DeploySettings = match serde_json::from_slice(&body) {
                Ok(settings) => settings,
                Err(e) => return error(StatusCode::BAD_REQUEST, &format!("bad settings: {e}")),
            };
            let platform = platform.clone();
            blocking(move || platform.update_settings(&name, settings)).await
        }
        (_, ["v1", "apps"] | ["v1", "apps", _] | ["v1", "apps", _, "logs"] | ["metrics"]) => {
            error(StatusCode::METHOD_NOT_ALLOWED, &format!("{method} is not allowed on {path}"))
        }
        _ => error(StatusCode::NOT_FOUND, &format!("no such endpoint: {path}")),
    }
}

/// `PUT /v1/apps/<name>`: a bundle, or a reference to pull.
async fn deploy(
    platform: &Arc<Platform>,
    name: String,
    request: Request<Incoming>,
) -> AdminResponse {
    if let Err(e) = crate::check_name(&name) {
        return platform_error(&e);
    }
    let is_json = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body = match read_body(request).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let platform = platform.clone();
    if is_json {
        let deploy: RegistryDeploy = match serde_json::from_slice(&body) {
            Ok(deploy) => deploy,
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("bad deploy request: {e}")),
        };
        let options = bantam_registry::ClientOptions { insecure: deploy.insecure };
        let pulled =
            bantam_registry::pull(&deploy.reference, platform.blobs(), &options, &|_| {}).await;
        let pulled = match pulled {
            Ok(pulled) => pulled,
            Err(e) => return platform_error(&PlatformError::Registry(e)),
        };
        let source = format!("oci:{}@{}", deploy.reference, pulled.digest);
        blocking(move || platform.deploy(&name, pulled.lock, &source, deploy.settings)).await
    } else {
        blocking(move || {
            let (lock, settings) = bundle::unpack(&body, platform.blobs())?;
            platform.deploy(&name, lock, "bundle", settings)
        })
        .await
    }
}

/// Run a deploy (which compiles, and so blocks) off the async threads.
async fn blocking<T: serde::Serialize + Send + 'static>(
    work: impl FnOnce() -> Result<T, PlatformError> + Send + 'static,
) -> AdminResponse {
    match tokio::task::spawn_blocking(work).await {
        Ok(outcome) => result(outcome, StatusCode::OK),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("the deploy failed: {e}")),
    }
}

async fn read_body(request: Request<Incoming>) -> Result<Bytes, AdminResponse> {
    match Limited::new(request.into_body(), MAX_UPLOAD).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("uploads are limited to {} MiB", MAX_UPLOAD >> 20),
        )),
        Err(e) => Err(error(StatusCode::BAD_REQUEST, &format!("cannot read the body: {e}"))),
    }
}

/// Whether the request carries the bearer token. The comparison takes the
/// same time wherever the first difference is.
fn authorized<B>(request: &Request<B>, token: &str) -> bool {
    let Some(given) = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    given.len() == token.len()
        && given.bytes().zip(token.bytes()).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
}

fn query_value<B>(request: &Request<B>, key: &str) -> Option<String> {
    request.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

fn result<T: serde::Serialize>(
    outcome: Result<T, PlatformError>,
    status: StatusCode,
) -> AdminResponse {
    match outcome {
        Ok(value) => json(status, &value),
        Err(e) => platform_error(&e),
    }
}

fn platform_error(error: &PlatformError) -> AdminResponse {
    let status = match error {
        PlatformError::BadName(_)
        | PlatformError::BadDomain(_)
        | PlatformError::BadBundle(_)
        | PlatformError::BadLimit { .. } => StatusCode::BAD_REQUEST,
        PlatformError::DomainTaken { .. } => StatusCode::CONFLICT,
        PlatformError::NotFound(_) => StatusCode::NOT_FOUND,
        PlatformError::Prepare { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        PlatformError::Registry(_) => StatusCode::BAD_GATEWAY,
        PlatformError::Database(_) | PlatformError::Io { .. } => {
            tracing::error!("admin API: {error}");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    self::error(status, &error.to_string())
}

fn error(status: StatusCode, message: &str) -> AdminResponse {
    json(status, &serde_json::json!({ "error": message }))
}

fn json<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T) -> AdminResponse {
    let body = serde_json::to_vec_pretty(value).expect("API values serialise");
    respond(status, "application/json", body.into())
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> AdminResponse {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}

/// Every app's metrics in Prometheus' text format.
pub fn render_metrics(platform: &Platform) -> String {
    let apps = platform.metrics();
    let mut out = String::new();
    let _ = writeln!(out, "# HELP bantam_apps Apps deployed on this host.");
    let _ = writeln!(out, "# TYPE bantam_apps gauge");
    let _ = writeln!(out, "bantam_apps {}", platform.app_count());
    let components: Vec<(String, String, _)> = apps
        .iter()
        .flat_map(|(app, metrics)| {
            metrics.components().into_iter().map(move |(id, m)| (app.clone(), id, m))
        })
        .collect();
    let labels = |app: &str, component: &str| {
        format!("app=\"{}\",component=\"{}\"", escape(app), escape(component))
    };

    header(&mut out, "bantam_requests_total", "counter", "Requests answered, by status.");
    for (app, id, metrics) in &components {
        for (status, count) in metrics.statuses() {
            let _ = writeln!(
                out,
                "bantam_requests_total{{{},status=\"{status}\"}} {count}",
                labels(app, id)
            );
        }
    }
    for (name, help, pick) in [
        (
            "bantam_request_duration_seconds",
            "Time from a request's arrival to its response head.",
            (|m: &bantam_trigger_http::metrics::ComponentMetrics| m.latency.snapshot())
                as fn(&bantam_trigger_http::metrics::ComponentMetrics) -> _,
        ),
        (
            "bantam_instantiation_duration_seconds",
            "Time to instantiate a component for one request.",
            |m| m.instantiation.snapshot(),
        ),
    ] {
        header(&mut out, name, "histogram", help);
        for (app, id, metrics) in &components {
            let snapshot = pick(metrics);
            let labels = labels(app, id);
            let mut cumulative = 0;
            for (index, count) in snapshot.counts.iter().enumerate() {
                cumulative += count;
                let le = snapshot.bounds.get(index).map_or("+Inf".to_string(), |b| b.to_string());
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
            }
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", snapshot.sum_seconds);
            let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
        }
    }
    header(
        &mut out,
        "bantam_traps_total",
        "counter",
        "Requests whose guest trapped, panicked or never answered.",
    );
    for (app, id, metrics) in &components {
        let _ = writeln!(out, "bantam_traps_total{{{}}} {}", labels(app, id), metrics.failures());
    }
    header(&mut out, "bantam_instances_in_flight", "gauge", "Instances alive now.");
    for (app, id, metrics) in &components {
        let _ = writeln!(
            out,
            "bantam_instances_in_flight{{{}}} {}",
            labels(app, id),
            metrics.in_flight()
        );
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_must_match_exactly() {
        let request = |value: Option<&str>| {
            let mut builder = Request::builder().uri("/v1/apps");
            if let Some(value) = value {
                builder = builder.header("authorization", value);
            }
            builder.body(()).unwrap()
        };
        assert!(authorized(&request(Some("Bearer s3cret")), "s3cret"));
        for wrong in [
            None,
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("s3cret"),
            Some("Basic s3cret"),
        ] {
            assert!(!authorized(&request(wrong), "s3cret"), "{wrong:?}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
