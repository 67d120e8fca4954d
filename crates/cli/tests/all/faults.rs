//! A guest that fails takes down its own request only.

use crate::support::{TestApp, get};

#[tokio::test]
async fn a_panic_is_a_500_and_the_next_request_succeeds() {
    for guest in ["{p3}", "{p2}"] {
        let app = TestApp::single("crashy", &format!(r#"source = "{guest}""#));
        let bantam = app.up(&[]);
        let (status, body) = get(&bantam.url("/?panic=kaboom")).await;
        assert_eq!((status, body.as_str()), (500, ""), "{guest}");
        let output = bantam.wait_for_output("component `crashy` failed");
        assert!(
            output.contains("[crashy]") && output.contains("kaboom"),
            "{guest}: the panic message is logged:\n{output}"
        );
        assert!(
            output
                .lines()
                .any(|l| l.contains("component `crashy` failed") && l.contains("unreachable")),
            "{guest}: one log line names the component and the trap:\n{output}"
        );

        let (status, _) = get(&bantam.url("/?status=200")).await;
        assert_eq!(status, 200, "{guest}: the server keeps serving");
    }
}

#[tokio::test]
async fn a_guest_in_a_busy_loop_is_stopped_at_the_request_timeout() {
    for guest in ["{p3}", "{p2}"] {
        let app = TestApp::single("spinner", &format!(r#"source = "{guest}""#));
        let bantam = app.up(&["--request-timeout", "1s"]);
        let started = std::time::Instant::now();
        let url = bantam.url("/?loop");
        let looping = tokio::spawn(async move { get(&url).await });
        // Meanwhile the same component keeps answering other requests.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let (status, _) = get(&bantam.url("/?status=201")).await;
        assert_eq!(status, 201, "{guest}: a neighbour is served during the loop");

        let (status, body) = looping.await.unwrap();
        let elapsed = started.elapsed();
        assert_eq!((status, body.as_str()), (504, "request timed out\n"), "{guest}");
        assert!(elapsed < std::time::Duration::from_secs(5), "{guest}: took {elapsed:?}");
        let output = bantam.wait_for_output("did not answer within 1s");
        assert!(
            output.contains("component `spinner` did not answer within 1s: the request timed out"),
            "{output}"
        );
        // The looping instance is stopped, not left burning a core: once
        // the request has given up (or, on a busy machine, by its epoch
        // deadline first).
        let stopped = "component `spinner`: instance stopped, its request given up";
        let interrupted = "component `spinner` failed: wasm trap: interrupt";
        let output = bantam.wait_for_any_output(&[stopped, interrupted]);
        assert!(output.contains(stopped) || output.contains(interrupted), "{output}");
        let (status, _) = get(&bantam.url("/?status=200")).await;
        assert_eq!(status, 200, "{guest}: the server keeps serving");
    }
}

#[tokio::test]
async fn a_component_at_its_instance_limit_turns_requests_away_with_503() {
    for guest in ["{p3}", "{p2}"] {
        let app = TestApp::single("narrow", &format!(r#"source = "{guest}""#));
        let bantam = app.up(&["--max-instances-per-component", "1"]);
        let url = bantam.url("/?sleep-ms=1500");
        let slow = tokio::spawn(async move { get(&url).await });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;

        let response = reqwest::get(bantam.url("/?status=200")).await.unwrap();
        assert_eq!(response.status(), 503, "{guest}");
        assert_eq!(response.headers()["retry-after"], "1");
        let output = bantam.wait_for_output("at its instance limit");
        assert!(output.contains("component `narrow` is at its instance limit"), "{output}");

        assert_eq!(slow.await.unwrap(), (200, "slept 1500".to_string()), "{guest}");
        let (status, _) = get_once_freed(&bantam.url("/?status=200")).await;
        assert_eq!(status, 200, "{guest}: the permit is returned with the response");
    }
}

/// GET `url` at a component whose only instance place was just held: the
/// previous instance is stopped as its response ends, which can be a
/// moment after the client has read it, so a 503 is retried for up to
/// half a second.
async fn get_once_freed(url: &str) -> (u16, String) {
    let mut answer = get(url).await;
    for _ in 0..20 {
        if answer.0 != 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        answer = get(url).await;
    }
    answer
}

/// A `wasi:http` 0.2 handler may go on after setting its response, until
/// it returns: that work stops with the response, and its instance is
/// gone, so that one instance at most serves request after request.
#[tokio::test]
async fn a_handlers_work_after_its_response_stops_with_it() {
    let app = TestApp::single("lingering", r#"source = "{plain}""#);
    let bantam = app.up(&["--max-instances-per-component", "1"]);
    for after in ["loop", "park", "loop", "park"] {
        let (status, body) = get_once_freed(&bantam.url(&format!("/?after={after}"))).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "hello from plain wasi:http"),
            "after={after}: the previous instance no longer holds the only place"
        );
    }
    assert!(!bantam.output().contains("failed"), "nothing failed:\n{}", bantam.output());
}

#[tokio::test]
async fn slow_or_greedy_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = TestApp::single("web", r#"source = "{p3}""#);
    let bantam = app.up(&[]);
    let address = bantam.base.trim_start_matches("http://").to_string();

    // Too many headers: 431 without reaching the guest.
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut request = String::from("GET /?status=200 HTTP/1.1\r\nhost: x\r\n");
    for i in 0..150 {
        request.push_str(&format!("x-h{i}: v\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = vec![0u8; 64];
    let n = stream.read(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]).into_owned();
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");

    // Headers that never finish arriving: the connection is closed once the
    // header read timeout passes, instead of being held forever.
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(20), stream.read_to_end(&mut rest))
            .await;
    assert!(read.is_ok(), "the server closed the connection");
    assert!(started.elapsed() >= std::time::Duration::from_secs(5), "not before the timeout");

    let (status, _) = get(&bantam.url("/?status=200")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn request_bodies_past_the_limit_are_refused() {
    let app = TestApp::single("upload", r#"source = "{p3}""#);
    let bantam = app.up(&["--max-request-body-size", "1KiB"]);
    let client = reqwest::Client::new();

    let small = client.post(bantam.url("/?echo")).body("x".repeat(1024)).send().await.unwrap();
    assert_eq!(small.status(), 200);
    assert_eq!(small.text().await.unwrap().len(), 1024);

    let large = client.post(bantam.url("/?echo")).body("x".repeat(1025)).send().await.unwrap();
    assert_eq!(large.status(), 413);
    assert_eq!(large.text().await.unwrap(), "request body larger than 1024 bytes\n");

    // A streamed body with no declared length: the guest's read fails at the
    // limit, so it never gets more than the limit.
    let chunks = futures::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>("y".repeat(512))));
    let streamed = client
        .post(bantam.url("/?echo"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    let echoed = streamed.text().await.unwrap_or_default();
    assert!(echoed.len() <= 1024, "the guest got {} bytes", echoed.len());
}

#[tokio::test]
async fn memory_and_stack_past_their_limits_fail_that_request_only() {
    for guest in ["{p3}", "{p2}"] {
        let app = TestApp::single("greedy", &format!(r#"source = "{guest}""#));
        let bantam = app.up(&["--max-memory", "16MiB", "--max-stack-size", "256KiB"]);

        let (status, body) = get(&bantam.url("/?big=64000000")).await;
        assert_eq!((status, body.as_str()), (500, ""), "{guest}: 64 MB in a 16 MiB memory");
        let output = bantam.wait_for_output("component `greedy` failed");
        assert!(output.contains("memory allocation"), "{guest}: the cause is logged:\n{output}");
        let (status, body) = get(&bantam.url("/?big=1000000")).await;
        assert_eq!((status, body.len()), (200, 1_000_000), "{guest}: 1 MB fits");

        let (status, _) = get(&bantam.url("/?recurse=1000000")).await;
        assert_eq!(status, 500, "{guest}: a million frames overflow a 256 KiB stack");
        let output = bantam.wait_for_output("stack");
        assert!(
            output.lines().any(|l| l.contains("component `greedy` failed") && l.contains("stack")),
            "{guest}: one log line names the component and the stack:\n{output}"
        );
        let (status, body) = get(&bantam.url("/?recurse=100")).await;
        assert_eq!((status, body.as_str()), (200, "depth 100"), "{guest}");
    }
}

#[tokio::test]
async fn response_bodies_past_the_limit_are_not_delivered() {
    let app = TestApp::single("talkative", r#"source = "{p3}""#);
    let bantam = app.up(&["--max-response-body-size", "1KiB"]);
    let (status, body) = get(&bantam.url("/?big=1024")).await;
    assert_eq!((status, body.len()), (200, 1024), "exactly the limit is fine");
    // The body is streamed (no length declared): it is cut off at the
    // limit, so the client never gets all of it.
    let received = match reqwest::get(bantam.url("/?big=4096")).await {
        Ok(response) => response.bytes().await.map_or(0, |body| body.len()),
        Err(_) => 0,
    };
    assert!(received < 4096, "got {received} bytes");
    let output = bantam.wait_for_output("--max-response-body-size");
    assert!(
        output.contains("component `talkative` streamed more than 1024 bytes (--max-response-body-size): response cut off"),
        "{output}"
    );
    let (status, _) = get(&bantam.url("/?status=200")).await;
    assert_eq!(status, 200, "the server keeps serving");
}

#[tokio::test]
async fn limits_come_from_the_runtime_config_and_flags_win() {
    let app = TestApp::single("bounded", r#"source = "{p3}""#)
        .file("rc.toml", "[limits]\nmax_request_body_size = \"10B\"\n");
    let client = reqwest::Client::new();
    let post = |bantam: &crate::support::Bantam| {
        client.post(bantam.url("/?echo")).body(vec![b'a'; 100]).send()
    };

    let bantam = app.up(&["--runtime-config-file", "rc.toml"]);
    assert_eq!(post(&bantam).await.unwrap().status(), 413);
    bantam.terminate();

    let bantam = app.up(&["--runtime-config-file", "rc.toml", "--max-request-body-size", "1KiB"]);
    let response = post(&bantam).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap().len(), 100);
}
