//! Signing in and out with a browser session, and `GET /api/v1/me`.

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serviceradar_auth::SESSION_COOKIE;
use serviceradar_control::Control;
use serviceradar_control::sessions::Login;
use serviceradar_domain::Secret;
use serviceradar_http::{ApiError, ApiJson, Caller, Credential, ErrorBody, session_cookie};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::users::UserResponse;

pub(super) fn router() -> OpenApiRouter<Control> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
}

/// Response of a successful login. The session itself is the `sr_session` cookie.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// The signed-in user.
    pub user: UserResponse,
    /// Send this in `X-CSRF-Token` on every non-GET request of this session.
    #[schema(value_type = String)]
    pub csrf_token: Secret,
    /// Session expiry (Unix ms).
    pub expires_at: i64,
}

/// Who the caller is.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    /// Tenant id.
    pub tenant_id: String,
    /// Tenant slug.
    pub tenant_slug: String,
    /// User id.
    pub user_id: String,
    /// Role.
    pub role: String,
    /// Scopes in force.
    pub scopes: Vec<String>,
    /// `session` or `token`.
    pub credential: String,
}

/// Sign in with tenant, e-mail and password; sets the session cookie.
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = Login,
    responses((status = 200, body = LoginResponse), (status = 401, body = ErrorBody)))]
pub async fn login(
    State(control): State<Control>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    ApiJson(body): ApiJson<Login>,
) -> Result<Response, ApiError> {
    let session = control
        .login(&body, peer.map(|Extension(ConnectInfo(addr))| addr.ip()))
        .await?;
    let secure = if control.settings().sessions.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let set_cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        session.cookie.expose(),
        session.max_age_secs
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&set_cookie)
            .map_err(|e| ApiError::internal("session_cookie", e.to_string()))?,
    );
    let body = LoginResponse {
        user: session.user.into(),
        csrf_token: session.csrf_token,
        expires_at: session.expires_at,
    };
    Ok((headers, ApiJson(body)).into_response())
}

/// End the current session.
#[utoipa::path(post, path = "/auth/logout", tag = "auth",
    responses((status = 204), (status = 401, body = ErrorBody)))]
pub async fn logout(
    State(control): State<Control>,
    Caller(auth): Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    control
        .logout(&auth, session_cookie(&headers).as_deref())
        .await?;
    let clear = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, clear)]).into_response())
}

/// Who am I?
#[utoipa::path(get, path = "/me", tag = "auth",
    responses((status = 200, body = MeResponse), (status = 401, body = ErrorBody)))]
pub async fn me(
    State(control): State<Control>,
    Caller(auth): Caller,
) -> Result<ApiJson<MeResponse>, ApiError> {
    let tenant = control.my_tenant(&auth).await?;
    Ok(ApiJson(MeResponse {
        tenant_id: tenant.id.to_string(),
        tenant_slug: tenant.slug.to_string(),
        user_id: auth.actor.user_id.to_string(),
        role: auth.actor.role.to_string(),
        scopes: auth
            .actor
            .scopes
            .to_vec()
            .iter()
            .map(|s| s.as_str().into())
            .collect(),
        credential: match auth.credential {
            Credential::Session => "session".into(),
            Credential::Token(_) => "token".into(),
        },
    }))
}
