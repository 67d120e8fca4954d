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
