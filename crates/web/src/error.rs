//! What a failed page shows. Use-case failures keep the JSON API's status
//! codes (one mapping: `serviceradar_http::ApiError`) and are rendered as a
//! page; a missing or expired session redirects to sign-in instead.

use askama::Template;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serviceradar_auth::SESSION_COOKIE;
use serviceradar_control::ControlError;
use serviceradar_domain::validate::FieldError;
use serviceradar_http::ApiError;

/// A UI failure.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// No session (`expired`: there was one, and it ended): sign in first.
    #[error("sign in first")]
    SignIn {
        /// Whether a session cookie was sent but is no longer valid.
        expired: bool,
    },
    /// A use-case refused or failed.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// A template failed to render.
    #[error("rendering a page: {0}")]
    Render(#[from] askama::Error),
}

impl WebError {
    /// 404 (also for malformed ids and other tenants' objects).
    pub fn not_found() -> Self {
        Self::Control(ControlError::NotFound)
    }

    /// 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::Control(ControlError::BadRequest(message.into()))
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    title: String,
    message: String,
    fields: Vec<FieldError>,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, message, fields) = match self {
            WebError::SignIn { expired } => {
                let to = if expired {
                    "/sign-in?expired=1"
                } else {
                    "/sign-in"
                };
                let clear =
                    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
                let mut response = Redirect::to(to).into_response();
                if expired && let Ok(value) = clear.parse() {
                    response.headers_mut().insert(header::SET_COOKIE, value);
                }
                return response;
            }
            WebError::Render(e) => {
                tracing::error!(error = %e, "rendering a page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; quote the x-request-id response header to your operator"
                        .to_string(),
                    Vec::new(),
                )
            }
            WebError::Control(err) => {
                let (message, fields) = match &err {
                    ControlError::Internal { code, detail } => {
                        tracing::error!(code, error = %detail, "request failed");
                        (
                            "internal error; quote the x-request-id response header to your operator"
                                .to_string(),
                            Vec::new(),
                        )
                    }
                    ControlError::Invalid(errors) => {
                        ("some fields are invalid".to_string(), errors.0.clone())
                    }
                    ControlError::NotFound => ("no such object".to_string(), Vec::new()),
                    other => (other.to_string(), Vec::new()),
                };
                (ApiError::from(err).status(), message, fields)
            }
        };
        let page = ErrorPage {
            status: status.as_u16(),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            message,
            fields,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, page.message).into_response(),
        }
    }
}
