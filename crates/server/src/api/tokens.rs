//! API tokens (`/api/v1/tokens`). The secret is returned once, at creation.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serviceradar_domain::policy::{Scope, ScopeSet};
use serviceradar_domain::resources::ApiToken;
use serviceradar_domain::validate::{FieldError, FieldErrors, TokenName};
use serviceradar_domain::{Action, ApiTokenId, UserId};
use serviceradar_store::NewToken;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::common::{ApiJson, ApiQuery, PageParams, path_id};
use super::error::{ApiError, ErrorBody};
use crate::app::AppState;
use crate::auth::{Authenticated, mint_token, now_ms};

pub(super) fn router() -> OpenApiRouter<AppState> {
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

/// A page of tokens.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    /// Tokens.
    pub items: Vec<TokenResponse>,
    /// Cursor for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Label, 1–64 characters.
    pub name: String,
    /// Scopes (`read`, `write`, `admin`); default `["read"]`.
    pub scopes: Option<Vec<String>>,
    /// Lifetime in days, 1–365 (default 90).
    pub expires_in_days: Option<u32>,
}

/// Response of `POST /api/v1/tokens`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    /// The token's metadata.
    pub token: TokenResponse,
    /// The bearer secret (`srt_...`). Shown once; store it now.
    pub secret: String,
}

/// Filters for listing tokens.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// Admins: only tokens of this user. Others always see only their own.
    pub user_id: Option<String>,
    /// Rows per page, 1–200 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// List API tokens (your own; admins may list everyone's).
#[utoipa::path(get, path = "/tokens", tag = "tokens", params(TokenQuery),
    responses((status = 200, body = TokenList), (status = 400, body = ErrorBody)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiQuery(query): ApiQuery<TokenQuery>,
) -> Result<ApiJson<TokenList>, ApiError> {
    auth.actor.authorize(Action::ManageOwnTokens)?;
    let mut errors = FieldErrors::default();
    let page = PageParams {
        limit: query.limit,
        cursor: query.cursor.clone(),
    }
    .parse(&mut errors);
    let requested = query
        .user_id
        .as_deref()
        .filter(|s| !s.is_empty())
        .and_then(|raw| {
            errors.check(
                "user_id",
                raw.parse::<UserId>()
                    .map_err(|_| FieldError::new("user_id", "must be a user id")),
            )
        });
    errors.into_result()?;
    let user = if auth.actor.authorize(Action::ManageAllTokens).is_ok() {
        requested
    } else {
        Some(auth.actor.user_id)
    };
    let page = state
        .store
        .scoped(auth.actor.scope())
        .list_tokens(user, &page)
        .await?;
    Ok(ApiJson(TokenList {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Create an API token for yourself.
#[utoipa::path(post, path = "/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody)))]
pub async fn create_token(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<CreateToken>,
) -> Result<(StatusCode, ApiJson<CreatedToken>), ApiError> {
    auth.actor.authorize(Action::ManageOwnTokens)?;
    let mut errors = FieldErrors::default();
    let name = errors.check("name", TokenName::parse(&body.name));
    let scope_names = body.scopes.clone().unwrap_or_else(|| vec!["read".into()]);
    let scopes = errors.check(
        "scopes",
        scope_names
            .iter()
            .map(|s| s.parse::<Scope>())
            .collect::<Result<Vec<_>, _>>()
            .map(ScopeSet::from_scopes)
            .map_err(|m| FieldError::new("scopes", m))
            .and_then(|set| {
                if set.is_empty() {
                    Err(FieldError::new("scopes", "must name at least one scope"))
                } else {
                    Ok(set)
                }
            }),
    );
    let days = body.expires_in_days.unwrap_or(90);
    if !(1..=365).contains(&days) {
        errors.0.push(FieldError::new(
            "expires_in_days",
            "must be between 1 and 365",
        ));
    }
    errors.clone().into_result()?;
    let (Some(name), Some(scopes)) = (name, scopes) else {
        return Err(ApiError::validation(errors));
    };
    // A token never carries more than its creator could use.
    for scope in scopes.to_vec() {
        if !auth.actor.scopes.contains(scope) {
            return Err(ApiError::forbidden(format!(
                "you cannot create a token with the {:?} scope",
                scope.as_str()
            )));
        }
    }
    let minted = mint_token();
    let token = state
        .store
        .scoped(auth.actor.scope())
        .create_token(&NewToken {
            id: minted.id,
            user_id: auth.actor.user_id,
            name: name.to_string(),
            scopes,
            expires_at: now_ms() + i64::from(days) * 86_400_000,
            secret_hash: minted.secret_hash,
        })
        .await?;
    tracing::info!(token_id = %token.id, "API token created");
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedToken {
            token: token.into(),
            secret: minted.token,
        }),
    ))
}

/// Revoke an API token (your own; admins may revoke anyone's).
#[utoipa::path(delete, path = "/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 200, body = TokenResponse), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<ApiJson<TokenResponse>, ApiError> {
    auth.actor.authorize(Action::ManageOwnTokens)?;
    let id: ApiTokenId = path_id(&id)?;
    let scoped = state.store.scoped(auth.actor.scope());
    let token = scoped.token(id).await?;
    if token.user_id != auth.actor.user_id {
        // Someone else's token: admins only, and non-admins learn nothing.
        auth.actor
            .authorize(Action::ManageAllTokens)
            .map_err(|_| ApiError::not_found())?;
    }
    let token = scoped.revoke_token(id).await?;
    tracing::info!(token_id = %id, "API token revoked");
    Ok(ApiJson(token.into()))
}
