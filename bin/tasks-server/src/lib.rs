//! The tasks service as a library: its settings, its HTTP API and its composition root
//! ([`Application`]), so the binary stays a command line and tests run the whole service
//! in-process.
//!
//! ```no_run
//! use tasks_server::{Application, SecretOrigins, settings};
//!
//! # fn main() -> anyhow::Result<()> {
//! let loaded = settings::load().map_err(|errors| anyhow::anyhow!("{errors}"))?;
//! actix_web::rt::System::new().block_on(async {
//!     let app = Application::build(&loaded.value, &SecretOrigins::of(&loaded))?;
//!     println!("API on {}, admin on {}", app.api_address(), app.admin_address());
//!     app.run_until_stopped().await // until SIGTERM, then the drain
//! })
//! # }
//! ```

mod api;
mod application;
pub mod probe;
pub mod settings;

pub use api::openapi::document as openapi_document;
pub use application::{Application, MIGRATION_SCOPE, SecretOrigins};

/// The service's name, version and revision (traces, logs, `build_info`, `--version`).
pub const IDENTITY: tasks_runtime::ServiceIdentity = tasks_runtime::ServiceIdentity {
    name: "tasks-server",
    version: env!("CARGO_PKG_VERSION"),
    revision: env!("GIT_REVISION"),
};
