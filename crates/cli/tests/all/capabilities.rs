//! Host capabilities through real spin-sdk guests: key-value, SQLite and
//! variables, granted and refused, on the embedded stores and on a real
//! Redis.

use crate::services::Redis;
use crate::support::{TestApp, get};

/// Two components, one per SDK generation; `{P3_EXTRA}` and `{P2_EXTRA}`
/// add to their tables (their grants).
const APP: &str = r#"
spin_manifest_version = 2
[application]
name = "caps"

[variables]
greeting = { default = "hello" }
api_key = { required = true, secret = true }
region = { default = "eu" }

[[trigger.http]]
route = "/p3/..."
component = "p3"

[[trigger.http]]
route = "/p2/..."
component = "p2"

[component.p3]
source = "{caps_p3}"
variables = { message = "{{ greeting }}, world", key = "{{ api_key }}", where = "in {{region}}" }
{P3_EXTRA}

[component.p2]
source = "{caps_p2}"
variables = { message = "{{ greeting }} from p2" }
{P2_EXTRA}
"#;

/// Both default stores.
const DEFAULTS: &str = "key_value_stores = [\"default\"]\nsqlite_databases = [\"default\"]";

fn app(p3_extra: &str, p2_extra: &str) -> TestApp {
    TestApp::new(&APP.replace("{P3_EXTRA}", p3_extra).replace("{P2_EXTRA}", p2_extra))
}

const SECRET: &str = "s3cret-value";

/// Start the app with the required secret given through the environment.
fn up(app: &TestApp, extra: &[&str]) -> crate::support::Bantam {
    app.up_with_env(extra, &[("SPIN_VARIABLE_API_KEY", SECRET)])
        .unwrap_or_else(|output| panic!("bantam up did not start:\n{output}"))
}

/// `GET <path>` on the app: status and body.
async fn call(bantam: &crate::support::Bantam, path: &str) -> (u16, String) {
    get(&bantam.url(path)).await
}

async fn ok(bantam: &crate::support::Bantam, path: &str) -> String {
    let (status, body) = call(bantam, path).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

#[tokio::test]
async fn key_value_is_shared_by_granted_components_and_refused_to_others() {
    let app = app(DEFAULTS, DEFAULTS);
    let bantam = up(&app, &[]);
    assert!(
        bantam.output().contains("Storing default key-value data to \".spin/sqlite_key_value.db\""),
        "{}",
        bantam.output()
    );

    // spin:key-value@3 (spin-sdk 7) writes, fermyon:spin/key-value@2
    // (spin-sdk 5.2) and wasi:keyvalue read the same default store.
    assert_eq!(ok(&bantam, "/p3?cap=kv&store=default&op=set&key=colour&value=blue").await, "ok");
    assert_eq!(ok(&bantam, "/p2?cap=kv&store=default&op=set&key=shape&value=round").await, "ok");
    assert_eq!(ok(&bantam, "/p2?cap=kv&store=default&op=get&key=colour").await, "blue");
    assert_eq!(ok(&bantam, "/p3?cap=kv&store=default&op=get&key=shape").await, "round");
    assert_eq!(ok(&bantam, "/p3?cap=wasi-kv&store=default&op=get&key=colour").await, "blue");
    assert_eq!(ok(&bantam, "/p2?cap=wasi-kv&store=default&op=get&key=shape").await, "round");
    assert_eq!(ok(&bantam, "/p3?cap=kv&store=default&op=keys").await, "colour,shape");
    assert_eq!(ok(&bantam, "/p3?cap=kv&store=default&op=exists&key=colour").await, "true");
    assert_eq!(ok(&bantam, "/p2?cap=kv&store=default&op=delete&key=colour").await, "ok");
    assert_eq!(ok(&bantam, "/p2?cap=kv&store=default&op=exists&key=colour").await, "false");
    assert_eq!(ok(&bantam, "/p3?cap=kv&store=default&op=get&key=colour").await, "<none>");
    assert_eq!(ok(&bantam, "/p2?cap=kv&store=default&op=keys").await, "shape");

    // A label the component was not granted: access-denied, in each
    // interface's own error, and a log line saying why.
    for path in [
        "/p3?cap=kv&store=secrets&op=get&key=x",
        "/p2?cap=kv&store=secrets&op=get&key=x",
        "/p3?cap=wasi-kv&store=secrets&op=get&key=x",
        "/p2?cap=wasi-kv&store=secrets&op=get&key=x",
    ] {
        assert_eq!(call(&bantam, path).await, (500, "error: access-denied".into()), "{path}");
    }
    let output = bantam.wait_for_output("key-value store `secrets` denied");
    assert!(output.contains("component `p2`: key-value store `secrets` denied"), "{output}");

    // Durable across a restart of `bantam up`.
    drop(bantam);
    let again = up(&app, &["--key-value", "seed=planted"]);
    assert_eq!(ok(&again, "/p3?cap=kv&store=default&op=get&key=shape").await, "round");
    assert_eq!(ok(&again, "/p2?cap=kv&store=default&op=get&key=seed").await, "planted");
    assert!(app.path().join(".spin/sqlite_key_value.db").is_file());
}

#[tokio::test]
async fn a_component_without_a_grant_gets_access_denied() {
    // p2 is granted nothing at all here.
    let app = app(DEFAULTS, "");
    let bantam = up(&app, &[]);
    assert_eq!(
        call(&bantam, "/p2?cap=kv&store=default&op=get&key=x").await,
        (500, "error: access-denied".into())
    );
    assert_eq!(
        call(&bantam, "/p2?cap=sqlite&db=default&sql=SELECT%201").await,
        (500, "error: access-denied".into())
    );
    assert_eq!(
        call(&bantam, "/p2?cap=sqlite3&db=default&sql=SELECT%201").await,
        (500, "error: access-denied".into())
    );
    // The granted neighbour is unaffected.
    assert_eq!(ok(&bantam, "/p3?cap=kv&store=default&op=set&key=x&value=1").await, "ok");
}

#[tokio::test]
async fn stores_from_the_runtime_config_never_see_each_others_keys() {
    let app = app(
        r#"key_value_stores = ["default", "left", "right"]"#,
        r#"key_value_stores = ["right"]"#,
    )
    .file(
        "rc.toml",
        "[key_value_store.left]\ntype = \"spin\"\npath = \"shared.db\"\n\n\
             [key_value_store.right]\ntype = \"spin\"\npath = \"shared.db\"\n",
    );
    let bantam = up(&app, &["--runtime-config-file", "rc.toml"]);
    assert!(
        bantam.output().contains("[key_value_store.left: spin] [key_value_store.right: spin]"),
        "{}",
        bantam.output()
    );
    assert_eq!(ok(&bantam, "/p3?cap=kv&store=left&op=set&key=k&value=from-left").await, "ok");
    assert_eq!(ok(&bantam, "/p3?cap=kv&store=right&op=get&key=k").await, "<none>");
    assert_eq!(ok(&bantam, "/p3?cap=kv&store=default&op=get&key=k").await, "<none>");
    assert_eq!(ok(&bantam, "/p2?cap=kv&store=right&op=set&key=k&value=from-right").await, "ok");
    assert_eq!(ok(&bantam, "/p3?cap=kv&store=left&op=get&key=k").await, "from-left");
    assert_eq!(ok(&bantam, "/p3?cap=kv&store=right&op=get&key=k").await, "from-right");
    assert_eq!(
        call(&bantam, "/p2?cap=kv&store=left&op=get&key=k").await,
        (500, "error: access-denied".into())
    );
    assert!(app.path().join("shared.db").is_file(), "paths are relative to the runtime config");
}

#[test]
fn runtime_config_problems_stop_start_up_with_their_location() {
    let malformed = app(r#"key_value_stores = ["default", "cache"]"#, "").file(
        "rc.toml",
        "[key_value_store.cache]\ntype = \"redis\"\nurl = \"redis://x\"\nttl = 5\n",
    );
    let output = malformed.up_with_env(&["--runtime-config-file", "rc.toml"], &[]).err().unwrap();
    assert!(output.contains("rc.toml:1:1:") && output.contains("ttl"), "{output}");

    // A label no runtime config defines.
    let undefined = app(r#"key_value_stores = ["default", "cache"]"#, "");
    let output = undefined.up_with_env(&[], &[("SPIN_VARIABLE_API_KEY", "x")]).err().unwrap();
    assert!(
        output.contains("component `p3` uses key-value store `cache`, which is not defined"),
        "{output}"
    );
}

#[tokio::test]
async fn wasi_keyvalue_atomics_and_batches() {
    let app = app(DEFAULTS, DEFAULTS);
    let bantam = up(&app, &[]);
    let kv = |rest: &str| format!("/p3?cap=wasi-kv&store=default&{rest}");
    assert_eq!(ok(&bantam, &kv("op=increment&key=hits&value=5")).await, "5");
    assert_eq!(ok(&bantam, &kv("op=increment&key=hits&value=-2")).await, "3");
    assert_eq!(ok(&bantam, &kv("op=cas&key=hits&value=done")).await, "swapped 3");
    assert_eq!(ok(&bantam, &kv("op=get&key=hits")).await, "done");
    // Changed between read and swap: the swap fails and nothing is lost.
    assert_eq!(ok(&bantam, &kv("op=cas&key=hits&value=late-race")).await, "cas-failed done");
    assert_eq!(ok(&bantam, &kv("op=get&key=hits")).await, "raced");
    let (status, body) = call(&bantam, &kv("op=increment&key=hits&value=1")).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.starts_with("error: other: ") && body.contains("not an integer"), "{body}");

    assert_eq!(ok(&bantam, &kv("op=set-many&value=a=1,b=2,c=3")).await, "ok");
    assert_eq!(ok(&bantam, &kv("op=get-many&key=a,b,z")).await, "a=1,b=2,z=<none>");
    assert_eq!(ok(&bantam, &kv("op=delete-many&key=a,b")).await, "ok");
    assert_eq!(ok(&bantam, &kv("op=keys")).await, "c,hits");
}

#[tokio::test]
async fn sqlite_through_every_interface_version() {
    let app =
        app(DEFAULTS, DEFAULTS).file("schema.sql", "CREATE TABLE pets (name TEXT, age INTEGER);\n");
    let bantam =
        up(&app, &["--sqlite", "@schema.sql", "--sqlite", "INSERT INTO pets VALUES ('rex', 3)"]);
    assert!(
        bantam.output().contains("Storing default SQLite data to \".spin/sqlite_db.db\""),
        "{}",
        bantam.output()
    );
    let sql = |guest: &str, cap: &str, statement: &str, args: &str| {
        format!("/{guest}?cap={cap}&db=default&sql={}&args={args}", statement.replace(' ', "%20"))
    };

    // Every value type, through spin:sqlite@3.1 (spin-sdk 7, async).
    let insert = "INSERT INTO pets VALUES (?, ?)";
    assert_eq!(ok(&bantam, &sql("p3", "sqlite", insert, "t:tom,i:7")).await, "\nrowid=2 changes=1");
    let create = "CREATE TABLE vals (i, r, t, b, n)";
    ok(&bantam, &sql("p3", "sqlite", create, "")).await;
    let all = "INSERT INTO vals VALUES (?, ?, ?, ?, ?)";
    ok(&bantam, &sql("p3", "sqlite", all, "i:-9007199254740993,r:2.5,t:h%C3%A9llo,b:00ff10,null"))
        .await;
    let expected = "i|r|t|b|n\ni:-9007199254740993|r:2.5|t:héllo|b:00ff10|null";
    assert!(
        ok(&bantam, &sql("p3", "sqlite", "SELECT * FROM vals", "")).await.starts_with(expected)
    );
    // ... the same rows through fermyon:spin/sqlite@2 and spin:sqlite@3.0.
    assert_eq!(ok(&bantam, &sql("p2", "sqlite", "SELECT * FROM vals", "")).await, expected);
    let through_v3_0 =
        ok(&bantam, &sql("p2", "sqlite3", "SELECT name, age FROM pets ORDER BY age", "")).await;
    assert!(through_v3_0.starts_with("name|age\nt:rex|i:3\nt:tom|i:7\n"), "{through_v3_0}");
    let update = ok(&bantam, &sql("p2", "sqlite3", "UPDATE pets SET age = age %2B 1", "")).await;
    assert!(update.ends_with(" changes=2"), "{update}");

    // A guest's transaction is its own, as in Spin, where each `open` is a
    // new SQLite connection: one left open when the guest drops its
    // connection is rolled back, and others' writes do not join it.
    let left_open = "BEGIN;INSERT INTO pets VALUES (%27ghost%27, 1);SELECT count(*) FROM pets";
    assert!(ok(&bantam, &sql("p3", "sqlite", left_open, "")).await.starts_with("count(*)\ni:3\n"));
    let committed = "BEGIN;INSERT INTO pets VALUES (%27kit%27, 1);COMMIT";
    ok(&bantam, &sql("p3", "sqlite", committed, "")).await;
    let names = ok(&bantam, &sql("p2", "sqlite", "SELECT name FROM pets ORDER BY name", "")).await;
    assert_eq!(names, "name\nt:kit\nt:rex\nt:tom");
    // So are its temporary tables: they last for its connection, and the
    // next request starts without them.
    let scratch = "CREATE TEMP TABLE scratch (n);INSERT INTO scratch VALUES (1);\
                   SELECT count(*) FROM scratch";
    for _ in 0..2 {
        assert!(
            ok(&bantam, &sql("p3", "sqlite", scratch, "")).await.starts_with("count(*)\ni:1\n")
        );
    }

    // Errors come back as the WIT's own variants.
    let (status, body) = call(&bantam, &sql("p3", "sqlite", "SELEC 1", "")).await;
    assert_eq!(status, 500);
    assert!(body.starts_with("error: io: ") && body.contains("syntax error"), "{body}");
    assert_eq!(
        call(&bantam, "/p3?cap=sqlite&db=other&sql=SELECT%201").await,
        (500, "error: access-denied".into())
    );
    // Guest SQL reaches no file but its database: no ATTACH of another.
    let outside = app.path().join("outside.db");
    let attach = format!("ATTACH DATABASE %27{}%27 AS outside", outside.display());
    assert_eq!(
        call(&bantam, &sql("p3", "sqlite", &attach, "")).await,
        (500, "error: io: not authorized".into())
    );
    assert!(!outside.exists());

    // Durable across a restart.
    drop(bantam);
    let again = up(&app, &[]);
    let rows =
        ok(&again, &sql("p2", "sqlite", "SELECT name, age FROM pets ORDER BY age", "")).await;
    assert_eq!(rows, "name|age\nt:kit|i:1\nt:rex|i:4\nt:tom|i:8");
}

#[tokio::test]
async fn a_database_fills_to_its_size_limit_and_no_further() {
    let app = app(DEFAULTS, DEFAULTS);
    let bantam = up(&app, &["--max-store-size", "256KiB", "--sqlite", "CREATE TABLE t (b BLOB)"]);
    let insert = "/p3?cap=sqlite&db=default&sql=INSERT%20INTO%20t%20VALUES%20(zeroblob(100000))";
    ok(&bantam, insert).await;
    ok(&bantam, insert).await;
    assert_eq!(
        call(&bantam, insert).await,
        (
            500,
            "error: io: database or disk is full: it may hold at most 256KiB \
             (the max-store-size limit)"
                .into()
        )
    );
    let count = "/p2?cap=sqlite&db=default&sql=SELECT%20count(*)%20FROM%20t";
    assert_eq!(ok(&bantam, count).await, "count(*)\ni:2");
    let file = app.path().join(".spin/sqlite_db.db");
    assert!(std::fs::metadata(&file).unwrap().len() <= 256 << 10);
    // The limit is the host's to lift, not the guest's.
    let lift = "/p3?cap=sqlite&db=default&sql=PRAGMA%20max_page_count%20=%201000000";
    assert_eq!(call(&bantam, lift).await, (500, "error: io: not authorized".into()));
    drop(bantam);
    let unlimited = up(&app, &["--max-store-size", "0"]);
    ok(&unlimited, insert).await;
}

#[tokio::test]
async fn a_runaway_query_ends_with_its_request() {
    let app = app(DEFAULTS, DEFAULTS);
    let bantam = up(&app, &["--request-timeout", "1s", "--sqlite", "CREATE TABLE t (n INTEGER)"]);
    let forever = "/p3?cap=sqlite&db=default&sql=WITH%20RECURSIVE%20c(x)%20AS%20\
                   (SELECT%201%20UNION%20ALL%20SELECT%20x%2B1%20FROM%20c)%20SELECT%20count(*)%20FROM%20c%20\
                   WHERE%20x%20>%20(SELECT%20count(*)%20FROM%20t)";
    assert_eq!(call(&bantam, forever).await.0, 504);
    // Had the query (which reads `t`) gone on, its read lock would keep
    // this write waiting out SQLite's 5 s busy timeout, then fail with
    // "database is locked".
    let started = std::time::Instant::now();
    ok(&bantam, "/p3?cap=sqlite&db=default&sql=INSERT%20INTO%20t%20VALUES%20(1)").await;
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "{:?}", started.elapsed());
}

#[tokio::test]
async fn variables_come_from_flags_then_environment_then_defaults() {
    let app = app(DEFAULTS, DEFAULTS).file("vars.json", r#"{ "region": "from-file" }"#);
    let bantam = app
        .up_with_env(
            &["--variable", "greeting=hi"],
            &[("SPIN_VARIABLE_API_KEY", SECRET), ("SPIN_VARIABLE_GREETING", "from-env")],
        )
        .unwrap();
    // The flag beats the environment; the template adds the rest.
    assert_eq!(ok(&bantam, "/p3?cap=var&name=message").await, "hi, world");
    assert_eq!(ok(&bantam, "/p2?cap=var&name=message").await, "hi from p2");
    assert_eq!(ok(&bantam, "/p3?cap=var&name=key").await, SECRET);
    assert_eq!(ok(&bantam, "/p3?cap=var&name=where").await, "in eu");
    // wasi:config sees the same variables.
    assert_eq!(ok(&bantam, "/p3?cap=config&name=message").await, "hi, world");
    assert_eq!(
        ok(&bantam, "/p3?cap=config").await,
        format!("key={SECRET},message=hi, world,where=in eu")
    );
    assert_eq!(ok(&bantam, "/p2?cap=config&name=nope").await, "<none>");
    // Only the component's own variables are visible, not the app's.
    let (status, body) = call(&bantam, "/p3?cap=var&name=greeting").await;
    assert_eq!(status, 500);
    assert_eq!(body, r#"error: undefined: no variable for "p3"."greeting""#);
    let (status, body) = call(&bantam, "/p2?cap=var&name=Not-Valid").await;
    assert_eq!(status, 500);
    assert!(body.starts_with("error: invalid-name: "), "{body}");
    // A secret never reaches the logs.
    assert!(!bantam.output().contains(SECRET), "{}", bantam.output());
    drop(bantam);

    // The environment beats the default; `@file.json` sets many.
    let bantam = app
        .up_with_env(
            &["--variable", "@vars.json"],
            &[("SPIN_VARIABLE_API_KEY", SECRET), ("SPIN_VARIABLE_GREETING", "from-env")],
        )
        .unwrap();
    assert_eq!(ok(&bantam, "/p3?cap=var&name=message").await, "from-env, world");
    assert_eq!(ok(&bantam, "/p3?cap=var&name=where").await, "in from-file");
}

#[test]
fn a_required_variable_without_a_value_stops_start_up_naming_it() {
    let output = app(DEFAULTS, DEFAULTS).up_with_env(&[], &[]).err().unwrap();
    assert!(
        output.contains(
            "variable `api_key` is required but has no value: pass `--variable api_key=<value>` or set SPIN_VARIABLE_API_KEY"
        ),
        "{output}"
    );

    let bad = TestApp::new(
        &APP.replace("{P3_EXTRA}", DEFAULTS)
            .replace("{P2_EXTRA}", DEFAULTS)
            .replace("where = \"in {{region}}\"", "where = \"in {{ nowhere }}\""),
    );
    let output = bad.up_with_env(&[], &[("SPIN_VARIABLE_API_KEY", SECRET)]).err().unwrap();
    assert!(
        output.contains("component `p3` variable `where` refers to `{{ nowhere }}`, which is not an application variable"),
        "{output}"
    );
    assert!(!output.contains(SECRET));
}

#[tokio::test]
async fn a_redis_key_value_store_survives_redis_going_away() {
    let redis = Redis::start();
    let app = app(r#"key_value_stores = ["default", "cache"]"#, r#"key_value_stores = ["cache"]"#)
        .file(
            "rc.toml",
            &format!("[key_value_store.cache]\ntype = \"redis\"\nurl = \"{}\"\n", redis.url()),
        );
    let bantam = up(&app, &["--runtime-config-file", "rc.toml"]);
    let kv = |guest: &str, rest: &str| format!("/{guest}?cap=kv&store=cache&{rest}");
    assert_eq!(ok(&bantam, &kv("p3", "op=set&key=k1&value=v1")).await, "ok");
    assert_eq!(ok(&bantam, &kv("p2", "op=get&key=k1")).await, "v1");
    assert_eq!(ok(&bantam, &kv("p2", "op=exists&key=k1")).await, "true");
    assert_eq!(ok(&bantam, &kv("p3", "op=keys")).await, "k1");
    assert_eq!(ok(&bantam, "/p3?cap=wasi-kv&store=cache&op=increment&key=n&value=2").await, "2");
    assert_eq!(ok(&bantam, "/p3?cap=wasi-kv&store=cache&op=cas&key=n&value=x").await, "swapped 2");
    assert_eq!(
        ok(&bantam, "/p3?cap=wasi-kv&store=cache&op=cas&key=n&value=y-race").await,
        "cas-failed x"
    );
    // Redis and the default store are separate.
    assert_eq!(ok(&bantam, "/p3?cap=kv&store=default&op=get&key=k1").await, "<none>");

    // Redis goes away: the guest gets the WIT's `other` error, the server
    // keeps serving, and the store works again when Redis is back.
    let port = redis.stop();
    let (status, body) = call(&bantam, &kv("p3", "op=get&key=k1")).await;
    assert_eq!(status, 500, "{body}");
    assert!(body.starts_with("error: other: key-value store `cache`: "), "{body}");
    assert_eq!(ok(&bantam, "/p3?cap=kv&store=default&op=set&key=still&value=up").await, "ok");
    let _redis = Redis::start_on(port);
    let mut recovered = false;
    for _ in 0..50 {
        if call(&bantam, &kv("p3", "op=set&key=k2&value=back")).await.0 == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(recovered, "the store works again once Redis is back:\n{}", bantam.output());
    assert_eq!(ok(&bantam, &kv("p2", "op=get&key=k2")).await, "back");
}

#[tokio::test]
async fn outbound_redis_where_allowed_outbound_hosts_grant_it() {
    let redis = Redis::start();
    let url = redis.url();
    // p3 names the address outright; p2 through a variable template.
    let app = TestApp::new(
        &APP.replace("{P3_EXTRA}", &format!("allowed_outbound_hosts = [\"{url}\"]"))
            .replace(
                "{P2_EXTRA}",
                "allowed_outbound_hosts = [\"redis://{{ redis_host }}\"]\nvariables.redis_host = \"{{ redis_address }}\"",
            )
            .replace(
                "variables = { message = \"{{ greeting }} from p2\" }",
                "",
            )
            .replace(
                "region = { default = \"eu\" }",
                &format!("region = {{ default = \"eu\" }}\nredis_address = {{ default = \"127.0.0.1:{}\" }}", redis.port),
            ),
    );
    let bantam = up(&app, &[]);
    let redis_op = |guest: &str, rest: &str| format!("/{guest}?cap=redis&url={url}&{rest}");

    assert_eq!(ok(&bantam, &redis_op("p3", "op=set&key=greeting&value=hi")).await, "ok");
    assert_eq!(ok(&bantam, &redis_op("p2", "op=get&key=greeting")).await, "hi");
    assert_eq!(ok(&bantam, &redis_op("p3", "op=incr&key=n")).await, "1");
    assert_eq!(ok(&bantam, &redis_op("p2", "op=incr&key=n")).await, "2");
    assert_eq!(ok(&bantam, &redis_op("p3", "op=sadd&key=s&value=a,b,c")).await, "3");
    assert_eq!(ok(&bantam, &redis_op("p3", "op=srem&key=s&value=b")).await, "1");
    assert_eq!(ok(&bantam, &redis_op("p2", "op=smembers&key=s")).await, "a,c");
    assert_eq!(ok(&bantam, &redis_op("p3", "op=publish&key=news&value=x")).await, "ok");
    assert_eq!(
        ok(&bantam, &redis_op("p3", "op=execute&key=APPEND&value=greeting%20!")).await,
        "int:3"
    );
    assert_eq!(ok(&bantam, &redis_op("p2", "op=execute&key=GET&value=greeting")).await, "bin:hi!");
    assert_eq!(
        ok(&bantam, &redis_op("p3", "op=execute&key=MGET&value=greeting%20none")).await,
        "bin:hi!,nil"
    );
    assert_eq!(ok(&bantam, &redis_op("p2", "op=execute&key=SET&value=k%20v")).await, "status:OK");
    assert_eq!(ok(&bantam, &redis_op("p3", "op=del&value=greeting,n,k")).await, "3");
    let (status, body) = call(&bantam, &redis_op("p3", "op=incr&key=s")).await;
    assert_eq!(status, 500);
    assert!(body.starts_with("error: other: ") && body.contains("WRONGTYPE"), "{body}");

    // An address not in allowed_outbound_hosts: invalid-address, as on
    // Spin, and a log line naming the entry to add; nothing connects.
    let elsewhere = crate::services::free_port();
    let denied = format!("/p3?cap=redis&url=redis://127.0.0.1:{elsewhere}&op=get&key=x");
    assert_eq!(call(&bantam, &denied).await, (500, "error: invalid-address".into()));
    let output = bantam.wait_for_output("connection to redis://127.0.0.1");
    assert!(
        output.contains(&format!(
            "component `p3`: connection to redis://127.0.0.1:{elsewhere} denied: add \"redis://127.0.0.1:{elsewhere}\" to its allowed_outbound_hosts"
        )),
        "{output}"
    );
    let (status, body) = call(&bantam, "/p3?cap=redis&url=not-a-url&op=get&key=x").await;
    assert_eq!((status, body.as_str()), (500, "error: invalid-address"));

    // Redis going away is an error for the guest, not for the server.
    let port = redis.stop();
    let (status, body) = call(&bantam, &redis_op("p3", "op=get&key=x")).await;
    assert_eq!(status, 500);
    assert!(body.starts_with("error: other: "), "{body}");
    let _back = Redis::start_on(port);
    assert_eq!(ok(&bantam, &redis_op("p2", "op=set&key=after&value=1")).await, "ok");
}

/// A wildcard grant reaches no loopback address through a name either:
/// `localhost` resolves to loopback, so Redis, MQTT, PostgreSQL and MySQL
/// refuse it after resolving, unless an entry names it.
#[tokio::test]
async fn wildcard_grants_reach_no_loopback_address_through_a_name() {
    let redis = Redis::start();
    let port = redis.port;
    let wildcards = "allowed_outbound_hosts = [\"redis://*:*\", \"mqtt://*:*\", \"postgres://*:*\", \"mysql://*:*\"]";
    let named = format!("allowed_outbound_hosts = [\"redis://localhost:{port}\"]");
    let app = app(wildcards, &named);
    let bantam = up(&app, &[]);
    let refusals = |bantam: &crate::support::Bantam, at_least: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let output = bantam.output();
            // The address check's own message (the grant check's names
            // the URL instead).
            let seen = output.matches("component `p3`: connection to localhost (").count();
            if seen >= at_least || std::time::Instant::now() > deadline {
                return (seen, output);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };

    // The Redis server is there: only the check stands between them.
    let set = |guest: &str| {
        format!("/{guest}?cap=redis&url=redis://localhost:{port}&op=set&key=k&value=v")
    };
    assert_eq!(call(&bantam, &set("p3")).await, (500, "error: invalid-address".into()));
    let (seen, output) = refusals(&bantam, 1);
    assert_eq!(seen, 1, "{output}");
    // An entry naming the host reaches it.
    assert_eq!(ok(&bantam, &set("p2")).await, "ok");

    let paths = [
        format!("/p3?cap=mqtt&url=mqtt://localhost:{port}?client_id=x&key=t&value=v&qos=1"),
        format!("/p3?cap=pg&url=postgres://u@localhost:{port}/db&op=query&sql=select%201"),
        format!("/p3?cap=mysql&url=mysql://u@localhost:{port}/db&op=query&sql=select%201"),
    ];
    for (i, path) in paths.iter().enumerate() {
        let (status, body) = call(&bantam, path).await;
        assert_eq!(status, 500, "{path}: {body}");
        let (seen, output) = refusals(&bantam, i + 2);
        assert_eq!(seen, i + 2, "{path} was not refused by the address check:\n{output}");
    }
}

#[tokio::test]
async fn outbound_mqtt_publishes_at_every_qos_where_allowed() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

    let broker = crate::services::Mosquitto::start();
    let port = broker.port;
    let allowed = format!("allowed_outbound_hosts = [\"mqtt://127.0.0.1:{port}\"]");
    let app = app(&allowed, &allowed);
    let bantam = up(&app, &[]);

    // A subscriber in the test sees what the guests publish.
    let (client, mut events) =
        AsyncClient::new(MqttOptions::new("test-subscriber", "127.0.0.1", port), 16);
    client.subscribe("bantam/#", QoS::ExactlyOnce).await.unwrap();
    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel();
    let subscriber = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    sender.send("subscribed".to_string()).unwrap()
                }
                Ok(Event::Incoming(Packet::Publish(p))) => sender
                    .send(format!("{}={}", p.topic, String::from_utf8_lossy(&p.payload)))
                    .unwrap(),
                Ok(_) => {}
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    });
    assert_eq!(received.recv().await.unwrap(), "subscribed");

    let url = format!("mqtt://127.0.0.1:{port}?client_id");
    for (guest, qos) in [("p3", 0), ("p3", 1), ("p3", 2), ("p2", 0), ("p2", 1), ("p2", 2)] {
        let path = format!(
            "/{guest}?cap=mqtt&url={url}=bantam-{guest}-{qos}&key=bantam/{guest}&value=qos{qos}&qos={qos}"
        );
        assert_eq!(ok(&bantam, &path).await, "published");
        let message =
            tokio::time::timeout(std::time::Duration::from_secs(10), received.recv()).await;
        assert_eq!(message.unwrap().unwrap(), format!("bantam/{guest}=qos{qos}"));
    }

    // Not granted: invalid-address; the broker gone: connection-failed.
    let elsewhere = crate::services::free_port();
    let denied =
        format!("/p3?cap=mqtt&url=mqtt://127.0.0.1:{elsewhere}?client_id=x&key=t&value=v&qos=1");
    assert_eq!(call(&bantam, &denied).await, (500, "error: invalid-address".into()));
    subscriber.abort();
    broker.stop();
    let path = format!("/p2?cap=mqtt&url={url}=gone&key=bantam/x&value=v&qos=1");
    let (status, body) = call(&bantam, &path).await;
    assert_eq!(status, 500);
    assert!(body.starts_with("error: connection-failed: "), "{body}");
}
