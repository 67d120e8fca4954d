//! The probe on `wasi:http/handler@0.3.0`, built with the Rust spin-sdk 7.

use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

#[http_service]
async fn handle(request: Request) -> impl IntoResponse {
    let method = request.method().to_string();
    let uri = request.uri().to_string();
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (name.to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned())
        })
        .collect();
    let body = request.into_body().bytes().await.unwrap_or_default().to_vec();
    let response = probe_logic::handle("spin-sdk-7", &method, &uri, headers, body);
    spin_sdk::http::Response::builder()
        .status(response.status)
        .header("content-type", response.content_type)
        .body(spin_sdk::http::FullBody::new(bytes::Bytes::from(response.body)))
        .unwrap()
}
