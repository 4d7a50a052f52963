//! Turning PostgreSQL failures into the domain's repository errors.

use tasks_domain::RepositoryError;

pub use tasks_postgres::Error as StorageError;

/// Classifies a PostgreSQL failure for the domain: unavailable (retry later, 503) or
/// anything else (500).
pub fn to_repository(error: StorageError) -> RepositoryError {
    if error.is_unavailable() {
        RepositoryError::Unavailable(Box::new(error))
    } else {
        RepositoryError::Other(Box::new(error))
    }
}
