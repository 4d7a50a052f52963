use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;

use crate::{
    Cursor, DeleteOutcome, DomainError, FieldError, NewTask, Owner, RecordedAnswer, Status, Task,
    TaskPatch, TaskRepository, UpdateOutcome,
};

/// Page size of a list request that names no `limit`.
pub const DEFAULT_PAGE_LIMIT: u32 = 20;
/// Largest page size a list request may ask for (the smallest is 1).
pub const MAX_PAGE_LIMIT: u32 = 100;

/// A validated list request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Only tasks in this state.
    pub status: Option<Status>,
    /// Page size, 1–[`MAX_PAGE_LIMIT`].
    pub limit: u32,
    /// Continue after this position.
    pub cursor: Option<Cursor>,
}

impl ListQuery {
    /// Validates raw query parameters, collecting every problem.
    ///
    /// # Errors
    /// [`DomainError::InvalidQuery`] naming each bad parameter.
    pub fn parse(
        status: Option<&str>,
        limit: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<Self, DomainError> {
        let mut errors = Vec::new();
        let status = status.and_then(|s| {
            let parsed = Status::parse(s);
            if parsed.is_none() {
                errors.push(FieldError::new(
                    "status",
                    "must be one of todo, in_progress, done",
                ));
            }
            parsed
        });
        let limit = match limit {
            None => DEFAULT_PAGE_LIMIT,
            Some(raw) => match raw.parse::<u32>() {
                Ok(n) if (1..=MAX_PAGE_LIMIT).contains(&n) => n,
                _ => {
                    errors.push(FieldError::new(
                        "limit",
                        format!("must be an integer from 1 to {MAX_PAGE_LIMIT}"),
                    ));
                    DEFAULT_PAGE_LIMIT
                }
            },
        };
        let cursor = cursor.and_then(|c| Cursor::decode(c).map_err(|e| errors.push(e)).ok());
        if errors.is_empty() {
            Ok(Self {
                status,
                limit,
                cursor,
            })
        } else {
            Err(DomainError::InvalidQuery(errors))
        }
    }
}

/// One page of tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page {
    /// Tasks, newest first.
    pub items: Vec<Task>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// An `If-Match` precondition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// `*`: the task must exist.
    Exists,
    /// One of these versions must be current.
    VersionIn(Vec<i64>),
}

/// The task use cases over a [`TaskRepository`], each on behalf of one [`Owner`].
#[derive(Debug)]
pub struct TaskService<R: ?Sized> {
    repository: Arc<R>,
}

impl<R: ?Sized> Clone for TaskService<R> {
    fn clone(&self) -> Self {
        Self {
            repository: self.repository.clone(),
        }
    }
}

impl<R: TaskRepository + ?Sized> TaskService<R> {
    /// A service storing tasks in `repository`.
    pub fn new(repository: Arc<R>) -> Self {
        Self { repository }
    }

    /// Validates and stores a new task of `owner`.
    ///
    /// # Errors
    /// [`DomainError::Validation`] or a repository failure.
    pub async fn create(
        &self,
        owner: &Owner,
        body: &serde_json::Value,
    ) -> Result<Task, DomainError> {
        let task = NewTask::from_json(body)
            .map_err(DomainError::Validation)?
            .into_task(Utc::now());
        self.repository.insert(owner, &task).await?;
        Ok(task)
    }

    /// Validates and stores a new task for a request holding the claimed idempotency
    /// `key`, recording the answer `render` makes of it in the same transaction
    /// ([`TaskRepository::insert_with_answer`]). `None` when the key was answered by
    /// another request in the meantime; nothing is stored then.
    ///
    /// # Errors
    /// [`DomainError::Validation`] or a repository failure (nothing is stored).
    pub async fn create_idempotent(
        &self,
        owner: &Owner,
        body: &serde_json::Value,
        key: &str,
        render: impl FnOnce(&Task) -> RecordedAnswer + Send,
    ) -> Result<Option<Task>, DomainError> {
        let task = NewTask::from_json(body)
            .map_err(DomainError::Validation)?
            .into_task(Utc::now());
        let answer = render(&task);
        let stored = self
            .repository
            .insert_with_answer(owner, &task, key, &answer)
            .await?;
        Ok(stored.then_some(task))
    }

    /// The task of `owner` with this id.
    ///
    /// # Errors
    /// [`DomainError::NotFound`] (also for another owner's task) or a repository failure.
    pub async fn get(&self, owner: &Owner, id: Uuid) -> Result<Task, DomainError> {
        self.repository
            .get(owner, id)
            .await?
            .ok_or(DomainError::NotFound)
    }

    /// One page of tasks, newest first.
    ///
    /// # Errors
    /// A repository failure.
    pub async fn list(&self, owner: &Owner, query: &ListQuery) -> Result<Page, DomainError> {
        let mut items = self.repository.list(owner, query).await?;
        let limit = query.limit as usize;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|t| Cursor { after: t.id }.encode())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    /// The version an `If-Match` precondition pins. A precondition on a task that does not
    /// exist fails (RFC 9110 §13.1.1: no current representation matches), so it is
    /// [`DomainError::PreconditionFailed`], not [`DomainError::NotFound`].
    async fn expected_version(
        &self,
        owner: &Owner,
        id: Uuid,
        precondition: Option<&Precondition>,
    ) -> Result<Option<i64>, DomainError> {
        match precondition {
            None => Ok(None),
            Some(Precondition::VersionIn(versions)) if versions.len() == 1 => Ok(Some(versions[0])),
            Some(p) => {
                let current = self
                    .repository
                    .get(owner, id)
                    .await?
                    .ok_or(DomainError::PreconditionFailed)?;
                match p {
                    Precondition::Exists => Ok(Some(current.version)),
                    Precondition::VersionIn(versions) if versions.contains(&current.version) => {
                        Ok(Some(current.version))
                    }
                    Precondition::VersionIn(_) => Err(DomainError::PreconditionFailed),
                }
            }
        }
    }

    /// Applies a JSON merge patch to a task of `owner`.
    ///
    /// # Errors
    /// [`DomainError::Validation`], [`DomainError::NotFound`] (without `If-Match`),
    /// [`DomainError::PreconditionFailed`] (also a missing task with `If-Match`) or a
    /// repository failure.
    pub async fn update(
        &self,
        owner: &Owner,
        id: Uuid,
        body: &serde_json::Value,
        precondition: Option<&Precondition>,
    ) -> Result<Task, DomainError> {
        let patch = TaskPatch::from_json(body).map_err(DomainError::Validation)?;
        let expected = self.expected_version(owner, id, precondition).await?;
        let missing = missing_task(precondition);
        if patch.is_empty() {
            let current = self.repository.get(owner, id).await?.ok_or(missing)?;
            return match expected {
                Some(v) if v != current.version => Err(DomainError::PreconditionFailed),
                _ => Ok(current),
            };
        }
        match self
            .repository
            .update(owner, id, &patch, expected, Utc::now())
            .await?
        {
            UpdateOutcome::Updated(task) => Ok(task),
            UpdateOutcome::NotFound => Err(missing),
            UpdateOutcome::VersionMismatch => Err(DomainError::PreconditionFailed),
        }
    }

    /// Deletes a task of `owner`.
    ///
    /// # Errors
    /// [`DomainError::NotFound`] (without `If-Match`), [`DomainError::PreconditionFailed`]
    /// (also a missing task with `If-Match`) or a repository failure.
    pub async fn delete(
        &self,
        owner: &Owner,
        id: Uuid,
        precondition: Option<&Precondition>,
    ) -> Result<(), DomainError> {
        let expected = self.expected_version(owner, id, precondition).await?;
        match self.repository.delete(owner, id, expected).await? {
            DeleteOutcome::Deleted => Ok(()),
            DeleteOutcome::NotFound => Err(missing_task(precondition)),
            DeleteOutcome::VersionMismatch => Err(DomainError::PreconditionFailed),
        }
    }
}

/// What a missing task is to a request: not found, or, under `If-Match`, a failed
/// precondition.
fn missing_task(precondition: Option<&Precondition>) -> DomainError {
    if precondition.is_some() {
        DomainError::PreconditionFailed
    } else {
        DomainError::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_defaults_and_bounds() {
        let q = ListQuery::parse(None, None, None).unwrap();
        assert_eq!(
            (q.limit, q.status, q.cursor),
            (DEFAULT_PAGE_LIMIT, None, None)
        );
        for bad in ["0", "101", "-1", "abc", "99999999999"] {
            assert!(ListQuery::parse(None, Some(bad), None).is_err(), "{bad}");
        }
        assert_eq!(
            ListQuery::parse(Some("done"), Some("100"), None)
                .unwrap()
                .limit,
            100
        );
    }

    #[test]
    fn every_bad_parameter_is_named() {
        let Err(DomainError::InvalidQuery(errors)) =
            ListQuery::parse(Some("x"), Some("0"), Some("zz"))
        else {
            panic!("expected InvalidQuery");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["status", "limit", "cursor"]);
    }
}
