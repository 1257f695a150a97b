//! Users of the tenant (`/api/v1/users`). Password hashes never leave the store.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serviceradar_domain::policy::Role;
use serviceradar_domain::resources::User;
use serviceradar_domain::validate::{Email, FieldError, FieldErrors, Password};
use serviceradar_domain::{Action, UserId};
use serviceradar_store::NewUser;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::common::{ApiJson, ApiQuery, PageParams, path_id};
use super::error::{ApiError, ErrorBody};
use crate::app::AppState;
use crate::auth::{Authenticated, hash_password, random_token};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, delete_user))
}

/// A user (never includes the password hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserResponse {
    /// Id.
    pub id: String,
    /// Login e-mail.
    pub email: String,
    /// `viewer`, `operator`, `admin` or `owner`.
    pub role: String,
    /// Creation time (Unix ms).
    pub created_at: i64,
}

impl From<User> for UserResponse {
    fn from(u: User) -> Self {
        Self {
            id: u.id.to_string(),
            email: u.email.to_string(),
            role: u.role.to_string(),
            created_at: u.created_at,
        }
    }
}

/// A page of users.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    /// Users.
    pub items: Vec<UserResponse>,
    /// Cursor for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Body of `POST /api/v1/users`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Login e-mail, unique in the tenant.
    pub email: String,
    /// Role; you can grant at most your own (only owners grant owner).
    pub role: String,
    /// Initial password (12+ characters); generated and returned once if absent.
    pub password: Option<String>,
}

/// Response of `POST /api/v1/users`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUser {
    /// The user.
    pub user: UserResponse,
    /// The generated password, only when none was given. Shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_password: Option<String>,
}

/// Body of `PATCH /api/v1/users/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// New role.
    pub role: Option<String>,
    /// New password (ends the user's sessions).
    pub password: Option<String>,
}

/// List users of the tenant.
#[utoipa::path(get, path = "/users", tag = "users", params(PageParams),
    responses((status = 200, body = UserList), (status = 403, body = ErrorBody)))]
pub async fn list_users(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<ApiJson<UserList>, ApiError> {
    auth.actor.authorize(Action::ReadUsers)?;
    let mut errors = FieldErrors::default();
    let page = params.parse(&mut errors);
    errors.into_result()?;
    let page = state
        .store
        .scoped(auth.actor.scope())
        .list_users(&page)
        .await?;
    Ok(ApiJson(UserList {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

fn parse_role(raw: &str, errors: &mut FieldErrors) -> Option<Role> {
    errors.check(
        "role",
        raw.parse::<Role>().map_err(|m| FieldError::new("role", m)),
    )
}

async fn hash(password: Password) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ApiError::internal(format!("hashing task failed: {e}")))?
}

/// Create a user.
#[utoipa::path(post, path = "/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = CreatedUser), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_user(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<(StatusCode, ApiJson<CreatedUser>), ApiError> {
    auth.actor.authorize(Action::ManageUsers)?;
    let mut errors = FieldErrors::default();
    let email = errors.check("email", Email::parse(&body.email));
    let role = parse_role(&body.role, &mut errors);
    let generated = body.password.is_none().then(|| random_token(18));
    let password_text = body
        .password
        .clone()
        .or_else(|| generated.clone())
        .unwrap_or_default();
    let password = errors.check("password", Password::parse(&password_text));
    errors.clone().into_result()?;
    let (Some(email), Some(role), Some(password)) = (email, role, password) else {
        return Err(ApiError::validation(errors));
    };
    auth.actor.authorize_role_management(role)?;
    let password_hash = hash(password).await?;
    let user = state
        .store
        .scoped(auth.actor.scope())
        .create_user(&NewUser {
            email,
            role,
            password_hash,
        })
        .await?;
    tracing::info!(new_user_id = %user.id, role = %user.role, "user created");
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedUser {
            user: user.into(),
            initial_password: generated,
        }),
    ))
}

/// Get one user.
#[utoipa::path(get, path = "/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = UserResponse), (status = 404, body = ErrorBody)))]
pub async fn get_user(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<ApiJson<UserResponse>, ApiError> {
    let id: UserId = path_id(&id)?;
    if id != auth.actor.user_id {
        auth.actor.authorize(Action::ReadUsers)?;
    }
    let user = state.store.scoped(auth.actor.scope()).user(id).await?;
    Ok(ApiJson(user.into()))
}

/// Change a user's role or password.
#[utoipa::path(patch, path = "/users/{id}", tag = "users", request_body = UpdateUser,
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = UserResponse), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update_user(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateUser>,
) -> Result<ApiJson<UserResponse>, ApiError> {
    let id: UserId = path_id(&id)?;
    let mut errors = FieldErrors::default();
    let role = body
        .role
        .as_deref()
        .and_then(|r| parse_role(r, &mut errors));
    let password = body
        .password
        .as_deref()
        .and_then(|p| errors.check("password", Password::parse(p)));
    errors.into_result()?;
    let scoped = state.store.scoped(auth.actor.scope());
    let target = scoped.user(id).await?;
    let changing_self_password_only = id == auth.actor.user_id && role.is_none();
    if !changing_self_password_only {
        // Managing someone with a role needs rights over that role, and over the new one.
        auth.actor.authorize_role_management(target.role)?;
        if let Some(role) = role {
            auth.actor.authorize_role_management(role)?;
        }
    }
    if let Some(password) = password {
        scoped.set_user_password(id, &hash(password).await?).await?;
    }
    let user = match role {
        Some(role) => scoped.set_user_role(id, role).await?,
        None => target,
    };
    Ok(ApiJson(user.into()))
}

/// Delete a user (their tokens and sessions end with them).
#[utoipa::path(delete, path = "/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_user(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.actor.authorize(Action::ManageUsers)?;
    let id: UserId = path_id(&id)?;
    let scoped = state.store.scoped(auth.actor.scope());
    let target = scoped.user(id).await?;
    auth.actor.authorize_role_management(target.role)?;
    scoped.delete_user(id).await?;
    tracing::info!(deleted_user_id = %id, "user deleted");
    Ok(StatusCode::NO_CONTENT)
}
