//! `notes-service`: a tiny notes API proving that the reusable crates compose into a
//! second service. `tasks-config` loads `NOTES_*`, `tasks-postgres` pools and migrates,
//! `tasks-runtime` runs the listeners, readiness and the drain, `tasks-telemetry` logs,
//! traces and counts as service `notes`. See this directory's README.

mod api;
mod server;
mod settings;

use std::process::ExitCode;

use tasks_runtime::{ServiceIdentity, run_process};

const IDENTITY: ServiceIdentity = ServiceIdentity {
    name: "notes",
    version: env!("CARGO_PKG_VERSION"),
    revision: "unknown",
};

fn main() -> ExitCode {
    run_process(&IDENTITY, settings::load(), |s| &s.log, server::serve)
}
