//! PostgreSQL errors, classified so callers can answer "try later" (503) or "bug" (500).

/// A PostgreSQL failure, classified by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database cannot be reached, is shutting down, refused or timed out.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Invalid settings (TLS material, pool parameters).
    #[error("invalid database settings: {0}")]
    Settings(String),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[from] tokio_postgres::Error),
}

/// SQLSTATE classes and codes that mean "the database is not able to serve now".
fn is_transient(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("53") // insufficient resources (too many connections)
        || code.starts_with("57P") // admin/crash shutdown, cannot connect now
        || code == "57014" // statement timeout / cancelled
        || code == "40001" // serialization failure
        || code == "40P01" // deadlock
        // Login refused or the database missing: a rotated password not yet everywhere,
        // or a database still being created. Not the client's fault; retry later.
        || code.starts_with("28") // invalid authorization
        || code == "3D000" // invalid catalog name
}

impl Error {
    /// Whether retrying later may succeed (the database is down, busy or restarting).
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// Classifies a driver error.
    #[must_use]
    pub fn from_pg(error: tokio_postgres::Error) -> Self {
        let transient = match error.as_db_error() {
            Some(db) => is_transient(db.code().code()),
            None => {
                let io =
                    std::error::Error::source(&error).is_some_and(|s| s.is::<std::io::Error>());
                let text = error.to_string();
                error.is_closed()
                    || io
                    || text.contains("timeout")
                    || text.starts_with("error connecting")
            }
        };
        if transient {
            Self::Unavailable(error.to_string())
        } else {
            Self::Database(error)
        }
    }

    /// Classifies a pool error.
    #[must_use]
    pub fn from_pool(error: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        match error {
            PoolError::Backend(e) => Self::from_pg(e),
            PoolError::Timeout(kind) => {
                Self::Unavailable(format!("timed out waiting for a connection ({kind:?})"))
            }
            other => Self::Unavailable(other.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        Self::from_pool(error)
    }
}
