//! Outbound databases from spin-sdk guests against real servers started
//! by the test harness: PostgreSQL through `spin:postgres@4.2`, MariaDB
//! through `spin:mysql@3` (spin-sdk 7) and `fermyon:spin/mysql@2`
//! (spin-sdk 5.2).

use crate::services::{Mariadb, Postgres};
use crate::support::{Bantam, TestApp, get};

const APP: &str = r#"
spin_manifest_version = 2
[application]
name = "databases"

[variables]
pg_port = { default = "{PG_PORT}" }
mysql_port = { default = "{MYSQL_PORT}" }

[[trigger.http]]
route = "/p3/..."
component = "p3"

[[trigger.http]]
route = "/p2/..."
component = "p2"

[[trigger.http]]
route = "/ungranted/..."
component = "ungranted"

[component.p3]
source = "{caps_p3}"
variables = { port = "{{ pg_port }}", mysql = "{{ mysql_port }}" }
allowed_outbound_hosts = ["postgres://127.0.0.1:{{ port }}", "mysql://127.0.0.1:{{ mysql }}"]

[component.p2]
source = "{caps_p2}"
variables = { mysql = "{{ mysql_port }}", pg = "{{ pg_port }}" }
allowed_outbound_hosts = ["mysql://127.0.0.1:{{ mysql }}", "postgres://127.0.0.1:{{ pg }}"]

[component.ungranted]
source = "{caps_p3}"
"#;

/// `op` with `sql` and `args` through component `guest`, on PostgreSQL.
async fn pg(
    bantam: &Bantam,
    guest: &str,
    url: &str,
    op: &str,
    sql: &str,
    args: &str,
) -> (u16, String) {
    database(bantam, (guest, "pg"), url, op, sql, args).await
}

/// `op` with `sql` and `args` through component `guest`, on MySQL.
async fn mysql(
    bantam: &Bantam,
    guest: &str,
    url: &str,
    op: &str,
    sql: &str,
    args: &str,
) -> (u16, String) {
    database(bantam, (guest, "mysql"), url, op, sql, args).await
}

/// Ask `guest` to use capability `cap`; values are percent-encoded.
async fn database(
    bantam: &Bantam,
    (guest, cap): (&str, &str),
    url: &str,
    op: &str,
    sql: &str,
    args: &str,
) -> (u16, String) {
    let encode = |text: &str| {
        text.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    // `pg3-<op>`: the same through spin:postgres@3.0.0.
    let (cap, op) = match op.strip_prefix("pg3-") {
        Some(op) => ("pg3", op),
        None => (cap, op),
    };
    let path = format!(
        "/{guest}?cap={cap}&url={}&op={op}&sql={}&args={}",
        encode(url),
        encode(sql),
        encode(args)
    );
    get(&bantam.url(&path)).await
}

/// An ungranted component's answer: connection-failed, as on Spin, and a
/// log line naming the entry to add.
fn assert_refused((status, body): (u16, String), bantam: &Bantam, scheme: &str, port: u16) {
    assert_eq!(status, 500);
    assert!(body.starts_with("error: connection-failed: "), "{body}");
    let output = bantam.wait_for_output(&format!("connection to {scheme}://"));
    let entry = format!("{scheme}://127.0.0.1:{port}");
    assert!(
        output.contains(&format!(
            "component `ungranted`: connection to {entry} denied: add \"{entry}\" to its allowed_outbound_hosts"
        )),
        "{output}"
    );
}

/// A result of 100 MiB: the guest's error, not the host's memory.
fn assert_capped((status, body): (u16, String)) {
    assert_eq!(status, 500);
    assert!(
        body.starts_with("error: query-failed: ")
            && body.contains("the result is larger than 64 MiB; ask for fewer rows or columns"),
        "{body}"
    );
}

#[tokio::test]
async fn postgres_round_trips_every_common_type_where_granted() {
    let server = Postgres::start();
    let url = server.url();
    let app = TestApp::new(
        &APP.replace("{PG_PORT}", &server.port.to_string()).replace("{MYSQL_PORT}", "1"),
    );
    let bantam = app.up(&[]);

    let ok = |(status, body): (u16, String)| {
        assert_eq!(status, 200, "{body}");
        body
    };
    let create = "CREATE TABLE things (id int4 PRIMARY KEY, small int2, big int8, ok bool, \
                  ratio float8, name text, data bytea, day date, at timestamptz, \
                  tag uuid, doc jsonb, price numeric, counts int4[], span interval)";
    assert_eq!(ok(pg(&bantam, "p3", &url, "execute", create, "").await), "0");
    let insert =
        "INSERT INTO things VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";
    let args = "i32:1,i16:-2,i64:9000000000,bool:true,f64:1.5,t:héllo,hex:00ff,date:2024-02-29,\
                ts:1700000000,uuid:67e55044-10b1-426f-9247-bb680e5fe0c8,json:{\"a\":[1]},\
                dec:12.50,ai32:1;null;3,iv:1500000;2;3";
    assert_eq!(ok(pg(&bantam, "p3", &url, "execute", insert, args).await), "1");
    let insert_nulls = "INSERT INTO things (id, name) VALUES ($1, $2)";
    assert_eq!(ok(pg(&bantam, "p3", &url, "execute", insert_nulls, "i32:2,null").await), "1");

    let body = ok(pg(&bantam, "p3", &url, "query", "SELECT * FROM things ORDER BY id", "").await);
    let mut lines = body.lines();
    assert_eq!(
        lines.next().unwrap(),
        "id:Int32,small:Int16,big:Int64,ok:Boolean,ratio:Floating64,name:Str,data:Binary,day:Date,\
         at:Timestamp,tag:Uuid,doc:Jsonb,price:Decimal,counts:ArrayInt32,span:Interval"
    );
    let first: Vec<&str> = lines.next().unwrap().split('|').collect();
    assert_eq!(
        first,
        [
            "Int32(1)",
            "Int16(-2)",
            "Int64(9000000000)",
            "Boolean(true)",
            "Floating64(1.5)",
            "Str(\"héllo\")",
            "Binary([0, 255])",
            "Date((2024, 2, 29))",
            "Timestamp(1700000000)",
            "Uuid(\"67e55044-10b1-426f-9247-bb680e5fe0c8\")",
            "Jsonb([123, 34, 97, 34, 58, 91, 49, 93, 125])",
            "Decimal(\"12.50\")",
            "ArrayInt32([Some(1), None, Some(3)])",
            "Interval(Interval { micros: 1500000, days: 2, months: 3 })",
        ]
    );
    let second = lines.next().unwrap();
    assert!(second.starts_with("Int32(2)|DbNull|DbNull|"), "{second}");

    // fermyon:spin/postgres@2 (spin-sdk 5.2's `pg`): the same table in
    // 2.0's smaller set of types; a date is unsupported there.
    // Parameter types must match the columns, as on Spin: 2.0 has only
    // 64-bit integers here, so the statement casts.
    let (status, body) = pg(&bantam, "p2", &url, "execute", insert_nulls, "i:3,t:x").await;
    assert_eq!(status, 500);
    assert!(
        body.contains("cannot convert between the Rust type `i64` and the Postgres type `int4`"),
        "{body}"
    );
    let insert_p2 = "INSERT INTO things (id, name, data) VALUES ($1::int8, $2, $3)";
    assert_eq!(ok(pg(&bantam, "p2", &url, "execute", insert_p2, "i:3,t:from p2,b:0a").await), "1");
    let select =
        "SELECT id, small, ok, ratio, name, data, day FROM things WHERE id <> $1::int8 ORDER BY id";
    let body = ok(pg(&bantam, "p2", &url, "query", select, "i:2").await);
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(
        lines[0],
        "id:Int32,small:Int16,ok:Boolean,ratio:Floating64,name:Str,data:Binary,day:Other"
    );
    assert_eq!(
        lines[1],
        "Int32(1)|Int16(-2)|Boolean(true)|Floating64(1.5)|Str(\"héllo\")|Binary([0, 255])|Unsupported"
    );
    assert_eq!(lines[2], "Int32(3)|DbNull|DbNull|DbNull|Str(\"from p2\")|Binary([10])|DbNull");
    let (status, body) = pg(&bantam, "p2", &url, "query", "SELECT * FROM nowhere", "").await;
    assert_eq!(status, 500);
    assert!(
        body.starts_with("error: query-failed: ") && body.contains("\"nowhere\" does not exist"),
        "{body}"
    );

    // spin:postgres@3.0.0 (spin-sdk 5.2's `pg3`): dates and timestamps
    // too, and a parameter of 3.0's date type.
    let select = "SELECT id, day, at, tag FROM things WHERE day = $1 ORDER BY id";
    let body = ok(pg(&bantam, "p2", &url, "pg3-query", select, "t:d:2024-2-29").await);
    assert_eq!(
        body,
        "id:Int32,day:Date,at:Timestamp,tag:Other\nInt32(1)|Date((2024, 2, 29))|Timestamp(1700000000)|Unsupported"
    );

    // The server's own error, structured.
    let (status, body) = pg(&bantam, "p3", &url, "query", "SELECT * FROM nowhere", "").await;
    assert_eq!(status, 500);
    assert_eq!(
        body,
        "error: query-failed: db-error ERROR 42P01: relation \"nowhere\" does not exist"
    );
    let (status, body) = pg(&bantam, "p3", &url, "execute", insert_nulls, "i32:1,null").await;
    assert_eq!(status, 500);
    assert!(body.starts_with("error: query-failed: db-error ERROR 23505: duplicate key"), "{body}");
    let (status, body) = pg(&bantam, "p3", &url, "execute", insert_nulls, "i32:3,uuid:nope").await;
    assert_eq!(status, 500);
    assert!(body.starts_with("error: bad-parameter: "), "{body}");
    let huge = "SELECT repeat('x', 1048576) FROM generate_series(1, 100)";
    assert_capped(pg(&bantam, "p3", &url, "query", huge, "").await);
    // Bantam opens the socket itself (to hold replies to a budget), and
    // still checks the session as the address asks.
    let read_write = format!("{url}?target_session_attrs=read-write");
    assert_eq!(
        ok(pg(&bantam, "p3", &read_write, "query", "SELECT 1", "").await),
        "?column?:Int32\nInt32(1)"
    );
    let read_only = format!("{url}?target_session_attrs=read-only");
    let (status, body) = pg(&bantam, "p3", &read_only, "query", "SELECT 1", "").await;
    assert_eq!(status, 500);
    assert!(body.contains("database is not read only"), "{body}");
    // Rows of no columns hold no bytes of values, but each costs the
    // host a row: they count too.
    let empty_rows = "SELECT FROM generate_series(1, 3000000)";
    assert_capped(pg(&bantam, "p3", &url, "query", empty_rows, "").await);

    assert_refused(
        pg(&bantam, "ungranted", &url, "query", "SELECT 1", "").await,
        &bantam,
        "postgres",
        server.port,
    );

    // The server going away is an error for the guest, not the host.
    drop(server);
    let (status, body) = pg(&bantam, "p3", &url, "query", "SELECT 1", "").await;
    assert_eq!(status, 500);
    assert!(body.starts_with("error: connection-failed: "), "{body}");
    assert_eq!(get(&bantam.url("/p3?cap=nothing")).await.0, 500);
}

#[tokio::test]
async fn mysql_through_both_interface_versions_where_granted() {
    let server = Mariadb::start();
    let app = TestApp::new(
        &APP.replace("{PG_PORT}", "1").replace("{MYSQL_PORT}", &server.port.to_string()),
    );
    let bantam = app.up(&[]);
    let ok = |(status, body): (u16, String)| {
        assert_eq!(status, 200, "{body}");
        body
    };
    let root = server.url("");
    assert_eq!(ok(mysql(&bantam, "p3", &root, "execute", "CREATE DATABASE app", "").await), "ok");
    let url = server.url("app");
    let create = "CREATE TABLE pets (id INT PRIMARY KEY, age TINYINT UNSIGNED, weight DOUBLE, \
                  name VARCHAR(40), photo BLOB, big BIGINT, born DATE)";
    assert_eq!(ok(mysql(&bantam, "p3", &url, "execute", create, "").await), "ok");
    let insert = "INSERT INTO pets VALUES (?, ?, ?, ?, ?, ?, ?)";
    let row1 = "i:1,i:3,r:4.5,t:Rex,b:00ff,i:-9000000000,t:2020-02-29";
    assert_eq!(ok(mysql(&bantam, "p3", &url, "execute", insert, row1).await), "ok");
    let row2 = "i:2,null,null,t:Zoë,null,null,null";
    assert_eq!(ok(mysql(&bantam, "p2", &url, "execute", insert, row2).await), "ok");

    let select = "SELECT * FROM pets WHERE id >= ? ORDER BY id";
    let expected_columns =
        "id:Int32,age:Uint8,weight:Floating64,name:Str,photo:Binary,big:Int64,born:Str";
    for guest in ["p3", "p2"] {
        let body = ok(mysql(&bantam, guest, &url, "query", select, "i:1").await);
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines[0], expected_columns, "{guest}");
        assert_eq!(
            lines[1],
            "Int32(1)|Uint8(3)|Floating64(4.5)|Str(\"Rex\")|Binary([0, 255])|Int64(-9000000000)|Str(\"2020-02-29\")",
            "{guest}"
        );
        assert_eq!(lines[2], "Int32(2)|DbNull|DbNull|Str(\"Zoë\")|DbNull|DbNull|DbNull", "{guest}");
    }

    // The server's error, as query-failed.
    for guest in ["p3", "p2"] {
        let (status, body) =
            mysql(&bantam, guest, &url, "query", "SELECT * FROM nowhere", "").await;
        assert_eq!(status, 500, "{guest}");
        assert!(
            body.starts_with("error: query-failed: ") && body.contains("nowhere"),
            "{guest}: {body}"
        );
    }
    let huge = "SELECT REPEAT('x', 1048576) FROM seq_1_to_100";
    assert_capped(mysql(&bantam, "p3", &url, "query", huge, "").await);
    // The server's Unix socket is no granted host, though it is right there.
    let via_socket = format!("{url}?socket={}", server.socket().display());
    let (status, body) = mysql(&bantam, "p3", &via_socket, "query", "SELECT 1", "").await;
    assert_eq!(status, 500);
    assert!(body.contains("Unix sockets are not available to components"), "{body}");

    assert_refused(
        mysql(&bantam, "ungranted", &url, "query", "SELECT 1", "").await,
        &bantam,
        "mysql",
        server.port,
    );
    // The server going away is the guest's error, not the host's.
    drop(server);
    let (status, body) = mysql(&bantam, "p2", &url, "query", "SELECT 1", "").await;
    assert_eq!(status, 500);
    assert!(body.starts_with("error: connection-failed: "), "{body}");
}
