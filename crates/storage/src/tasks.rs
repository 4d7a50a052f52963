//! The tasks repository over a deadpool-postgres pool.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tasks_domain::{
    DeleteOutcome, ListQuery, Owner, RecordedAnswer, RepositoryError, Status, Task, TaskPatch,
    TaskRepository, UpdateOutcome,
};
use tasks_postgres::pipelined::PipelinedReader;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::error::{from_pool, from_postgres, to_repository};
use crate::idempotency::record_answer;
use crate::instrument::instrumented;

/// The task columns, in the order [`to_task`] reads them (a macro so statements can be
/// `concat!`-ed at compile time instead of formatted per call).
macro_rules! columns {
    () => {
        "id, title, description, status, due_at, created_at, updated_at, version"
    };
}

// Every statement is scoped by `owner = $1`: another owner's task is a missing task.
const SELECT_BY_ID: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM tasks WHERE owner = $1 AND id = $2"
);
const LIST: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM tasks WHERE owner = $1 ORDER BY id DESC LIMIT $2"
);
const LIST_BY_STATUS: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM tasks WHERE owner = $1 AND status = $2 ORDER BY id DESC LIMIT $3"
);
const LIST_AFTER: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM tasks WHERE owner = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
);
const LIST_BY_STATUS_AFTER: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM tasks WHERE owner = $1 AND status = $2 AND id < $3 ORDER BY id DESC LIMIT $4"
);

const INSERT: &str = concat!(
    "INSERT INTO tasks (owner, ",
    columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
);

/// The parameters of [`INSERT`], in column order (`status` is `task.status.as_str()`).
fn insert_params<'a>(
    owner: &'a &'a str,
    task: &'a Task,
    status: &'a &'static str,
) -> [&'a (dyn ToSql + Sync); 9] {
    [
        owner,
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
/// through a [`PipelinedReader`] when one is given — pipelined on one connection instead of
/// holding a pooled connection each — and through the pool otherwise.
#[derive(Debug, Clone)]
pub struct PgTaskRepository {
    pool: Pool,
    reader: Option<Arc<PipelinedReader>>,
}

impl PgTaskRepository {
    /// A repository doing everything through `pool`.
    #[must_use]
    pub fn new(pool: Pool) -> Self {
        Self { pool, reader: None }
    }

    /// A repository reading through `reader` (pipelined) and writing through `pool`.
    #[must_use]
    pub fn with_reader(pool: Pool, reader: Arc<PipelinedReader>) -> Self {
        Self {
            pool,
            reader: Some(reader),
        }
    }

    /// Runs one read statement on the pipelined reader, or on a pooled connection.
    async fn read(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, RepositoryError> {
        if let Some(reader) = &self.reader {
            return reader.query(sql, params).await.map_err(to_repository);
        }
        // Boxed: the pool's checkout and `prepare_cached` futures are several KB, and
        // unboxed they would be part of every read's future — moved into its box on each
        // request — also when reads go through the pipelined reader.
        Box::pin(self.read_pooled(sql, params)).await
    }

    /// Runs one read statement returning at most one row (the first), without collecting
    /// the rows into a `Vec` on the pipelined reader.
    async fn read_one(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, RepositoryError> {
        if let Some(reader) = &self.reader {
            return reader.query_opt(sql, params).await.map_err(to_repository);
        }
        let mut rows = Box::pin(self.read_pooled(sql, params)).await?;
        Ok(if rows.is_empty() {
            None
        } else {
            Some(rows.swap_remove(0))
        })
    }

    async fn read_pooled(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, RepositoryError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await.map_err(from_postgres)?;
        client.query(&stmt, params).await.map_err(from_postgres)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, RepositoryError> {
        self.pool.get().await.map_err(from_pool)
    }
}

fn to_task(row: &Row) -> Result<Task, RepositoryError> {
    let status: &str = row.try_get(3).map_err(from_postgres)?;
    let status = Status::parse(status).ok_or_else(|| {
        to_repository(tasks_postgres::Error::Migration(format!(
            "unknown status {status:?} in tasks table"
        )))
    })?;
    Ok(Task {
        id: row.try_get(0).map_err(from_postgres)?,
        title: row.try_get(1).map_err(from_postgres)?,
        description: row.try_get(2).map_err(from_postgres)?,
        status,
        due_at: row.try_get(4).map_err(from_postgres)?,
        created_at: row.try_get(5).map_err(from_postgres)?,
        updated_at: row.try_get(6).map_err(from_postgres)?,
        version: row.try_get(7).map_err(from_postgres)?,
    })
}

#[async_trait]
impl TaskRepository for PgTaskRepository {
    async fn insert(&self, owner: &Owner, task: &Task) -> Result<(), RepositoryError> {
        instrumented("INSERT tasks", "INSERT", "tasks", move || async move {
            let client = self.client().await?;
            let stmt = client.prepare_cached(INSERT).await.map_err(from_postgres)?;
            client
                .execute(
                    &stmt,
                    &insert_params(&owner.as_str(), task, &task.status.as_str()),
                )
                .await
                .map_err(from_postgres)?;
            Ok(())
        })
        .await
    }

    async fn insert_with_answer(
        &self,
        owner: &Owner,
        task: &Task,
        key: &str,
        answer: &RecordedAnswer,
    ) -> Result<bool, RepositoryError> {
        instrumented("INSERT tasks", "INSERT", "tasks", move || async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(from_postgres)?;
            // Answer the key first: the row lock makes a concurrent request with the same
            // key wait here, and then find the key answered and store nothing.
            if !record_answer(&tx, owner, key, answer).await? {
                tx.rollback().await.map_err(from_postgres)?;
                return Ok(false);
            }
            let insert = tx.prepare_cached(INSERT).await.map_err(from_postgres)?;
            tx.execute(
                &insert,
                &insert_params(&owner.as_str(), task, &task.status.as_str()),
            )
            .await
            .map_err(from_postgres)?;
            tx.commit().await.map_err(from_postgres)?;
            Ok(true)
        })
        .await
    }

    async fn get(&self, owner: &Owner, id: Uuid) -> Result<Option<Task>, RepositoryError> {
        let owner = owner.as_str();
        instrumented("SELECT tasks", "SELECT", "tasks", move || async move {
            let row = self.read_one(SELECT_BY_ID, &[&owner, &id]).await?;
            row.as_ref().map(to_task).transpose()
        })
        .await
    }

    async fn list(&self, owner: &Owner, query: &ListQuery) -> Result<Vec<Task>, RepositoryError> {
        let owner = owner.as_str();
        instrumented("SELECT tasks", "SELECT", "tasks", move || async move {
            let fetch = i64::from(query.limit) + 1;
            let status = query.status.map(Status::as_str);
            let after = query.cursor.map(|c| c.after);
            // One statement per filter shape, so each gets a plan that uses its index.
            let rows = match (&status, &after) {
                (None, None) => self.read(LIST, &[&owner, &fetch]).await?,
                (Some(status), None) => {
                    self.read(LIST_BY_STATUS, &[&owner, status, &fetch]).await?
                }
                (None, Some(after)) => self.read(LIST_AFTER, &[&owner, after, &fetch]).await?,
                (Some(status), Some(after)) => {
                    self.read(LIST_BY_STATUS_AFTER, &[&owner, status, after, &fetch])
                        .await?
                }
            };
            rows.iter().map(to_task).collect()
        })
        .await
    }

    async fn update(
        &self,
        owner: &Owner,
        id: Uuid,
        patch: &TaskPatch,
        expected: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<UpdateOutcome, RepositoryError> {
        instrumented("UPDATE tasks", "UPDATE", "tasks", move || async move {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(concat!(
                    "UPDATE tasks SET \
                       title = CASE WHEN $2 THEN $3 ELSE title END, \
                       description = CASE WHEN $4 THEN $5 ELSE description END, \
                       status = CASE WHEN $6 THEN $7 ELSE status END, \
                       due_at = CASE WHEN $8 THEN $9 ELSE due_at END, \
                       updated_at = $10, version = version + 1 \
                     WHERE id = $1 AND ($11::bigint IS NULL OR version = $11) AND owner = $12 \
                     RETURNING ",
                    columns!(),
                    ""
                ))
                .await
                .map_err(from_postgres)?;
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
                        &owner.as_str(),
                    ],
                )
                .await
                .map_err(from_postgres)?;
            if let Some(row) = row {
                return Ok(UpdateOutcome::Updated(to_task(&row)?));
            }
            Ok(if self.exists(&client, owner, id).await? {
                UpdateOutcome::VersionMismatch
            } else {
                UpdateOutcome::NotFound
            })
        })
        .await
    }

    async fn delete(
        &self,
        owner: &Owner,
        id: Uuid,
        expected: Option<i64>,
    ) -> Result<DeleteOutcome, RepositoryError> {
        instrumented("DELETE tasks", "DELETE", "tasks", move || async move {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "DELETE FROM tasks WHERE id = $1 AND ($2::bigint IS NULL OR version = $2) AND owner = $3",
                )
                .await
                .map_err(from_postgres)?;
            if client
                .execute(&stmt, &[&id, &expected, &owner.as_str()])
                .await
                .map_err(from_postgres)?
                == 1
            {
                return Ok(DeleteOutcome::Deleted);
            }
            Ok(if self.exists(&client, owner, id).await? {
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
        owner: &Owner,
        id: Uuid,
    ) -> Result<bool, RepositoryError> {
        let stmt = client
            .prepare_cached("SELECT 1 FROM tasks WHERE owner = $1 AND id = $2")
            .await
            .map_err(from_postgres)?;
        Ok(client
            .query_opt(&stmt, &[&owner.as_str(), &id])
            .await
            .map_err(from_postgres)?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `async_trait` boxes `get`'s future on every request. Over glibc's per-thread cache
    // limit (1,032 bytes) that box's malloc takes the slow path (~1.1k instructions
    // against ~60 from the cache, docs/performance.md); it was 1,584 bytes before the
    // pipelined read boxed tokio-postgres' query future.
    #[test]
    fn get_s_boxed_future_fits_the_per_thread_cache() {
        let settings = tasks_postgres::pool::PoolSettings::default();
        // No connection is opened: neither the pool nor the reader connects before use,
        // and the future is never polled.
        let pool = tasks_postgres::pool::build_pool(&settings).expect("pool");
        let repository =
            PgTaskRepository::with_reader(pool, Arc::new(PipelinedReader::new(settings)));
        let owner = Owner::new("token:ci").expect("owner");
        let future = repository.get(&owner, Uuid::nil());
        let size = std::mem::size_of_val(&*future);
        assert!(
            size <= 1_032,
            "PgTaskRepository::get's future is {size} bytes"
        );
    }
}
