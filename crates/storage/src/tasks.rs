//! The tasks repository over a deadpool-postgres pool.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tasks_domain::{
    DeleteOutcome, ListQuery, RepositoryError, Status, StoredResponse, Task, TaskPatch,
    TaskRepository, UpdateOutcome,
};
use tasks_postgres::shared::SharedClient;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use tracing::Instrument;
use uuid::Uuid;

use crate::StorageError;
use crate::error::to_repository;

/// The task columns, in the order [`to_task`] reads them (a macro so statements can be
/// `concat!`-ed at compile time instead of formatted per call).
macro_rules! columns {
    () => {
        "id, title, description, status, due_at, created_at, updated_at, version"
    };
}

const SELECT_BY_ID: &str = concat!("SELECT ", columns!(), " FROM tasks WHERE id = $1");
const LIST: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM tasks ORDER BY id DESC LIMIT $1"
);
const LIST_BY_STATUS: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM tasks WHERE status = $1 ORDER BY id DESC LIMIT $2"
);
const LIST_AFTER: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM tasks WHERE id < $1 ORDER BY id DESC LIMIT $2"
);
const LIST_BY_STATUS_AFTER: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM tasks WHERE status = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
);

const INSERT: &str = concat!(
    "INSERT INTO tasks (",
    columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
);
/// Records the answer of a claimed idempotency key, only while it is unanswered.
const ANSWER_KEY: &str = "UPDATE idempotency_keys SET status_code = $2, headers = $3, body = $4, \
     completed_at = now() WHERE key = $1 AND status_code IS NULL";

/// The parameters of [`INSERT`], in column order (`status` is `task.status.as_str()`).
fn insert_params<'a>(task: &'a Task, status: &'a &'static str) -> [&'a (dyn ToSql + Sync); 8] {
    [
        &task.id,
        &task.title,
        &task.description,
        status,
        &task.due_at,
        &task.created_at,
        &task.updated_at,
        &task.version,
    ]
}

/// [`TaskRepository`] on PostgreSQL. Statements are prepared once per connection;
/// updates and deletes check the version in the same statement. Reads (get, list) go
/// through a [`SharedClient`] when one is given — pipelined on one connection instead of
/// holding a pooled connection each — and through the pool otherwise.
#[derive(Debug, Clone)]
pub struct PgTaskRepository {
    pool: Pool,
    reader: Option<Arc<SharedClient>>,
}

impl PgTaskRepository {
    /// A repository doing everything through `pool`.
    #[must_use]
    pub fn new(pool: Pool) -> Self {
        Self { pool, reader: None }
    }

    /// A repository reading through `reader` (pipelined) and writing through `pool`.
    #[must_use]
    pub fn with_reader(pool: Pool, reader: Arc<SharedClient>) -> Self {
        Self {
            pool,
            reader: Some(reader),
        }
    }

    /// Runs one read statement on the shared client, or on a pooled connection.
    async fn read(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, RepositoryError> {
        if let Some(reader) = &self.reader {
            return reader.query(sql, params).await.map_err(to_repository);
        }
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await.map_err(pg)?;
        client.query(&stmt, params).await.map_err(pg)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, RepositoryError> {
        self.pool
            .get()
            .await
            .map_err(|e| to_repository(StorageError::from_pool(e)))
    }
}

fn to_task(row: &Row) -> Result<Task, RepositoryError> {
    let status: &str = row.try_get(3).map_err(pg)?;
    let status = Status::parse(status).ok_or_else(|| {
        to_repository(StorageError::Migration(format!(
            "unknown status {status:?} in tasks table"
        )))
    })?;
    Ok(Task {
        id: row.try_get(0).map_err(pg)?,
        title: row.try_get(1).map_err(pg)?,
        description: row.try_get(2).map_err(pg)?,
        status,
        due_at: row.try_get(4).map_err(pg)?,
        created_at: row.try_get(5).map_err(pg)?,
        updated_at: row.try_get(6).map_err(pg)?,
        version: row.try_get(7).map_err(pg)?,
    })
}

/// Runs one repository operation in an OpenTelemetry client span and records its
/// duration (`db.client.operation.duration`). Parameter values are never recorded.
pub(crate) async fn observed<T>(
    name: &'static str,
    operation: &'static str,
    work: impl std::future::Future<Output = Result<T, RepositoryError>>,
) -> Result<T, RepositoryError> {
    let collection = name.rsplit(' ').next().unwrap_or(name);
    let span = tracing::info_span!(
        "db",
        otel.name = name,
        otel.kind = "client",
        db.system.name = "postgresql",
        db.operation.name = operation,
        db.collection.name = collection,
    );
    let started = Instant::now();
    let outcome = work.instrument(span).await;
    tasks_telemetry::metrics::global().observe_db(operation, collection, started.elapsed());
    outcome
}

fn pg(error: tokio_postgres::Error) -> RepositoryError {
    to_repository(StorageError::from_pg(error))
}

#[async_trait]
impl TaskRepository for PgTaskRepository {
    async fn insert(&self, task: &Task) -> Result<(), RepositoryError> {
        observed("INSERT tasks", "INSERT", async move {
            let client = self.client().await?;
            let stmt = client.prepare_cached(INSERT).await.map_err(pg)?;
            client
                .execute(&stmt, &insert_params(task, &task.status.as_str()))
                .await
                .map_err(pg)?;
            Ok(())
        })
        .await
    }

    async fn insert_answering(
        &self,
        task: &Task,
        key: &str,
        response: &StoredResponse,
    ) -> Result<bool, RepositoryError> {
        observed("INSERT tasks", "INSERT", async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(pg)?;
            // Answer the key first: the row lock makes a concurrent request with the same
            // key wait here, and then find the key answered (0 rows) and store nothing.
            let answer = tx.prepare_cached(ANSWER_KEY).await.map_err(pg)?;
            let status = i16::try_from(response.status).unwrap_or(500);
            let headers =
                serde_json::to_value(&response.headers).unwrap_or(serde_json::Value::Null);
            let answered = tx
                .execute(&answer, &[&key, &status, &headers, &response.body])
                .await
                .map_err(pg)?;
            if answered != 1 {
                tx.rollback().await.map_err(pg)?;
                return Ok(false);
            }
            let insert = tx.prepare_cached(INSERT).await.map_err(pg)?;
            tx.execute(&insert, &insert_params(task, &task.status.as_str()))
                .await
                .map_err(pg)?;
            tx.commit().await.map_err(pg)?;
            Ok(true)
        })
        .await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Task>, RepositoryError> {
        observed("SELECT tasks", "SELECT", async move {
            let rows = self.read(SELECT_BY_ID, &[&id]).await?;
            rows.first().map(to_task).transpose()
        })
        .await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Task>, RepositoryError> {
        observed("SELECT tasks", "SELECT", async move {
            let fetch = i64::from(query.limit) + 1;
            let status = query.status.map(Status::as_str);
            let after = query.cursor.map(|c| c.after);
            // One statement per filter shape, so each gets a plan that uses its index.
            let rows = match (&status, &after) {
                (None, None) => self.read(LIST, &[&fetch]).await?,
                (Some(status), None) => self.read(LIST_BY_STATUS, &[status, &fetch]).await?,
                (None, Some(after)) => self.read(LIST_AFTER, &[after, &fetch]).await?,
                (Some(status), Some(after)) => {
                    self.read(LIST_BY_STATUS_AFTER, &[status, after, &fetch])
                        .await?
                }
            };
            rows.iter().map(to_task).collect()
        })
        .await
    }

    async fn update(
        &self,
        id: Uuid,
        patch: &TaskPatch,
        expected: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<UpdateOutcome, RepositoryError> {
        observed("UPDATE tasks", "UPDATE", async move {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(concat!(
                    "UPDATE tasks SET \
                       title = CASE WHEN $2 THEN $3 ELSE title END, \
                       description = CASE WHEN $4 THEN $5 ELSE description END, \
                       status = CASE WHEN $6 THEN $7 ELSE status END, \
                       due_at = CASE WHEN $8 THEN $9 ELSE due_at END, \
                       updated_at = $10, version = version + 1 \
                     WHERE id = $1 AND ($11::bigint IS NULL OR version = $11) \
                     RETURNING ",
                    columns!(),
                    ""
                ))
                .await
                .map_err(pg)?;
            let description = patch.description.clone().flatten();
            let due_at = patch.due_at.flatten();
            let status = patch.status.map(Status::as_str);
            let row = client
                .query_opt(
                    &stmt,
                    &[
                        &id,
                        &patch.title.is_some(),
                        &patch.title,
                        &patch.description.is_some(),
                        &description,
                        &patch.status.is_some(),
                        &status,
                        &patch.due_at.is_some(),
                        &due_at,
                        &now,
                        &expected,
                    ],
                )
                .await
                .map_err(pg)?;
            if let Some(row) = row {
                return Ok(UpdateOutcome::Updated(to_task(&row)?));
            }
            Ok(if self.exists(&client, id).await? {
                UpdateOutcome::VersionMismatch
            } else {
                UpdateOutcome::NotFound
            })
        })
        .await
    }

    async fn delete(
        &self,
        id: Uuid,
        expected: Option<i64>,
    ) -> Result<DeleteOutcome, RepositoryError> {
        observed("DELETE tasks", "DELETE", async move {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "DELETE FROM tasks WHERE id = $1 AND ($2::bigint IS NULL OR version = $2)",
                )
                .await
                .map_err(pg)?;
            if client.execute(&stmt, &[&id, &expected]).await.map_err(pg)? == 1 {
                return Ok(DeleteOutcome::Deleted);
            }
            Ok(if self.exists(&client, id).await? {
                DeleteOutcome::VersionMismatch
            } else {
                DeleteOutcome::NotFound
            })
        })
        .await
    }
}

impl PgTaskRepository {
    async fn exists(
        &self,
        client: &deadpool_postgres::Object,
        id: Uuid,
    ) -> Result<bool, RepositoryError> {
        let stmt = client
            .prepare_cached("SELECT 1 FROM tasks WHERE id = $1")
            .await
            .map_err(pg)?;
        Ok(client.query_opt(&stmt, &[&id]).await.map_err(pg)?.is_some())
    }
}
