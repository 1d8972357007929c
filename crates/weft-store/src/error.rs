//! The store's error type. Database errors are classified here, using sqlx's
//! error kinds, so nothing above the store matches on `sqlx::Error`.

use weft_core::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} `{id}` not found")]
    NotFound { what: &'static str, id: String },
    /// The request conflicts with the current state; nothing was changed.
    #[error("{message}")]
    Conflict { code: ErrorCode, message: String },
    /// The request is malformed in a way only the store can tell.
    #[error("{message}")]
    Invalid { code: ErrorCode, message: String },
    /// The database cannot be reached or the pool is exhausted: try again.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("bad database configuration: {0}")]
    Config(String),
    /// A stored row does not decode (a bug or a manual edit): what is
    /// corrupt, where, and for which run when the row names one.
    #[error("corrupt stored data: {0}")]
    Corrupt(Box<Corruption>),
}

/// What is wrong with a stored row, for [`Error::Corrupt`]. It names places
/// and the kind of fault, never the stored values themselves (they may hold
/// secrets), except an unknown status, which is a closed word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// The column or stored document that does not decode, e.g. `status`
    /// or `run input`.
    pub column: String,
    /// The run the row belongs to, when the row names one.
    pub run_id: Option<String>,
    /// What was wrong with it.
    pub problem: Problem,
}

/// The kind of fault in a [`Corruption`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The query's result has no such column.
    MissingColumn,
    /// The column is NULL where a value is required.
    Null,
    /// The value has the wrong type; `expected` names the type wanted.
    WrongType { expected: &'static str },
    /// A status (or other closed word) that the enums do not know.
    UnknownValue(String),
    /// A stored JSON document does not parse; the parser's message.
    BadJson(String),
    /// Something required is absent (e.g. no schema version recorded).
    Absent,
    /// The run has a different number of step rows than its definition steps.
    StepCount { rows: usize, defined: usize },
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.problem {
            Problem::MissingColumn => write!(f, "column `{}` missing from the row", self.column)?,
            Problem::Null => write!(f, "column `{}` is NULL", self.column)?,
            Problem::WrongType { expected } => {
                write!(f, "column `{}` is not {expected}", self.column)?
            }
            Problem::UnknownValue(value) => {
                write!(f, "column `{}` holds unknown value `{value}`", self.column)?
            }
            Problem::BadJson(err) => write!(f, "{} is not valid JSON: {err}", self.column)?,
            Problem::Absent => write!(f, "{} is absent", self.column)?,
            Problem::StepCount { rows, defined } => write!(
                f,
                "{}: {rows} step rows where the definition has {defined} steps",
                self.column
            )?,
        }
        if let Some(run_id) = &self.run_id {
            write!(f, " (run `{run_id}`)")?;
        }
        Ok(())
    }
}

impl Error {
    /// A [`Error::Corrupt`] for `column` of `run_id`'s row.
    pub fn corrupt(column: impl Into<String>, run_id: Option<String>, problem: Problem) -> Self {
        Error::Corrupt(Box::new(Corruption {
            column: column.into(),
            run_id,
            problem,
        }))
    }

    /// Names `run_id` as the run of a [`Error::Corrupt`] whose row did not
    /// say (a sweep knows which run it was working on); other errors pass
    /// through unchanged.
    pub fn in_run(self, run_id: impl std::fmt::Display) -> Self {
        match self {
            Error::Corrupt(mut c) if c.run_id.is_none() => {
                c.run_id = Some(run_id.to_string());
                Error::Corrupt(c)
            }
            other => other,
        }
    }

    /// The run whose row is corrupt, if this is [`Error::Corrupt`] and the row
    /// named one: sweeps skip that run.
    pub fn corrupt_run(&self) -> Option<&str> {
        match self {
            Error::Corrupt(c) => c.run_id.as_deref(),
            _ => None,
        }
    }

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
                        code: ErrorCode::Conflict,
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
            code: ErrorCode::StaleLease,
            message: format!(
                "lease `{lease_id}` is no longer held: it expired, was reaped or its attempt ended"
            ),
        }
    }
}
