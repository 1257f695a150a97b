//! Users of the tenant (`/api/v1/users`). Password hashes never leave the store.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use serviceradar_control::users::{CreateUser, PASSWORD_CHANGED, UpdateUser};
use serviceradar_control::{Control, PageParams};
use serviceradar_domain::Secret;
use serviceradar_domain::resources::User;
use serviceradar_http::{ApiError, ApiJson, ApiQuery, Caller, ErrorBody, ListResponse, path_id};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn router() -> OpenApiRouter<Control> {
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

/// Response of `POST /api/v1/users`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUser {
    /// The user.
    pub user: UserResponse,
    /// The generated password, only when none was given. Shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub initial_password: Option<Secret>,
}

/// List users of the tenant.
#[utoipa::path(get, path = "/users", tag = "users", params(PageParams),
    responses((status = 200, body = ListResponse<UserResponse>), (status = 403, body = ErrorBody)))]
pub async fn list_users(
    State(control): State<Control>,
    Caller(auth): Caller,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<ApiJson<ListResponse<UserResponse>>, ApiError> {
    let page = control.list_users(&auth.actor, &page).await?;
    Ok(ApiJson(ListResponse::from_page(page, Into::into)))
}

/// Create a user.
#[utoipa::path(post, path = "/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = CreatedUser), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_user(
    State(control): State<Control>,
    Caller(auth): Caller,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<(StatusCode, ApiJson<CreatedUser>), ApiError> {
    let created = control.create_user(&auth.actor, &body).await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedUser {
            user: created.user.into(),
            initial_password: created.initial_password,
        }),
    ))
}

/// Get one user.
#[utoipa::path(get, path = "/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = UserResponse), (status = 404, body = ErrorBody)))]
pub async fn get_user(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<ApiJson<UserResponse>, ApiError> {
    Ok(ApiJson(
        control.user(&auth.actor, path_id(&id)?).await?.into(),
    ))
}

/// The changed user and, after a password change, what it did to their
/// sessions and tokens.
#[derive(Debug, Serialize, ToSchema)]
pub struct UpdatedUser {
    /// The user.
    #[serde(flatten)]
    pub user: UserResponse,
    /// Set when the password was changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_change: Option<&'static str>,
}

/// Change a user's role or password (a password only with a signed-in
/// session; your own only with `current_password`).
#[utoipa::path(patch, path = "/users/{id}", tag = "users", request_body = UpdateUser,
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, body = UpdatedUser), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn update_user(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateUser>,
) -> Result<ApiJson<UpdatedUser>, ApiError> {
    let user = control.update_user(&auth, path_id(&id)?, &body).await?;
    Ok(ApiJson(UpdatedUser {
        user: user.into(),
        password_change: body.password.is_some().then_some(PASSWORD_CHANGED),
    }))
}

/// Delete a user (their tokens and sessions end with them).
#[utoipa::path(delete, path = "/users/{id}", tag = "users",
    params(("id" = String, Path, description = "User id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_user(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    control.delete_user(&auth.actor, path_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
