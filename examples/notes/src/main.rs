//! `notes-service`: a tiny notes API proving that the reusable crates compose into a
//! second service. `tasks-config` loads `NOTES_*`, `tasks-postgres` pools and migrates,
//! `tasks-health` answers the probes and drains on SIGTERM, `tasks-telemetry` logs,
//! traces and counts as service `notes`. See this directory's README.

mod api;
mod server;
mod settings;

use std::process::ExitCode;

/// `service.name` of traces and the `build_info` metric.
const SERVICE_NAME: &str = "notes";

fn main() -> ExitCode {
    let loaded = match settings::load() {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    let telemetry = match tasks_telemetry::init(&loaded.value.log, SERVICE_NAME) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    let version = env!("CARGO_PKG_VERSION");
    tasks_telemetry::metrics::global().set_build_info(SERVICE_NAME, version, "unknown");
    tracing::info!(version, "starting");
    let outcome = actix_web::rt::System::new().block_on(server::serve(loaded));
    telemetry.shutdown();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "exiting on error");
            ExitCode::FAILURE
        }
    }
}
