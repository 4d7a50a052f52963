//! The `Idempotency-Key` store on PostgreSQL: every statement on the `idempotency_answers`
//! table lives here, including [`record_answer`], which other modules call inside their
//! own transaction. Keys are scoped per owner: the primary key is `(principal, key)`.
//! (`idempotency_keys`, the unscoped table of releases before authentication, is left to
//! the pods of such a release during a rolling update, and dropped by a later migration.)

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Pool, Transaction};
use tasks_domain::{Claim, IdempotencyStore, Owner, RecordedAnswer, RepositoryError};
use tokio_postgres::types::ToSql;

use crate::error::{from_pool, from_postgres};
use crate::instrument::instrumented;

/// How long a completed key replays its response.
pub const RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// A claim older than this without a response belongs to a request that died; a retry
/// may take it over.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(5 * 60);

/// [`IdempotencyStore`] on PostgreSQL: the first request inserts the key; concurrent
/// ones see it in flight; completed ones are replayed for [`RETENTION`].
#[derive(Debug, Clone)]
pub struct PgIdempotencyStore {
    pool: Pool,
}

/// Records the answer of a claimed key, only while it is unanswered.
const RECORD_ANSWER: &str = "UPDATE idempotency_answers SET status_code = $3, headers = $4, body = $5, \
     completed_at = now() WHERE principal = $1 AND key = $2 AND status_code IS NULL";

/// The stored form of an answer: `status_code`, `headers` (a JSON array of pairs), `body`.
fn answer_columns(answer: &RecordedAnswer) -> (i16, serde_json::Value) {
    let code = i16::try_from(answer.code).unwrap_or(500);
    let metadata = serde_json::to_value(&answer.metadata).unwrap_or(serde_json::Value::Null);
    (code, metadata)
}

/// Records `answer` for `owner`'s claimed, still unanswered `key` within `tx`, so that it
/// commits or rolls back with whatever else `tx` writes (ADR 0008). Returns `false`,
/// writing nothing, when the key has no unanswered claim any more. The updated row stays
/// locked until `tx` ends: a concurrent request answering the same key waits, then finds
/// it answered.
///
/// # Errors
/// A storage failure.
pub async fn record_answer(
    tx: &Transaction<'_>,
    owner: &Owner,
    key: &str,
    answer: &RecordedAnswer,
) -> Result<bool, RepositoryError> {
    let stmt = tx
        .prepare_cached(RECORD_ANSWER)
        .await
        .map_err(from_postgres)?;
    let (code, metadata) = answer_columns(answer);
    let principal = owner.as_str();
    let params: [&(dyn ToSql + Sync); 5] = [&principal, &key, &code, &metadata, &answer.body];
    let answered = tx.execute(&stmt, &params).await.map_err(from_postgres)?;
    Ok(answered == 1)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl PgIdempotencyStore {
    /// A store using `pool`.
    #[must_use]
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Deletes at most `limit` expired keys; returns how many went. Bounded so a sweep
    /// never holds locks for long; call it periodically.
    ///
    /// # Errors
    /// A storage failure.
    pub async fn purge_expired(&self, limit: i64) -> Result<u64, RepositoryError> {
        let client = self.pool.get().await.map_err(from_pool)?;
        let stmt = client
            .prepare_cached(
                "DELETE FROM idempotency_answers WHERE (principal, key) IN (\
                   SELECT principal, key FROM idempotency_answers \
                   WHERE created_at < now() - make_interval(secs => $1) \
                   ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
            )
            .await
            .map_err(from_postgres)?;
        client
            .execute(&stmt, &[&secs(RETENTION), &limit])
            .await
            .map_err(from_postgres)
    }
}

#[async_trait]
impl IdempotencyStore for PgIdempotencyStore {
    async fn claim(
        &self,
        owner: &Owner,
        key: &str,
        fingerprint: &[u8],
    ) -> Result<Claim, RepositoryError> {
        let principal = owner.as_str();
        instrumented("INSERT idempotency_answers", "INSERT", "idempotency_answers", move || async move {
            let client = self.pool.get().await.map_err(from_pool)?;
            // Take the key if it is new, expired, or abandoned mid-flight; otherwise read it.
            let take = client
                .prepare_cached(
                    "INSERT INTO idempotency_answers (principal, key, fingerprint) VALUES ($1, $2, $3) \
                     ON CONFLICT (principal, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, status_code = NULL, \
                       headers = NULL, body = NULL, created_at = now(), completed_at = NULL \
                     WHERE idempotency_answers.created_at < now() - make_interval(secs => $4) \
                        OR (idempotency_answers.status_code IS NULL \
                            AND idempotency_answers.created_at < now() - make_interval(secs => $5) \
                            AND idempotency_answers.fingerprint = EXCLUDED.fingerprint) \
                     RETURNING key",
                )
                .await
                .map_err(from_postgres)?;
            if client
                .query_opt(
                    &take,
                    &[&principal, &key, &fingerprint, &secs(RETENTION), &secs(ABANDONED_AFTER)],
                )
                .await
                .map_err(from_postgres)?
                .is_some()
            {
                return Ok(Claim::Claimed);
            }
            let read = client
                .prepare_cached("SELECT fingerprint, status_code, headers, body FROM idempotency_answers WHERE principal = $1 AND key = $2")
                .await
                .map_err(from_postgres)?;
            let Some(row) = client
                .query_opt(&read, &[&principal, &key])
                .await
                .map_err(from_postgres)?
            else {
                // Deleted by a sweep between the two statements: a retry will claim it.
                return Ok(Claim::InFlight);
            };
            let stored: Vec<u8> = row.try_get(0).map_err(from_postgres)?;
            if stored != fingerprint {
                return Ok(Claim::Mismatch);
            }
            let Some(status) = row.try_get::<_, Option<i16>>(1).map_err(from_postgres)? else {
                return Ok(Claim::InFlight);
            };
            let headers: Option<serde_json::Value> = row.try_get(2).map_err(from_postgres)?;
            let headers = headers
                .and_then(|h| serde_json::from_value::<Vec<(String, String)>>(h).ok())
                .unwrap_or_default();
            let body: Option<Vec<u8>> = row.try_get(3).map_err(from_postgres)?;
            Ok(Claim::Replay(RecordedAnswer {
                code: u16::try_from(status).unwrap_or(500),
                metadata: headers,
                body: body.unwrap_or_default(),
            }))
                })
        .await
    }

    async fn complete(
        &self,
        owner: &Owner,
        key: &str,
        answer: &RecordedAnswer,
    ) -> Result<(), RepositoryError> {
        let principal = owner.as_str();
        instrumented("UPDATE idempotency_answers", "UPDATE", "idempotency_answers", move || async move {
            let client = self.pool.get().await.map_err(from_pool)?;
            let stmt = client
                .prepare_cached(
                    "UPDATE idempotency_answers SET status_code = $3, headers = $4, body = $5, completed_at = now() \
                     WHERE principal = $1 AND key = $2",
                )
                .await
                .map_err(from_postgres)?;
            let (code, metadata) = answer_columns(answer);
            client
                .execute(&stmt, &[&principal, &key, &code, &metadata, &answer.body])
                .await
                .map_err(from_postgres)?;
            Ok(())
                })
        .await
    }

    async fn release(&self, owner: &Owner, key: &str) -> Result<(), RepositoryError> {
        let principal = owner.as_str();
        instrumented("DELETE idempotency_answers", "DELETE", "idempotency_answers", move || async move {
            let client = self.pool.get().await.map_err(from_pool)?;
            let stmt = client
                .prepare_cached(
                    "DELETE FROM idempotency_answers WHERE principal = $1 AND key = $2 AND status_code IS NULL",
                )
                .await
                .map_err(from_postgres)?;
            client
                .execute(&stmt, &[&principal, &key])
                .await
                .map_err(from_postgres)?;
            Ok(())
        })
        .await
    }
}
