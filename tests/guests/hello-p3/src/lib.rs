//! Hello world on `wasi:http/handler@0.3.0` with the Rust spin-sdk 7: what
//! `bantam new -t http-rust` makes, without its per-request `println!`. The
//! benchmark's hello-world guest.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_service;

#[http_service]
async fn handle(_request: Request) -> impl IntoResponse {
    Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body("Hello World!\n".to_string())
        .unwrap()
}
