//! The probe on `wasi:http/incoming-handler@0.2.0`, built with the Rust
//! spin-sdk 5.2.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(request: Request) -> anyhow::Result<impl IntoResponse> {
    let headers = request
        .headers()
        .map(|(name, value)| {
            (name.to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned())
        })
        .collect();
    let method = request.method().to_string();
    let response = probe_logic::handle(
        "spin-sdk-5",
        &method,
        request.uri(),
        headers,
        request.body().to_vec(),
    );
    Ok(Response::builder()
        .status(response.status)
        .header("content-type", response.content_type)
        .body(response.body)
        .build())
}
