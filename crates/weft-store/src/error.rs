//! The store's error type. Database errors are classified here, using sqlx's
//! error kinds, so nothing above the store matches on `sqlx::Error`.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} `{id}` not found")]
    NotFound { what: &'static str, id: String },
    /// The request conflicts with the current state; nothing was changed.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The request is malformed in a way only the store can tell.
    #[error("{message}")]
    Invalid { code: &'static str, message: String },
    /// The database cannot be reached or the pool is exhausted: try again.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("bad database configuration: {0}")]
    Config(String),
    /// A stored row does not decode (a bug or a manual edit).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

impl Error {
    pub(crate) fn from_sqlx(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Error::Unavailable(err),
            sqlx::Error::Database(db) => {
                // Postgres: connection-class errors (08xxx), admin shutdown
                // (57P01..03) and serialization/deadlock failures (40xxx).
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                if code.starts_with("08") || code.starts_with("57P") || code.starts_with("40") {
                    Error::Unavailable(err)
                } else if db.is_unique_violation() {
                    Error::Conflict {
                        code: "conflict",
                        message: db.message().to_owned(),
                    }
                } else {
                    Error::Database(err)
                }
            }
            _ => Error::Database(err),
        }
    }

    /// Whether a retry of the same call may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }

    pub(crate) fn stale_lease(lease_id: &str) -> Self {
        Error::Conflict {
            code: "stale_lease",
            message: format!(
                "lease `{lease_id}` is no longer held: it expired, was reaped or its attempt ended"
            ),
        }
    }
}
