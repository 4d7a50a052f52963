//! Telemetry for actix-web services, knowing nothing about what the service does:
//!
//! - **logs** ([`LogSettings`]): `tracing` events as JSON lines (or `pretty` for humans),
//!   the level from configuration with `RUST_LOG` winning when set;
//! - **traces** ([`init`]): OpenTelemetry over OTLP (HTTP/protobuf or gRPC), configured only by the standard
//!   `OTEL_*` variables — no `OTEL_EXPORTER_OTLP_ENDPOINT`, no exporter. Spans are batched
//!   on a background thread, so a slow or absent collector never slows a request;
//!   [`Telemetry::shutdown`] flushes them;
//! - **metrics** ([`metrics`]): Prometheus text format from one registry — HTTP server
//!   duration and in-flight requests, database operation duration and pool gauges,
//!   build info and process metrics (RSS, CPU, open file descriptors);
//! - **request correlation** ([`http`]): an actix middleware that assigns or echoes
//!   `X-Request-Id`, continues W3C `traceparent` traces, opens the server span, records
//!   the metrics and writes one access-log event per request (route template, never
//!   the raw path).
//!
//! ```
//! use actix_web::{App, web};
//! use tasks_telemetry::{LogFormat, LogSettings};
//!
//! let logs = LogSettings { level: "info".into(), format: LogFormat::Json, flush_interval_ms: 10 };
//! assert!(logs.filter().is_ok());
//! // In main: let telemetry = tasks_telemetry::init(&logs, "notes")?; … telemetry.shutdown();
//! let app = App::new()
//!     .route("/notes/{id}", web::get().to(|| async { "note" }))
//!     .wrap(actix_web::middleware::from_fn(tasks_telemetry::http::observe));
//! let admin = App::new().route("/metrics", web::get().to(tasks_telemetry::metrics::handler));
//! # let _ = (app, admin);
//! ```

#![deny(missing_docs)]

mod filter;
pub mod http;
mod json_lines;
pub mod metrics;
pub mod span;
mod traces;
mod writer;

use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use traces::{OtlpProtocol, OtlpSettings, Telemetry};

/// Log line format (`json` or `pretty` in configuration).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (for log collectors).
    #[default]
    Json,
    /// Human-readable, for terminals.
    Pretty,
}

/// How to log: a configuration section (`log.level`, `log.format`) a service can nest in
/// its settings as is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct LogSettings {
    /// Level or `tracing` filter directives (`info`, `warn,tasks_storage=debug`);
    /// `RUST_LOG` wins when set.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
    /// Lines are written to stdout in batches by a background thread at most this many
    /// milliseconds after they are logged, so no request waits for a `write(2)`; 0 writes
    /// every line at once (docs/adr/0013-buffered-log-writer.md).
    pub flush_interval_ms: u64,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Json,
            flush_interval_ms: DEFAULT_FLUSH_INTERVAL_MS,
        }
    }
}

/// The default of [`LogSettings::flush_interval_ms`].
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 10;

/// Telemetry set-up failures.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The level or `RUST_LOG` directives do not parse.
    #[error("invalid log filter {directives:?}: {reason}")]
    Filter {
        /// The offending directives.
        directives: String,
        /// Why.
        reason: String,
    },
    /// The `OTEL_*` settings are unusable.
    #[error("invalid OpenTelemetry settings: {0}")]
    Otlp(String),
    /// A global subscriber was already installed.
    #[error("logging is already initialised")]
    AlreadyInitialised,
}

impl LogSettings {
    /// The effective filter: `RUST_LOG` when set and non-empty, else `level`.
    ///
    /// # Errors
    /// [`TelemetryError::Filter`] for directives that do not parse.
    pub fn filter(&self) -> Result<EnvFilter, TelemetryError> {
        let directives = self.directives();
        EnvFilter::builder()
            .parse(&directives)
            .map_err(|e| TelemetryError::Filter {
                directives,
                reason: e.to_string(),
            })
    }

    /// `RUST_LOG` when set and non-empty, else `level`.
    fn directives(&self) -> String {
        std::env::var("RUST_LOG")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| self.level.clone())
    }
}

/// Installs logging and, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-specific
/// variable) is set, the OTLP trace pipeline. `service_name` is used unless
/// `OTEL_SERVICE_NAME` or `service.name` in `OTEL_RESOURCE_ATTRIBUTES` says otherwise.
///
/// # Errors
/// A bad log filter, unusable `OTEL_*` settings, or a subscriber already installed.
pub fn init(logs: &LogSettings, service_name: &str) -> Result<Telemetry, TelemetryError> {
    let filter = filter::Filter::new(logs.filter()?, &logs.directives());
    let otlp = OtlpSettings::from_env(service_name)?;
    let mut telemetry = Telemetry::new(otlp)?;
    let (writer, flusher) = writer::LogWriter::new(Duration::from_millis(logs.flush_interval_ms));
    telemetry.set_log_flusher(flusher);
    http::set_exporting(telemetry.exporting());
    let otel_layer = telemetry.layer();
    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    let result = match logs.format {
        // The fields of tracing-subscriber's JSON format (flattened event, no span
        // fields), written without its intermediate strings by a layer that sees events
        // only.
        LogFormat::Json => registry
            .with(json_lines::JsonLinesLayer::new(writer))
            .try_init(),
        // Log lines carry their own fields; spans exist for traces. Without this per-layer
        // filter the formatter would render every field of every span on creation, which
        // costs about a fifth of the request throughput.
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .compact()
                    .with_writer(writer)
                    .with_filter(filter_fn(|metadata| metadata.is_event())),
            )
            .try_init(),
    };
    result.map_err(|_| TelemetryError::AlreadyInitialised)?;
    Ok(telemetry)
}
