//! Enrollment tokens (`/api/v1/edge-sites/{id}/enrollment-tokens`,
//! `/api/v1/enrollment-tokens`) and their redemption by an edge box
//! (`POST /api/v1/enroll`, authenticated by the token itself).

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use serviceradar_control::enrollment::{
    CreateEnrollmentToken, EnrollmentEventView, EnrollmentTokenQuery, EnrollmentTokenView,
};
use serviceradar_control::{Control, PageParams};
use serviceradar_domain::Secret;
use serviceradar_domain::enrollment::{Enrolled, RedeemRequest};
use serviceradar_http::{ApiError, ApiJson, ApiQuery, Caller, ErrorBody, ListResponse, path_id};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn router() -> OpenApiRouter<Control> {
    OpenApiRouter::new()
        .routes(routes!(create_enrollment_token))
        .routes(routes!(list_enrollment_tokens))
        .routes(routes!(show_enrollment_token))
        .routes(routes!(revoke_enrollment_token))
        .routes(routes!(enroll))
}

/// Response of creating a token: the token text, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedEnrollmentToken {
    /// The token's state.
    pub token: EnrollmentTokenView,
    /// The token (`sr1.…`). Shown once; it is stored only as a hash.
    #[schema(value_type = String)]
    pub secret: Secret,
    /// The command to run on the edge box.
    #[schema(value_type = String)]
    pub command: Secret,
}

/// A token with its history.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollmentTokenDetail {
    /// The token's state.
    pub token: EnrollmentTokenView,
    /// Created, redeemed, resumed, refused, conflict, resolved, revoked: oldest first.
    pub events: Vec<EnrollmentEventView>,
}

/// Create an enrollment token for a site (operator or above).
#[utoipa::path(post, path = "/edge-sites/{id}/enrollment-tokens", tag = "enrollment",
    params(("id" = String, Path, description = "Site id")),
    request_body = CreateEnrollmentToken,
    responses((status = 201, body = CreatedEnrollmentToken), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn create_enrollment_token(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CreateEnrollmentToken>,
) -> Result<(StatusCode, ApiJson<CreatedEnrollmentToken>), ApiError> {
    let created = control
        .create_enrollment_token(&auth.actor, path_id(&id)?, &body)
        .await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedEnrollmentToken {
            token: created.token,
            secret: created.secret,
            command: created.command,
        }),
    ))
}

/// List enrollment tokens (their state, never their text).
#[utoipa::path(get, path = "/enrollment-tokens", tag = "enrollment",
    params(EnrollmentTokenQuery, PageParams),
    responses((status = 200, body = ListResponse<EnrollmentTokenView>), (status = 400, body = ErrorBody)))]
pub async fn list_enrollment_tokens(
    State(control): State<Control>,
    Caller(auth): Caller,
    ApiQuery(query): ApiQuery<EnrollmentTokenQuery>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<ApiJson<ListResponse<EnrollmentTokenView>>, ApiError> {
    let page = control
        .list_enrollment_tokens(&auth.actor, &query, &page)
        .await?;
    Ok(ApiJson(ListResponse::from_page(page, |t| t)))
}

/// One enrollment token with its history.
#[utoipa::path(get, path = "/enrollment-tokens/{id}", tag = "enrollment",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 200, body = EnrollmentTokenDetail), (status = 404, body = ErrorBody)))]
pub async fn show_enrollment_token(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<ApiJson<EnrollmentTokenDetail>, ApiError> {
    let (token, events) = control.enrollment_token(&auth.actor, path_id(&id)?).await?;
    Ok(ApiJson(EnrollmentTokenDetail { token, events }))
}

/// Revoke an enrollment token (idempotent).
#[utoipa::path(post, path = "/enrollment-tokens/{id}/revoke", tag = "enrollment",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 200, body = EnrollmentTokenView), (status = 404, body = ErrorBody)))]
pub async fn revoke_enrollment_token(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<ApiJson<EnrollmentTokenView>, ApiError> {
    Ok(ApiJson(
        control
            .revoke_enrollment_token(&auth.actor, path_id(&id)?)
            .await?,
    ))
}

/// Redeem an enrollment token from an edge box: send certificate signing
/// requests and a NATS user public key, get certificates and a user JWT.
/// No credential but the token.
#[utoipa::path(post, path = "/enroll", tag = "enrollment", request_body = RedeemRequest,
    security(()),
    responses((status = 200, body = Enrolled), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn enroll(
    State(control): State<Control>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    ApiJson(body): ApiJson<RedeemRequest>,
) -> Result<ApiJson<Enrolled>, ApiError> {
    Ok(ApiJson(
        control
            .redeem_enrollment_token(&body, peer.map(|Extension(ConnectInfo(addr))| addr.ip()))
            .await?,
    ))
}
