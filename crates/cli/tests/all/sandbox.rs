//! What a guest can see: its declared files, environment and output.

use crate::support::{TestApp, get};

const FILES_APP: &str = r#"
spin_manifest_version = 2
[application]
name = "sandbox"
[[trigger.http]]
route = "/..."
component = "reader"
[component.reader]
source = "{p3}"
files = ["static/**/*", { source = "data", destination = "/config" }]
exclude_files = ["static/**/*.secret"]
environment = { GREETING = "hello from the manifest" }
"#;

fn files_app() -> TestApp {
    TestApp::new(FILES_APP)
        .file("static/index.html", "<h1>hi</h1>")
        .file("static/nested/page.txt", "nested page")
        .file("static/key.secret", "excluded")
        .file("data/app.json", "{\"ok\":true}")
        .file("private.txt", "not mounted")
}

#[tokio::test]
async fn declared_files_are_readable_at_their_destination() {
    let app = files_app();
    let bantam = app.up(&[]);
    for (path, expected) in [
        ("/static/index.html", "<h1>hi</h1>"),
        ("/static/nested/page.txt", "nested page"),
        ("/config/app.json", "{\"ok\":true}"),
    ] {
        let (status, body) = get(&bantam.url(&format!("/?file={path}"))).await;
        assert_eq!((status, body.as_str()), (200, expected), "{path}");
    }
    let (_, listing) = get(&bantam.url("/?list=/")).await;
    assert_eq!(listing.lines().collect::<Vec<_>>(), ["config", "static"]);
}

#[tokio::test]
async fn undeclared_files_and_escapes_are_refused() {
    let app = files_app();
    let bantam = app.up(&[]);
    let secret = app.path().join("private.txt");
    for path in [
        "/static/key.secret".to_string(),
        "/private.txt".to_string(),
        "/../private.txt".to_string(),
        "/static/../../private.txt".to_string(),
        "../../../../etc/passwd".to_string(),
        "/etc/passwd".to_string(),
        secret.to_string_lossy().into_owned(),
    ] {
        let (status, body) = get(&bantam.url(&format!("/?file={path}"))).await;
        assert_ne!(status, 200, "{path} must not be readable: {body}");
        assert!(body.starts_with("error: "), "{path}: {body}");
        assert!(!body.contains("not mounted") && !body.contains("root:"), "{path}: {body}");
    }
}

#[tokio::test]
async fn guests_see_their_environment_and_not_the_hosts() {
    let app = files_app();
    let bantam = app.up(&["-e", "FROM_FLAG=flag value"]);
    let (_, greeting) = get(&bantam.url("/?env=GREETING")).await;
    assert_eq!(greeting, "hello from the manifest");
    let (_, from_flag) = get(&bantam.url("/?env=FROM_FLAG")).await;
    assert_eq!(from_flag, "flag value");
    for host_only in ["HOST_SECRET", "HOME", "PATH"] {
        let (status, body) = get(&bantam.url(&format!("/?env={host_only}"))).await;
        assert_eq!((status, body.as_str()), (404, "unset"), "{host_only} leaked");
    }
}

#[tokio::test]
async fn guest_output_is_tagged_on_the_terminal_and_logged_to_files() {
    let app = files_app();
    let bantam = app.up(&[]);
    let (status, _) = get(&bantam.url("/?stdout=line%20one")).await;
    assert_eq!(status, 200);
    // Stdout and stderr are separate pipes, read by separate threads: one
    // line may arrive before the other.
    bantam.wait_for_output("[reader] err: line one");
    let output = bantam.wait_for_output("[reader] line one");
    assert!(output.contains("[reader] line one"), "{output}");
    assert!(output.contains("[reader] err: line one"), "{output}");

    let logs = app.path().join(".spin/logs");
    let stdout = std::fs::read_to_string(logs.join("reader_stdout.txt")).unwrap();
    let stderr = std::fs::read_to_string(logs.join("reader_stderr.txt")).unwrap();
    assert_eq!(stdout, "line one\n");
    assert_eq!(stderr, "err: line one\n");
}

#[tokio::test]
async fn an_empty_log_dir_writes_no_log_files() {
    let app = files_app();
    let bantam = app.up(&["-L", ""]);
    let (status, _) = get(&bantam.url("/?stdout=not%20on%20disk")).await;
    assert_eq!(status, 200);
    // Stdout and stderr are separate pipes, read by separate threads: one
    // line may arrive before the other.
    bantam.wait_for_output("[reader] err: not on disk");
    let output = bantam.wait_for_output("[reader] not on disk");
    assert!(output.contains("[reader] not on disk"), "{output}");
    assert!(!output.contains("Logging component stdio"), "{output}");
    assert!(!app.path().join(".spin/logs").exists(), "no log directory is made");
}
