//! Apps as OCI artifacts, against a real registry (Debian's
//! `docker-registry`): Spin's layout on the wire, pulls cached by digest,
//! and `bantam up --from <reference>` serving what was pushed.

use serde_json::Value;

use crate::developer::{bantam_env, text};
use crate::services::Registry;
use crate::support::{Bantam, TestApp, get};

const APP: &str = r#"
spin_manifest_version = 2
[application]
name = "shipped"
version = "1.2.3"
description = "An app that travels"
[variables]
greeting = { default = "hello" }
[[trigger.http]]
route = "/..."
component = "reader"
[component.reader]
source = "{p3}"
files = ["static/**/*", { source = "data", destination = "/config" }]
environment = { GREETING = "from the lock" }
key_value_stores = ["default"]
[component.reader.variables]
message = "{{ greeting }} world"
[component.reader.tool.bantam]
instance_reuse = { max_requests = 5, idle_timeout = "2s" }
"#;

/// A page over the 128 bytes Spin inlines: it travels as its own layer.
fn big_page() -> String {
    "<p>a page big enough to be its own layer</p>\n".repeat(8)
}

async fn registry_json(registry: &Registry, path: &str) -> Value {
    let url = format!("http://127.0.0.1:{}/v2/{path}", registry.port);
    reqwest::Client::new()
        .get(&url)
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

#[tokio::test]
async fn a_pushed_app_has_spins_layout_and_runs_from_the_registry() {
    let registry = Registry::start();
    let app = TestApp::new(APP)
        .file("static/index.html", "<h1>hi</h1>")
        .file("static/big.html", &big_page())
        .file("static/copy.html", &big_page())
        .file("data/app.json", "{\"ok\":true}");
    let reference = registry.reference("shipped:v1");
    let cache = tempfile::tempdir().unwrap();
    let env = [("BANTAM_REGISTRY_CACHE_DIR", cache.path().to_str().unwrap())];

    let pushed = bantam_env(app.path(), &["registry", "push", "-k", &reference], &env);
    let out = text(&pushed);
    assert!(pushed.status.success(), "{out}");
    let digest =
        out.lines().find_map(|l| l.strip_prefix("Pushed with digest ")).unwrap().to_owned();
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{out}");

    // The manifest, as Spin writes it.
    let manifest = registry_json(&registry, "shipped/manifests/v1").await;
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");
    let layers = manifest["layers"].as_array().unwrap();
    let types: Vec<&str> = layers.iter().map(|l| l["mediaType"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "application/vnd.wasm.content.layer.v1+wasm",
            // Two files with the same bytes: one layer. The small files
            // are inline in the lock and have none.
            "application/vnd.wasm.content.layer.v1+data",
            "application/vnd.fermyon.spin.application.v1+config",
        ],
        "{manifest:#}"
    );
    assert_eq!(manifest["annotations"]["org.opencontainers.image.title"], "shipped");
    assert_eq!(manifest["annotations"]["org.opencontainers.image.version"], "1.2.3");
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config = registry_json(&registry, &format!("shipped/blobs/{config_digest}")).await;
    assert_eq!(config["architecture"], "wasm");
    let lock_digest = layers[2]["digest"].as_str().unwrap();
    assert_eq!(config["config"]["Labels"]["com.fermyon.spin.lockedAppDigest"], lock_digest);
    let lock = registry_json(&registry, &format!("shipped/blobs/{lock_digest}")).await;
    assert_eq!(lock["spin_lock_version"], 1);
    assert_eq!(lock["metadata"]["name"], "shipped");
    assert_eq!(lock["triggers"][0]["trigger_type"], "http");
    assert_eq!(lock["triggers"][0]["trigger_config"]["route"], "/...");
    let component = &lock["components"][0];
    assert_eq!(component["source"]["content_type"], "application/wasm");
    assert_eq!(component["metadata"]["key_value_stores"][0], "default");
    assert_eq!(component["config"]["message"], "{{ greeting }} world");
    assert_eq!(
        component["metadata"]["tool"]["bantam"]["instance_reuse"],
        serde_json::json!({ "max_requests": 5, "max_concurrent": 1, "idle_timeout": "2000ms" })
    );
    let files = component["files"].as_array().unwrap();
    let index = files.iter().find(|f| f["path"] == "static/index.html").unwrap();
    assert_eq!(index["inline"], "PGgxPmhpPC9oMT4", "small files are inline, unpadded base64");
    assert!(files.iter().any(|f| f["path"] == "config/app.json"), "{files:?}");

    // Pull twice: the second fetches nothing it has.
    let elsewhere = tempfile::tempdir().unwrap();
    let first = text(&bantam_env(elsewhere.path(), &["registry", "pull", "-k", &reference], &env));
    assert!(first.contains(&format!("with digest {digest}")), "{first}");
    let second = text(&bantam_env(elsewhere.path(), &["registry", "pull", "-k", &reference], &env));
    assert!(second.contains("2 layers were already in the cache"), "{second}");

    // `up --from` in another directory serves the pushed app: its files,
    // environment, variables and store.
    let server = Bantam::spawn(elsewhere.path(), &["up", "-k", "--from", &reference], &env)
        .unwrap_or_else(|out| panic!("{out}"));
    for (path, expected) in [
        ("/?file=/static/index.html", "<h1>hi</h1>".to_string()),
        ("/?file=/static/big.html", big_page()),
        ("/?file=/config/app.json", "{\"ok\":true}".to_string()),
        ("/?env=GREETING", "from the lock".to_string()),
    ] {
        let (status, body) = get(&server.url(path)).await;
        assert_eq!((status, body), (200, expected), "{path}");
    }
    let (status, listing) = get(&server.url("/?list=/static")).await;
    assert_eq!(status, 200);
    assert_eq!(listing.lines().collect::<Vec<_>>(), ["big.html", "copy.html", "index.html"]);
    // The opt-in to instance reuse travelled too: one connection's
    // requests share an instance.
    let connection = reqwest::Client::new();
    for expected in ["served 1", "served 2"] {
        let body = connection.get(server.url("/?served")).send().await.unwrap().text().await;
        assert_eq!(body.unwrap(), expected);
    }
}

#[tokio::test]
async fn registry_errors_are_clear() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let env = [("BANTAM_REGISTRY_CACHE_DIR", cache.path().to_str().unwrap())];

    let missing = registry.reference("nothing:here");
    let pulled = bantam_env(work.path(), &["registry", "pull", "-k", &missing], &env);
    assert_eq!(pulled.status.code(), Some(1));
    let out = text(&pulled);
    assert!(out.contains("pulling") && out.contains("nothing:here"), "{out}");
    assert!(out.contains("there is no such repository or tag"), "{out}");
    let up = text(&bantam_env(
        work.path(),
        &["up", "-k", "--from", &missing, "--listen", "127.0.0.1:0"],
        &env,
    ));
    assert!(up.contains("nothing:here") && !up.contains("Serving"), "{up}");

    // An unbuilt app names the missing component file; nothing is pushed.
    let app = TestApp::single("unbuilt", "source = \"target/unbuilt.wasm\"");
    let pushed = text(&bantam_env(
        app.path(),
        &["registry", "push", "-k", &registry.reference("unbuilt:v1")],
        &env,
    ));
    assert!(pushed.contains("target/unbuilt.wasm"), "{pushed}");

    // Nothing listens here.
    let closed = format!("127.0.0.1:{}/app:v1", crate::services::free_port());
    let refused = text(&bantam_env(work.path(), &["registry", "pull", "-k", &closed], &env));
    assert!(refused.contains(&closed) && refused.contains("Error"), "{refused}");
}

#[tokio::test]
async fn a_registry_that_wants_credentials_gets_them_from_login() {
    let registry = Registry::start_with_login("me", "secret");
    let app = TestApp::single("private", "source = \"{p3}\"");
    let config = tempfile::tempdir().unwrap();
    let auth = config.path().join("registry-auth.json");
    let cache = tempfile::tempdir().unwrap();
    let env = [
        ("BANTAM_REGISTRY_AUTH", auth.to_str().unwrap()),
        ("BANTAM_REGISTRY_CACHE_DIR", cache.path().to_str().unwrap()),
    ];
    let server = format!("127.0.0.1:{}", registry.port);
    let reference = registry.reference("private:v1");

    let refused = text(&bantam_env(app.path(), &["registry", "push", "-k", &reference], &env));
    assert!(refused.contains(&format!("run `bantam registry login {server}`")), "{refused}");

    let login = |password: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bantam"))
            .args(["registry", "login", "-k", &server, "-u", "me", "--password-stdin"])
            .envs(env)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    };
    let wrong = login("guess");
    assert!(!wrong.status.success());
    assert!(text(&wrong).contains("refused these credentials"), "{}", text(&wrong));
    assert!(!auth.exists(), "refused credentials are not stored");
    let right = login("secret");
    assert!(right.status.success(), "{}", text(&right));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&auth).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "credentials are private to their owner");
    }

    let pushed = bantam_env(app.path(), &["registry", "push", "-k", &reference], &env);
    assert!(pushed.status.success(), "{}", text(&pushed));
    let elsewhere = tempfile::tempdir().unwrap();
    let server = Bantam::spawn(elsewhere.path(), &["up", "-k", "--from", &reference], &env)
        .unwrap_or_else(|out| panic!("{out}"));
    assert_eq!(get(&server.url("/?status=201")).await, (201, "status 201".to_string()));
}
