//! The task tracking domain: the [`Task`] model and its validation, opaque keyset
//! pagination [`Cursor`]s, the [`TaskService`] use cases and the ports storage implements
//! ([`TaskRepository`], [`IdempotencyStore`]).
//!
//! This crate does no I/O and knows neither HTTP nor PostgreSQL: inputs arrive as parsed
//! JSON values, outputs are plain types, failures are [`DomainError`]s.
//!
//! ```
//! use tasks_domain::{NewTask, Status};
//!
//! let input = serde_json::json!({"title": "  Write the runbook  ", "status": "in_progress"});
//! let task = NewTask::from_json(&input).expect("valid");
//! assert_eq!(task.title, "Write the runbook");
//! assert_eq!(task.status, Status::InProgress);
//!
//! let errors = NewTask::from_json(&serde_json::json!({"title": "", "colour": "red"})).unwrap_err();
//! let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
//! assert_eq!(fields, ["colour", "title"]);
//! ```

mod cursor;
mod error;
mod idempotency;
mod owner;
mod repository;
mod service;
mod task;

pub use cursor::{CURSOR_PATTERN, Cursor};
pub use error::{DomainError, FieldError, RepositoryError};
pub use idempotency::{
    Claim, IDEMPOTENCY_KEY_MAX_LEN, IDEMPOTENCY_KEY_PATTERN, IdempotencyStore, RecordedAnswer,
    is_valid_idempotency_key,
};
pub use owner::{OWNER_MAX_CHARS, Owner};
pub use repository::{DeleteOutcome, TaskRepository, UpdateOutcome};
pub use service::{DEFAULT_PAGE_LIMIT, ListQuery, MAX_PAGE_LIMIT, Page, Precondition, TaskService};
pub use task::{DESCRIPTION_MAX_CHARS, NewTask, Status, TITLE_MAX_CHARS, Task, TaskPatch};
