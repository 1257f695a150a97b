//! Who is looking at a page, and the CSRF rule for writes.
//!
//! * [`Viewer`] (safe requests): the session cookie, the session's CSRF
//!   token for the page's forms, and the tenant's slug for the header.
//! * [`Posted`] (unsafe requests): the session cookie plus the session's
//!   CSRF token from the form's hidden `csrf_token` field or the
//!   `X-CSRF-Token` header (fetch writes), checked by `serviceradar_auth`
//!   in constant time, then the form itself.
//!
//! A missing session redirects to sign-in; an ended one adds a message.

use axum::body::to_bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serviceradar_auth::{AuthError, CSRF_HEADER, authenticate_session, session_with_csrf};
use serviceradar_control::ControlError;
use serviceradar_domain::Secret;
use serviceradar_http::{Authenticated, session_cookie};

use crate::{WebError, WebState};

/// The largest form the UI accepts.
const FORM_LIMIT: usize = 64 * 1024;

/// The signed-in person looking at a page.
pub struct Viewer {
    /// Who it is and what they may do.
    pub auth: Authenticated,
    /// The session's CSRF token, for the page's forms and scripts.
    pub csrf: Secret,
}

fn session_error(err: AuthError) -> WebError {
    match err {
        AuthError::Unauthorized(_) => WebError::SignIn { expired: true },
        other => WebError::Control(other.into()),
    }
}

fn record(auth: &Authenticated) {
    let span = tracing::Span::current();
    span.record("tenant_id", tracing::field::display(auth.actor.tenant_id));
    span.record("user_id", tracing::field::display(auth.actor.user_id));
}

impl FromRequestParts<WebState> for Viewer {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, WebError> {
        let cookie = session_cookie(&parts.headers).ok_or(WebError::SignIn { expired: false })?;
        let (auth, csrf) = session_with_csrf(state.control.store(), &cookie)
            .await
            .map_err(session_error)?;
        record(&auth);
        Ok(Viewer { auth, csrf })
    }
}

/// A form posted by a signed-in person with the session's CSRF token.
pub struct Posted<T> {
    /// Who posted it.
    pub auth: Authenticated,
    /// The form's fields (the `csrf_token` field is ignored by `T`).
    pub form: T,
}

impl<T: DeserializeOwned> FromRequest<WebState> for Posted<T> {
    type Rejection = WebError;

    async fn from_request(request: Request, state: &WebState) -> Result<Self, WebError> {
        let (parts, body) = request.into_parts();
        let cookie = session_cookie(&parts.headers).ok_or(WebError::SignIn { expired: false })?;
        let bytes = to_bytes(body, FORM_LIMIT)
            .await
            .map_err(|_| WebError::bad_request("the form is larger than 64 KiB"))?;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| WebError::bad_request(format!("unreadable form: {e}")))?;
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| {
                pairs
                    .iter()
                    .find(|(k, _)| k == "csrf_token")
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_default();
        let auth = authenticate_session(state.control.store(), &cookie, Some(&sent))
            .await
            .map_err(session_error)?;
        record(&auth);
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|e| {
            WebError::Control(ControlError::BadRequest(format!("invalid form: {e}")))
        })?;
        Ok(Posted { auth, form })
    }
}

/// A form with no fields but the CSRF token.
#[derive(Debug, serde::Deserialize)]
pub struct NoFields {}
