//! A request to a `wasi:http/incoming-handler@0.2.x` component in a fresh
//! instance, served by calling its `handle` export directly.
//!
//! A 0.2 handler answers through its `response-outparam` and may go on
//! writing the body after that, so the call runs in a task of its own and
//! the response arrives through a channel. wasmtime-wasi-http's
//! `ProxyHandler` does the same through a worker that runs the instance's
//! component-model-async event loop; a 0.2 component never uses that loop,
//! and skipping it is what this path is for. The rules are the same as for
//! every instance (see [`claim`](crate::claim)): the instance is stopped as
//! soon as its request lets go of it, counts under its component's
//! instance limit while it lives, and has the request's deadline.

use std::future::poll_fn;
use std::pin::pin;
use std::sync::Arc;
use std::time::Instant;

use futures::future::{Either, select};
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::handler::{Proxy, Request, Response, WorkerExpiration as _, WorkerStatus};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use super::{InstanceSource, RequestData, log_instance_end};
use crate::claim::Expiry;

/// What a 0.2 guest that returns without answering is told, in wasmtime's
/// words.
const NO_RESPONSE: &str = "guest never invoked `response-outparam::set` method";

/// The instance was stopped because no request held it any more.
#[derive(Debug, thiserror::Error)]
#[error("instance stopped: its request let go of it")]
struct Stopped;

/// The instance failed before its response; its cause has been logged
/// where the instance ended, as for `ProxyHandler`'s workers.
#[derive(Debug, thiserror::Error)]
#[error("the instance failed before its response")]
pub(super) struct InstanceFailed;

/// Serve `request` in a fresh instance of `source`'s component, which
/// exports `wasi:http/incoming-handler@0.2.x`. How the instance ended is logged when it ends
/// (by `log_instance_end`, whichever way the request went); a request
/// whose instance failed before its response gets [`InstanceFailed`], one
/// whose guest returned without a response an error saying so.
pub(super) async fn handle(
    source: &Arc<InstanceSource>,
    request: Request,
    (outbound_headers, claimed): RequestData,
) -> wasmtime::Result<Response> {
    let (mut store, Proxy::P2(proxy), permit) = source.instantiate().await? else {
        // `HttpComponent::new` made its pre-instance from its export.
        return Err(wasmtime::format_err!("not a `wasi:http/incoming-handler` instance"));
    };
    store.data_mut().begin_request(outbound_headers);
    let started = Instant::now();

    let (send, response) = tokio::sync::oneshot::channel();
    let mut http = store.data_mut().http();
    let request = http.new_incoming_request(Scheme::Http, request)?;
    let outparam = http.new_response_outparam(send)?;
    let (expiry, holds) = Expiry::new(None);
    holds.take(claimed);
    let instance_source = Arc::clone(source);
    let task = tokio::spawn(async move {
        let result = {
            let handler = proxy.wasi_http_incoming_handler();
            let call = pin!(handler.call_handle(&mut store, request, outparam));
            let mut expiry = pin!(expiry);
            let stop =
                pin!(poll_fn(|cx| expiry.as_mut().poll(cx, WorkerStatus::Requests, started)));
            match select(call, stop).await {
                Either::Left((result, _)) => result,
                Either::Right(((), _)) => Err(Stopped.into()),
            }
        };
        drop(store);
        drop(permit);
        let failed = result.is_err();
        log_instance_end(&instance_source.pre.id, result, &holds);
        failed
    });
    match response.await {
        Ok(response) => Ok(response?),
        // The guest's store is gone, and the sender in it: the task is over.
        Err(_) => match task.await {
            Ok(false) => Err(wasmtime::format_err!("{NO_RESPONSE}")),
            Ok(true) => Err(InstanceFailed.into()),
            Err(panicked) => Err(wasmtime::format_err!("the instance's task failed: {panicked}")),
        },
    }
}
