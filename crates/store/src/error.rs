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
