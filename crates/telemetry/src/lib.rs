//! Telemetry for actix-web services: structured logs (JSON by default, `pretty` for
//! humans), with the level from configuration and `RUST_LOG` winning when set.
//!
//! ```
//! use tasks_telemetry::{LogFormat, LogSettings};
//!
//! let settings = LogSettings { level: "info".into(), format: LogFormat::Json };
//! let filter = settings.filter().expect("valid directives");
//! assert!(filter.to_string().contains("info"));
//! ```

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (for log collectors).
    #[default]
    Json,
    /// Human-readable, for terminals.
    Pretty,
}

/// How to log.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Level or `tracing` filter directives (`info`, `warn,tasks_storage=debug`).
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

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
        let directives = std::env::var("RUST_LOG")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| self.level.clone());
        EnvFilter::builder()
            .parse(&directives)
            .map_err(|e| TelemetryError::Filter {
                directives,
                reason: e.to_string(),
            })
    }

    /// Installs the global subscriber writing to stdout.
    ///
    /// # Errors
    /// A bad filter, or a subscriber already installed.
    pub fn init(&self) -> Result<(), TelemetryError> {
        let filter = self.filter()?;
        let registry = tracing_subscriber::registry().with(filter);
        let result = match self.format {
            LogFormat::Json => registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .flatten_event(true)
                        .with_current_span(false)
                        .with_span_list(false),
                )
                .try_init(),
            LogFormat::Pretty => registry
                .with(tracing_subscriber::fmt::layer().compact())
                .try_init(),
        };
        result.map_err(|_| TelemetryError::AlreadyInitialised)
    }
}
