use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{ListQuery, Owner, RecordedAnswer, RepositoryError, Task, TaskPatch};

/// What an update did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// Applied; the task as it now is.
    Updated(Task),
    /// No task has this id.
    NotFound,
    /// The task exists but its version is not the expected one.
    VersionMismatch,
}

/// What a delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// Removed.
    Deleted,
    /// No task has this id.
    NotFound,
    /// The task exists but its version is not the expected one.
    VersionMismatch,
}

/// Where tasks live. Every operation is scoped to one [`Owner`]: a task of another owner
/// is, for every method, a task that does not exist. Implementations must make `update`
/// and `delete` atomic with their version check (optimistic concurrency).
#[async_trait]
pub trait TaskRepository: Send + Sync {
    /// Stores a new task belonging to `owner`.
    async fn insert(&self, owner: &Owner, task: &Task) -> Result<(), RepositoryError>;

    /// Stores a new task and, atomically with it, records `answer` as the answer to the
    /// claimed, still unanswered idempotency `key` ([`crate::IdempotencyStore::claim`]):
    /// both happen or neither, so a retry either replays this answer or finds no task
    /// created. Returns `false`, storing nothing, when the key has no unanswered claim
    /// any more (another request with the same key was answered first).
    async fn insert_with_answer(
        &self,
        owner: &Owner,
        task: &Task,
        key: &str,
        answer: &RecordedAnswer,
    ) -> Result<bool, RepositoryError>;

    /// The task of `owner` with this id.
    async fn get(&self, owner: &Owner, id: Uuid) -> Result<Option<Task>, RepositoryError>;

    /// Up to `query.limit + 1` tasks of `owner`, newest first, older than `query.cursor` and matching
    /// `query.status` (the extra row tells the caller whether another page exists).
    async fn list(&self, owner: &Owner, query: &ListQuery) -> Result<Vec<Task>, RepositoryError>;

    /// Applies `patch` (bumping the version and `updated_at` to `now`) when the current
    /// version equals `expected`, or unconditionally when `expected` is `None`.
    async fn update(
        &self,
        owner: &Owner,
        id: Uuid,
        patch: &TaskPatch,
        expected: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<UpdateOutcome, RepositoryError>;

    /// Deletes the task when the current version equals `expected` (or always, for `None`).
    async fn delete(
        &self,
        owner: &Owner,
        id: Uuid,
        expected: Option<i64>,
    ) -> Result<DeleteOutcome, RepositoryError>;
}
