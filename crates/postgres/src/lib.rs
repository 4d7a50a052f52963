//! PostgreSQL plumbing for services on Kubernetes, independent of what the service stores:
//!
//! - [`pool`]: a deadpool-postgres pool whose every wait is bounded (wait, create and
//!   recycle timeouts), with `statement_timeout` set per connection and a password file
//!   re-read for every new connection, so a rotated Kubernetes Secret is picked up without
//!   a restart; [`pool::ping`] is the readiness check;
//! - [`tls`]: libpq's `sslmode` meanings (`disable`, `prefer`, `require`, `verify-full`) on
//!   rustls, with the crypto provider chosen explicitly;
//! - [`pipelined`]: [`pipelined::PipelinedReader`], one connection shared by concurrent
//!   requests for pipelined single-statement reads (reopened when it closes);
//! - [`migrate`]: refinery migrations under a PostgreSQL advisory lock held on the
//!   migrating connection, so any number of replicas can migrate at once and each
//!   migration is applied exactly once; [`migrate::bring_schema_current`] retries them with
//!   backoff while the database is still starting;
//! - [`settings`]: the `database.*` configuration section for `tasks-config`, with its
//!   validation and the mapping to [`pool::PoolSettings`].
//!
//! Failure behaviour: errors are [`Error`]s classified as [`Error::Unavailable`] (the
//! database is down, restarting, overloaded or slow: retry later, answer 503) or not (a
//! bug or bad data: answer 500). Building a pool opens no connection, so a service can
//! start while its database is still coming up.
//!
//! ```no_run
//! use tasks_postgres::pool::{Password, PoolSettings, build_pool, ping};
//!
//! mod embedded {
//!     refinery::embed_migrations!("tests/migrations");
//! }
//!
//! # async fn demo() -> Result<(), tasks_postgres::Error> {
//! let settings = PoolSettings {
//!     host: "notes-db".into(),
//!     name: "notes".into(),
//!     user: "notes".into(),
//!     password: Password::File {
//!         path: "/var/run/secrets/notes/database.password".into(),
//!         fallback: "".into(),
//!     },
//!     ..PoolSettings::default()
//! };
//! tasks_postgres::migrate::run_locked(&settings, embedded::migrations::runner(), "notes").await?;
//! let pool = build_pool(&settings)?;
//! ping(&pool).await?;
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod error;
pub mod migrate;
pub mod pipelined;
pub mod pool;
pub mod settings;
pub mod tls;

pub use error::Error;
