//! The OpenTelemetry trace pipeline, configured by the standard `OTEL_*` variables.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use crate::TelemetryError;

/// What the `OTEL_*` variables ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// The collector endpoint; `None` disables export.
    pub endpoint: Option<String>,
    /// `service.name` to use when the environment names none.
    pub default_service_name: String,
}

impl OtlpSettings {
    /// Reads `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` and
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` (only `http/protobuf`, the OTLP default, is built in).
    ///
    /// # Errors
    /// [`TelemetryError::Otlp`] for an unsupported protocol.
    pub fn from_env(default_service_name: &str) -> Result<Self, TelemetryError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let protocol = var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"));
        if let Some(protocol) = protocol.filter(|p| p != "http/protobuf") {
            return Err(TelemetryError::Otlp(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported; use http/protobuf (collector port 4318)"
            )));
        }
        let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| {
            var("OTEL_EXPORTER_OTLP_ENDPOINT")
                .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
        });
        Ok(Self {
            endpoint,
            default_service_name: default_service_name.to_owned(),
        })
    }
}

/// The installed trace pipeline; call [`Telemetry::shutdown`] before exiting so batched
/// spans are flushed.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub(crate) fn new(settings: OtlpSettings) -> Result<Self, TelemetryError> {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let Some(endpoint) = settings.endpoint else {
            return Ok(Self { provider: None });
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| TelemetryError::Otlp(e.to_string()))?;
        let named_by_env = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
            || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
        let mut resource = Resource::builder();
        if !named_by_env {
            resource = resource.with_service_name(settings.default_service_name);
        }
        // The batch processor exports from its own thread: requests never wait on the
        // collector, and a dead collector only costs dropped spans. The sampler comes
        // from OTEL_TRACES_SAMPLER[_ARG] (parent-based always-on by default).
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        Ok(Self {
            provider: Some(provider),
        })
    }

    /// Whether spans are exported.
    #[must_use]
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    pub(crate) fn layer<S>(&self) -> Option<impl Layer<S> + use<S>>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        self.provider
            .as_ref()
            .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("tasks-telemetry")))
    }

    /// Flushes and stops the exporter (bounded by the SDK's export timeout).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(error) = provider.force_flush() {
                tracing::warn!(%error, "flushing spans failed");
            }
            let _ = provider.shutdown();
        }
    }
}
