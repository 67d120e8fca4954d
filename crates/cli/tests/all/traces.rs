//! OpenTelemetry traces over OTLP: a request's span continues the
//! caller's W3C trace, and the guest's outbound request carries it on.

use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;

use crate::support::{TestApp, get_with_headers};

/// What the recording server saw: path, `traceparent`, body.
type Seen = Arc<Mutex<Vec<(String, Option<String>, String)>>>;

/// An HTTP server on a free loopback port that answers 200 to anything
/// and records it: both the OTLP collector and the guest's upstream.
async fn recorder() -> (u16, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let record = record.clone();
            let service =
                hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let record = record.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await?.to_bytes();
                        let traceparent = parts
                            .headers
                            .get("traceparent")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        record.lock().unwrap().push((
                            parts.uri.path().to_string(),
                            traceparent,
                            String::from_utf8_lossy(&body).into_owned(),
                        ));
                        Ok::<_, hyper::Error>(http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"{}"),
                        )))
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    (port, seen)
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread")]
async fn a_request_span_continues_the_callers_trace_into_outbound_http() {
    let (port, seen) = recorder().await;
    let app = TestApp::new(&format!(
        r#"
spin_manifest_version = 2
[application]
name = "traced"
[[trigger.http]]
route = "/api/..."
component = "caps"
[component.caps]
source = "{{caps_p3}}"
allowed_outbound_hosts = ["http://127.0.0.1:{port}"]
"#
    ));
    let endpoint = format!("http://127.0.0.1:{port}/collector");
    let mut bantam = app
        .up_with_env(
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ("OTEL_SERVICE_NAME", "traced-test"),
            ],
        )
        .unwrap_or_else(|output| panic!("bantam up did not start:\n{output}"));
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let url = bantam.url(&format!("/api/x?cap=http&url=http://127.0.0.1:{port}/upstream"));
    let (status, body) = get_with_headers(&url, &[("traceparent", &traceparent)]).await;
    assert_eq!(status, 200, "{body}");

    // The upstream saw the same trace, with Bantam's span as the parent.
    let upstream = seen.lock().unwrap().iter().find(|(path, ..)| path == "/upstream").cloned();
    let (_, forwarded, _) = upstream.expect("the guest's request did not arrive");
    let forwarded = forwarded.expect("the outbound request carried no traceparent");
    let parts: Vec<&str> = forwarded.split('-').collect();
    assert_eq!((parts[0], parts[1]), ("00", TRACE_ID), "{forwarded}");
    let server_span = parts[2].to_string();
    assert_ne!(server_span, CALLER_SPAN, "Bantam's own span is the parent");

    // Spans are batched; shutting down sends them.
    bantam.terminate();
    assert_eq!(bantam.wait(std::time::Duration::from_secs(15)), Some(0));
    let spans = exported_spans(&seen, "traced-test");
    let span = spans
        .iter()
        .find(|s| s["spanId"].as_str() == Some(server_span.as_str()))
        .unwrap_or_else(|| panic!("no span {server_span} in {spans:#?}"));
    assert_eq!(span["traceId"], TRACE_ID);
    assert_eq!(span["parentSpanId"], CALLER_SPAN);
    assert_eq!(span["name"], "GET /api/...");
    assert_eq!(attribute(span, "bantam.component").unwrap()["stringValue"], "caps");
    let status = attribute(span, "http.response.status_code").unwrap()["intValue"].clone();
    assert!(status == 200 || status == "200", "{status}");
}

/// The spans the recorder received as OTLP JSON, each resource checked to
/// be `service`.
fn exported_spans(seen: &Seen, service: &str) -> Vec<serde_json::Value> {
    let exported: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(path, ..)| path == "/collector/v1/traces")
        .map(|(.., body)| body.clone())
        .collect();
    assert!(!exported.is_empty(), "no spans were exported; {:?}", seen.lock().unwrap());
    exported
        .iter()
        .flat_map(|body| {
            let export: serde_json::Value = serde_json::from_str(body).unwrap();
            let mut spans = Vec::new();
            for resource in export["resourceSpans"].as_array().into_iter().flatten() {
                let name = resource["resource"]["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["key"] == "service.name")
                    .map(|a| a["value"]["stringValue"].clone());
                assert_eq!(name, Some(service.into()), "{body}");
                for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                    spans.extend(scope["spans"].as_array().into_iter().flatten().cloned());
                }
            }
            spans
        })
        .collect()
}

/// The value of attribute `key` of `span`.
fn attribute(span: &serde_json::Value, key: &str) -> Option<serde_json::Value> {
    span["attributes"].as_array()?.iter().find(|a| a["key"] == key).map(|a| a["value"].clone())
}

/// On `bantam serve`, each span names the app as the host knows it: two
/// apps deployed from one manifest are told apart.
#[tokio::test(flavor = "multi_thread")]
async fn platform_spans_name_the_app_as_deployed() {
    let (port, seen) = recorder().await;
    let app = TestApp::single("probe", r#"source = "{p3}""#);
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let endpoint = format!("http://127.0.0.1:{port}/collector");
    let mut host = crate::platform::Host::start_with(
        &data,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_SERVICE_NAME", "platform-test"),
        ],
    );
    for name in ["one", "two"] {
        host.deploy(app.path(), &["--name", name]);
        let host_name = format!("{name}.localhost");
        assert_eq!(host.get(&host_name, "/?status=201").await.0, 201);
        let (_, info) = host.get(&host_name, "/.well-known/spin/info").await;
        let info: serde_json::Value = serde_json::from_str(&info).unwrap();
        assert_eq!(info["name"], name);
    }
    host.bantam.terminate();
    assert_eq!(host.bantam.wait(std::time::Duration::from_secs(15)), Some(0));
    let mut apps: Vec<String> = exported_spans(&seen, "platform-test")
        .iter()
        .filter_map(|span| Some(attribute(span, "bantam.app")?["stringValue"].as_str()?.to_owned()))
        .collect();
    apps.sort();
    assert_eq!(apps, ["one", "two"]);
}
