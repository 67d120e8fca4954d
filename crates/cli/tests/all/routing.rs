//! Routing and the request a guest sees, for both HTTP interfaces.

use std::time::Duration;

use crate::support::{TestApp, get, get_json};

const ROUTES: &str = r#"
spin_manifest_version = 2
[application]
name = "routing"

[[trigger.http]]
route = "/users/:user_id/..."
component = "probe"

[[trigger.http]]
route = "/exact"
component = "probe"

[[trigger.http]]
route = "/static/..."
component = "other"

[[trigger.http]]
route = "/static/special"
component = "probe"

[[trigger.http]]
route = "/trailing/"
component = "probe"

[component.probe]
source = "{GUEST}"

[component.other]
source = "{GUEST}"
environment = { WHO = "other" }
"#;

async fn spin_headers_are_injected(guest: &str, sdk: &str) {
    let app = TestApp::new(&ROUTES.replace("{GUEST}", guest));
    let bantam = app.up(&[]);
    let port = bantam.base.rsplit(':').next().unwrap().to_string();

    let echo = get_json(&bantam.url("/users/42/profile/")).await;
    assert_eq!(echo["sdk"], sdk);
    assert_eq!(echo["method"], "GET");
    let headers = &echo["headers"];
    assert_eq!(headers["spin-full-url"], format!("http://127.0.0.1:{port}/users/42/profile/"));
    assert_eq!(headers["spin-path-info"], "/profile/");
    assert_eq!(headers["spin-matched-route"], "/users/:user_id/...");
    assert_eq!(headers["spin-raw-component-route"], "/users/:user_id/...");
    assert_eq!(headers["spin-component-route"], "/users/:user_id");
    assert_eq!(headers["spin-base-path"], "/");
    assert_eq!(headers["spin-path-match-user-id"], "42");
    let client = headers["spin-client-addr"].as_str().unwrap();
    assert!(client.starts_with("127.0.0.1:"), "spin-client-addr: {client}");

    let exact = get_json(&bantam.url("/exact")).await;
    assert_eq!(exact["headers"]["spin-path-info"], "");
    assert_eq!(exact["headers"]["spin-component-route"], "/exact");
}

#[tokio::test]
async fn spin_headers_reach_a_wasi_http_0_3_guest() {
    spin_headers_are_injected("{p3}", "spin-sdk-7").await;
}

#[tokio::test]
async fn spin_headers_reach_a_wasi_http_0_2_guest() {
    spin_headers_are_injected("{p2}", "spin-sdk-5").await;
}

#[tokio::test]
async fn client_cannot_forge_spin_headers() {
    let app = TestApp::new(&ROUTES.replace("{GUEST}", "{p3}"));
    let bantam = app.up(&[]);
    let echo: serde_json::Value = reqwest::Client::new()
        .get(bantam.url("/exact"))
        .header("spin-client-addr", "6.6.6.6:666")
        .header("spin-path-match-admin", "true")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let headers = &echo["headers"];
    assert_ne!(headers["spin-client-addr"], "6.6.6.6:666");
    assert!(headers.get("spin-path-match-admin").is_none(), "{headers}");
}

#[tokio::test]
async fn most_specific_route_wins_and_unmatched_is_404() {
    let app = TestApp::new(&ROUTES.replace("{GUEST}", "{p3}"));
    let bantam = app.up(&[]);

    // `/static/...` is served by `other`, but the exact route beats it.
    let wildcard = get_json(&bantam.url("/static/a/b")).await;
    assert_eq!(wildcard["headers"]["spin-matched-route"], "/static/...");
    let (_, who) = get(&bantam.url("/static/x?env=WHO")).await;
    assert_eq!(who, "other");
    let special = get_json(&bantam.url("/static/special")).await;
    assert_eq!(special["headers"]["spin-matched-route"], "/static/special");

    // As in Spin, a trailing `/` is ignored both in the route and the path,
    // and `spin-matched-route` drops it while the raw route keeps it.
    for path in ["/trailing", "/trailing/"] {
        let trailing = get_json(&bantam.url(path)).await;
        assert_eq!(trailing["headers"]["spin-matched-route"], "/trailing", "{path}");
        assert_eq!(trailing["headers"]["spin-raw-component-route"], "/trailing/", "{path}");
    }

    for path in ["/", "/nothing", "/exact/more", "/users"] {
        let (status, body) = get(&bantam.url(path)).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body, "", "{path}");
    }

    let (status, body) = get(&bantam.url("/.well-known/spin/health")).await;
    assert_eq!((status, body.as_str()), (200, "OK"));
    let (status, body) = get(&bantam.url("/.well-known/spin/info")).await;
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["name"], "routing");
}

#[tokio::test]
async fn status_and_body_come_from_the_guest() {
    let app = TestApp::new(&ROUTES.replace("{GUEST}", "{p2}"));
    let bantam = app.up(&[]);
    let (status, body) = get(&bantam.url("/exact?status=418")).await;
    assert_eq!((status, body.as_str()), (418, "status 418"));

    let response = reqwest::Client::new()
        .post(bantam.url("/exact?echo"))
        .body("hello body")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "hello body");

    let (status, body) = get(&bantam.url("/exact?big=1000000")).await;
    assert_eq!(status, 200);
    assert_eq!(body.len(), 1_000_000);
}

#[tokio::test]
async fn hundreds_of_concurrent_requests_each_get_their_own_instance() {
    let app = TestApp::new(&ROUTES.replace("{GUEST}", "{p3}"));
    let bantam = app.up(&[]);
    let client = reqwest::Client::new();
    let requests = (0..400).map(|i| {
        let client = client.clone();
        let url = bantam.url(&format!("/users/{i}/x"));
        async move {
            let echo: serde_json::Value =
                client.get(url).send().await.unwrap().json().await.unwrap();
            assert_eq!(echo["headers"]["spin-path-match-user-id"], i.to_string());
        }
    });
    futures::future::join_all(requests).await;
}

#[tokio::test]
async fn plain_wasi_http_components_run_too() {
    let app = TestApp::single("plain", r#"source = "{plain}""#);
    let bantam = app.up(&[]);
    let response = reqwest::get(bantam.url("/anything")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-guest"], "plain");
    assert_eq!(response.text().await.unwrap(), "hello from plain wasi:http");

    // The host's prefix is reserved even under a catch-all route.
    let (status, body) = get(&bantam.url("/.well-known/spin/health")).await;
    assert_eq!((status, body.as_str()), (200, "OK"));
    let (status, body) = get(&bantam.url("/.well-known/spin/other")).await;
    assert_eq!((status, body.as_str()), (404, ""));
}

/// A request body reaches the guest as it arrives and the guest's body
/// reaches the client as it is written: the client sends each chunk only
/// once the one before has come back, which would never happen if any
/// part of the way held the request body whole. A large body then goes
/// through without the server's memory growing by its size.
#[tokio::test]
async fn a_body_streams_through_the_guest_and_back_as_it_arrives() {
    let app = TestApp::single("echo", r#"source = "{plain}""#);
    let bantam = app.up(&[]);
    let client = reqwest::Client::new();

    let (send, chunks) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
    let first = b"first chunk ".to_vec();
    send.unbounded_send(Ok(first.clone())).unwrap();
    let answer = client.post(bantam.url("/?stream")).body(reqwest::Body::wrap_stream(chunks));
    let mut response = tokio::time::timeout(Duration::from_secs(10), answer.send())
        .await
        .expect("no response before the request body ended")
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut sent = first;
    let mut echoed = Vec::new();
    for n in 1..=5 {
        while echoed.len() < sent.len() {
            let chunk = tokio::time::timeout(Duration::from_secs(10), response.chunk())
                .await
                .unwrap_or_else(|_| panic!("chunk {n} did not come back before the body ended"))
                .unwrap()
                .expect("the response ended early");
            echoed.extend_from_slice(&chunk);
        }
        assert_eq!(echoed, sent, "after chunk {n}");
        let next = format!("then chunk {n} ").into_bytes();
        sent.extend_from_slice(&next);
        send.unbounded_send(Ok(next)).unwrap();
    }
    drop(send);
    while let Some(chunk) = response.chunk().await.unwrap() {
        echoed.extend_from_slice(&chunk);
    }
    assert_eq!(echoed, sent);

    // 96 MiB (under the 100 MiB default limit) of a repeating pattern,
    // checked as it comes back.
    const MIB: usize = 1 << 20;
    let pattern: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
    let before = bantam.peak_resident_kib();
    let body = futures::stream::iter(
        std::iter::repeat_n(pattern.clone(), 96).map(Ok::<_, std::io::Error>),
    );
    let mut response = client
        .post(bantam.url("/?stream"))
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    let mut received = 0;
    while let Some(chunk) = response.chunk().await.unwrap() {
        for (offset, byte) in chunk.iter().enumerate() {
            assert_eq!(*byte, pattern[(received + offset) % MIB], "byte {}", received + offset);
        }
        received += chunk.len();
    }
    assert_eq!(received, 96 * MIB, "the whole body came back");
    let grown = bantam.peak_resident_kib().saturating_sub(before);
    assert!(grown < 48 * 1024, "the server's peak memory grew by {grown} KiB for 96 MiB");
}

#[tokio::test]
async fn a_bare_component_file_serves_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("My_Plain.Handler.wasm");
    std::fs::copy(crate::support::guest("wasi_http_plain"), &wasm).unwrap();
    let bantam = crate::support::Bantam::start_wasm(&wasm);
    assert!(bantam.output().contains("my-plain-handler: "), "{}", bantam.output());
    let (status, body) = get(&bantam.url("/any/path")).await;
    assert_eq!((status, body.as_str()), (200, "hello from plain wasi:http"));
}
