//! Start-up: the route listing, the compile cache, clear errors for bad
//! apps, and graceful shutdown.

use std::time::Duration;

use crate::support::{TestApp, get, guest};

fn hello_app(guest: &str) -> TestApp {
    TestApp::new(&format!(
        r#"
spin_manifest_version = 2
[application]
name = "hello"

[[trigger.http]]
route = "/hello/..."
component = "hello"

[[trigger.http]]
route = "/exact"
component = "hello"

[component.hello]
description = "Says hello"
source = "{guest}"
"#
    ))
}

#[tokio::test]
async fn start_up_lists_routes_like_spin() {
    let app = hello_app("{p3}");
    let bantam = app.up(&[]);
    let output = bantam.output();
    let base = &bantam.base;
    assert!(output.contains("Logging component stdio to \".spin/logs/\""), "{output}");
    assert!(output.contains("Available Routes:"), "{output}");
    assert!(
        output.contains(&format!("  hello: {base}/hello (wildcard)\n    Says hello")),
        "{output}"
    );
    assert!(output.contains(&format!("  hello: {base}/exact\n")), "{output}");
}

#[tokio::test]
async fn a_second_start_loads_compiled_code_from_the_cache() {
    let app = hello_app("{p2}");
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let first = app.up(&["--cache-dir", cache_dir]);
    let output = first.wait_for_output("from_cache=false");
    assert!(output.contains("from_cache=false"), "{output}");
    drop(first);
    let entries = std::fs::read_dir(cache.path()).unwrap().collect::<Vec<_>>();
    assert_eq!(entries.len(), 1, "one compiled component in the cache");
    // Last used an hour ago, as far as the cache's pruning can tell.
    let entry = entries[0].as_ref().unwrap().path();
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let file = std::fs::File::options().write(true).open(&entry).unwrap();
    file.set_modified(an_hour_ago).unwrap();
    let second = app.up(&["--cache-dir", cache_dir]);
    let output = second.wait_for_output("from_cache=true");
    assert!(output.contains("from_cache=true"), "{output}");
    let (status, _) = get(&second.url("/exact?status=200")).await;
    assert_eq!(status, 200);
    let used = std::fs::metadata(&entry).unwrap().modified().unwrap();
    assert!(used.elapsed().unwrap() < Duration::from_secs(600), "loading marks the entry used");
}

#[tokio::test]
async fn an_unusable_cache_entry_is_compiled_over_with_a_warning() {
    let app = hello_app("{p2}");
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    drop(app.up(&["--cache-dir", cache_dir]));
    let entry = std::fs::read_dir(cache.path()).unwrap().next().unwrap().unwrap().path();
    std::fs::write(&entry, b"not compiled code").unwrap();

    let second = app.up(&["--cache-dir", cache_dir]);
    // The engine's lines come on stderr, which can trail the listing on stdout.
    let output = second.wait_for_output("from_cache=");
    assert!(output.contains("ignoring unusable cache entry"), "{output}");
    assert!(output.contains("from_cache=false"), "{output}");
    let (status, _) = get(&second.url("/exact?status=200")).await;
    assert_eq!(status, 200);
    drop(second);
    // The entry was written again, whole.
    let third = app.up(&["--cache-dir", cache_dir]);
    let output = third.wait_for_output("from_cache=true");
    assert!(output.contains("from_cache=true"), "{output}");
}

#[tokio::test]
async fn a_changed_component_file_is_compiled_afresh() {
    let app = hello_app("component.wasm");
    let component = app.path().join("component.wasm");
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    std::fs::copy(guest("http_p2_probe"), &component).unwrap();
    drop(app.up(&["--cache-dir", cache_dir]));

    // Same path, other bytes (a rebuild): not the code compiled before.
    std::fs::copy(guest("wasi_http_plain"), &component).unwrap();
    let second = app.up(&["--cache-dir", cache_dir]);
    let output = second.wait_for_output("from_cache=false");
    assert!(output.contains("from_cache=false"), "{output}");
    let (status, body) = get(&second.url("/exact")).await;
    assert_eq!((status, body.as_str()), (200, "hello from plain wasi:http"));
}

#[test]
fn a_missing_import_fails_start_up_naming_component_and_import() {
    let app = TestApp::single("needs-more", r#"source = "{missing_import}""#);
    let output = app.up_fails();
    assert!(output.contains("component `needs-more` cannot start"), "{output}");
    assert!(output.contains("bantam-test:missing/nothing"), "{output}");
}

#[test]
fn a_component_without_an_http_export_fails_start_up() {
    let app = TestApp::single("just-a-command", r#"source = "{no_http_export}""#);
    let output = app.up_fails();
    assert!(
        output.contains(
            "component `just-a-command` exports neither `wasi:http/handler@0.3.x` nor \
             `wasi:http/incoming-handler@0.2.x`"
        ),
        "{output}"
    );
    assert!(output.contains("`wasi:cli/run@0.2"), "it lists what it does export: {output}");
}

/// Each compile runs in a process of its own under the host's limits:
/// one past them is stopped, and the host says which limit, not that the
/// component is invalid.
#[test]
fn a_compile_past_its_memory_limit_is_stopped_naming_the_limit() {
    let app = TestApp::single("heavy", r#"source = "{plain}""#);
    let output = match app.up_with(&["--disable-cache", "--max-compile-memory", "64MiB"]) {
        Ok(bantam) => panic!("compiled within 64 MiB:\n{}", bantam.output()),
        Err(output) => output,
    };
    assert!(output.contains("component `heavy` ("), "{output}");
    assert!(output.contains(") could not be compiled: the compiler stopped"), "{output}");
    assert!(
        output.contains(
            "compiling may take at most 64MiB of memory and 600s of CPU time \
             (--max-compile-memory, --max-compile-time)"
        ),
        "{output}"
    );
    // Within the default limits, the same component compiles and serves.
    let bantam = app.up(&["--disable-cache"]);
    assert!(bantam.output().contains("heavy"), "{}", bantam.output());
}

#[test]
fn a_malformed_manifest_is_reported_with_file_line_and_field() {
    let app = TestApp::single("bad", r#"sourse = "x.wasm""#);
    let output = app.up_fails();
    assert!(output.contains("spin.toml:8:"), "{output}");
    assert!(output.contains("sourse"), "{output}");
}

#[test]
fn a_missing_component_file_names_the_resolved_path() {
    let app = TestApp::single("gone", r#"source = "target/gone.wasm""#);
    let output = app.up_fails();
    let resolved = app.path().join("target/gone.wasm");
    assert!(output.contains(&resolved.display().to_string()), "{output}");
    assert!(output.contains("spin.toml:8:"), "{output}");
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_then_exits_zero() {
    let app = hello_app("{p3}");
    let mut bantam = app.up(&[]);
    let url = bantam.url("/exact?sleep-ms=1500");
    let slow = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    bantam.terminate();
    let (status, body) = slow.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "slept 1500"));
    let code =
        tokio::task::spawn_blocking(move || bantam.wait(Duration::from_secs(10))).await.unwrap();
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn up_build_runs_build_commands_before_loading_the_app() {
    // The source does not exist until the build command makes it.
    let app = TestApp::single(
        "built",
        "source = \"out/built.wasm\"\nbuild = { command = \"mkdir -p out && cp {p3} out/built.wasm && echo lib backtraces: ${RUST_LIB_BACKTRACE-unset}\" }",
    );
    let bantam = app.up(&["--build"]);
    let (status, body) = get(&bantam.url("/?status=201")).await;
    assert_eq!((status, body.as_str()), (201, "status 201"));
    let output = bantam.output();
    assert!(output.contains("Building component `built`"), "{output}");
    // Bantam turns error backtraces off for itself, not for the build.
    assert!(output.contains("[built] lib backtraces: unset"), "{output}");
}
