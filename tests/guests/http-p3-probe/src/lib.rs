//! The probe on `wasi:http/handler@0.3.0`, built with the Rust spin-sdk 7.
//!
//! Besides the shared behaviours (`probe-logic`), some of this SDK's own:
//!
//! - `stream=N`: 200 with N bytes of `x`, made 64 KiB at a time as the
//!   host takes them (the guest never holds more than one chunk);
//! - `after=loop`: answers 200 `answered`, then computes forever (a task
//!   spawned by the handler, working after the response);
//! - `after=park`: answers 200 `answered`, then waits for an hour.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{BoxBody, IntoResponse, Request, box_body};
use spin_sdk::http_service;
use spin_sdk::wasip3::clocks::monotonic_clock;

#[http_service]
async fn handle(request: Request) -> impl IntoResponse {
    let query = request.uri().query().unwrap_or("");
    if let Some(length) = query.strip_prefix("stream=") {
        let body = Stream { left: length.parse().unwrap_or(0) };
        return spin_sdk::http::Response::builder().status(200).body(box_body(body)).unwrap();
    }
    if let Some(after) = query.strip_prefix("after=") {
        let loops = after == "loop";
        spin_sdk::wasip3::spawn(async move {
            // Let the SDK send the response first.
            monotonic_clock::wait_for(10_000_000).await;
            if loops {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            monotonic_clock::wait_for(3_600_000_000_000).await;
        });
        return respond(200, "text/plain", "answered");
    }
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
    respond(response.status, response.content_type, response.body)
}

fn respond(
    status: u16,
    content_type: &str,
    body: impl Into<Bytes>,
) -> spin_sdk::http::Response<BoxBody> {
    spin_sdk::http::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(box_body(spin_sdk::http::FullBody::new(body.into())))
        .unwrap()
}

/// A body of `left` more bytes of `x`, a chunk each time it is polled.
struct Stream {
    left: usize,
}

impl http_body::Body for Stream {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        static CHUNK: [u8; 64 << 10] = [b'x'; 64 << 10];
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let length = self.left.min(CHUNK.len());
        self.left -= length;
        Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(&CHUNK[..length])))))
    }
}
