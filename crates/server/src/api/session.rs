//! Signing in and out with a browser session, and `GET /api/v1/me`.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serviceradar_domain::validate::Email;
use serviceradar_store::StoreError;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::common::ApiJson;
use super::error::{ApiError, ErrorBody};
use super::users::UserResponse;
use crate::app::AppState;
use crate::auth::{
    Authenticated, Credential, SESSION_COOKIE, dummy_password_hash, now_ms, random_token,
    sha256_hex, verify_password,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
}

/// Body of `POST /api/v1/auth/login`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Tenant slug.
    pub tenant: String,
    /// E-mail.
    pub email: String,
    /// Password.
    pub password: String,
}

/// Response of a successful login. The session itself is the `sr_session` cookie.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// The signed-in user.
    pub user: UserResponse,
    /// Send this in `X-CSRF-Token` on every non-GET request of this session.
    pub csrf_token: String,
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
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let email = Email::parse(&body.email)
        .map(|e| e.to_string())
        .unwrap_or_default();
    let record = match state.store.login_record(&body.tenant, &email).await {
        Ok(record) => Some(record),
        Err(StoreError::NotFound) => None,
        Err(e) => return Err(e.into()),
    };
    let hash = record
        .as_ref()
        .map(|r| r.password_hash.clone())
        .unwrap_or_else(|| dummy_password_hash().to_string());
    let password = body.password;
    let valid = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .map_err(|e| ApiError::internal(format!("verify task failed: {e}")))?;
    let Some(record) = record.filter(|_| valid) else {
        tracing::info!("failed login");
        metrics::counter!("serviceradar_login_failures_total").increment(1);
        return Err(ApiError::unauthorized("wrong tenant, e-mail or password"));
    };
    let cookie = random_token(32);
    let csrf_token = random_token(24);
    let max_age_s = i64::from(state.settings.session_hours) * 3600;
    let expires_at = now_ms() + max_age_s * 1000;
    state
        .store
        .create_session(&sha256_hex(&cookie), &record.user, &csrf_token, expires_at)
        .await?;
    tracing::info!(tenant_id = %record.user.tenant_id, user_id = %record.user.id, "signed in");
    let secure = if state.settings.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let set_cookie = format!(
        "{SESSION_COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    );
    let mut headers = HeaderMap::new();
    headers.insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&set_cookie).map_err(|e| ApiError::internal(e.to_string()))?,
    );
    let body = LoginResponse {
        user: record.user.into(),
        csrf_token,
        expires_at,
    };
    Ok((headers, ApiJson(body)).into_response())
}

/// End the current session.
#[utoipa::path(post, path = "/auth/logout", tag = "auth",
    responses((status = 204), (status = 401, body = ErrorBody)))]
pub async fn logout(
    State(state): State<AppState>,
    auth: Authenticated,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if auth.credential != Credential::Session {
        return Err(ApiError::bad_request(
            "logout ends browser sessions; revoke tokens instead",
        ));
    }
    if let Some(cookie) = crate::auth::session_cookie(&headers) {
        state.store.delete_session(&sha256_hex(&cookie)).await?;
    }
    let clear = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, clear)]).into_response())
}

/// Who am I?
#[utoipa::path(get, path = "/me", tag = "auth",
    responses((status = 200, body = MeResponse), (status = 401, body = ErrorBody)))]
pub async fn me(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<ApiJson<MeResponse>, ApiError> {
    let tenant = state.store.tenant(auth.actor.tenant_id).await?;
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
