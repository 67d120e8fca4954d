//! OpenTelemetry traces over OTLP, configured the standard way:
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL) or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (to which `/v1/traces` is added) turns
//! them on; `OTEL_EXPORTER_OTLP_PROTOCOL` is `http/protobuf` (the
//! default) or `http/json`; `OTEL_SERVICE_NAME` names the service
//! (`bantam`). Spans are batched and sent from a background thread.

use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;

/// Install the exporter if the environment asks for one; the provider,
/// to flush at exit.
pub fn init_from_env() -> Option<SdkTracerProvider> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| {
        var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
    })?;
    let protocol =
        var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"));
    let protocol = match protocol.as_deref() {
        None | Some("http/protobuf") => Protocol::HttpBinary,
        Some("http/json") => Protocol::HttpJson,
        Some(other) => {
            tracing::warn!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported (use http/protobuf or http/json): traces are off"
            );
            return None;
        }
    };
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .with_endpoint(endpoint.clone())
        .build()
    {
        Ok(exporter) => exporter,
        Err(error) => {
            tracing::warn!("cannot export traces to {endpoint}: {error}; traces are off");
            return None;
        }
    };
    let service = var("OTEL_SERVICE_NAME").unwrap_or_else(|| "bantam".into());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(opentelemetry_sdk::Resource::builder().with_service_name(service).build())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    bantam_trigger_http::telemetry::enable();
    tracing::debug!("exporting traces to {endpoint}");
    Some(provider)
}
