use std::error::Error as StdError;

use serde::Serialize;

/// One invalid input field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field's name (a JSON member or a query parameter).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// A new field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A storage failure, classified by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// The store cannot be reached or is overloaded right now; retrying later may work.
    #[error("storage unavailable: {0}")]
    Unavailable(#[source] Box<dyn StdError + Send + Sync>),
    /// Anything else.
    #[error("storage failure: {0}")]
    Other(#[source] Box<dyn StdError + Send + Sync>),
}

/// Why a use case failed.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The request body is well-formed JSON but breaks the task rules.
    #[error("invalid task: {}", describe(.0))]
    Validation(Vec<FieldError>),
    /// Query parameters (limit, cursor, status filter) are invalid.
    #[error("invalid query: {}", describe(.0))]
    InvalidQuery(Vec<FieldError>),
    /// No task has this id.
    #[error("task not found")]
    NotFound,
    /// The caller's precondition (`If-Match`) does not hold.
    #[error("the task has changed since the given version")]
    PreconditionFailed,
    /// Storage failed.
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

fn describe(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect::<Vec<_>>()
        .join("; ")
}
