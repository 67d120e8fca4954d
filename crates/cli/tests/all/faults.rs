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
        // The looping instance is interrupted, not left burning a core.
        let output = bantam.wait_for_output("interrupt");
        assert!(
            output.contains("component `spinner` failed: ") && output.contains("interrupt"),
            "{output}"
        );
        let (status, _) = get(&bantam.url("/?status=200")).await;
        assert_eq!(status, 200, "{guest}: the server keeps serving");
    }
}

#[tokio::test]
async fn a_component_at_its_instance_limit_turns_requests_away_with_503() {
    let app = TestApp::single("narrow", r#"source = "{p3}""#);
    let bantam = app.up(&["--max-instances-per-component", "1"]);
    let url = bantam.url("/?sleep-ms=1500");
    let slow = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let response = reqwest::get(bantam.url("/?status=200")).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let output = bantam.wait_for_output("at its instance limit");
    assert!(output.contains("component `narrow` is at its instance limit"), "{output}");

    assert_eq!(slow.await.unwrap(), (200, "slept 1500".to_string()));
    let (status, _) = get(&bantam.url("/?status=200")).await;
    assert_eq!(status, 200, "the permit is returned with the response");
}
