//! Shared parts of the bench-only baseline servers (`raw-actix-http`, `minimal-pooled`,
//! `minimal-pipelined`): settings from the environment, the prepared query, and the
//! task's JSON shape. They answer only `GET /v1/tasks/{id}`, with the same statement and
//! the same JSON fields as `tasks-server`, and nothing else (no logging, no middleware),
//! so the ratio ours/baseline prices everything the service adds.
//!
//! Environment:
//!
//! * `BENCH_LISTEN` — `host:port` (default `127.0.0.1:18080`)
//! * `BENCH_DATABASE` — a libpq key/value or URL connection string
//! * `BENCH_WORKERS` — actix workers (default 2)
//! * `BENCH_POOL_SIZE` — pooled: connections (default `workers * 4`, as `tasks-server`)
//! * `BENCH_CLIENTS` — pipelined: shared clients (default 2)
//! * `BENCH_PIPELINE_MODE` — pipelined: `per-worker` (each worker owns its clients, driven
//!   on its own thread) or `shared` (clients driven by a separate runtime, shared by every
//!   worker — what the service could do beside its pool); default `shared`

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Row;
use uuid::Uuid;

/// The single-row query `tasks-server` prepares for `GET /v1/tasks/{id}`.
pub const GET_BY_ID: &str = "SELECT id, title, description, status, due_at, created_at, updated_at, version FROM tasks WHERE id = $1";

/// Settings read from the environment.
#[derive(Debug, Clone)]
pub struct BenchSettings {
    /// Listen address.
    pub listen: String,
    /// Driver configuration.
    pub database: tokio_postgres::Config,
    /// actix workers.
    pub workers: usize,
    /// Pool size (pooled).
    pub pool_size: usize,
    /// Shared clients (pipelined).
    pub clients: usize,
    /// Pipelined clients owned per worker instead of shared by all.
    pub per_worker: bool,
}

fn number(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("{name} must be a positive integer")),
        Err(_) => Ok(default),
    }
}

impl BenchSettings {
    /// Reads the settings.
    ///
    /// # Errors
    /// A bad number or connection string.
    pub fn from_env() -> anyhow::Result<Self> {
        let workers = number("BENCH_WORKERS", 2)?;
        let mut database: tokio_postgres::Config = std::env::var("BENCH_DATABASE")
            .context("BENCH_DATABASE is required")?
            .parse()
            .context("BENCH_DATABASE is not a connection string")?;
        database
            .application_name("bench-baseline")
            .connect_timeout(Duration::from_secs(5));
        let mode = std::env::var("BENCH_PIPELINE_MODE").unwrap_or_else(|_| "shared".into());
        anyhow::ensure!(
            mode == "shared" || mode == "per-worker",
            "BENCH_PIPELINE_MODE must be shared or per-worker"
        );
        Ok(Self {
            listen: std::env::var("BENCH_LISTEN").unwrap_or_else(|_| "127.0.0.1:18080".into()),
            database,
            workers,
            pool_size: number("BENCH_POOL_SIZE", (workers * 4).clamp(4, 32))?,
            clients: number("BENCH_CLIENTS", 2)?,
            per_worker: mode == "per-worker",
        })
    }
}

/// The task as `tasks-server` serializes it.
#[derive(Debug, Serialize)]
pub struct Task {
    id: Uuid,
    title: String,
    description: Option<String>,
    status: String,
    due_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
}

impl Task {
    /// Reads a row of [`GET_BY_ID`].
    ///
    /// # Errors
    /// A column of an unexpected type.
    pub fn from_row(row: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            id: row.try_get(0)?,
            title: row.try_get(1)?,
            description: row.try_get(2)?,
            status: row.try_get(3)?,
            due_at: row.try_get(4)?,
            created_at: row.try_get(5)?,
            updated_at: row.try_get(6)?,
            version: row.try_get(7)?,
        })
    }

    /// The entity tag `tasks-server` sends.
    #[must_use]
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }
}

/// The response for a row (or its absence, or a failure), shaped like `tasks-server`'s.
#[must_use]
pub fn respond(row: Result<Option<Row>, tokio_postgres::Error>) -> actix_web::HttpResponse {
    use actix_web::HttpResponse;
    match row.and_then(|r| r.as_ref().map(Task::from_row).transpose()) {
        Ok(Some(task)) => HttpResponse::Ok()
            .insert_header(("etag", task.etag()))
            .json(&task),
        Ok(None) => HttpResponse::NotFound().finish(),
        Err(_) => HttpResponse::ServiceUnavailable().finish(),
    }
}
