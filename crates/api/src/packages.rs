//! Collector packages (`/api/v1/collector-packages`). A package may name an
//! edge site of the same tenant; its responses then include the site (seed 001, 4.3).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use serviceradar_control::packages::{CreatePackage, PackageQuery};
use serviceradar_control::{Control, PageParams};
use serviceradar_http::{ApiError, ApiJson, ApiQuery, Caller, ErrorBody, ListResponse, path_id};
use serviceradar_store::PackageWithSite;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn router() -> OpenApiRouter<Control> {
    OpenApiRouter::new()
        .routes(routes!(list_packages, create_package))
        .routes(routes!(get_package, delete_package))
        .routes(routes!(revoke_package))
}

/// The edge site a package is bound to.
#[derive(Debug, Serialize, ToSchema)]
pub struct PackageSite {
    /// Site id.
    pub id: String,
    /// Site name.
    pub name: String,
    /// Site slug.
    pub slug: String,
    /// The local leaf URL the collector connects to.
    pub nats_leaf_url: String,
}

/// A collector package.
#[derive(Debug, Serialize, ToSchema)]
pub struct PackageResponse {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// `flowgger`, `trapd`, `otel`, `netflow` or `syslog`.
    pub collector_type: String,
    /// `created`, `downloaded`, `installed`, `expired` or `revoked`.
    pub status: String,
    /// Bound edge site id, if any.
    pub edge_site_id: Option<String>,
    /// Bound edge site, if any.
    pub edge_site: Option<PackageSite>,
    /// Creation time (Unix ms).
    pub created_at: i64,
    /// Last change (Unix ms).
    pub updated_at: i64,
}

impl From<PackageWithSite> for PackageResponse {
    fn from(p: PackageWithSite) -> Self {
        Self {
            id: p.package.id.to_string(),
            name: p.package.name.to_string(),
            collector_type: p.package.collector_type.to_string(),
            status: p.package.status.to_string(),
            edge_site_id: p.package.edge_site_id.map(|s| s.to_string()),
            edge_site: p.edge_site.map(|s| PackageSite {
                id: s.id.to_string(),
                name: s.name.to_string(),
                slug: s.slug.to_string(),
                nats_leaf_url: s.nats_leaf_url.to_string(),
            }),
            created_at: p.package.created_at,
            updated_at: p.package.updated_at,
        }
    }
}

/// List collector packages.
#[utoipa::path(get, path = "/collector-packages", tag = "collector-packages", params(PackageQuery, PageParams),
    responses((status = 200, body = ListResponse<PackageResponse>), (status = 400, body = ErrorBody)))]
pub async fn list_packages(
    State(control): State<Control>,
    Caller(auth): Caller,
    ApiQuery(query): ApiQuery<PackageQuery>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<ApiJson<ListResponse<PackageResponse>>, ApiError> {
    let page = control.list_packages(&auth.actor, &query, &page).await?;
    Ok(ApiJson(ListResponse::from_page(page, Into::into)))
}

/// Create a collector package, optionally bound to an edge site.
#[utoipa::path(post, path = "/collector-packages", tag = "collector-packages", request_body = CreatePackage,
    responses((status = 201, body = PackageResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_package(
    State(control): State<Control>,
    Caller(auth): Caller,
    ApiJson(body): ApiJson<CreatePackage>,
) -> Result<(StatusCode, ApiJson<PackageResponse>), ApiError> {
    let package = control.create_package(&auth.actor, &body).await?;
    Ok((StatusCode::CREATED, ApiJson(package.into())))
}

/// Get one collector package.
#[utoipa::path(get, path = "/collector-packages/{id}", tag = "collector-packages",
    params(("id" = String, Path, description = "Package id")),
    responses((status = 200, body = PackageResponse), (status = 404, body = ErrorBody)))]
pub async fn get_package(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<ApiJson<PackageResponse>, ApiError> {
    Ok(ApiJson(
        control.package(&auth.actor, path_id(&id)?).await?.into(),
    ))
}

/// Revoke a collector package.
#[utoipa::path(post, path = "/collector-packages/{id}/revoke", tag = "collector-packages",
    params(("id" = String, Path, description = "Package id")),
    responses((status = 200, body = PackageResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn revoke_package(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<ApiJson<PackageResponse>, ApiError> {
    Ok(ApiJson(
        control
            .revoke_package(&auth.actor, path_id(&id)?)
            .await?
            .into(),
    ))
}

/// Delete a collector package.
#[utoipa::path(delete, path = "/collector-packages/{id}", tag = "collector-packages",
    params(("id" = String, Path, description = "Package id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_package(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    control.delete_package(&auth.actor, path_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
