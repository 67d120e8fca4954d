//! Shared test harness: guests built once per run, apps in temporary
//! directories, and `bantam up` as a real process on a free port.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Build the guest programs in `tests/guests` (once per test run) and
/// return the directory holding the `.wasm` components.
pub fn guests() -> &'static Path {
    static GUESTS: OnceLock<PathBuf> = OnceLock::new();
    GUESTS.get_or_init(|| {
        let manifest = repo_root().join("tests/guests/Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let output = Command::new(cargo)
            .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
            .arg(&manifest)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .stdout(Stdio::inherit())
            .output()
            .expect("running cargo to build the guest programs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            if stderr.contains("wasm32-wasip2") && stderr.contains("target may not be installed") {
                panic!(
                    "the wasm32-wasip2 target is missing: run `rustup target add wasm32-wasip2`"
                );
            }
            panic!("building the guest programs failed:\n{stderr}");
        }
        repo_root().join("tests/guests/target/wasm32-wasip2/release")
    })
}

/// Environment with which cargo builds a spin-sdk 7 app (the `http-rust`
/// template's) in `crate_dir` from the dependencies the guests compiled,
/// instead of compiling its ~110 crates again: minutes on a busy machine.
/// Cargo reuses a compiled crate only for the same version, features and
/// compiler flags, so the app gets the guests' `Cargo.lock` (their versions,
/// not whatever crates.io has published since) and their release profile
/// (`CARGO_PROFILE_RELEASE_*`), and cargo's build directory
/// (`build.build-dir`, intermediate artifacts only) is theirs. The app's
/// `.wasm` is still written to its own `target/`, where its manifest points.
pub fn reuse_guest_dependencies(crate_dir: &Path) -> Vec<(String, String)> {
    let root = repo_root().join("tests/guests");
    // Their dependencies are compiled, and no build of theirs runs beside.
    guests();
    std::fs::copy(root.join("Cargo.lock"), crate_dir.join("Cargo.lock")).unwrap();
    let manifest: toml::Table =
        toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
    let profile = manifest["profile"]["release"].as_table().expect("the guests' release profile");
    let mut env: Vec<(String, String)> = profile
        .iter()
        .map(|(key, value)| {
            let value = match value {
                toml::Value::String(text) => text.clone(),
                toml::Value::Table(_) | toml::Value::Array(_) => {
                    panic!("profile.release.{key}: only plain values can be passed as variables")
                }
                other => other.to_string(),
            };
            (format!("CARGO_PROFILE_RELEASE_{}", key.to_uppercase().replace('-', "_")), value)
        })
        .collect();
    env.push(("CARGO_BUILD_BUILD_DIR".into(), root.join("target").display().to_string()));
    env
}

/// The path of guest component `name` (crate name with `_`).
pub fn guest(name: &str) -> String {
    let path = guests().join(format!("{name}.wasm"));
    assert!(path.is_file(), "guest {} was not built", path.display());
    path.to_string_lossy().into_owned()
}

/// An app in a temporary directory.
pub struct TestApp {
    pub dir: tempfile::TempDir,
}

impl TestApp {
    /// An app whose spin.toml is `manifest`, with `{p3}`, `{p2}`, `{plain}`,
    /// `{missing_import}` and `{no_http_export}` replaced by the guest
    /// component paths.
    /// `{caps_p3}` and `{caps_p2}` are the capability guests.
    pub fn new(manifest: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut text = manifest.to_string();
        for (placeholder, name) in [
            ("{p3}", "http_p3_probe"),
            ("{p2}", "http_p2_probe"),
            ("{plain}", "wasi_http_plain"),
            ("{missing_import}", "missing_import"),
            ("{no_http_export}", "no_http_export"),
            ("{caps_p3}", "capabilities_p3"),
            ("{caps_p2}", "capabilities_p2"),
        ] {
            if text.contains(placeholder) {
                text = text.replace(placeholder, &guest(name));
            }
        }
        std::fs::write(dir.path().join("spin.toml"), text).unwrap();
        Self { dir }
    }

    /// An app with one component, `id`, serving every route; `component`
    /// is the rest of its `[component.<id>]` table (e.g. `source = "{p3}"`).
    pub fn single(id: &str, component: &str) -> Self {
        Self::new(&format!(
            "spin_manifest_version = 2\n\
             [application]\n\
             name = \"{id}-app\"\n\
             [[trigger.http]]\n\
             route = \"/...\"\n\
             component = \"{id}\"\n\
             [component.{id}]\n\
             {component}\n"
        ))
    }

    /// Write a file in the app directory.
    pub fn file(self, path: &str, contents: &str) -> Self {
        let path = self.dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `bantam up` on this app, on a free port, waiting until it serves.
    pub fn up(&self, extra: &[&str]) -> Bantam {
        Bantam::start(self.path(), extra, &[]).unwrap_or_else(|output| {
            panic!("bantam up did not start:\n{output}");
        })
    }

    /// `bantam up` expected to fail at start-up: its output.
    pub fn up_fails(&self) -> String {
        match self.up_with(&[]) {
            Ok(bantam) => panic!("bantam up started but should have failed:\n{}", bantam.output()),
            Err(output) => output,
        }
    }

    /// `bantam up` with `extra` flags: the running server, or the output
    /// of a start-up that failed.
    pub fn up_with(&self, extra: &[&str]) -> Result<Bantam, String> {
        Bantam::start(self.path(), extra, &[])
    }

    /// `bantam up` with `extra` flags and environment variables `env`.
    pub fn up_with_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Result<Bantam, String> {
        Bantam::start(self.path(), extra, env)
    }
}

/// How long `bantam up` may take to serve, to catch a hang: the slowest
/// start-up, a JavaScript app's 12 MB component compiled with no compile
/// cache, took 30 s on 2 cores at a load average of 4.5.
const START_UP: Duration = Duration::from_secs(180);

/// A running `bantam up` process; stopped on drop.
pub struct Bantam {
    child: Child,
    pub base: String,
    output: Arc<(Mutex<String>, Condvar)>,
}

impl Bantam {
    /// `bantam up -f <file.wasm>`, waiting until it serves.
    pub fn start_wasm(wasm: &Path) -> Self {
        Self::start(wasm, &[], &[])
            .unwrap_or_else(|output| panic!("bantam up did not start:\n{output}"))
    }

    /// Start `bantam up -f <app> --listen 127.0.0.1:0` (in the app's
    /// directory); `Err` holds the output when it exits before serving.
    fn start(app: &Path, extra: &[&str], env: &[(&str, &str)]) -> Result<Self, String> {
        let dir = if app.is_dir() { app } else { app.parent().unwrap() };
        let mut args = vec!["up".as_ref(), "-f".as_ref(), app.as_os_str()];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        Self::launch(dir, &args, env, START_UP)
    }

    /// `bantam <args> --listen 127.0.0.1:0` in `dir` (a command that ends
    /// up serving, such as `serve`), waiting until it serves.
    pub fn spawn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Self, String> {
        Self::spawn_within(dir, args, env, START_UP)
    }

    /// As [`Bantam::spawn`], for a command that does more before it serves
    /// (such as `build --up`), given `deadline` for all of it.
    pub fn spawn_within(
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        deadline: Duration,
    ) -> Result<Self, String> {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        Self::launch(dir, &args, env, deadline)
    }

    fn launch(
        dir: &Path,
        args: &[&std::ffi::OsStr],
        env: &[(&str, &str)],
        deadline: Duration,
    ) -> Result<Self, String> {
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bantam-compile-cache");
        let mut child = Command::new(env!("CARGO_BIN_EXE_bantam"))
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .env("BANTAM_CACHE_DIR", &cache)
            .current_dir(dir)
            .env("RUST_LOG", "warn,bantam=debug")
            .env("HOST_SECRET", "do-not-leak")
            // A build run by the command uses the app's own target dir.
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting bantam");
        let output = Arc::new((Mutex::new(String::new()), Condvar::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            // Whole chunks, not lines: bantam writes its start-up listing
            // in one write, and a test that sees "Serving" must also see
            // the routes listed after it.
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut chunk = vec![0u8; 64 * 1024];
                loop {
                    let n = match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let (text, changed) = &*output;
                    text.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..n]));
                    changed.notify_all();
                }
            });
        }
        let deadline = Instant::now() + deadline;
        loop {
            let text = output.0.lock().unwrap().clone();
            if let Some(at) = text.find("Serving http://") {
                let rest = &text[at + "Serving ".len()..];
                if let Some((base, _)) = rest.split_once('\n') {
                    let base = base.trim().to_string();
                    return Ok(Self { child, base, output });
                }
            }
            if let Ok(Some(_)) = child.try_wait() {
                // Let the reader threads drain what is left.
                std::thread::sleep(Duration::from_millis(100));
                return Err(output.0.lock().unwrap().clone());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!("timed out waiting for start-up:\n{text}"));
            }
            let (lock, changed) = &*output;
            let guard = lock.lock().unwrap();
            let _ = changed.wait_timeout(guard, Duration::from_millis(50)).unwrap();
        }
    }

    /// The most memory the server process has had resident so far, in KiB
    /// (`VmHWM`).
    pub fn peak_resident_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|line| line.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Everything the process printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        self.output.0.lock().unwrap().clone()
    }

    /// Wait until the output contains `needle` (guest output is written
    /// asynchronously to the response).
    pub fn wait_for_output(&self, needle: &str) -> String {
        self.wait_for_any_output(&[needle])
    }

    /// Wait until the output contains one of `needles`.
    pub fn wait_for_any_output(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.output();
            if needles.iter().any(|needle| text.contains(needle)) || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Send SIGTERM.
    pub fn terminate(&self) {
        assert!(signal("TERM", &self.child.id().to_string()).unwrap().success());
    }

    /// Wait for the process to exit; its exit code.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Bantam {
    /// SIGTERM first, so bantam removes its temporary files; SIGKILL if it
    /// has not exited within two seconds.
    fn drop(&mut self) {
        let _ = signal("TERM", &self.child.id().to_string());
        if self.wait(Duration::from_secs(2)).is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A GET request: status and body.
pub async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// A GET request answered 200 with JSON (such as the probe's echo): the
/// value.
pub async fn get_json(url: &str) -> serde_json::Value {
    let (status, body) = get(url).await;
    assert_eq!(status, 200, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {body}"))
}

/// A GET request with extra headers: status and body.
pub async fn get_with_headers(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = reqwest::Client::new().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Send `signal` (`TERM`, `KILL`, ...) with `kill(1)` to `target`: a
/// process id, or `-<id>` for a process group.
pub fn signal(signal: &str, target: &str) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill").args([&format!("-{signal}"), "--", target]).stderr(Stdio::null()).status()
}
