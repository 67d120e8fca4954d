use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_service;

/// A simple HTTP component.
#[http_service]
async fn handle(request: Request) -> impl IntoResponse {
    println!("Handling request to {:?}", request.uri());
    Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body("Hello World!\n".to_string())
        .unwrap()
}
