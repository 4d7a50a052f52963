//! Turning PostgreSQL failures into the domain's repository errors.

use tasks_domain::RepositoryError;

/// Classifies a PostgreSQL failure for the domain: unavailable (retry later, 503) or
/// anything else (500).
pub fn to_repository(error: tasks_postgres::Error) -> RepositoryError {
    if error.is_unavailable() {
        RepositoryError::Unavailable(Box::new(error))
    } else {
        RepositoryError::Other(Box::new(error))
    }
}

/// A failed statement, transaction step or row conversion, classified for the domain.
pub(crate) fn from_postgres(error: tokio_postgres::Error) -> RepositoryError {
    to_repository(tasks_postgres::Error::from_pg(error))
}

/// A failure to get a pooled connection (wait timeout, refused connect, …), classified
/// for the domain.
pub(crate) fn from_pool(error: deadpool_postgres::PoolError) -> RepositoryError {
    to_repository(tasks_postgres::Error::from_pool(error))
}
