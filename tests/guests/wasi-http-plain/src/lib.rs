//! A plain `wasi:http/incoming-handler` component with no Spin SDK, the
//! kind `wasmtime serve` runs.
//!
//! It answers `hello from plain wasi:http`; with the query `after=loop` it
//! then computes forever, and with `after=park` it waits for an hour: the
//! work a 0.2 handler can do after its response, before it returns. With
//! the query `stream` it answers with the request body, streamed back as
//! it arrives, 64 KiB at most held at a time.

use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::{InputStream, OutputStream, StreamError};

struct Plain;

impl wasi::exports::http::incoming_handler::Guest for Plain {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        if request.path_with_query().is_some_and(|path| path.ends_with("?stream")) {
            return stream_back(request, out);
        }
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

/// Answer with the request's body, chunk by chunk as it comes, the way an
/// SDK's streaming body does it: each chunk is read into the guest's
/// memory and written out of it.
fn stream_back(request: IncomingRequest, out: ResponseOutparam) {
    let incoming = request.consume().unwrap();
    let input = incoming.stream().unwrap();
    let response = OutgoingResponse::new(Fields::new());
    let body = response.body().unwrap();
    ResponseOutparam::set(out, Ok(response));
    let output = body.write().unwrap();
    // A failed read (the client gone, or the body over its limit) or
    // write ends the body unfinished, which the client sees as cut off.
    if copy(&input, &output).is_ok() {
        drop((input, output));
        IncomingBody::finish(incoming);
        OutgoingBody::finish(body, None).unwrap();
    }
}

fn copy(input: &InputStream, output: &OutputStream) -> Result<(), StreamError> {
    loop {
        let chunk = match input.blocking_read(64 * 1024) {
            Ok(chunk) => chunk,
            Err(StreamError::Closed) => return output.blocking_flush(),
            Err(failed) => return Err(failed),
        };
        let mut rest = chunk.as_slice();
        while !rest.is_empty() {
            let ready = output.check_write()? as usize;
            if ready == 0 {
                output.subscribe().block();
                continue;
            }
            let (now, later) = rest.split_at(ready.min(rest.len()));
            output.write(now)?;
            rest = later;
        }
    }
}

wasi::http::proxy::export!(Plain);
