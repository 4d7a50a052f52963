//! The tasks service's PostgreSQL storage: its embedded migrations ([`embedded`]) and
//! the `tasks-domain` ports implemented on PostgreSQL ([`tasks::PgTaskRepository`],
//! [`idempotency::PgIdempotencyStore`]).
//!
//! The generic plumbing — pool, pipelined reader, TLS, advisory-locked migrations,
//! readiness ping, the `database.*` settings section — lives in `tasks-postgres`; use it
//! from there.
//!
//! Failure behaviour: every operation runs in an OpenTelemetry client span and records
//! `db.client.operation.duration`; PostgreSQL failures become
//! `RepositoryError::Unavailable` (retry later) or `RepositoryError::Other`
//! ([`error::to_repository`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use tasks_domain::{Owner, TaskService};
//! use tasks_postgres::pool;
//! use tasks_storage::tasks::PgTaskRepository;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let settings = pool::PoolSettings { host: "db".into(), name: "tasks".into(), user: "tasks".into(), ..Default::default() };
//! tasks_postgres::migrate::run_locked(&settings, tasks_storage::embedded::runner(), "tasks-server").await?;
//! let service = TaskService::new(Arc::new(PgTaskRepository::new(pool::build_pool(&settings)?)));
//! let owner = Owner::new("token:ci").ok_or("empty owner")?;
//! let task = service.create(&owner, &serde_json::json!({"title": "Ship it"})).await?;
//! # let _ = task; Ok(()) }
//! ```

pub mod error;
pub mod idempotency;
mod instrument;
pub mod tasks;

/// The tasks service's migrations, embedded in the binary.
pub mod embedded {
    refinery::embed_migrations!("migrations");

    /// A runner over the embedded migrations.
    ///
    /// It tolerates migrations in the database that this binary does not know: after a
    /// newer release has applied its (expand-only) migrations, a rollback or a restarted
    /// pod of the previous release must still start against that schema. refinery's
    /// default refuses them; a migration that *diverges* (same version, other content)
    /// is still refused.
    #[must_use]
    pub fn runner() -> refinery::Runner {
        migrations::runner().set_abort_missing(false)
    }
}
