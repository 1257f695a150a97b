//! API tokens (`/api/v1/tokens`). The secret is returned once, at creation.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use serviceradar_control::tokens::{CreateToken, TokenQuery};
use serviceradar_control::{Control, PageParams};
use serviceradar_domain::Secret;
use serviceradar_domain::resources::ApiToken;
use serviceradar_http::{ApiError, ApiJson, ApiQuery, Caller, ErrorBody, ListResponse, path_id};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn router() -> OpenApiRouter<Control> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
}

/// An API token's metadata (never the secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    /// Id.
    pub id: String,
    /// The user the token acts for.
    pub user_id: String,
    /// Label.
    pub name: String,
    /// Scopes: `read`, `write`, `admin`.
    pub scopes: Vec<String>,
    /// Creation time (Unix ms).
    pub created_at: i64,
    /// Expiry (Unix ms).
    pub expires_at: i64,
    /// Revocation time (Unix ms), if revoked.
    pub revoked_at: Option<i64>,
    /// Last use (Unix ms, minute precision).
    pub last_used_at: Option<i64>,
}

impl From<ApiToken> for TokenResponse {
    fn from(t: ApiToken) -> Self {
        Self {
            id: t.id.to_string(),
            user_id: t.user_id.to_string(),
            name: t.name,
            scopes: t
                .scopes
                .to_vec()
                .iter()
                .map(|s| s.as_str().to_string())
                .collect(),
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
            last_used_at: t.last_used_at,
        }
    }
}

/// Response of `POST /api/v1/tokens`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    /// The token's metadata.
    pub token: TokenResponse,
    /// The bearer secret (`srt_...`). Shown once; store it now.
    #[schema(value_type = String)]
    pub secret: Secret,
}

/// List API tokens (your own; admins may list everyone's).
#[utoipa::path(get, path = "/tokens", tag = "tokens", params(TokenQuery, PageParams),
    responses((status = 200, body = ListResponse<TokenResponse>), (status = 400, body = ErrorBody)))]
pub async fn list_tokens(
    State(control): State<Control>,
    Caller(auth): Caller,
    ApiQuery(query): ApiQuery<TokenQuery>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<ApiJson<ListResponse<TokenResponse>>, ApiError> {
    let page = control.list_tokens(&auth.actor, &query, &page).await?;
    Ok(ApiJson(ListResponse::from_page(page, Into::into)))
}

/// Create an API token for yourself.
#[utoipa::path(post, path = "/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody)))]
pub async fn create_token(
    State(control): State<Control>,
    Caller(auth): Caller,
    ApiJson(body): ApiJson<CreateToken>,
) -> Result<(StatusCode, ApiJson<CreatedToken>), ApiError> {
    let created = control.create_token(&auth, &body).await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedToken {
            token: created.token.into(),
            secret: created.secret,
        }),
    ))
}

/// Revoke an API token (your own; admins may revoke anyone's).
#[utoipa::path(delete, path = "/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 200, body = TokenResponse), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<ApiJson<TokenResponse>, ApiError> {
    Ok(ApiJson(
        control
            .revoke_token(&auth.actor, path_id(&id)?)
            .await?
            .into(),
    ))
}
