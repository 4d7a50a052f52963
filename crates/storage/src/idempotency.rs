//! The `Idempotency-Key` store on PostgreSQL.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use tasks_domain::{Claim, IdempotencyStore, RepositoryError, StoredResponse};

use crate::StorageError;
use crate::error::to_repository;
use crate::tasks::observed;

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

fn pg(error: tokio_postgres::Error) -> RepositoryError {
    to_repository(StorageError::from_pg(error))
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
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| to_repository(StorageError::from_pool(e)))?;
        let stmt = client
            .prepare_cached(
                "DELETE FROM idempotency_keys WHERE key IN (\
                   SELECT key FROM idempotency_keys \
                   WHERE created_at < now() - make_interval(secs => $1) \
                   ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
            )
            .await
            .map_err(pg)?;
        client
            .execute(&stmt, &[&secs(RETENTION), &limit])
            .await
            .map_err(pg)
    }
}

#[async_trait]
impl IdempotencyStore for PgIdempotencyStore {
    async fn claim(&self, key: &str, fingerprint: &[u8]) -> Result<Claim, RepositoryError> {
        observed("INSERT idempotency_keys", "INSERT", async move {
            let client = self.pool.get().await.map_err(|e| to_repository(StorageError::from_pool(e)))?;
            // Take the key if it is new, expired, or abandoned mid-flight; otherwise read it.
            let take = client
                .prepare_cached(
                    "INSERT INTO idempotency_keys (key, fingerprint) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, status_code = NULL, \
                       headers = NULL, body = NULL, created_at = now(), completed_at = NULL \
                     WHERE idempotency_keys.created_at < now() - make_interval(secs => $3) \
                        OR (idempotency_keys.status_code IS NULL \
                            AND idempotency_keys.created_at < now() - make_interval(secs => $4) \
                            AND idempotency_keys.fingerprint = EXCLUDED.fingerprint) \
                     RETURNING key",
                )
                .await
                .map_err(pg)?;
            if client
                .query_opt(
                    &take,
                    &[&key, &fingerprint, &secs(RETENTION), &secs(ABANDONED_AFTER)],
                )
                .await
                .map_err(pg)?
                .is_some()
            {
                return Ok(Claim::Claimed);
            }
            let read = client
                .prepare_cached("SELECT fingerprint, status_code, headers, body FROM idempotency_keys WHERE key = $1")
                .await
                .map_err(pg)?;
            let Some(row) = client.query_opt(&read, &[&key]).await.map_err(pg)? else {
                // Deleted by a sweep between the two statements: a retry will claim it.
                return Ok(Claim::InFlight);
            };
            let stored: Vec<u8> = row.try_get(0).map_err(pg)?;
            if stored != fingerprint {
                return Ok(Claim::Mismatch);
            }
            let Some(status) = row.try_get::<_, Option<i16>>(1).map_err(pg)? else {
                return Ok(Claim::InFlight);
            };
            let headers: Option<serde_json::Value> = row.try_get(2).map_err(pg)?;
            let headers = headers
                .and_then(|h| serde_json::from_value::<Vec<(String, String)>>(h).ok())
                .unwrap_or_default();
            let body: Option<Vec<u8>> = row.try_get(3).map_err(pg)?;
            Ok(Claim::Replay(StoredResponse {
                status: u16::try_from(status).unwrap_or(500),
                headers,
                body: body.unwrap_or_default(),
            }))
                })
        .await
    }

    async fn complete(&self, key: &str, response: &StoredResponse) -> Result<(), RepositoryError> {
        observed("UPDATE idempotency_keys", "UPDATE", async move {
            let client = self.pool.get().await.map_err(|e| to_repository(StorageError::from_pool(e)))?;
            let stmt = client
                .prepare_cached(
                    "UPDATE idempotency_keys SET status_code = $2, headers = $3, body = $4, completed_at = now() \
                     WHERE key = $1",
                )
                .await
                .map_err(pg)?;
            let status = i16::try_from(response.status).unwrap_or(500);
            let headers = serde_json::to_value(&response.headers).unwrap_or(serde_json::Value::Null);
            client
                .execute(&stmt, &[&key, &status, &headers, &response.body])
                .await
                .map_err(pg)?;
            Ok(())
                })
        .await
    }

    async fn release(&self, key: &str) -> Result<(), RepositoryError> {
        observed("DELETE idempotency_keys", "DELETE", async move {
            let client = self
                .pool
                .get()
                .await
                .map_err(|e| to_repository(StorageError::from_pool(e)))?;
            let stmt = client
                .prepare_cached(
                    "DELETE FROM idempotency_keys WHERE key = $1 AND status_code IS NULL",
                )
                .await
                .map_err(pg)?;
            client.execute(&stmt, &[&key]).await.map_err(pg)?;
            Ok(())
        })
        .await
    }
}
