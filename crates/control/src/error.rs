//! [`ControlError`]: why a use-case did not happen, in kinds every front end
//! maps the same way (the `http` crate to a status, the CLI to an exit code).
//!
//! Internal failures carry their detail for the log only: what a tenant sees
//! is a stable code, a short message and a reference to find the log line.

use serviceradar_auth::AuthError;
use serviceradar_domain::policy::Denied;
use serviceradar_domain::state::IllegalTransition;
use serviceradar_domain::validate::{FieldError, FieldErrors};
use serviceradar_store::StoreError;

/// Why a use-case failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Some inputs are invalid; all of them are listed.
    #[error("some fields are invalid")]
    Invalid(FieldErrors),
    /// The request as a whole makes no sense.
    #[error("{0}")]
    BadRequest(String),
    /// No valid credential.
    #[error("{0}")]
    Unauthorized(String),
    /// The policy refused the action.
    #[error(transparent)]
    Denied(#[from] Denied),
    /// Refused for a reason other than the policy (e.g. a missing CSRF token).
    #[error("{0}")]
    Forbidden(String),
    /// No such object in the caller's tenant (another tenant's object is the same).
    #[error("no such object")]
    NotFound,
    /// Too many attempts: try again after `retry_after`.
    #[error("too many attempts; try again in {} s", retry_after.as_secs().max(1))]
    Throttled {
        /// How long to wait.
        retry_after: std::time::Duration,
    },
    /// The object's state forbids it, or it already exists.
    #[error("{0}")]
    Conflict(String),
    /// The site's agent has no open control stream on any replica: the
    /// command (this id) was stored as `offline` and not sent.
    #[error("the site's agent is not connected (command {0} recorded as offline)")]
    AgentOffline(uuid::Uuid),
    /// A part this request needs is not running here right now (the caller
    /// may retry, or ask another replica).
    #[error("{0}")]
    Unavailable(String),
    /// An enrollment token was refused (each reason has its own code).
    #[error(transparent)]
    TokenRefused(crate::enrollment::TokenRefusal),
    /// Something failed that the caller cannot fix. `code` is stable,
    /// `detail` goes to the log only.
    #[error("internal error ({code})")]
    Internal {
        /// Stable machine-readable code.
        code: &'static str,
        /// The failure in full, for the log.
        detail: String,
    },
}

impl ControlError {
    /// An internal failure with a stable `code`; `detail` is logged, never shown.
    pub fn internal(code: &'static str, detail: impl std::fmt::Display) -> Self {
        Self::Internal {
            code,
            detail: detail.to_string(),
        }
    }

    /// A single invalid field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::Invalid(FieldErrors(vec![FieldError::new(field, message)]))
    }
}

impl From<StoreError> for ControlError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => Self::NotFound,
            StoreError::Conflict(msg) | StoreError::InvalidState(msg) => Self::Conflict(msg),
            StoreError::Transition(t) => t.into(),
            StoreError::BadReference { field, message } => Self::field(field, message),
            other => Self::internal("database", other),
        }
    }
}

impl From<IllegalTransition> for ControlError {
    fn from(t: IllegalTransition) -> Self {
        Self::Conflict(t.to_string())
    }
}

impl From<FieldErrors> for ControlError {
    fn from(errors: FieldErrors) -> Self {
        Self::Invalid(errors)
    }
}

impl From<AuthError> for ControlError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Unauthorized(msg) => Self::Unauthorized(msg.into()),
            AuthError::CsrfMismatch => Self::Forbidden(err.to_string()),
            AuthError::Store(e) => e.into(),
            AuthError::Hashing(detail) => Self::internal("password_hashing", detail),
        }
    }
}

/// Turns collected field errors and parsed values into either the values or
/// one [`ControlError::Invalid`] naming every bad field.
pub(crate) fn finish<T>(errors: FieldErrors, values: Option<T>) -> Result<T, ControlError> {
    match (errors.0.is_empty(), values) {
        (true, Some(values)) => Ok(values),
        _ => Err(ControlError::Invalid(errors)),
    }
}
