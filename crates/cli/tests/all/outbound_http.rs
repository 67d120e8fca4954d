//! Outbound HTTP from spin-sdk guests (wasi:http 0.3 and 0.2) against a
//! real HTTP server on loopback: granted, refused, pooled, chained to
//! another component of the same app, and sent to relative URLs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::BodyExt;

use crate::support::{Bantam, TestApp, get};

/// An HTTP/1 server on a free loopback port that answers every request
/// with what it saw, and counts the connections it accepted.
struct Upstream {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl Upstream {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let connection = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| async move {
                        let (parts, body) = http::Request::into_parts(request);
                        let body = body.collect().await?.to_bytes();
                        let host = parts.headers.get("host").and_then(|h| h.to_str().ok());
                        let text = format!(
                            "{} {} host={} body={} conn={connection}",
                            parts.method,
                            parts.uri,
                            host.unwrap_or("-"),
                            String::from_utf8_lossy(&body)
                        );
                        Ok::<_, hyper::Error>(http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(text),
                        )))
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        Self { port, connections }
    }
}

/// A TLS server on a free loopback port with a self-signed certificate
/// for 127.0.0.1: no webpki root vouches for it. Counts handshakes begun.
async fn start_self_signed_tls() -> (u16, Arc<AtomicUsize>) {
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let certificate = key.cert.der().clone();
    let private_key =
        tokio_rustls::rustls::pki_types::PrivateKeyDer::try_from(key.key_pair.serialize_der())
            .unwrap();
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![certificate], private_key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&handshakes);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            // The client rejects the certificate; the handshake fails.
            tokio::spawn(async move { acceptor.accept(stream).await });
        }
    });
    (port, handshakes)
}

const APP: &str = r#"
spin_manifest_version = 2
[application]
name = "outbound"

[variables]
upstream = { default = "127.0.0.1:{PORT}" }

[[trigger.http]]
route = "/p3/..."
component = "p3"

[[trigger.http]]
route = "/p2/..."
component = "p2"

[[trigger.http]]
route = "/wild/..."
component = "wild"

[[trigger.http]]
route = { private = true }
component = "backend"

[component.p3]
source = "{caps_p3}"
allowed_outbound_hosts = [
    "http://127.0.0.1:{PORT}",
    "http://127.0.0.1:{CLOSED}",
    "http://backend.spin.internal",
    "http://nowhere.spin.internal",
    "http://self",
    "https://127.0.0.1:{TLS}",
]

[component.p2]
source = "{caps_p2}"
variables = { target = "{{ upstream }}" }
allowed_outbound_hosts = ["http://{{ target }}", "https://self"]

[component.wild]
source = "{caps_p3}"
allowed_outbound_hosts = ["*://*:*"]

[component.backend]
source = "{caps_p2}"
variables = { message = "hello from the private backend" }
"#;

async fn start() -> (Upstream, u16, TestApp, Bantam) {
    let upstream = Upstream::start().await;
    let closed = crate::services::free_port();
    let app = TestApp::new(
        &APP.replace("{PORT}", &upstream.port.to_string())
            .replace("{CLOSED}", &closed.to_string())
            .replace("{TLS}", &closed.to_string()),
    );
    let bantam = app.up(&[]);
    (upstream, closed, app, bantam)
}

async fn fetch(bantam: &Bantam, guest: &str, url: &str) -> (u16, String) {
    get(&bantam.url(&format!("/{guest}?cap=http&url={url}"))).await
}

#[tokio::test]
async fn granted_requests_reach_the_server_through_a_pooled_connection() {
    let (upstream, _closed, _app, bantam) = start().await;
    let base = format!("http://127.0.0.1:{}", upstream.port);

    let (status, body) = fetch(&bantam, "p3", &format!("{base}/first%3Fa=1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, format!("200 GET /first?a=1 host=127.0.0.1:{} body= conn=1", upstream.port));
    // A second request from another instance reuses the pooled connection.
    let (status, body) = fetch(&bantam, "p3", &format!("{base}/second")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.ends_with("conn=1"), "{body}");
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 1);

    // wasi:http 0.2, with a body, granted through a variable template.
    let path = format!("/p2?cap=http&url={base}/post&body=ping");
    let (status, body) = get(&bantam.url(&path)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("200 POST /post host=") && body.contains("body=ping"), "{body}");
}

#[tokio::test]
async fn refused_requests_fail_with_the_wit_error_and_say_what_to_add() {
    let (upstream, closed, _app, bantam) = start().await;
    let other = crate::services::free_port();

    // Not granted: HTTP-request-denied, and the log names the entry.
    for guest in ["p3", "p2"] {
        let (status, body) = fetch(&bantam, guest, &format!("http://127.0.0.1:{other}/")).await;
        assert_eq!(status, 500);
        assert!(body.contains("HttpRequestDenied"), "{guest}: {body}");
    }
    let output = bantam.wait_for_output(&format!("127.0.0.1:{other} denied"));
    assert!(
        output.contains(&format!(
            "component `p3`: connection to http://127.0.0.1:{other} denied: add \"http://127.0.0.1:{other}\" to its allowed_outbound_hosts"
        )),
        "{output}"
    );
    // Another scheme on a granted host and port is not granted either.
    let (_, body) = fetch(&bantam, "p3", &format!("https://127.0.0.1:{}/", upstream.port)).await;
    assert!(body.contains("HttpRequestDenied"), "{body}");

    // Granted but nobody listens: connection-refused.
    let (status, body) = fetch(&bantam, "p3", &format!("http://127.0.0.1:{closed}/")).await;
    assert_eq!(status, 500);
    assert!(body.contains("ConnectionRefused"), "{body}");

    // The server keeps serving.
    let (status, _) = fetch(&bantam, "p3", &format!("http://127.0.0.1:{}/", upstream.port)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_wildcard_grant_never_reaches_loopback_or_link_local_addresses() {
    let (upstream, _closed, _app, bantam) = start().await;
    let port = upstream.port;
    // `*://*:*` admits every URL, but loopback is only reachable when an
    // entry names it: by IP literal, by a name that resolves there, by
    // IPv6, or the cloud metadata address.
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://[::1]:{port}/"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
    ] {
        let (status, body) = fetch(&bantam, "wild", &url).await;
        assert_eq!(status, 500, "{url}");
        assert!(body.contains("HttpRequestDenied"), "{url}: {body}");
    }
    let (status, body) = fetch(&bantam, "wild", &format!("http://localhost:{port}/")).await;
    assert_eq!(status, 500);
    assert!(body.contains("DestinationIpProhibited"), "{body}");
    // The localhost line specifically: the earlier refusals' lines say
    // "loopback" too, and log lines may land after the response.
    let output = bantam.wait_for_output("connection to localhost (127.0.0.1) denied");
    assert!(
        output.contains("component `wild`: connection to localhost (127.0.0.1) denied"),
        "{output}"
    );
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn service_chaining_reaches_a_private_component_in_process() {
    let (upstream, _closed, _app, bantam) = start().await;
    let url = "http://backend.spin.internal/any/path%3Fcap=var%26name=message";
    let (status, body) = fetch(&bantam, "p3", url).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "200 hello from the private backend");
    // A chained component that does not exist.
    let (status, body) = fetch(&bantam, "p3", "http://nowhere.spin.internal/").await;
    assert_eq!(status, 500);
    assert!(body.contains("DestinationNotFound"), "{body}");
    // Chaining needs its grant like any other host.
    let (_, body) = fetch(&bantam, "p2", "http://backend.spin.internal/").await;
    assert!(body.contains("HttpRequestDenied"), "{body}");
    // The private component has no public route.
    assert_eq!(get(&bantam.url("/backend")).await.0, 404);
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn relative_urls_reach_the_app_itself_where_self_is_granted() {
    let (upstream, _closed, _app, bantam) = start().await;
    // p3 (granted `http://self`) asks its own app's p2 route, which fetches
    // from the upstream server in turn.
    let inner = format!("/p2%3Fcap=http%26url=http://127.0.0.1:{}/via-p2", upstream.port);
    let (status, body) = fetch(&bantam, "p3", &inner).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("200 200 GET /via-p2 host=127.0.0.1:"), "{body}");
    // `*://*:*` admits relative URLs too, as in Spin.
    let (status, body) = fetch(&bantam, "wild", "/p3%3Fcap=nothing").await;
    assert_eq!((status, body.as_str()), (200, "500 error: unknown cap `nothing`"));
    // wasi:http 0.2 (spin-sdk 5.2 sends a relative URL as `https://:443/...`).
    let (status, body) = fetch(&bantam, "p2", "/p3%3Fcap=nothing").await;
    assert_eq!((status, body.as_str()), (200, "500 error: unknown cap `nothing`"));
    // The backend has no `self` grant: asked through service chaining to
    // send to a relative URL, it is refused.
    let chained = "http://backend.spin.internal/%3Fcap=http%26url=/p3";
    let (status, body) = fetch(&bantam, "p3", chained).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("500 error: ") && body.contains("HttpRequestDenied"), "{body}");
    let output = bantam.wait_for_output("relative URL");
    assert!(
        output.contains("component `backend`: request to the relative URL /p3 denied: add \"http://self\" to its allowed_outbound_hosts"),
        "{output}"
    );
}

#[tokio::test]
async fn https_verifies_certificates_against_the_webpki_roots() {
    let (tls_port, handshakes) = start_self_signed_tls().await;
    let app = TestApp::new(
        &APP.replace("{PORT}", "1")
            .replace("{CLOSED}", "2")
            .replace("{TLS}", &tls_port.to_string()),
    );
    let bantam = app.up(&[]);
    let (status, body) = fetch(&bantam, "p3", &format!("https://127.0.0.1:{tls_port}/")).await;
    assert_eq!(status, 500);
    assert!(body.contains("TlsCertificateError"), "{body}");
    assert_eq!(handshakes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn outbound_requests_in_flight_are_limited_per_instance() {
    let upstream = Upstream::start().await;
    let app = TestApp::new(
        &APP.replace("{PORT}", &upstream.port.to_string())
            .replace("{CLOSED}", "2")
            .replace("{TLS}", "3"),
    );
    let bantam = app.up(&["--max-outbound-connections", "0"]);
    let (status, body) =
        fetch(&bantam, "p3", &format!("http://127.0.0.1:{}/", upstream.port)).await;
    assert_eq!(status, 500);
    assert!(body.contains("ConnectionLimitReached"), "{body}");
    let output = bantam.wait_for_output("in flight");
    assert!(
        output.contains(
            "component `p3`: more than 0 outbound HTTP requests in flight from one instance"
        ),
        "{output}"
    );
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 0);
}
