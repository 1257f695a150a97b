//! The one mapping from failures to HTTP responses (`ControlError` and the
//! extractors' rejections).
//!
//! Every error body has the same shape:
//! `{"error": {"code": "...", "message": "...", "fields": [{"field", "message"}]}}`.
//! 5xx errors are logged with their detail and shown to the client without it.
//! A missing object and an object of another tenant are the same `404`, so
//! the API never reveals that something exists elsewhere.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serviceradar_auth::AuthError;
use serviceradar_control::ControlError;
use serviceradar_domain::validate::{FieldError, FieldErrors};
use utoipa::ToSchema;

/// An API failure. Build with the constructors; convert from domain and store errors.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    fields: Vec<FieldError>,
    /// Detail for the log only (5xx).
    internal: Option<String>,
    /// Seconds for a `Retry-After` header (429).
    retry_after: Option<u64>,
}

/// JSON body of an error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error object.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code (`validation_failed`, `not_found`, ...).
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Per-field validation errors (400 only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldErrorBody>,
}

/// One invalid field.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldErrorBody {
    /// Field name.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            fields: Vec::new(),
            internal: None,
            retry_after: None,
        }
    }

    /// 400 with a general message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 400 with per-field errors.
    pub fn validation(errors: FieldErrors) -> Self {
        let mut err = Self::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "some fields are invalid",
        );
        err.fields = errors.0;
        err
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such object")
    }

    /// 405: the method is not allowed here (for this caller).
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        )
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 500 with a stable `code`; `detail` is logged (with the request id,
    /// which the response carries in `x-request-id`) but never returned.
    pub fn internal(code: &'static str, detail: impl Into<String>) -> Self {
        let mut err = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            code,
            "internal error; quote the x-request-id response header to your operator",
        );
        err.internal = Some(detail.into());
        err
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(detail) = &self.internal {
            tracing::error!(status = %self.status, code = self.code, error = %detail, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                fields: self
                    .fields
                    .into_iter()
                    .map(|f| FieldErrorBody {
                        field: f.field,
                        message: f.message,
                    })
                    .collect(),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<ControlError> for ApiError {
    fn from(err: ControlError) -> Self {
        match err {
            ControlError::Invalid(errors) => ApiError::validation(errors),
            ControlError::BadRequest(msg) => ApiError::bad_request(msg),
            ControlError::Unauthorized(msg) => ApiError::unauthorized(msg),
            ControlError::Denied(denied) => ApiError::forbidden(denied.to_string()),
            ControlError::Forbidden(msg) => ApiError::forbidden(msg),
            ControlError::NotFound => ApiError::not_found(),
            ControlError::Conflict(msg) => ApiError::conflict(msg),
            offline @ ControlError::AgentOffline(_) => {
                ApiError::new(StatusCode::CONFLICT, "agent_offline", offline.to_string())
            }
            throttled @ ControlError::Throttled { retry_after } => {
                let mut err = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_requests",
                    throttled.to_string(),
                );
                // Round up: a client waiting this long is let through.
                err.retry_after =
                    Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0));
                err
            }
            ControlError::Unavailable(msg) => {
                let mut err = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", msg);
                err.retry_after = Some(5);
                err
            }
            ControlError::TokenRefused(why) => {
                use serviceradar_control::enrollment::TokenRefusal as R;
                let status = match why {
                    R::Malformed | R::BadSignature | R::Unknown | R::Expired | R::Revoked => {
                        StatusCode::UNAUTHORIZED
                    }
                    R::WrongScope { .. } => StatusCode::FORBIDDEN,
                    R::UsedUp | R::HostConflict => StatusCode::CONFLICT,
                };
                ApiError::new(status, why.code(), why.to_string())
            }
            ControlError::Internal { code, detail } => ApiError::internal(code, detail),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        ControlError::from(err).into()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        // A body over the limit is found while reading it when it has no
        // Content-Length (chunked): that is a 413 too, not a bad request.
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is larger than the 1 MiB limit",
            );
        }
        ApiError::bad_request(format!("invalid JSON body: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request(format!("invalid query string: {}", rejection.body_text()))
    }
}
