//! Store errors, shaped for the API: not found, conflict (a named unique
//! constraint), invalid state, and everything else as a backend failure.

use serviceradar_domain::state::IllegalTransition;

/// What went wrong in a store call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The object does not exist *in the caller's tenant*.
    #[error("not found")]
    NotFound,
    /// A unique constraint was violated; the message says which rule.
    #[error("{0}")]
    Conflict(String),
    /// The requested change breaks a rule (state machine, last owner, ...).
    #[error("{0}")]
    InvalidState(String),
    /// An illegal state-machine transition.
    #[error(transparent)]
    Transition(#[from] IllegalTransition),
    /// A referenced object (e.g. `edge_site_id`) does not exist in the tenant.
    #[error("{field}: {message}")]
    BadReference {
        /// The input field naming the reference.
        field: &'static str,
        /// Explanation.
        message: String,
    },
    /// Stored data could not be decoded (a bug or manual tampering).
    #[error("corrupt row in {table}: {detail}")]
    Corrupt {
        /// Table.
        table: &'static str,
        /// What failed to decode.
        detail: String,
    },
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// Whether the database refused the data itself — a value it cannot hold
    /// or a row breaking a check — so that writing the same rows again fails
    /// the same way, whatever the retry. PostgreSQL: SQLSTATE classes `22`
    /// (data exception, e.g. an invalid byte sequence) and `54` (program
    /// limit exceeded), and `23` integrity violations other than a duplicate
    /// key; either database: not-null and check violations.
    ///
    /// Callers writing a batch split it on such an error until the refused
    /// rows are alone (see `serviceradar-ingest`); any other error (a lost
    /// connection, a duplicate key) says nothing about the rows.
    pub fn is_refused_data(&self) -> bool {
        let StoreError::Database(sqlx::Error::Database(db)) = self else {
            return false;
        };
        if matches!(
            db.kind(),
            sqlx::error::ErrorKind::NotNullViolation | sqlx::error::ErrorKind::CheckViolation
        ) {
            return true;
        }
        if db.is_unique_violation() {
            return false;
        }
        let Some(code) = db.code() else {
            return false;
        };
        // SQLite's codes are numbers; only PostgreSQL's SQLSTATEs are classed.
        code.len() == 5
            && (code.starts_with("22") || code.starts_with("23") || code.starts_with("54"))
    }

    pub(crate) fn corrupt(table: &'static str, detail: impl ToString) -> Self {
        StoreError::Corrupt {
            table,
            detail: detail.to_string(),
        }
    }
}

/// Turns a unique-constraint violation into [`StoreError::Conflict`] with
/// `message`; other errors pass through.
pub(crate) fn on_unique(message: &str) -> impl FnOnce(sqlx::Error) -> StoreError + '_ {
    move |err| match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(message.to_string())
        }
        _ => StoreError::Database(err),
    }
}
