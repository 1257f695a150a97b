//! Collector packages (`/api/v1/collector-packages`). A package may name an
//! edge site of the same tenant; its responses then include the site (seed 001, 4.3).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serviceradar_domain::resources::CollectorType;
use serviceradar_domain::state::PackageEvent;
use serviceradar_domain::validate::{DisplayName, FieldError, FieldErrors};
use serviceradar_domain::{Action, EdgeSiteId, PackageId};
use serviceradar_store::{NewPackage, PackageFilter, PackageWithSite};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::common::{ApiJson, ApiQuery, PageParams, parse_filter, path_id};
use super::error::{ApiError, ErrorBody};
use crate::app::AppState;
use crate::auth::Authenticated;

pub(super) fn router() -> OpenApiRouter<AppState> {
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

/// A page of packages.
#[derive(Debug, Serialize, ToSchema)]
pub struct PackageList {
    /// Packages.
    pub items: Vec<PackageResponse>,
    /// Cursor for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Body of `POST /api/v1/collector-packages`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePackage {
    /// `flowgger`, `trapd`, `otel`, `netflow` or `syslog`.
    pub collector_type: String,
    /// Display name (default: the collector type).
    pub name: Option<String>,
    /// Edge site whose local leaf the collector uses; absent for direct SaaS.
    pub edge_site_id: Option<String>,
}

/// Filters for listing packages.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PackageQuery {
    /// Only packages in this status.
    pub status: Option<String>,
    /// Only packages of this collector type.
    pub collector_type: Option<String>,
    /// Only packages bound to this edge site.
    pub edge_site_id: Option<String>,
    /// Only packages whose name contains this (case-insensitive).
    pub name: Option<String>,
    /// Rows per page, 1–200 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// List collector packages.
#[utoipa::path(get, path = "/collector-packages", tag = "collector-packages", params(PackageQuery),
    responses((status = 200, body = PackageList), (status = 400, body = ErrorBody)))]
pub async fn list_packages(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiQuery(query): ApiQuery<PackageQuery>,
) -> Result<ApiJson<PackageList>, ApiError> {
    auth.actor.authorize(Action::ReadPackages)?;
    let mut errors = FieldErrors::default();
    let page = PageParams {
        limit: query.limit,
        cursor: query.cursor.clone(),
    }
    .parse(&mut errors);
    let edge_site_id = match query.edge_site_id.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => match raw.parse::<EdgeSiteId>() {
            Ok(id) => Some(id),
            Err(_) => {
                errors
                    .0
                    .push(FieldError::new("edge_site_id", "must be a site id"));
                None
            }
        },
    };
    let filter = PackageFilter {
        status: parse_filter("status", query.status.as_deref(), &mut errors),
        collector_type: parse_filter(
            "collector_type",
            query.collector_type.as_deref(),
            &mut errors,
        ),
        edge_site_id,
        name_contains: query.name.filter(|n| !n.is_empty()),
    };
    errors.into_result()?;
    let page = state
        .store
        .scoped(auth.actor.scope())
        .list_packages(&filter, &page)
        .await?;
    Ok(ApiJson(PackageList {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Create a collector package, optionally bound to an edge site.
#[utoipa::path(post, path = "/collector-packages", tag = "collector-packages", request_body = CreatePackage,
    responses((status = 201, body = PackageResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_package(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<CreatePackage>,
) -> Result<(StatusCode, ApiJson<PackageResponse>), ApiError> {
    auth.actor.authorize(Action::WritePackages)?;
    let mut errors = FieldErrors::default();
    let collector_type = errors.check(
        "collector_type",
        body.collector_type
            .parse::<CollectorType>()
            .map_err(|m| FieldError::new("collector_type", m)),
    );
    let name = match (&body.name, collector_type) {
        (Some(name), _) => errors.check("name", DisplayName::parse(name)),
        (None, Some(kind)) => errors.check("name", DisplayName::parse(kind.as_str())),
        (None, None) => None,
    };
    let edge_site_id = match body.edge_site_id.as_deref() {
        None => Some(None),
        Some(raw) => errors
            .check(
                "edge_site_id",
                raw.parse::<EdgeSiteId>()
                    .map_err(|_| FieldError::new("edge_site_id", "must be a site id")),
            )
            .map(Some),
    };
    errors.clone().into_result()?;
    let (Some(collector_type), Some(name), Some(edge_site_id)) =
        (collector_type, name, edge_site_id)
    else {
        return Err(ApiError::validation(errors));
    };
    let package = state
        .store
        .scoped(auth.actor.scope())
        .create_package(&NewPackage {
            name,
            collector_type,
            edge_site_id,
        })
        .await?;
    tracing::info!(package_id = %package.package.id, "collector package created");
    Ok((StatusCode::CREATED, ApiJson(package.into())))
}

/// Get one collector package.
#[utoipa::path(get, path = "/collector-packages/{id}", tag = "collector-packages",
    params(("id" = String, Path, description = "Package id")),
    responses((status = 200, body = PackageResponse), (status = 404, body = ErrorBody)))]
pub async fn get_package(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<ApiJson<PackageResponse>, ApiError> {
    auth.actor.authorize(Action::ReadPackages)?;
    let id: PackageId = path_id(&id)?;
    let package = state.store.scoped(auth.actor.scope()).package(id).await?;
    Ok(ApiJson(package.into()))
}

/// Revoke a collector package.
#[utoipa::path(post, path = "/collector-packages/{id}/revoke", tag = "collector-packages",
    params(("id" = String, Path, description = "Package id")),
    responses((status = 200, body = PackageResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn revoke_package(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<ApiJson<PackageResponse>, ApiError> {
    auth.actor.authorize(Action::WritePackages)?;
    let id: PackageId = path_id(&id)?;
    let scoped = state.store.scoped(auth.actor.scope());
    // Refuse an illegal transition before touching anything.
    scoped
        .package(id)
        .await?
        .package
        .status
        .apply(PackageEvent::Revoke)?;
    // Its bundles' NATS users stop working on the hub first, so a failure
    // leaves the package as it was (and the request can be retried).
    let keys = scoped.package_user_keys(id).await?;
    if !keys.is_empty() {
        let tenant = state.store.tenant(auth.actor.tenant_id).await?;
        state
            .pki
            .revoke_users(&state.store, &tenant, &keys)
            .await
            .map_err(|e| ApiError::internal(format!("revoking NATS users: {e:#}")))?;
    }
    let package = scoped.transition_package(id, PackageEvent::Revoke).await?;
    tracing::info!(package_id = %id, revoked_users = keys.len(), "collector package revoked");
    Ok(ApiJson(package.into()))
}

/// Delete a collector package.
#[utoipa::path(delete, path = "/collector-packages/{id}", tag = "collector-packages",
    params(("id" = String, Path, description = "Package id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_package(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.actor.authorize(Action::WritePackages)?;
    let id: PackageId = path_id(&id)?;
    state
        .store
        .scoped(auth.actor.scope())
        .delete_package(id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
