//! The authenticated caller of a request: a bearer API token, or a session
//! cookie (whose unsafe requests must also carry the session's CSRF token in
//! `X-CSRF-Token`). Records `tenant_id` and `user_id` on the request span.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use serviceradar_auth::{CSRF_HEADER, SESSION_COOKIE, authenticate_session, authenticate_token};
use serviceradar_control::Control;

use crate::error::ApiError;

pub use serviceradar_auth::{Authenticated, Credential};

/// The extractor: `auth: Caller` in a handler's arguments.
pub struct Caller(pub Authenticated);

impl FromRequestParts<Control> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, control: &Control) -> Result<Self, ApiError> {
        let auth = authenticate(parts, control).await?;
        let span = tracing::Span::current();
        span.record("tenant_id", tracing::field::display(auth.actor.tenant_id));
        span.record("user_id", tracing::field::display(auth.actor.user_id));
        Ok(Caller(auth))
    }
}

async fn authenticate(parts: &Parts, control: &Control) -> Result<Authenticated, ApiError> {
    let store = control.store();
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let text = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::unauthorized("Authorization must be `Bearer <api token>`"))?;
        return Ok(authenticate_token(store, text.trim()).await?);
    }
    if let Some(cookie) = session_cookie(&parts.headers) {
        let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        let csrf = (!safe).then(|| {
            parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        });
        return Ok(authenticate_session(store, &cookie, csrf).await?);
    }
    Err(ApiError::unauthorized(
        "sign in, or send an API token as `Authorization: Bearer <token>`",
    ))
}

/// The session cookie's value, if present.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_string())
}
