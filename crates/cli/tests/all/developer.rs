//! The developer's loop: `bantam new`, `add`, `build`, `build --up`, and the
//! errors a developer meets on the way.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::services::{Registry, require};
use crate::support::{Bantam, get};

/// Run `bantam <args>` in `dir`.
pub fn bantam(dir: &Path, args: &[&str]) -> Output {
    bantam_env(dir, args, &[])
}

/// Run `bantam <args>` in `dir` with extra environment variables.
pub fn bantam_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bantam"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        // Builds run cargo for wasm32-wasip2 in the app's own folder: the
        // test's target dir and flags are not theirs.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("NO_COLOR", "1")
        .output()
        .expect("running bantam")
}

/// Stdout and stderr of `output`, for messages and assertions.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Run `bantam <args>` in `dir` and require success; its output.
pub fn bantam_ok(dir: &Path, args: &[&str]) -> String {
    let output = bantam(dir, args);
    assert!(output.status.success(), "bantam {args:?} failed:\n{}", text(&output));
    text(&output)
}

#[tokio::test]
async fn new_add_build_and_serve_a_rust_app() {
    let work = tempfile::tempdir().unwrap();
    bantam_ok(work.path(), &["new", "-t", "http-empty", "shop", "--accept-defaults"]);
    let app = work.path().join("shop");
    let added = bantam_ok(&app, &["add", "-t", "http-rust", "hello", "-v", "http-path=/hello/..."]);
    assert!(added.contains("Added component `hello`"), "{added}");
    let manifest = std::fs::read_to_string(app.join("spin.toml")).unwrap();
    assert!(
        manifest.contains("source = \"hello/target/wasm32-wasip2/release/hello.wasm\""),
        "{manifest}"
    );
    assert!(manifest.contains("workdir = \"hello\""), "{manifest}");

    // `build --up`: the build streams cargo's output behind the component
    // id, then the app serves. From scratch, cargo would compile the
    // app's ~110 crates (about 100 s of CPU: minutes on a busy 2-core
    // machine); it takes the guests' compiled ones instead and compiles
    // the app and the few crates the guests enable other features of.
    let reuse = crate::support::reuse_guest_dependencies(&app.join("hello"));
    let env: Vec<(&str, &str)> = reuse.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // The deadline is there to catch a hang, so it allows even the build
    // from scratch on a busy machine.
    let server = Bantam::spawn_within(&app, &["build", "--up"], &env, Duration::from_secs(600))
        .unwrap_or_else(|out| panic!("{out}"));
    let output = server.output();
    assert!(output.contains("Building component `hello`"), "{output}");
    assert!(output.contains("[hello] "), "cargo output is prefixed:\n{output}");
    // Losing that reuse would not fail the test on a quiet machine, only
    // make it slow and then flaky: said here instead.
    let compiled = output.matches("Compiling ").count();
    assert!(compiled < 40, "cargo compiled {compiled} crates, not the guests':\n{output}");
    let (status, body) = get(&server.url("/hello/there")).await;
    assert_eq!((status, body.as_str()), (200, "Hello World!\n"));
    let (status, _) = get(&server.url("/elsewhere")).await;
    assert_eq!(status, 404);

    // Pushed, then run from the registry in another directory.
    ship_and_run_elsewhere(&app, "shop", &[], "/hello/x", "Hello World!\n").await;

    // The same name again clashes with the component just added, and the
    // manifest is left as it was.
    let again = bantam(&app, &["add", "-t", "http-rust", "hello", "-a", "--allow-overwrite"]);
    assert!(!again.status.success());
    assert!(text(&again).contains("nothing was changed"), "{}", text(&again));
    assert_eq!(std::fs::read_to_string(app.join("spin.toml")).unwrap(), manifest);
}

#[test]
fn new_makes_an_app_that_loads_and_refuses_bad_input() {
    let work = tempfile::tempdir().unwrap();
    let listing = bantam_ok(work.path(), &["templates", "list"]);
    for id in ["http-empty", "http-js", "http-py", "http-rust"] {
        assert!(listing.contains(id), "{listing}");
    }
    bantam_ok(
        work.path(),
        &["new", "-t", "http-rust", "MyApi", "-a", "-v", "project-description=An API"],
    );
    let app = work.path().join("MyApi");
    let manifest = std::fs::read_to_string(app.join("spin.toml")).unwrap();
    assert!(manifest.contains("[component.my-api]"), "{manifest}");
    assert!(manifest.contains("description = \"An API\""), "{manifest}");
    assert!(manifest.contains("release/my_api.wasm"), "{manifest}");
    let cargo = std::fs::read_to_string(app.join("Cargo.toml")).unwrap();
    assert!(cargo.contains("name = \"my-api\""), "{cargo}");

    // Into a folder with files: refused, and nothing is touched.
    let again = bantam(work.path(), &["new", "-t", "http-rust", "MyApi", "-a"]);
    assert!(text(&again).contains("already exists"), "{}", text(&again));
    // Unknown template, bad parameter value, unknown parameter.
    let unknown = text(&bantam(work.path(), &["new", "-t", "http-cobol", "x", "-a"]));
    assert!(
        unknown.contains("there is no template `http-cobol`") && unknown.contains("http-rust"),
        "{unknown}"
    );
    let bad = text(&bantam(work.path(), &["new", "-t", "http-rust", "x", "-v", "http-path=nope"]));
    assert!(bad.contains("`nope` is not a valid http-path"), "{bad}");
    let extra = text(&bantam(work.path(), &["new", "-t", "http-rust", "y", "-v", "colour=red"]));
    assert!(extra.contains("no parameter `colour`"), "{extra}");
    // A value that would break the manifest is refused before any file is written.
    let quote = text(&bantam(
        work.path(),
        &["new", "-t", "http-rust", "z", "-v", "project-description=say \"hi\""],
    ));
    assert!(quote.contains("bad manifest"), "{quote}");
    assert!(!work.path().join("z").exists());
}

#[test]
fn build_failures_name_the_component_and_the_fix() {
    let work = tempfile::tempdir().unwrap();
    let manifest = r#"spin_manifest_version = 2
[application]
name = "broken"
[[trigger.http]]
route = "/..."
component = "first"
[component.first]
source = "first.wasm"
[component.first.build]
command = ["echo compiled first", "echo oops >&2; exit 3"]
[component.second]
source = "second.wasm"
[component.second.build]
command = "echo never runs"
[component.third]
source = "third.wasm"
[component.third.build]
command = "componentize-py-that-is-not-here -w spin-http componentize app -o app.wasm"
"#;
    std::fs::write(work.path().join("spin.toml"), manifest).unwrap();

    let failed = bantam(work.path(), &["build"]);
    let out = text(&failed);
    assert_eq!(failed.status.code(), Some(1), "{out}");
    assert!(out.contains("[first] compiled first") && out.contains("[first] oops"), "{out}");
    assert!(
        out.contains("the build of component `first` failed") && out.contains("exit code 3"),
        "{out}"
    );
    assert!(!out.contains("never runs"), "the build stops at the first failure:\n{out}");

    let missing = text(&bantam(work.path(), &["build", "-c", "third"]));
    assert!(
        missing.contains("`componentize-py-that-is-not-here` is not installed or not on PATH"),
        "{missing}"
    );
    let unknown = text(&bantam(work.path(), &["build", "-c", "fourth"]));
    assert!(
        unknown.contains("no component `fourth`") && unknown.contains("first, second, third"),
        "{unknown}"
    );

    // `bantam up --build` stops on the failed build and serves nothing.
    let up = text(&bantam(work.path(), &["up", "--build", "--listen", "127.0.0.1:0"]));
    assert!(up.contains("exit code 3") && !up.contains("Serving"), "{up}");
}

#[test]
fn completions_are_printed_for_each_shell() {
    let work = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let script = bantam_ok(work.path(), &["completions", shell]);
        assert!(script.contains("templates") && script.contains("registry"), "{shell}:\n{script}");
    }
}

/// `bantam watch` on an app whose "build" copies one of two guests into
/// place: which one is named in `which.txt`, a watched file.
#[tokio::test]
async fn watch_swaps_builds_without_dropping_requests() {
    let p3 = crate::support::guest("http_p3_probe");
    let p2 = crate::support::guest("http_p2_probe");
    let work = tempfile::tempdir().unwrap();
    let manifest = |version: &str| {
        format!(
            "spin_manifest_version = 2\n[application]\nname = \"watched\"\n\
             [[trigger.http]]\nroute = \"/...\"\ncomponent = \"probe\"\n\
             [component.probe]\nsource = \"app.wasm\"\n\
             environment = {{ VERSION = \"{version}\" }}\n\
             [component.probe.build]\ncommand = \"cp \\\"$(cat which.txt)\\\" app.wasm\"\n\
             watch = [\"which.txt\"]\n"
        )
    };
    std::fs::write(work.path().join("spin.toml"), manifest("one")).unwrap();
    std::fs::write(work.path().join("which.txt"), &p3).unwrap();
    let server = Bantam::spawn(work.path(), &["watch", "-d", "50"], &[])
        .unwrap_or_else(|out| panic!("{out}"));
    let sdk = |body: String| -> String {
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        json["sdk"].as_str().unwrap().to_owned()
    };
    let (status, body) = get(&server.url("/")).await;
    assert_eq!((status, sdk(body)), (200, "spin-sdk-7".to_string()));

    // Steady traffic and one slow request across the swap: none may fail,
    // and the slow one finishes on the version it started on.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (stop, url) = (stop.clone(), server.url("/?status=200"));
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(response) if response.status() == 200 => ok += 1,
                    Ok(response) => failed.push(response.status().to_string()),
                    Err(error) => failed.push(error.to_string()),
                }
            }
            (ok, failed)
        })
    };
    let slow = tokio::spawn(get_owned(server.url("/?sleep-ms=1500")));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    std::fs::write(work.path().join("which.txt"), &p2).unwrap();
    let output = server.wait_for_output("Reloaded");
    assert!(output.contains("Reloaded: new requests go to the new version"), "{output}");
    let (status, body) = get(&server.url("/")).await;
    assert_eq!(status, 200);
    assert_ne!(sdk(body), "spin-sdk-7", "the rebuilt guest serves");
    assert_eq!(slow.await.unwrap(), (200, "slept 1500".to_string()));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = traffic.await.unwrap();
    assert!(failed.is_empty() && ok > 10, "{ok} ok, failed: {failed:?}");

    // A manifest edit reloads without a build.
    std::fs::write(work.path().join("spin.toml"), manifest("two")).unwrap();
    wait_until(|| server.output().matches("Reloaded").count() >= 2, &server);
    assert_eq!(get(&server.url("/?env=VERSION")).await, (200, "two".to_string()));

    // A failed build keeps the last good version serving, and says so.
    std::fs::write(work.path().join("which.txt"), "/no/such/guest.wasm").unwrap();
    let output = server.wait_for_output("still serving");
    assert!(output.contains("the build of component `probe` failed"), "{output}");
    assert_eq!(get(&server.url("/?env=VERSION")).await, (200, "two".to_string()));

    server.terminate();
    let mut server = server;
    assert_eq!(server.wait(std::time::Duration::from_secs(10)), Some(0), "{}", server.output());
}

async fn get_owned(url: String) -> (u16, String) {
    get(&url).await
}

fn wait_until(done: impl Fn() -> bool, server: &Bantam) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out:\n{}", server.output());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Push the built app in `app` to a fresh registry, run it with
/// `up --from` in an empty directory, and check `path` answers `expected`.
async fn ship_and_run_elsewhere(
    app: &Path,
    repository: &str,
    env: &[(&str, &str)],
    path: &str,
    expected: &str,
) {
    let registry = Registry::start();
    let reference = registry.reference(&format!("{repository}:v1"));
    let cache = tempfile::tempdir().unwrap();
    let mut env = env.to_vec();
    env.push(("BANTAM_REGISTRY_CACHE_DIR", cache.path().to_str().unwrap()));
    let pushed = bantam_env(app, &["registry", "push", "-k", &reference], &env);
    assert!(pushed.status.success(), "{}", text(&pushed));
    let elsewhere = tempfile::tempdir().unwrap();
    let server = Bantam::spawn(elsewhere.path(), &["up", "-k", "--from", &reference], &env)
        .unwrap_or_else(|out| panic!("{out}"));
    let (status, body) = get(&server.url(path)).await;
    assert_eq!((status, body.as_str()), (200, expected), "{}", server.output());
}

#[tokio::test]
async fn a_javascript_app_from_the_template_serves_and_ships() {
    // These tests prove what the official toolchains make runs: they must
    // not pass without them.
    require("npm", "nodejs npm");
    let work = tempfile::tempdir().unwrap();
    bantam_ok(work.path(), &["new", "-t", "http-js", "js-app", "--accept-defaults"]);
    let app = work.path().join("js-app");
    // npm install and componentize-js, as the template's build says.
    bantam_ok(&app, &["build"]);
    let server = Bantam::spawn(&app, &["up"], &[]).unwrap_or_else(|out| panic!("{out}"));
    assert_eq!(get(&server.url("/")).await, (200, "Hello from JavaScript (visit 1)\n".into()));
    assert_eq!(get(&server.url("/")).await, (200, "Hello from JavaScript (visit 2)\n".into()));
    drop(server);
    ship_and_run_elsewhere(&app, "js-app", &[], "/", "Hello from JavaScript (visit 1)\n").await;
}

#[tokio::test]
async fn a_python_app_from_the_template_serves_and_ships() {
    require("python3", "python3 python3-venv");
    let work = tempfile::tempdir().unwrap();
    bantam_ok(work.path(), &["new", "-t", "http-py", "py-app", "--accept-defaults"]);
    let app = work.path().join("py-app");
    // The README's steps: a virtual environment with the requirements.
    let venv = app.join(".venv");
    let status = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().unwrap();
    assert!(status.success(), "python3 -m venv failed");
    let pip = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "-r", "requirements.txt"])
        .current_dir(&app)
        .output()
        .unwrap();
    assert!(pip.status.success(), "pip install failed:\n{}", text(&pip));
    let path =
        format!("{}:{}", venv.join("bin").display(), std::env::var("PATH").unwrap_or_default());
    let env = [("PATH", path.as_str())];

    let built = bantam_env(&app, &["build"], &env);
    assert!(built.status.success(), "{}", text(&built));
    let server = Bantam::spawn(&app, &["up"], &env).unwrap_or_else(|out| panic!("{out}"));
    assert_eq!(get(&server.url("/")).await, (200, "Hello from Python (visit 1)\n".into()));
    assert_eq!(get(&server.url("/")).await, (200, "Hello from Python (visit 2)\n".into()));
    drop(server);
    ship_and_run_elsewhere(&app, "py-app", &env, "/", "Hello from Python (visit 1)\n").await;
}
