//! PostgreSQL for services: a connection pool that fails fast when the database is
//! down, TLS, migrations that are safe to run from many replicas at once, a readiness
//! ping — and the tasks repository built on them.
//!
//! The generic plumbing ([`pool`], [`tls`], [`migrate`]) knows nothing about tasks and is
//! reusable; [`tasks`] and [`idempotency`] implement the `tasks-domain` ports.
//!
//! Failure behaviour:
//! - every pool operation is bounded (wait, create and recycle timeouts), so a dead
//!   database yields [`StorageError::Unavailable`] quickly instead of a hang;
//! - each new connection re-reads the password file, so a rotated Kubernetes Secret is
//!   picked up without a restart;
//! - [`migrate::run_locked`] holds a PostgreSQL advisory lock on the migrating connection,
//!   so concurrent migrators apply each migration exactly once.
//!
//! ```no_run
//! use tasks_storage::pool::{PoolSettings, build_pool};
//!
//! # async fn demo() -> Result<(), tasks_storage::StorageError> {
//! let settings = PoolSettings { host: "db".into(), name: "notes".into(), user: "notes".into(), ..PoolSettings::default() };
//! let pool = build_pool(&settings)?;
//! tasks_storage::migrate::run_locked(&settings, tasks_storage::embedded::runner(), "notes").await?;
//! tasks_storage::pool::ping(&pool).await?;
//! # Ok(()) }
//! ```

pub mod error;
pub mod idempotency;
pub mod migrate;
pub mod pool;
pub mod tasks;
pub mod tls;

pub use error::StorageError;

/// The tasks service's migrations, embedded in the binary.
pub mod embedded {
    refinery::embed_migrations!("migrations");

    /// A runner over the embedded migrations.
    #[must_use]
    pub fn runner() -> refinery::Runner {
        migrations::runner()
    }
}
