//! The integration tests of `tasks-server`, one test binary (one link, one `target/`
//! entry) with a module per concern. API behaviour runs the service in-process
//! ([`support::spawn_app`]); what only a process shows (signals, exit codes,
//! configuration errors, logs, telemetry configured from the environment) runs the real
//! binary ([`support::tasks_process`]).
//!
//! `robustness` is `#[ignore]`d so `just test-rust` does not run it a second time:
//! `just test-robustness` runs `cargo test -p tasks-server --test it robustness:: -- --include-ignored`.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod api;
mod auth;
mod chart_contract;
mod config;
mod openapi;
mod robustness;
mod shutdown;
mod support;
mod telemetry;
