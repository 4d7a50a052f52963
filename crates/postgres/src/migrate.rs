//! Schema migrations (refinery) serialized by a PostgreSQL advisory lock.
//!
//! refinery takes no lock of its own: two replicas starting together could both see a
//! migration as pending and both apply it. [`run_locked`] takes a session-level advisory
//! lock on the very connection that runs the migrations, so concurrent migrators queue up
//! and each later one finds nothing left to do.

use std::time::Duration;

use refinery::Runner;

use crate::Error;
use crate::pool::PoolSettings;

/// refinery's history table (its default name).
const HISTORY_TABLE: &str = "refinery_schema_history";

/// The advisory lock key for `scope` (stable across processes and releases).
#[must_use]
pub fn lock_key(scope: &str) -> i64 {
    // FNV-1a: tiny, stable, and good enough to keep unrelated services apart.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("migrations:{scope}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// What a migration run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Names of the migrations this run applied (empty when the schema was current).
    pub applied: Vec<String>,
}

/// Applies `runner`'s pending migrations while holding the advisory lock for `scope`.
///
/// # Errors
/// [`Error::Unavailable`] when the database cannot be reached (callers retry),
/// [`Error::Migration`] when a migration fails.
pub async fn run_locked(
    settings: &PoolSettings,
    runner: Runner,
    scope: &str,
) -> Result<Applied, Error> {
    // No statement timeout here: waiting for another migrator's lock, or a long DDL, is
    // expected; the lock is released when this connection ends, whatever happens.
    let mut client = settings.connect(Duration::ZERO).await?;
    let key = lock_key(scope);
    client
        .execute("SELECT pg_advisory_lock($1)", &[&key])
        .await
        .map_err(Error::from_pg)?;
    let outcome = runner.run_async(&mut client).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&key])
        .await;
    let report = outcome.map_err(|e| Error::Migration(e.to_string()))?;
    unlock.map_err(Error::from_pg)?;
    Ok(Applied {
        applied: report
            .applied_migrations()
            .iter()
            .map(ToString::to_string)
            .collect(),
    })
}

/// What [`bring_schema_current`] does about pending migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Apply them with [`run_locked`].
    Apply,
    /// Wait until another process (a Job, another release) has applied them.
    AwaitOthers,
}

/// Brings the schema up to date according to `strategy`, retrying with capped
/// exponential backoff (200 ms, doubling, at most 5 s) while the database is unreachable
/// or migrations are pending, so a first install never crash-loops waiting for
/// PostgreSQL. Each failed attempt is logged as a warning. Returns `true` once the schema
/// is current, or `false` as soon as `stop()` says to give up (say, on shutdown).
/// `runner` makes a fresh runner per attempt.
pub async fn bring_schema_current(
    settings: &PoolSettings,
    runner: impl Fn() -> Runner,
    scope: &str,
    strategy: Strategy,
    stop: impl Fn() -> bool,
) -> bool {
    let mut delay = Duration::from_millis(200);
    while !stop() {
        let outcome =
            match strategy {
                Strategy::Apply => run_locked(settings, runner(), scope).await.map(|done| {
                    tracing::info!(applied = ?done.applied, "schema is current");
                }),
                Strategy::AwaitOthers => pending(settings, &runner()).await.and_then(|waiting| {
                    match waiting.as_slice() {
                        [] => Ok(()),
                        _ => Err(Error::Migration(format!(
                            "pending (applied by another process): {}",
                            waiting.join(", ")
                        ))),
                    }
                }),
            };
        match outcome {
            Ok(()) => return true,
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "database schema not ready");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    false
}

/// Migrations of `runner` not yet applied to the database (assumes refinery's default
/// history table name, `refinery_schema_history`).
///
/// # Errors
/// [`Error::Unavailable`] when the database cannot be reached.
pub async fn pending(settings: &PoolSettings, runner: &Runner) -> Result<Vec<String>, Error> {
    let mut client = settings.connect(settings.statement_timeout).await?;
    let history = client
        .query_one("SELECT to_regclass($1)::text", &[&HISTORY_TABLE])
        .await
        .map_err(Error::from_pg)?;
    if history.get::<_, Option<String>>(0).is_none() {
        return Ok(runner
            .get_migrations()
            .iter()
            .map(ToString::to_string)
            .collect());
    }
    let applied = runner
        .get_applied_migrations_async(&mut client)
        .await
        .map_err(|e| Error::Migration(e.to_string()))?;
    Ok(runner
        .get_migrations()
        .iter()
        .filter(|m| !applied.iter().any(|a| a.version() == m.version()))
        .map(ToString::to_string)
        .collect())
}
