//! A site's onboarding packages (`/api/v1/edge-sites/{id}/onboarding-packages`)
//! and the enrollment conflicts to resolve (`/api/v1/enrollment-conflicts`).

use axum::extract::{Path, State};
use serviceradar_control::onboarding::{
    ConflictQuery, EnrollmentConflictView, OnboardingPackageQuery, OnboardingPackageView,
    ResolvedConflict,
};
use serviceradar_control::{Control, PageParams};
use serviceradar_http::{ApiError, ApiJson, ApiQuery, Caller, ErrorBody, ListResponse, path_id};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn router() -> OpenApiRouter<Control> {
    OpenApiRouter::new()
        .routes(routes!(list_onboarding_packages))
        .routes(routes!(list_enrollment_conflicts))
        .routes(routes!(resolve_enrollment_conflict))
}

/// A site's onboarding packages: created with each site/agent enrollment
/// token or site-bundle download, downloaded when the material is fetched,
/// installed when the site's agent reports; expired or revoked with the
/// token if nobody fetched it (revoking does not cut off a box that joined).
#[utoipa::path(get, path = "/edge-sites/{id}/onboarding-packages", tag = "enrollment",
    params(("id" = String, Path, description = "Site id"), OnboardingPackageQuery, PageParams),
    responses((status = 200, body = ListResponse<OnboardingPackageView>),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_onboarding_packages(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<OnboardingPackageQuery>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<ApiJson<ListResponse<OnboardingPackageView>>, ApiError> {
    let page = control
        .list_onboarding_packages(&auth.actor, path_id(&id)?, &query, &page)
        .await?;
    Ok(ApiJson(ListResponse::from_page(page, |p| p)))
}

/// Enrollment conflicts: another host presenting a spent single-use token,
/// or a renewal from another machine. Open until an operator resolves them.
#[utoipa::path(get, path = "/enrollment-conflicts", tag = "enrollment",
    params(ConflictQuery, PageParams),
    responses((status = 200, body = ListResponse<EnrollmentConflictView>),
              (status = 400, body = ErrorBody)))]
pub async fn list_enrollment_conflicts(
    State(control): State<Control>,
    Caller(auth): Caller,
    ApiQuery(query): ApiQuery<ConflictQuery>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<ApiJson<ListResponse<EnrollmentConflictView>>, ApiError> {
    let page = control
        .list_enrollment_conflicts(&auth.actor, &query, &page)
        .await?;
    Ok(ApiJson(ListResponse::from_page(page, |c| c)))
}

/// Resolve an open enrollment conflict (operator or above); the answer says
/// what to do next. Resolving a resolved one is `409`.
#[utoipa::path(post, path = "/enrollment-conflicts/{id}/resolve", tag = "enrollment",
    params(("id" = String, Path, description = "Conflict id")),
    responses((status = 200, body = ResolvedConflict), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn resolve_enrollment_conflict(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<ApiJson<ResolvedConflict>, ApiError> {
    Ok(ApiJson(
        control
            .resolve_enrollment_conflict(&auth.actor, path_id(&id)?)
            .await?,
    ))
}
