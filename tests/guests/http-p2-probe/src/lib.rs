//! The probe on `wasi:http/incoming-handler@0.2.0`, built with the Rust
//! spin-sdk 5.2.
//!
//! It takes the raw `IncomingRequest` rather than the SDK's `Request`: the
//! latter keeps headers in a map, so a repeated header would lose all but
//! one value and the probe could not show what the host really sent.

use spin_sdk::http::{IncomingRequest, IntoResponse, Response};
use spin_sdk::http_component;

#[http_component]
async fn handle(request: IncomingRequest) -> anyhow::Result<impl IntoResponse> {
    let headers = request
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
        .collect();
    let method = request.method().to_string();
    let uri = request.uri();
    let body = request.into_body().await?;
    let response = probe_logic::handle("spin-sdk-5", &method, &uri, headers, body);
    Ok(Response::builder()
        .status(response.status)
        .header("content-type", response.content_type)
        .body(response.body)
        .build())
}
