//! Signing in and out with the API's browser session (cookie `HttpOnly`,
//! `SameSite=Strict`, `Secure` when `--secure-cookies` says the UI is served
//! over TLS).

use std::net::SocketAddr;

use askama::Template;
use axum::Extension;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use serviceradar_auth::SESSION_COOKIE;
use serviceradar_control::ControlError;
use serviceradar_control::sessions::Login;
use serviceradar_domain::Secret;
use serviceradar_http::session_cookie;

use crate::session::{NoFields, Posted};
use crate::{HOME, WebError, WebState};

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    expired: bool,
    signed_out: bool,
    error: String,
    tenant: String,
    email: String,
}

/// Query of the sign-in page.
#[derive(Debug, Deserialize)]
pub struct SignInQuery {
    /// Set when a session ended.
    expired: Option<String>,
    /// Set after signing out.
    signed_out: Option<String>,
}

/// `GET /sign-in`.
pub async fn sign_in_page(Query(q): Query<SignInQuery>) -> Result<Response, WebError> {
    super::render(&SignInPage {
        expired: q.expired.is_some(),
        signed_out: q.signed_out.is_some(),
        error: String::new(),
        tenant: String::new(),
        email: String::new(),
    })
}

/// The sign-in form.
#[derive(Deserialize)]
pub struct SignInForm {
    tenant: String,
    email: String,
    password: String,
}

/// `POST /sign-in`: starts a session and goes to the edge sites.
pub async fn sign_in(
    State(state): State<WebState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    axum::Form(form): axum::Form<SignInForm>,
) -> Result<Response, WebError> {
    let login = Login {
        tenant: form.tenant.trim().to_string(),
        email: form.email.clone(),
        password: Secret::new(form.password),
    };
    let source = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    let session = match state.control.login(&login, source).await {
        Ok(session) => session,
        Err(err @ (ControlError::Unauthorized(_) | ControlError::Throttled { .. })) => {
            let status = if matches!(err, ControlError::Throttled { .. }) {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::UNAUTHORIZED
            };
            let page = SignInPage {
                expired: false,
                signed_out: false,
                error: err.to_string(),
                tenant: login.tenant,
                email: form.email,
            };
            return Ok((status, Html(page.render()?)).into_response());
        }
        Err(e) => return Err(e.into()),
    };
    let secure = if state.control.settings().sessions.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        session.cookie.expose(),
        session.max_age_secs
    );
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(HOME)).into_response())
}

/// `POST /sign-out`: ends the session.
pub async fn sign_out(
    State(state): State<WebState>,
    headers: HeaderMap,
    posted: Posted<NoFields>,
) -> Result<Response, WebError> {
    state
        .control
        .logout(&posted.auth, session_cookie(&headers).as_deref())
        .await?;
    let clear = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok((
        [(header::SET_COOKIE, clear)],
        Redirect::to("/sign-in?signed_out=1"),
    )
        .into_response())
}
