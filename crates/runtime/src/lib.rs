//! The process skeleton every service built on these crates shares, so a service writes
//! only its own routes and settings:
//!
//! - [`run_process`]: the `main` of a service — load the configuration (exit 2 listing
//!   every problem), start logging and tracing (exit 2 on a bad setting), publish the
//!   `build_info` metric, log the effective configuration (secrets redacted), run the
//!   service on the actix runtime, flush spans, and map the outcome to an exit code;
//! - [`Service`]: the composition of one running service — the API listener, the admin
//!   listener (`/livez`, `/readyz`, `/metrics`), the database readiness check and the
//!   migrate-then-ready gate ([`Service::attach_database`]), and the graceful drain on
//!   SIGTERM or a [`StopHandle`]. Listeners may bind port 0; the bound addresses are
//!   readable, so tests run a whole service in-process.
//!
//! ```
//! use tasks_runtime::{ListenerSettings, Service};
//! use tasks_health::shutdown::ShutdownSettings;
//!
//! # actix_web::rt::System::new().block_on(async {
//! let shutdown = ShutdownSettings { drain_delay_secs: 0, timeout_secs: 1 };
//! let mut service = Service::new(shutdown).handle_signals(false);
//! let admin = service.serve_admin(&ListenerSettings::loopback(0)).expect("bind");
//! assert_ne!(admin.port(), 0, "port 0 binds a free port, readable afterwards");
//!
//! let stop = service.stop_handle();
//! stop.stop(); // as SIGTERM would: readiness fails, then the listeners close
//! service.run_until_stopped().await.expect("clean stop");
//! # });
//! ```
//!
//! Dependencies flow one way: this crate composes `tasks-config`, `tasks-health`,
//! `tasks-telemetry` and `tasks-postgres`, and knows nothing of what a service stores.

#![deny(missing_docs)]

mod listener;
mod process;
mod service;

pub use listener::ListenerSettings;
pub use process::{ServiceIdentity, run_process};
pub use service::{ApiOptions, RuntimeError, SchemaMigrations, Service};
pub use tasks_health::shutdown::StopHandle;
