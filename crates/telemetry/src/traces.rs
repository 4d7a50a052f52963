//! The OpenTelemetry trace pipeline, configured by the standard `OTEL_*` variables.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use crate::TelemetryError;

/// The OTLP transport (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `http/protobuf` (the OTLP default; collectors listen on 4318).
    HttpProtobuf,
    /// `grpc` (collectors listen on 4317).
    Grpc,
}

/// What the `OTEL_*` variables ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// The collector endpoint; `None` disables export.
    pub endpoint: Option<String>,
    /// The transport.
    pub protocol: OtlpProtocol,
    /// `service.name` to use when the environment names none.
    pub default_service_name: String,
}

impl OtlpSettings {
    /// Reads `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT` and
    /// `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL` (`http/protobuf`, the default, or `grpc`).
    ///
    /// # Errors
    /// [`TelemetryError::Otlp`] for an unsupported protocol.
    pub fn from_env(default_service_name: &str) -> Result<Self, TelemetryError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let protocol = match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        {
            None => OtlpProtocol::HttpProtobuf,
            Some(p) if p == "http/protobuf" => OtlpProtocol::HttpProtobuf,
            Some(p) if p == "grpc" => OtlpProtocol::Grpc,
            Some(other) => {
                return Err(TelemetryError::Otlp(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported; use http/protobuf (port 4318) or grpc (port 4317)"
                )));
            }
        };
        let traces_endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let endpoint = traces_endpoint.or_else(|| {
            var("OTEL_EXPORTER_OTLP_ENDPOINT").map(|base| match protocol {
                // OTLP/HTTP signals live under per-signal paths of the base URL; gRPC
                // addresses the service, not a path.
                OtlpProtocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
                OtlpProtocol::Grpc => base,
            })
        });
        Ok(Self {
            endpoint,
            protocol,
            default_service_name: default_service_name.to_owned(),
        })
    }
}

/// The installed trace pipeline; call [`Telemetry::shutdown`] before exiting so batched
/// spans are flushed.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    // The gRPC client's connection tasks need a Tokio runtime of their own: the batch
    // processor exports from a plain thread, and the service's runtimes stop first.
    grpc_runtime: Option<tokio::runtime::Runtime>,
    // Flushes the buffered log lines at shutdown (and when dropped).
    logs: Option<crate::writer::LogFlusher>,
}

impl Telemetry {
    pub(crate) fn new(settings: OtlpSettings) -> Result<Self, TelemetryError> {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let Some(endpoint) = settings.endpoint else {
            return Ok(Self {
                provider: None,
                grpc_runtime: None,
                logs: None,
            });
        };
        let build_error =
            |e: opentelemetry_otlp::ExporterBuildError| TelemetryError::Otlp(e.to_string());
        let (exporter, grpc_runtime) = match settings.protocol {
            OtlpProtocol::HttpProtobuf => {
                let exporter = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(endpoint)
                    .build()
                    .map_err(build_error)?;
                (exporter, None)
            }
            OtlpProtocol::Grpc => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("otlp-grpc")
                    .enable_all()
                    .build()
                    .map_err(|e| {
                        TelemetryError::Otlp(format!(
                            "cannot start the gRPC exporter's runtime: {e}"
                        ))
                    })?;
                let exporter = runtime
                    .block_on(async {
                        opentelemetry_otlp::SpanExporter::builder()
                            .with_tonic()
                            .with_endpoint(endpoint)
                            .build()
                    })
                    .map_err(build_error)?;
                (exporter, Some(runtime))
            }
        };
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
            grpc_runtime,
            logs: None,
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

    pub(crate) fn set_log_flusher(&mut self, flusher: crate::writer::LogFlusher) {
        self.logs = Some(flusher);
    }

    /// Flushes and stops the exporter (bounded by the SDK's export timeout), then writes
    /// the buffered log lines; lines logged after this are written at once.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(error) = provider.force_flush() {
                tracing::warn!(%error, "flushing spans failed");
            }
            let _ = provider.shutdown();
        }
        if let Some(runtime) = self.grpc_runtime {
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        }
        if let Some(mut logs) = self.logs {
            logs.flush_and_stop();
        }
    }
}
