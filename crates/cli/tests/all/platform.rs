//! Platform mode: `bantam serve` hosting several apps, deployed, updated
//! and deleted with `bantam deploy`, `bantam apps` and the dashboard
//! through the admin API, routed by host name, each held to its own
//! limits, and restored after a restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::browser::Browser;
use crate::support::{Bantam, TestApp};

const TOKEN: &str = "test-admin-token-0123456789";
const SECRET: &str = "platform-s3cret-value";

/// A running `bantam serve`.
pub struct Host {
    pub bantam: Bantam,
    public: SocketAddr,
    admin: String,
}

impl Host {
    /// `bantam serve` on free ports with its data in `data`.
    fn start(data: &Path) -> Self {
        Self::start_with(data, &[], &[])
    }

    /// `bantam serve` as [`Host::start`], with more flags and environment.
    pub fn start_with(data: &Path, flags: &[&str], env: &[(&str, &str)]) -> Self {
        let data_arg = data.to_str().unwrap();
        let mut args = vec![
            "serve",
            "--admin-token",
            TOKEN,
            "--admin-listen",
            "127.0.0.1:0",
            "--data-dir",
            data_arg,
        ];
        args.extend(flags);
        let bantam = Bantam::spawn(data.parent().unwrap(), &args, env)
            .unwrap_or_else(|output| panic!("bantam serve did not start:\n{output}"));
        let output = bantam.wait_for_output("Admin API http://");
        let admin = output
            .split("Admin API ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no admin address in:\n{output}"))
            .trim_end_matches("/v1")
            .to_string();
        let public = bantam.base.trim_start_matches("http://").parse().unwrap();
        Self { bantam, public, admin }
    }

    /// `bantam <args>` against this host's admin API.
    fn cli(&self, dir: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_bantam"))
            .args(args)
            .current_dir(dir)
            .env("BANTAM_ADMIN_URL", &self.admin)
            .env("BANTAM_ADMIN_TOKEN", TOKEN)
            .env("NO_COLOR", "1")
            .output()
            .expect("running bantam")
    }

    /// `bantam deploy` of the app in `dir`, which must succeed; its stdout.
    pub fn deploy(&self, dir: &Path, args: &[&str]) -> String {
        let mut all = vec!["deploy"];
        all.extend(args);
        let output = self.cli(dir, &all);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "bantam {all:?} failed:\n{text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        text
    }

    /// A client that reaches `host` (an app's host name) on this server.
    fn client(&self, hosts: &[&str]) -> reqwest::Client {
        let mut builder = reqwest::Client::builder().no_proxy();
        for host in hosts {
            builder = builder.resolve(host, self.public);
        }
        builder.build().unwrap()
    }

    /// `GET http://<host>:<port><path>`: status and body.
    pub async fn get(&self, host: &str, path: &str) -> (u16, String) {
        let url = format!("http://{host}:{}{path}", self.public.port());
        let response = self
            .client(&[host])
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// An admin API request with the token: status and body.
    async fn admin(&self, method: reqwest::Method, path: &str) -> (u16, String) {
        let response = reqwest::Client::new()
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// `PATCH /v1/apps/<name>` with `settings`: status and body.
    async fn patch(&self, name: &str, settings: serde_json::Value) -> (u16, String) {
        let response = reqwest::Client::new()
            .patch(format!("{}/v1/apps/{name}", self.admin))
            .bearer_auth(TOKEN)
            .json(&settings)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// `POST http://<host>:<port><path>` with `body`: status and body.
    async fn post(&self, host: &str, path: &str, body: Vec<u8>) -> (u16, String) {
        let url = format!("http://{host}:{}{path}", self.public.port());
        let response = self.client(&[host]).post(&url).body(body).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// `bantam apps info <name>`: its stdout.
    fn info(&self, name: &str) -> String {
        let output = self.cli(Path::new("."), &["apps", "info", name]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// The probe, answering `?env=VERSION` with `version`.
fn probe_app(version: &str) -> TestApp {
    TestApp::new(&format!(
        "spin_manifest_version = 2\n\
         [application]\n\
         name = \"Probe\"\n\
         version = \"{version}.0.0\"\n\
         [[trigger.http]]\n\
         route = \"/...\"\n\
         component = \"probe\"\n\
         [component.probe]\n\
         source = \"{{p3}}\"\n\
         environment = {{ VERSION = \"{version}\" }}\n"
    ))
}

/// The capabilities guest with the default key-value store, the default
/// SQLite database and a secret.
fn caps_app() -> TestApp {
    TestApp::new(
        r#"
spin_manifest_version = 2
[application]
name = "caps"
[variables]
api_key = { required = true, secret = true }
[[trigger.http]]
route = "/..."
component = "caps"
[component.caps]
source = "{caps_p3}"
key_value_stores = ["default"]
sqlite_databases = ["default"]
variables = { key = "{{ api_key }}" }
"#,
    )
}

/// A registry holding the probe answering `?env=VERSION` with `pulled`:
/// the registry, the app, and its reference there.
fn pushed_probe() -> (crate::services::Registry, TestApp, String) {
    let registry = crate::services::Registry::start();
    let app = probe_app("pulled");
    let reference = registry.reference("probe:v1");
    let cache = tempfile::tempdir().unwrap();
    let env = [("BANTAM_REGISTRY_CACHE_DIR", cache.path().to_str().unwrap())];
    let pushed =
        crate::developer::bantam_env(app.path(), &["registry", "push", "-k", &reference], &env);
    assert!(pushed.status.success(), "{}", crate::developer::text(&pushed));
    (registry, app, reference)
}

fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    (root, data)
}

#[tokio::test(flavor = "multi_thread")]
async fn apps_are_deployed_routed_by_host_isolated_and_restored() {
    let (_root, data) = data_dir();
    let host = Host::start(&data);

    // The API wants the token; the dashboard page itself holds no data.
    let status = |url: String, token: Option<&'static str>| async move {
        let mut request = reqwest::Client::new().get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap().status().as_u16()
    };
    assert_eq!(status(format!("{}/v1/apps", host.admin), None).await, 401);
    assert_eq!(status(format!("{}/v1/apps", host.admin), Some("wrong")).await, 401);
    assert_eq!(status(format!("{}/metrics", host.admin), None).await, 401);
    assert_eq!(status(format!("{}/", host.admin), None).await, 200);

    let alpha = probe_app("one");
    let shown = host.deploy(alpha.path(), &["--name", "alpha", "--domain", "Alpha.Example.com"]);
    assert!(shown.contains(&format!("http://alpha.localhost:{}/", host.public.port())), "{shown}");
    let caps = caps_app();
    for name in ["beta", "gamma"] {
        host.deploy(caps.path(), &["--name", name, "--variable", &format!("api_key={SECRET}")]);
    }

    // Routed by host name, custom domain included; unknown hosts get 404.
    assert_eq!(host.get("alpha.localhost", "/?env=VERSION").await, (200, "one".into()));
    assert_eq!(host.get("alpha.example.com", "/?env=VERSION").await, (200, "one".into()));
    let (status, body) = host.get("nobody.localhost", "/").await;
    assert_eq!((status, body.as_str()), (404, "no app is deployed at nobody.localhost\n"));

    // Each app has its own default store; the secret reaches the guest.
    let set = "/?cap=kv&store=default&op=set&key=owner&value=beta";
    assert_eq!(host.get("beta.localhost", set).await, (200, "ok".into()));
    let get = "/?cap=kv&store=default&op=get&key=owner";
    assert_eq!(host.get("beta.localhost", get).await, (200, "beta".into()));
    let (_, gamma_sees) = host.get("gamma.localhost", get).await;
    assert!(!gamma_sees.contains("beta"), "gamma read beta's store: {gamma_sees}");
    assert_eq!(host.get("beta.localhost", "/?cap=var&name=key").await, (200, SECRET.into()));
    // So is its default SQLite database.
    let sql = |statement: &str| format!("/?cap=sqlite&db=default&sql={statement}");
    for statement in
        ["CREATE%20TABLE%20owners(name)", "INSERT%20INTO%20owners%20VALUES(%27beta%27)"]
    {
        let (status, body) = host.get("beta.localhost", &sql(statement)).await;
        assert_eq!(status, 200, "{body}");
    }
    let select = sql("SELECT%20name%20FROM%20owners");
    let (status, rows) = host.get("beta.localhost", &select).await;
    assert_eq!((status, rows.lines().nth(1)), (200, Some("t:beta")), "{rows}");
    let (status, gamma_rows) = host.get("gamma.localhost", &select).await;
    assert_eq!(status, 500, "gamma has no table of beta's: {gamma_rows}");
    assert!(gamma_rows.contains("no such table"), "{gamma_rows}");
    // And its own guest output.
    assert_eq!(host.get("alpha.localhost", "/?stdout=alpha-only").await.0, 200);
    let logs = |name: &'static str| {
        let host = &host;
        async move { host.admin(reqwest::Method::GET, &format!("/v1/apps/{name}/logs")).await.1 }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !logs("alpha").await.contains("alpha-only") {
        assert!(std::time::Instant::now() < deadline, "alpha's output never reached its log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!logs("beta").await.contains("alpha-only"));

    // The admin API and the CLI name the variable, never its value.
    let (status, listed) = host.admin(reqwest::Method::GET, "/v1/apps").await;
    assert_eq!(status, 200);
    let (_, details) = host.admin(reqwest::Method::GET, "/v1/apps/beta").await;
    let info = host.cli(caps.path(), &["apps", "info", "beta"]);
    let info = String::from_utf8_lossy(&info.stdout).into_owned();
    for text in [&listed, &details, &info] {
        assert!(!text.contains(SECRET), "a secret value was shown:\n{text}");
    }
    assert!(info.contains("api_key (secret): set"), "{info}");
    let apps: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let names: Vec<&str> =
        apps.as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "beta", "gamma"]);

    // An update under continuous load: every request answered, first by
    // the old release, then by the new one.
    let stop = Arc::new(AtomicBool::new(false));
    let client = host.client(&["alpha.localhost"]);
    let url = format!("http://alpha.localhost:{}/?env=VERSION", host.public.port());
    let mut load = Vec::new();
    for _ in 0..4 {
        let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let answer = match client.get(&url).send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        format!("{status} {}", response.text().await.unwrap_or_default())
                    }
                    Err(error) => format!("error {error}"),
                };
                answers.push(answer);
            }
            answers
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let updated = probe_app("two");
    let dir = updated.path().to_path_buf();
    let shown = {
        let host = &host;
        tokio::task::block_in_place(|| host.deploy(&dir, &["--name", "alpha"]))
    };
    assert!(shown.contains("deployment 2"), "{shown}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for task in load {
        answers.extend(task.await.unwrap());
    }
    let bad: Vec<_> = answers.iter().filter(|a| *a != "200 one" && *a != "200 two").collect();
    assert!(bad.is_empty(), "requests failed during the update: {bad:?}");
    assert!(answers.iter().any(|a| a == "200 one") && answers.iter().any(|a| a == "200 two"));
    assert_eq!(
        host.get("alpha.example.com", "/?env=VERSION").await,
        (200, "two".into()),
        "domains kept"
    );

    // A deploy that cannot be prepared is refused, and the app serves on.
    let broken = TestApp::single("probe", "source = \"{missing_import}\"");
    let output = host.cli(broken.path(), &["deploy", "--name", "alpha"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("app `alpha` cannot be deployed") && stderr.contains("probe"),
        "{stderr}"
    );
    assert_eq!(host.get("alpha.localhost", "/?env=VERSION").await, (200, "two".into()));

    // A domain belongs to one app.
    let output =
        host.cli(caps.path(), &["deploy", "--name", "gamma", "--domain", "alpha.example.com"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("alpha.example.com already belongs to app `alpha`"), "{stderr}");

    // A name must be a host name label: refused before any upload.
    let output = host.cli(caps.path(), &["deploy", "--name", "Bad_Name"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`Bad_Name` is not a valid app name"), "{stderr}");

    // The history tells what happened.
    let (_, details) = host.admin(reqwest::Method::GET, "/v1/apps/alpha").await;
    let details: serde_json::Value = serde_json::from_str(&details).unwrap();
    let outcomes: Vec<&str> = details["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes.len(), 3, "{details}");
    assert!(outcomes[0].starts_with("failed: "), "{outcomes:?}");
    assert_eq!(&outcomes[1..], ["live", "replaced"]);

    // Metrics count what was served, by app, component and status.
    let (status, metrics) = host.admin(reqwest::Method::GET, "/metrics").await;
    assert_eq!(status, 200);
    let served = |app: &str| {
        metrics
            .lines()
            .find_map(|line| {
                line.strip_prefix(&format!(
                    "bantam_requests_total{{app=\"{app}\",component=\"caps\",status=\"200\"}} "
                ))
            })
            .and_then(|count| count.parse::<u64>().ok())
    };
    assert_eq!(served("beta"), Some(6), "{metrics}");
    assert_eq!(served("gamma"), Some(1), "{metrics}");
    let alpha_ok = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "bantam_requests_total{app=\"alpha\",component=\"probe\",status=\"200\"} ",
            )
        })
        .and_then(|count| count.parse::<usize>().ok())
        .unwrap_or_default();
    assert!(alpha_ok > answers.len(), "{alpha_ok} counted, {} sent under load", answers.len());
    assert!(metrics.contains(
        "bantam_instantiation_duration_seconds_count{app=\"alpha\",component=\"probe\"}"
    ));
    assert!(metrics.contains("bantam_instances_in_flight{app=\"alpha\",component=\"probe\"} 0"));

    // Delete: the host name goes, and so does the app's data.
    let output = host.cli(caps.path(), &["apps", "delete", "gamma"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(host.get("gamma.localhost", "/").await.0, 404);
    assert!(!data.join("apps/gamma").exists());
    assert!(data.join("apps/beta").exists());

    // After a restart every app serves again, with its state.
    drop(host);
    let host = Host::start(&data);
    assert_eq!(host.get("alpha.localhost", "/?env=VERSION").await, (200, "two".into()));
    assert_eq!(host.get("alpha.example.com", "/?env=VERSION").await, (200, "two".into()));
    assert_eq!(host.get("beta.localhost", get).await, (200, "beta".into()));
    assert_eq!(host.get("beta.localhost", "/?cap=var&name=key").await, (200, SECRET.into()));
    assert_eq!(host.get("beta.localhost", &select).await.1.lines().nth(1), Some("t:beta"));
    assert_eq!(host.get("gamma.localhost", "/").await.0, 404);
    let list = host.cli(caps.path(), &["apps", "list"]);
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(list.starts_with("NAME") && list.contains("alpha") && list.contains("beta"), "{list}");
    assert!(!list.contains("gamma"), "{list}");
}

/// The cell texts of the rows `selector` picks on the page.
async fn rows(browser: &Browser, selector: &str) -> Vec<Vec<String>> {
    let selector = serde_json::to_string(selector).unwrap();
    let rows = browser
        .eval(&format!(
            "[...document.querySelectorAll({selector})].map((row) => [...row.cells].map((c) => c.textContent))"
        ))
        .await;
    serde_json::from_value(rows).unwrap()
}

/// The dashboard in a real headless browser: it signs in with the token
/// from its link, lists the apps with their status and traffic, opens the
/// app the link names (history, limits, guest output), and renders.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_shows_the_apps_in_a_browser() {
    let (_root, data) = data_dir();
    let host = Host::start(&data);
    let app = probe_app("one");
    host.deploy(app.path(), &["--name", "shop", "--max-memory", "64MiB"]);
    for _ in 0..5 {
        assert_eq!(host.get("shop.localhost", "/?stdout=hello-dashboard").await.0, 200);
    }
    let browser = Browser::start().await;
    browser.open(&format!("{}/#token={TOKEN}&app=shop", host.admin)).await;
    browser
        .wait_for("document.getElementById('logs').textContent.includes('hello-dashboard')", "shop")
        .await;
    assert_eq!(browser.eval("location.hash").await, "", "the token left the address bar");
    let shop = rows(&browser, "tr[data-app=shop]").await;
    assert_eq!(shop.len(), 1, "{shop:?}");
    assert_eq!(shop[0][..6], ["shop", "serving", "1", "shop.localhost", "/... → probe", "5"]);
    assert!(browser.text().await.contains("1 app · updated"));
    // The app opened from the link: its history, limits and guest output.
    assert_eq!(browser.eval("document.getElementById('detail-title').textContent").await, "shop");
    let history = rows(&browser, "#history tbody tr").await;
    assert_eq!([&history[0][0], &history[0][2], &history[0][4]], ["1", "bundle", "live"]);
    let limits = rows(&browser, "#limits tbody tr").await;
    assert!(
        limits.contains(
            &["max-memory", "64MiB", "this app", "use the host's"].map(String::from).to_vec()
        ),
        "{limits:?}"
    );
    assert!(
        limits.contains(&["request-timeout", "60s", "host default", ""].map(String::from).to_vec()),
        "{limits:?}"
    );
    let logs = browser.eval("document.getElementById('logs').textContent").await;
    assert!(logs.as_str().unwrap().contains("[probe]\nhello-dashboard\n"), "{logs}");

    // Live traffic: the rate and latency columns fill in and the rate
    // chart draws its line (pixels of its colour) while requests arrive.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (client, stop) = (host.client(&["shop.localhost"]), stop.clone());
        let url = format!("http://shop.localhost:{}/?status=200", host.public.port());
        tokio::spawn(async move {
            let mut pace = tokio::time::interval(Duration::from_millis(10));
            for _ in 0..3000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                pace.tick().await;
                assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
            }
        })
    };
    let row = "document.querySelector('tr[data-app=shop]').cells";
    let rate_line = "(() => { const c = document.getElementById('rate-chart'); \
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0; \
        for (let i = 0; i < d.length; i += 4) if (d[i] === 11 && d[i + 1] === 107 && d[i + 2] === 203) n++; \
        return n; })()";
    browser
        .wait_for(
            &format!(
                "parseFloat({row}[6].textContent) > 0 && {row}[7].textContent.endsWith(' ms') \
                 && {row}[8].textContent.endsWith(' ms') && {rate_line} > 50"
            ),
            "the request rate, latency and chart",
        )
        .await;
    browser.screenshot().await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
}

/// The dashboard's actions, as a user takes them in a real browser: sign
/// in by typing the token, deploy an app from a registry with limits of
/// its own, open it, give one limit back to the host's flag, delete it
/// (answering the confirmation).
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_deploys_and_deletes_an_app_in_a_browser() {
    let (_registry, _app, reference) = pushed_probe();
    let (_root, data) = data_dir();
    let host = Host::start(&data);
    let browser = Browser::start().await;
    browser.open(&format!("{}/", host.admin)).await;

    // A wrong token is refused and the form stays; the right one opens
    // the (empty) host.
    let signed_in = "!document.getElementById('content').hidden";
    browser.type_into("#token", "not-the-token").await;
    browser.click("#login-form button").await;
    browser
        .wait_for(
            "!document.getElementById('login').hidden && document.getElementById('status').textContent === 'the token was refused'",
            "the wrong token to be refused",
        )
        .await;
    browser.type_into("#token", TOKEN).await;
    browser.click("#login-form button").await;
    browser
        .wait_for(
            &format!(
                "{signed_in} && document.getElementById('status').textContent.startsWith('0 apps')"
            ),
            "signing in",
        )
        .await;

    // Deploy from the registry, with a request timeout of its own.
    browser.type_into("#deploy-name", "pulled").await;
    browser.type_into("#deploy-reference", &reference).await;
    browser.click("#deploy-insecure").await;
    browser.click("details.limits summary").await;
    browser.type_into("[data-limit=request_timeout]", "7s").await;
    browser.type_into("[data-limit=max_instances_per_component]", "20").await;
    browser.click("#deploy-form button").await;
    browser
        .wait_for("document.querySelector('tr[data-app=pulled] td.serving')", "the app's row")
        .await;
    let message = browser.eval("document.getElementById('message').textContent").await;
    assert!(
        message
            .as_str()
            .unwrap()
            .starts_with("Deployed pulled (deployment 1): http://pulled.localhost:"),
        "{message}"
    );
    assert_eq!(host.get("pulled.localhost", "/?env=VERSION").await, (200, "pulled".into()));

    // Open it: where it came from, and its limits.
    browser.click("tr[data-app=pulled]").await;
    browser
        .wait_for(
            "document.getElementById('detail-title').textContent === 'pulled' && document.querySelectorAll('#limits tbody tr').length > 0",
            "the app's details",
        )
        .await;
    let history = rows(&browser, "#history tbody tr").await;
    assert_eq!(history.len(), 1, "{history:?}");
    assert!(history[0][2].starts_with(&format!("oci:{reference}@sha256:")), "{history:?}");
    assert_eq!(history[0][4], "live");
    let limits = rows(&browser, "#limits tbody tr").await;
    for expected in [
        ["request-timeout", "7s", "this app", "use the host's"],
        ["max-instances-per-component", "20", "this app", "use the host's"],
        ["max-memory", "256MiB", "host default", ""],
    ] {
        assert!(
            limits.contains(&expected.map(String::from).to_vec()),
            "{expected:?} in {limits:?}"
        );
    }
    browser.screenshot().await;

    // The request timeout back to the host's: a new deployment of the
    // same app, the other limit of its own kept.
    browser.click("#limits button[data-reset=request-timeout]").await;
    browser
        .wait_for(
            "document.getElementById('history').tBodies[0].rows.length === 2",
            "the reset's deployment",
        )
        .await;
    assert_eq!(
        browser.eval("document.getElementById('message').textContent").await,
        "pulled follows the host's request-timeout again (deployment 2)"
    );
    let limits = rows(&browser, "#limits tbody tr").await;
    for expected in [
        ["request-timeout", "60s", "host default", ""],
        ["max-instances-per-component", "20", "this app", "use the host's"],
    ] {
        assert!(
            limits.contains(&expected.map(String::from).to_vec()),
            "{expected:?} in {limits:?}"
        );
    }
    let history = rows(&browser, "#history tbody tr").await;
    assert!(
        history.iter().any(|row| row[0] == "2" && row[2] == "settings" && row[4] == "live"),
        "{history:?}"
    );

    // Delete it, confirming.
    browser.click("#delete").await;
    browser.wait_for("!document.querySelector('tr[data-app=pulled]')", "the app's row to go").await;
    assert_eq!(browser.dialogs(), ["Delete app pulled and all its data?"]);
    assert_eq!(
        browser.eval("document.getElementById('message').textContent").await,
        "Deleted pulled"
    );
    assert_eq!(browser.eval("document.getElementById('detail').hidden").await, true);
    let (status, body) = host.get("pulled.localhost", "/").await;
    assert_eq!((status, body.as_str()), (404, "no app is deployed at pulled.localhost\n"));
}

/// Each app is held to its own limits, the host's flags standing for those
/// its deploys do not set; they are kept across updates and restarts,
/// changed by PATCH, reset to the host's by a deploy or PATCH, and a
/// memory limit past the host's is refused.
#[tokio::test(flavor = "multi_thread")]
async fn apps_have_their_own_limits() {
    let (_root, data) = data_dir();
    let host_flags = ["--max-memory", "64MiB"];
    let host = Host::start_with(&data, &host_flags, &[]);
    let app = probe_app("one");
    let strict = [
        "--name",
        "strict",
        "--request-timeout",
        "1s",
        "--max-memory",
        "16MiB",
        "--max-request-body-size",
        "1KiB",
    ];
    host.deploy(app.path(), &strict);
    host.deploy(app.path(), &["--name", "roomy"]);

    // What each app's own limits do, beside a neighbour on the host's.
    let big = "/?big=20000000";
    let strict_memory_and_body = async |host: &Host| {
        assert_eq!(host.get("strict.localhost", big).await, (500, String::new()), "16MiB");
        let (status, body) = host.get("roomy.localhost", big).await;
        assert_eq!((status, body.len()), (200, 20_000_000), "the host's 64MiB");
        let upload = vec![b'x'; 2048];
        let refused = (413, "request body larger than 1024 bytes\n".to_string());
        assert_eq!(host.post("strict.localhost", "/?echo", upload.clone()).await, refused);
        assert_eq!(host.post("roomy.localhost", "/?echo", upload).await.0, 200);
    };
    let slow = "/?sleep-ms=2000";
    let (strict_slow, roomy_slow) =
        tokio::join!(host.get("strict.localhost", slow), host.get("roomy.localhost", slow));
    assert_eq!(strict_slow, (504, "request timed out\n".into()));
    assert_eq!(roomy_slow, (200, "slept 2000".into()));
    strict_memory_and_body(&host).await;

    let info = host.info("strict");
    for line in ["request-timeout: 1s\n", "max-memory: 16MiB\n", "max-request-body-size: 1KiB\n"] {
        assert!(info.contains(line), "{line} in:\n{info}");
    }
    assert!(info.contains("max-instances-per-component: 1000 (the host's)\n"), "{info}");
    assert!(host.info("roomy").contains("max-memory: 64MiB (the host's)\n"));

    // More memory than the host's slots hold is refused, naming both.
    let output = host.cli(app.path(), &["deploy", "--name", "huge", "--max-memory", "1GiB"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("400 Bad Request: app `huge`: --max-memory 1GiB is more than this host allows: its --max-memory is 64MiB"),
        "{stderr}"
    );
    assert_eq!(host.get("huge.localhost", "/").await.0, 404);
    let (status, body) =
        host.patch("strict", serde_json::json!({ "limits": { "max_memory": "128MiB" } })).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("--max-memory 128MiB is more than this host allows"), "{body}");
    let (status, body) =
        host.patch("strict", serde_json::json!({ "limits": { "max_stack_size": "2MiB" } })).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("the stack size is the host's"), "{body}");

    // An update without limit flags keeps them.
    let updated = probe_app("two");
    host.deploy(updated.path(), &["--name", "strict"]);
    assert_eq!(host.get("strict.localhost", "/?env=VERSION").await, (200, "two".into()));
    assert_eq!(host.get("strict.localhost", slow).await.0, 504);
    strict_memory_and_body(&host).await;

    // PATCH changes only the limits it names.
    let (status, body) =
        host.patch("strict", serde_json::json!({ "limits": { "request_timeout": "10s" } })).await;
    assert_eq!(status, 200, "{body}");
    let shown: serde_json::Value = serde_json::from_str(&body).unwrap();
    let limit = |name: &str| {
        shown["limits"].as_array().unwrap().iter().find(|l| l["name"] == name).cloned().unwrap()
    };
    assert_eq!(
        limit("request-timeout"),
        serde_json::json!({ "name": "request-timeout", "value": "10s", "set": true })
    );
    assert_eq!(
        limit("max-memory"),
        serde_json::json!({ "name": "max-memory", "value": "16MiB", "set": true })
    );
    assert_eq!(host.get("strict.localhost", slow).await, (200, "slept 2000".into()));
    strict_memory_and_body(&host).await;

    // After a restart, each app has its limits again.
    drop(host);
    let host = Host::start_with(&data, &host_flags, &[]);
    assert_eq!(host.get("strict.localhost", slow).await, (200, "slept 2000".into()));
    strict_memory_and_body(&host).await;
    assert!(host.info("strict").contains("request-timeout: 10s\n"));

    // A reset limit follows the host's flag again; the others are kept.
    let shown = host.deploy(updated.path(), &["--name", "strict", "--reset-limit", "max-memory"]);
    assert!(shown.contains("max-memory: 64MiB (the host's)\n"), "{shown}");
    assert!(shown.contains("request-timeout: 10s\n"), "{shown}");
    let (status, body) = host.get("strict.localhost", big).await;
    assert_eq!((status, body.len()), (200, 20_000_000), "the host's 64MiB again");
    assert_eq!(host.post("strict.localhost", "/?echo", vec![b'x'; 2048]).await.0, 413);

    // An unknown name is refused, listing the known ones; so is the stack
    // size, which is the host's alone.
    let known = "name one of request-timeout, max-memory, max-request-body-size, max-response-body-size, max-instances-per-component, max-outbound-connections, max-store-size, or `all`";
    let output =
        host.cli(updated.path(), &["deploy", "--name", "strict", "--reset-limit", "max-cpu"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("there is no limit `max-cpu` to reset: {known}")), "{stderr}");
    let (status, body) =
        host.patch("strict", serde_json::json!({ "reset_limits": ["max_cpu"] })).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains(&format!("there is no limit `max_cpu` to reset: {known}")), "{body}");
    let (status, body) =
        host.patch("strict", serde_json::json!({ "reset_limits": ["max-stack-size"] })).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains(&format!("no limit `max-stack-size` to reset: {known}")), "{body}");

    // PATCH resets every one.
    let (status, body) = host.patch("strict", serde_json::json!({ "reset_limits": ["all"] })).await;
    assert_eq!(status, 200, "{body}");
    let shown: serde_json::Value = serde_json::from_str(&body).unwrap();
    for limit in shown["limits"].as_array().unwrap() {
        assert_eq!(limit["set"], false, "{limit}");
    }
    assert_eq!(host.post("strict.localhost", "/?echo", vec![b'x'; 2048]).await.0, 200);

    // After a restart with other flags, the reset limits follow those.
    drop(host);
    let host = Host::start_with(&data, &["--max-memory", "64MiB", "--request-timeout", "1s"], &[]);
    let info = host.info("strict");
    assert!(info.contains("request-timeout: 1s (the host's)\n"), "{info}");
    assert!(info.contains("max-memory: 64MiB (the host's)\n"), "{info}");
    assert_eq!(host.get("strict.localhost", slow).await, (504, "request timed out\n".into()));
}

/// A deploy the host pulls from a registry, then a change of its domains
/// alone; a malformed upload is refused with the reason. The host logs in
/// JSON.
#[tokio::test(flavor = "multi_thread")]
async fn apps_deploy_from_a_registry_and_change_settings() {
    let (_registry, app, reference) = pushed_probe();

    let (_root, data) = data_dir();
    let host = Host::start_with(&data, &[], &[("BANTAM_LOG_FORMAT", "json")]);
    let shown = host.deploy(app.path(), &["--from-registry", &reference, "-k", "--name", "shop"]);
    let output = host.bantam.wait_for_output("deployment 1 is live");
    let line = output.lines().find(|l| l.contains("deployment 1 is live")).unwrap();
    let logged: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    assert_eq!(logged["level"], "INFO");
    assert_eq!(logged["message"], "app `shop`: deployment 1 is live");
    assert!(shown.contains("Deployed `shop` (deployment 1)"), "{shown}");
    assert_eq!(host.get("shop.localhost", "/?env=VERSION").await, (200, "pulled".into()));

    let response = reqwest::Client::new()
        .patch(format!("{}/v1/apps/shop", host.admin))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "domains": ["shop.example.org"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(host.get("shop.example.org", "/?env=VERSION").await, (200, "pulled".into()));

    let (_, details) = host.admin(reqwest::Method::GET, "/v1/apps/shop").await;
    let details: serde_json::Value = serde_json::from_str(&details).unwrap();
    let history = details["history"].as_array().unwrap();
    assert_eq!(history[0]["source"], "settings");
    let pulled = history[1]["source"].as_str().unwrap();
    assert!(pulled.starts_with(&format!("oci:{reference}@sha256:")), "{pulled}");

    let response = reqwest::Client::new()
        .put(format!("{}/v1/apps/junk", host.admin))
        .bearer_auth(TOKEN)
        .header("content-type", "application/gzip")
        .body("not a bundle")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body = response.text().await.unwrap();
    assert!(body.contains("bad bundle: not a gzipped tar"), "{body}");
    assert_eq!(host.get("junk.localhost", "/").await.0, 404);
}
