//! What the probe guests do, independent of the SDK that calls it: the
//! first `key=value` pair of the query string picks the behaviour.
//!
//! - no query: 200 with JSON `{method, uri, headers, body, sdk}`
//! - `status=N`: that status, body `status N`
//! - `panic=msg`: panics with `msg`
//! - `file=/path`: the file's contents, 404/500 `error: ...`
//! - `list=/dir`: the directory's entry names, one a line
//! - `env=NAME`: the variable's value, or 404 `unset`
//! - `stdout=text`: prints `text` to stdout and `err: text` to stderr
//! - `sleep-ms=N`: sleeps N ms, body `slept N`
//! - `loop`: computes forever without calling the host
//! - `recurse=N`: recurses N calls deep on the WebAssembly stack
//! - `flood=N`: prints N lines of 100 bytes to stdout
//! - `echo`: the request body back
//! - `big=N`: N bytes of `x`
//! - `served`: how many requests this instance has served, this one
//!   included (`served N`)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// A response for the SDK glue to send.
pub struct ProbeResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

fn respond(status: u16, body: impl Into<Vec<u8>>) -> ProbeResponse {
    ProbeResponse { status, content_type: "text/plain", body: body.into() }
}

/// Handle one request.
pub fn handle(
    sdk: &str,
    method: &str,
    uri: &str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> ProbeResponse {
    // Requests this instance has served, this one included.
    static SERVED: AtomicU64 = AtomicU64::new(0);
    let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
    let query = uri.split_once('?').map(|(_, q)| q).unwrap_or("");
    let first = query.split('&').next().unwrap_or("");
    let (key, value) = first.split_once('=').unwrap_or((first, ""));
    let value = percent_decode(value);
    match key {
        "" => {
            let mut map: BTreeMap<String, String> = BTreeMap::new();
            for (name, value) in headers {
                map.entry(name.to_lowercase())
                    .and_modify(|v| {
                        v.push_str(", ");
                        v.push_str(&value);
                    })
                    .or_insert(value);
            }
            let json = serde_json::json!({
                "method": method,
                "uri": uri,
                "headers": map,
                "body": String::from_utf8_lossy(&body),
                "sdk": sdk,
            });
            ProbeResponse {
                status: 200,
                content_type: "application/json",
                body: json.to_string().into_bytes(),
            }
        }
        "status" => {
            let status: u16 = value.parse().unwrap_or(400);
            respond(status, format!("status {status}"))
        }
        "panic" => panic!("{value}"),
        "file" => match std::fs::read_to_string(&value) {
            Ok(contents) => respond(200, contents),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                respond(404, format!("error: {e}"))
            }
            Err(e) => respond(500, format!("error: {e}")),
        },
        "list" => match std::fs::read_dir(&value) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                respond(200, names.join("\n"))
            }
            Err(e) => respond(500, format!("error: {e}")),
        },
        "env" => match std::env::var(&value) {
            Ok(v) => respond(200, v),
            Err(_) => respond(404, "unset"),
        },
        "stdout" => {
            println!("{value}");
            eprintln!("err: {value}");
            respond(200, "logged")
        }
        "sleep-ms" => {
            let ms: u64 = value.parse().unwrap_or(0);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            respond(200, format!("slept {ms}"))
        }
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "flood" => {
            let lines: usize = value.parse().unwrap_or(0);
            for i in 0..lines {
                println!("{i:08} {}", "x".repeat(90));
            }
            respond(200, format!("printed {lines} lines"))
        }
        "recurse" => {
            let depth: u64 = value.parse().unwrap_or(0);
            recurse(depth);
            respond(200, format!("depth {depth}"))
        }
        "echo" => respond(200, body),
        // 1 unless the host reuses instances.
        "served" => respond(200, format!("served {served}")),
        "big" => respond(200, vec![b'x'; value.parse().unwrap_or(0)]),
        other => respond(400, format!("unknown probe `{other}`")),
    }
}

/// Recurse `depth` calls deep on the WebAssembly stack itself (no local
/// whose address is taken, so nothing goes to Rust's shadow stack in
/// linear memory), in a way the optimiser cannot turn into a loop.
fn recurse(depth: u64) -> u64 {
    if depth == 0 { 0 } else { recurse(std::hint::black_box(depth - 1)).wrapping_mul(3) ^ depth }
}

/// The query string's `key=value` pairs, percent-decoded (a later
/// repeat of a key wins).
pub fn query_params(uri: &str) -> BTreeMap<String, String> {
    let query = uri.split_once('?').map(|(_, q)| q).unwrap_or("");
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

/// SQL parameters from the guests' text form: comma-separated `i:42`,
/// `r:1.5`, `t:text`, `b:<hex>` or `null`.
pub fn sql_params(text: &str) -> Vec<SqlParam> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once(':') {
            Some(("i", v)) => SqlParam::Integer(v.parse().unwrap_or(0)),
            Some(("r", v)) => SqlParam::Real(v.parse().unwrap_or(0.0)),
            Some(("t", v)) => SqlParam::Text(v.to_string()),
            Some(("b", v)) => SqlParam::Blob(
                (0..v.len() / 2)
                    .map(|i| u8::from_str_radix(&v[2 * i..2 * i + 2], 16).unwrap_or(0))
                    .collect(),
            ),
            _ => SqlParam::Null,
        })
        .collect()
}

/// One SQL value, independent of the SDK's own type.
pub enum SqlParam {
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
    Null,
}

impl SqlParam {
    /// The text form `sql_params` reads.
    pub fn show(&self) -> String {
        match self {
            SqlParam::Integer(i) => format!("i:{i}"),
            SqlParam::Real(r) => format!("r:{r}"),
            SqlParam::Text(t) => format!("t:{t}"),
            SqlParam::Blob(b) => {
                format!("b:{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())
            }
            SqlParam::Null => "null".to_string(),
        }
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(())
                {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A query's answer as the capability guests render it: `name:Type`
/// columns on the first line, then one line per row of `|`-separated
/// values, in the WIT's shape without the generated Debug's type prefixes.
pub fn render_rows<C: std::fmt::Debug, V: std::fmt::Debug>(
    columns: &[(String, C)],
    rows: &[Vec<V>],
) -> String {
    let mut lines = vec![
        columns.iter().map(|(name, ty)| format!("{name}:{ty:?}")).collect::<Vec<_>>().join(","),
    ];
    for row in rows {
        lines.push(row.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join("|"));
    }
    let text = lines.join("\n");
    ["DbDataType::", "DbValue::"].iter().fold(text, |text, prefix| text.replace(prefix, ""))
}
