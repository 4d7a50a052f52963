//! The `main` of a service: configuration, telemetry, the runtime, the exit code.

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;

use serde::Serialize;
use tasks_config::{ConfigErrors, Loaded};
use tasks_telemetry::LogSettings;

/// What a service says about itself in traces, logs and the `build_info` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceIdentity {
    /// `service.name` of traces and the `service` label of `build_info`.
    pub name: &'static str,
    /// The release version (`CARGO_PKG_VERSION`).
    pub version: &'static str,
    /// The source revision it was built from (`unknown` when not known).
    pub revision: &'static str,
}

/// Runs a service process: `loaded` is the outcome of the service's configuration loader;
/// `log` picks the logging section from its settings; `body` runs on the actix runtime
/// with the configuration and returns when the service has stopped.
///
/// Exit codes: 0 after a clean stop, 2 for a configuration problem (every problem is
/// printed, nothing else happens), 1 when `body` fails (the error is logged).
pub fn run_process<S, F, Fut, E>(
    identity: &ServiceIdentity,
    loaded: Result<Loaded<S>, ConfigErrors>,
    log: impl FnOnce(&S) -> &LogSettings,
    body: F,
) -> ExitCode
where
    S: Serialize,
    F: FnOnce(Loaded<S>) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let loaded = match loaded {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    let telemetry = match tasks_telemetry::init(log(&loaded.value), identity.name) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    tasks_telemetry::metrics::global().set_build_info(
        identity.name,
        identity.version,
        identity.revision,
    );
    let effective: serde_json::Map<String, serde_json::Value> = loaded
        .effective()
        .into_iter()
        .map(|(key, value, _)| (key, value))
        .collect();
    tracing::info!(
        version = identity.version,
        revision = identity.revision,
        config = %serde_json::Value::Object(effective),
        "starting"
    );
    tracing::info!(spans_exported = telemetry.exporting(), "telemetry ready");
    let outcome = actix_web::rt::System::new().block_on(body(loaded));
    telemetry.shutdown();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error, "exiting on error");
            ExitCode::FAILURE
        }
    }
}
