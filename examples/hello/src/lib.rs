//! The quick-start app: a Rust spin-sdk 7 component answering every route.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_service;

/// Says hello, and which path it was asked for.
#[http_service]
async fn hello(request: Request) -> impl IntoResponse {
    let path = request
        .headers()
        .get("spin-path-info")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("/")
        .to_owned();
    Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body(format!("Hello, Bantam! You asked for {path}\n"))
        .unwrap()
}
