//! A plain `wasi:http/incoming-handler` component with no Spin SDK, the
//! kind `wasmtime serve` runs.
//!
//! It answers `hello from plain wasi:http`; with the query `after=loop` it
//! then computes forever, and with `after=park` it waits for an hour: the
//! work a 0.2 handler can do after its response, before it returns.

use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Plain;

impl wasi::exports::http::incoming_handler::Guest for Plain {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let after = request
            .path_with_query()
            .and_then(|path| path.split_once("after=").map(|(_, after)| after.to_string()));
        let headers = Fields::from_list(&[("x-guest".to_string(), b"plain".to_vec())]).unwrap();
        let response = OutgoingResponse::new(headers);
        let body = response.body().unwrap();
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().unwrap();
        stream.blocking_write_and_flush(b"hello from plain wasi:http").unwrap();
        drop(stream);
        OutgoingBody::finish(body, None).unwrap();
        match after.as_deref() {
            Some("loop") => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Some("park") => {
                wasi::clocks::monotonic_clock::subscribe_duration(3_600_000_000_000).block();
            }
            _ => {}
        }
    }
}

wasi::http::proxy::export!(Plain);
