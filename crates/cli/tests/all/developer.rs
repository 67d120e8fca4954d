//! The developer's loop: `bantam new`, `add`, `build`, `build --up`, and the
//! errors a developer meets on the way.

use std::path::Path;
use std::process::{Command, Output};

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
    // id, then the app serves.
    let server = Bantam::spawn(&app, &["build", "--up"], &[]).unwrap_or_else(|out| panic!("{out}"));
    let output = server.output();
    assert!(output.contains("Building component `hello`"), "{output}");
    assert!(output.contains("[hello] "), "cargo output is prefixed:\n{output}");
    let (status, body) = get(&server.url("/hello/there")).await;
    assert_eq!((status, body.as_str()), (200, "Hello World!\n"));
    let (status, _) = get(&server.url("/elsewhere")).await;
    assert_eq!(status, 404);

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
