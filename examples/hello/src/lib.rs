//! The quick-start app: a Rust spin-sdk 7 component answering every route,
//! counting visits per path in the default key-value store (embedded
//! SQLite at `.spin/sqlite_key_value.db`, kept across restarts).

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::{http_service, key_value};

/// Says hello, which path it was asked for, and how often.
#[http_service]
async fn hello(request: Request) -> impl IntoResponse {
    let path = request
        .headers()
        .get("spin-path-info")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("/")
        .to_owned();
    let visits = match count_visit(&path).await {
        Ok(n) => format!(" (visit {n})"),
        Err(error) => format!(" (visits not counted: {error:?})"),
    };
    Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body(format!("Hello, Bantam! You asked for {path}{visits}\n"))
        .unwrap()
}

/// Add one to `path`'s counter in the default store; the new count.
async fn count_visit(path: &str) -> Result<u64, key_value::Error> {
    let store = key_value::Store::open_default().await?;
    let key = format!("visits:{path}");
    let previous = match store.get(&key).await? {
        Some(bytes) => String::from_utf8_lossy(&bytes).parse().unwrap_or(0),
        None => 0,
    };
    let count = previous + 1;
    store.set(&key, count.to_string().as_bytes()).await?;
    Ok(count)
}
