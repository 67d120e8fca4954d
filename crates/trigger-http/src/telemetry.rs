//! Request traces: one OpenTelemetry server span per routed request, a
//! child of the caller's W3C `traceparent` when it sent one, and that
//! span's context passed on as `traceparent` in the guest's outbound
//! HTTP requests (service chaining included), so a trace follows a
//! request through Bantam and on to what it calls.
//!
//! Off unless the process installs an exporter and calls [`enable`]
//! (`bantam` does when `OTEL_EXPORTER_OTLP_ENDPOINT` is set): the request
//! path then does not even look at the headers.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue, global};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Start tracing requests with the global tracer provider and text-map
/// propagator, which the caller has installed.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// The span of one request, ended with [`RequestSpan::end`].
pub(crate) struct RequestSpan {
    context: Context,
}

impl RequestSpan {
    /// Start the span of a request matched to `route` of `component`, or
    /// nothing when tracing is off.
    pub(crate) fn start(
        parts: &http::request::Parts,
        route: &str,
        app: &str,
        component: &str,
    ) -> Option<Self> {
        if !ENABLED.load(Ordering::Relaxed) {
            return None;
        }
        let parent = global::get_text_map_propagator(|propagator| {
            propagator.extract(&Headers(&parts.headers))
        });
        let tracer = global::tracer("bantam");
        let span = tracer
            .span_builder(format!("{} {route}", parts.method))
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", parts.method.to_string()),
                KeyValue::new("url.path", parts.uri.path().to_string()),
                KeyValue::new("http.route", route.to_string()),
                KeyValue::new("bantam.app", app.to_string()),
                KeyValue::new("bantam.component", component.to_string()),
            ])
            .start_with_context(&tracer, &parent);
        Some(Self { context: parent.with_span(span) })
    }

    /// The `traceparent` (and `tracestate`) the guest's outbound requests
    /// carry: this span as their parent.
    pub(crate) fn outbound_headers(&self) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&self.context, &mut HeadersMut(&mut headers))
        });
        headers
    }

    /// End the span with the response's status.
    pub(crate) fn end(self, status: u16) {
        let span = self.context.span();
        span.set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        if status >= 500 {
            span.set_status(Status::error(format!("status {status}")));
        }
        span.end();
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut http::HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) =
            (http::HeaderName::try_from(key), http::HeaderValue::try_from(value))
        {
            self.0.insert(name, value);
        }
    }
}
