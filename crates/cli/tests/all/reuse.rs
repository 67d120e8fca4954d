//! Instance reuse, the manifest's explicit opt-in
//! (`[component.<id>.tool.bantam] instance_reuse`): an instance serves
//! several requests of one client connection, never another's, and every
//! component without the opt-in keeps a fresh instance per request.

use std::time::Duration;

use crate::support::{Bantam, TestApp};

/// `kept` reuses its instances; `fresh`, the same guest, does not.
fn reuse_app(guest: &str, reuse: &str) -> TestApp {
    TestApp::new(&format!(
        r#"
spin_manifest_version = 2
[application]
name = "reuse"
[[trigger.http]]
route = "/kept/..."
component = "kept"
[[trigger.http]]
route = "/fresh/..."
component = "fresh"
[component.kept]
source = "{guest}"
[component.kept.tool.bantam]
instance_reuse = {reuse}
[component.fresh]
source = "{guest}"
"#
    ))
}

/// One client connection (HTTP/1.1 keep-alive): its requests go one after
/// another on the same socket.
fn connection() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap()
}

async fn served(client: &reqwest::Client, bantam: &Bantam, path: &str) -> String {
    let response = client.get(bantam.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    format!("{status} {}", response.text().await.unwrap())
}

async fn an_instance_serves_one_connection_only(guest: &str) {
    let app = reuse_app(guest, "{ max_requests = 3 }");
    let bantam = app.up(&[]);
    let first = connection();
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(served(&first, &bantam, "/kept/?served").await);
    }
    // Three requests in one instance, then a new one.
    assert_eq!(answers, ["200 served 1", "200 served 2", "200 served 3", "200 served 1"]);

    // Another connection never gets the first one's instance.
    let second = connection();
    assert_eq!(served(&second, &bantam, "/kept/?served").await, "200 served 1");
    assert_eq!(served(&first, &bantam, "/kept/?served").await, "200 served 2");

    // Without the opt-in, a fresh instance every time.
    for _ in 0..3 {
        assert_eq!(served(&first, &bantam, "/fresh/?served").await, "200 served 1");
    }
}

#[tokio::test]
async fn an_instance_serves_one_connection_only_p3() {
    an_instance_serves_one_connection_only(&crate::support::guest("http_p3_probe")).await;
}

#[tokio::test]
async fn an_instance_serves_one_connection_only_p2() {
    an_instance_serves_one_connection_only(&crate::support::guest("http_p2_probe")).await;
}

#[tokio::test]
async fn kept_instances_end_with_their_connection_or_when_idle() {
    let guest = crate::support::guest("http_p3_probe");
    // With room for two instances, a third connection can only be served
    // if the instances of the two closed ones are gone, although their
    // idle timeout is a minute away.
    let app = reuse_app(&guest, r#"{ max_requests = 100, idle_timeout = "60s" }"#);
    let bantam = app.up(&["--max-instances-per-component", "2"]);
    for _ in 0..3 {
        let client = connection();
        assert_eq!(served(&client, &bantam, "/kept/?served").await, "200 served 1");
        assert_eq!(served(&client, &bantam, "/kept/?served").await, "200 served 2");
        drop(client);
        // The server notices the close when it next reads the socket.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And the limit still holds while connections are open.
    let (one, two, three) = (connection(), connection(), connection());
    assert_eq!(served(&one, &bantam, "/kept/?served").await, "200 served 1");
    assert_eq!(served(&two, &bantam, "/kept/?served").await, "200 served 1");
    let turned_away = three.get(bantam.url("/kept/?served")).send().await.unwrap();
    assert_eq!(turned_away.status().as_u16(), 503);
    assert_eq!(turned_away.headers()["retry-after"], "1");

    // An instance idle past its timeout ends: the next request of the
    // same connection gets a new one.
    let app = reuse_app(&guest, r#"{ max_requests = 100, idle_timeout = "200ms" }"#);
    let bantam = app.up(&[]);
    let client = connection();
    assert_eq!(served(&client, &bantam, "/kept/?served").await, "200 served 1");
    assert_eq!(served(&client, &bantam, "/kept/?served").await, "200 served 2");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(served(&client, &bantam, "/kept/?served").await, "200 served 1");
}

#[tokio::test]
async fn each_request_in_a_kept_instance_has_the_full_timeout() {
    let guest = crate::support::guest("http_p3_probe");
    let app = reuse_app(&guest, "{ max_requests = 10 }");
    let bantam = app.up(&["--request-timeout", "1s"]);
    let client = connection();
    // Together past the timeout, each well within it.
    for _ in 0..3 {
        assert_eq!(served(&client, &bantam, "/kept/?sleep-ms=600").await, "200 slept 600");
    }
    assert_eq!(served(&client, &bantam, "/kept/?served").await, "200 served 4");
    // A request over it is still cut off.
    assert_eq!(served(&client, &bantam, "/kept/?sleep-ms=3000").await, "504 request timed out\n");
}

/// A kept instance whose guest goes on working after its response, for
/// no request, is stopped: the connection's next request gets a new one.
#[tokio::test]
async fn a_kept_instance_working_after_its_response_is_stopped() {
    let guest = crate::support::guest("http_p3_probe");
    let app = reuse_app(&guest, "{ max_requests = 10 }");
    let bantam = app.up(&[]);
    let client = connection();
    assert_eq!(served(&client, &bantam, "/kept/?served").await, "200 served 1");
    assert_eq!(served(&client, &bantam, "/kept/?served").await, "200 served 2");
    for after in ["park", "loop"] {
        assert_eq!(
            served(&client, &bantam, &format!("/kept/?after={after}")).await,
            "200 answered"
        );
        // The guest starts its work 10 ms after answering.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(served(&client, &bantam, "/kept/?served").await, "200 served 1", "{after}");
    }
}
