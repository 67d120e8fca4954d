//! Hello world on `wasi:http/incoming-handler@0.2.0` with the Rust spin-sdk
//! 5.2, as its `http-rust` template wrote it. The benchmark's hello-world
//! guest for the older SDKs.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(_request: Request) -> impl IntoResponse {
    Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body("Hello World!\n")
        .build()
}
