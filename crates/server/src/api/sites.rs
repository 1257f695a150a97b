//! Edge sites and their NATS leaf servers (`/api/v1/edge-sites`, `/api/v1/leaf-servers`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serviceradar_domain::Action;
use serviceradar_domain::resources::{EdgeSite, NatsLeafServer};
use serviceradar_domain::validate::{DisplayName, FieldErrors, ListenAddr, NatsUrl, Slug};
use serviceradar_domain::{EdgeSiteId, LeafServerId};
use serviceradar_store::{LeafFilter, NewSite, SiteFilter, SiteUpdate};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::common::{ApiJson, ApiQuery, PageParams, parse_filter, path_id};
use super::error::{ApiError, ErrorBody};
use crate::app::AppState;
use crate::auth::Authenticated;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_sites, create_site))
        .routes(routes!(get_site, update_site, delete_site))
        .routes(routes!(get_site_leaf_server))
        .routes(routes!(list_leaf_servers))
        .routes(routes!(get_leaf_server))
}

/// An edge site.
#[derive(Debug, Serialize, ToSchema)]
pub struct SiteResponse {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Slug, unique in the tenant.
    pub slug: String,
    /// `pending`, `active` or `offline`.
    pub status: String,
    /// Where collectors at the site reach the local leaf.
    pub nats_leaf_url: String,
    /// Last agent contact (Unix ms).
    pub last_seen_at: Option<i64>,
    /// Creation time (Unix ms).
    pub created_at: i64,
    /// Last change (Unix ms).
    pub updated_at: i64,
    /// The site's leaf server (on single-site responses).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaf_server: Option<LeafServerResponse>,
}

impl From<EdgeSite> for SiteResponse {
    fn from(s: EdgeSite) -> Self {
        Self {
            id: s.id.to_string(),
            name: s.name.to_string(),
            slug: s.slug.to_string(),
            status: s.status.to_string(),
            nats_leaf_url: s.nats_leaf_url.to_string(),
            last_seen_at: s.last_seen_at,
            created_at: s.created_at,
            updated_at: s.updated_at,
            leaf_server: None,
        }
    }
}

/// A NATS leaf server. Private keys and credentials are never returned.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeafServerResponse {
    /// Id.
    pub id: String,
    /// The site it serves.
    pub edge_site_id: String,
    /// `pending`, `provisioned`, `connected` or `disconnected`.
    pub status: String,
    /// Hub leafnode URL the leaf dials.
    pub upstream_url: String,
    /// The leaf's client listen address.
    pub local_listen: String,
    /// Leaf client certificate (PEM), once provisioned.
    pub leaf_cert_pem: Option<String>,
    /// CA chain (PEM), once provisioned.
    pub ca_chain_pem: Option<String>,
    /// Certificate expiry (Unix ms).
    pub cert_expires_at: Option<i64>,
    /// Checksum of the rendered `nats-leaf.conf`.
    pub config_checksum: Option<String>,
    /// Why the last provisioning attempt failed.
    pub last_error: Option<String>,
    /// Creation time (Unix ms).
    pub created_at: i64,
    /// Last change (Unix ms).
    pub updated_at: i64,
}

impl From<NatsLeafServer> for LeafServerResponse {
    fn from(l: NatsLeafServer) -> Self {
        Self {
            id: l.id.to_string(),
            edge_site_id: l.edge_site_id.to_string(),
            status: l.status.to_string(),
            upstream_url: l.upstream_url,
            local_listen: l.local_listen.to_string(),
            leaf_cert_pem: l.leaf_cert_pem,
            ca_chain_pem: l.ca_chain_pem,
            cert_expires_at: l.cert_expires_at,
            config_checksum: l.config_checksum,
            last_error: l.last_error,
            created_at: l.created_at,
            updated_at: l.updated_at,
        }
    }
}

/// A page of sites.
#[derive(Debug, Serialize, ToSchema)]
pub struct SiteList {
    /// Sites.
    pub items: Vec<SiteResponse>,
    /// Cursor for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A page of leaf servers.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeafServerList {
    /// Leaf servers.
    pub items: Vec<LeafServerResponse>,
    /// Cursor for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Body of `POST /api/v1/edge-sites`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSite {
    /// Display name, 1–100 characters, no control characters.
    pub name: String,
    /// `[a-z0-9-]`, 1–63 characters; derived from the name if absent.
    pub slug: Option<String>,
    /// `nats://host:port` or `tls://host:port` where collectors reach the leaf.
    pub nats_leaf_url: String,
    /// Leaf client listen address (default `0.0.0.0:<port of nats_leaf_url>`).
    pub local_listen: Option<String>,
}

/// Body of `PATCH /api/v1/edge-sites/{id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSite {
    /// New display name.
    pub name: Option<String>,
    /// New leaf URL.
    pub nats_leaf_url: Option<String>,
}

/// Filters for listing sites.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SiteQuery {
    /// Only sites in this status.
    pub status: Option<String>,
    /// Only sites whose name contains this (case-insensitive).
    pub name: Option<String>,
    /// Rows per page, 1–200 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Filters for listing leaf servers.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LeafQuery {
    /// Only leaf servers in this status.
    pub status: Option<String>,
    /// Rows per page, 1–200 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// List edge sites.
#[utoipa::path(get, path = "/edge-sites", tag = "edge-sites", params(SiteQuery),
    responses((status = 200, body = SiteList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_sites(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiQuery(query): ApiQuery<SiteQuery>,
) -> Result<ApiJson<SiteList>, ApiError> {
    auth.actor.authorize(Action::ReadSites)?;
    let mut errors = FieldErrors::default();
    let page = PageParams {
        limit: query.limit,
        cursor: query.cursor.clone(),
    }
    .parse(&mut errors);
    let filter = SiteFilter {
        status: parse_filter("status", query.status.as_deref(), &mut errors),
        name_contains: query.name.filter(|n| !n.is_empty()),
    };
    errors.into_result()?;
    let page = state
        .store
        .scoped(auth.actor.scope())
        .list_sites(&filter, &page)
        .await?;
    Ok(ApiJson(SiteList {
        items: page.items.into_iter().map(SiteResponse::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Create an edge site (and its pending leaf server).
#[utoipa::path(post, path = "/edge-sites", tag = "edge-sites", request_body = CreateSite,
    responses((status = 201, body = SiteResponse), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_site(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<CreateSite>,
) -> Result<(StatusCode, ApiJson<SiteResponse>), ApiError> {
    auth.actor.authorize(Action::WriteSites)?;
    let mut errors = FieldErrors::default();
    let name = errors.check("name", DisplayName::parse(&body.name));
    let slug = match (&body.slug, &name) {
        (Some(slug), _) => errors.check("slug", Slug::parse(slug)),
        (None, Some(name)) => errors.check("slug", Slug::derive_from(name.as_str())),
        (None, None) => None,
    };
    let url = errors.check("nats_leaf_url", NatsUrl::parse(&body.nats_leaf_url));
    let listen = match (&body.local_listen, &url) {
        (Some(raw), _) => errors.check("local_listen", ListenAddr::parse(raw)),
        (None, Some(url)) => errors.check(
            "local_listen",
            ListenAddr::parse(&format!("0.0.0.0:{}", url.port())),
        ),
        (None, None) => None,
    };
    errors.clone().into_result()?;
    let (Some(name), Some(slug), Some(nats_leaf_url), Some(local_listen)) =
        (name, slug, url, listen)
    else {
        return Err(ApiError::validation(errors));
    };
    let new = NewSite {
        name,
        slug,
        nats_leaf_url,
        upstream_url: state.settings.hub_leafnode_url.clone(),
        local_listen,
    };
    let scoped = state.store.scoped(auth.actor.scope());
    let job = state.jobs.provisioning_job_for_new_site();
    let (site, leaf) = scoped.create_site(&new, job).await?;
    tracing::info!(site_id = %site.id, slug = %site.slug, "edge site created");
    metrics::counter!("serviceradar_edge_sites_created_total").increment(1);
    let mut response = SiteResponse::from(site);
    response.leaf_server = Some(leaf.into());
    Ok((StatusCode::CREATED, ApiJson(response)))
}

/// Get one edge site with its leaf server.
#[utoipa::path(get, path = "/edge-sites/{id}", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id")),
    responses((status = 200, body = SiteResponse), (status = 404, body = ErrorBody)))]
pub async fn get_site(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<ApiJson<SiteResponse>, ApiError> {
    auth.actor.authorize(Action::ReadSites)?;
    let id: EdgeSiteId = path_id(&id)?;
    let scoped = state.store.scoped(auth.actor.scope());
    let site = scoped.site(id).await?;
    let leaf = scoped.leaf_for_site(id).await?;
    let mut response = SiteResponse::from(site);
    response.leaf_server = Some(leaf.into());
    Ok(ApiJson(response))
}

/// Change an edge site's name or leaf URL.
#[utoipa::path(patch, path = "/edge-sites/{id}", tag = "edge-sites", request_body = UpdateSite,
    params(("id" = String, Path, description = "Site id")),
    responses((status = 200, body = SiteResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_site(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateSite>,
) -> Result<ApiJson<SiteResponse>, ApiError> {
    auth.actor.authorize(Action::WriteSites)?;
    let id: EdgeSiteId = path_id(&id)?;
    let mut errors = FieldErrors::default();
    let update = SiteUpdate {
        name: body
            .name
            .as_deref()
            .and_then(|n| errors.check("name", DisplayName::parse(n))),
        nats_leaf_url: body
            .nats_leaf_url
            .as_deref()
            .and_then(|u| errors.check("nats_leaf_url", NatsUrl::parse(u))),
    };
    errors.into_result()?;
    let site = state
        .store
        .scoped(auth.actor.scope())
        .update_site(id, &update)
        .await?;
    Ok(ApiJson(site.into()))
}

/// Delete an edge site and its leaf server.
#[utoipa::path(delete, path = "/edge-sites/{id}", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_site(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.actor.authorize(Action::DeleteSites)?;
    let id: EdgeSiteId = path_id(&id)?;
    let scoped = state.store.scoped(auth.actor.scope());
    // The leaf's NATS user, to revoke once the site is gone.
    let leaf_user = leaf_user_key(&state, &scoped, id).await?;
    scoped.delete_site(id).await?;
    tracing::info!(site_id = %id, "edge site deleted");
    // From now on the leaf authorization callout refuses the leaf. Its live
    // hub sessions are read *after* the delete: a session the callout records
    // later is refused by the callout's own re-check of the site.
    let mut keys = scoped.leaf_session_keys(id).await?;
    // Leaves provisioned before the callout existed were users of the
    // tenant's account themselves.
    keys.extend(leaf_user);
    if !keys.is_empty() {
        let tenant = state.store.tenant(auth.actor.tenant_id).await?;
        match state.pki.revoke_users(&state.store, &tenant, &keys).await {
            Ok(()) => scoped.forget_leaf_sessions(id).await?,
            Err(e) => tracing::error!(site_id = %id, error = format!("{e:#}"),
                "revoking the deleted site's NATS sessions failed"),
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn leaf_user_key(
    state: &AppState,
    scoped: &serviceradar_store::Scoped<'_>,
    site: EdgeSiteId,
) -> Result<Option<String>, ApiError> {
    let leaf = scoped.leaf_for_site(site).await?;
    let Some(material) = scoped.leaf_provisioning(leaf.id).await? else {
        return Ok(None);
    };
    let creds = state
        .pki
        .open(
            &material.creds_sealed,
            &crate::pki::aad::leaf(leaf.tenant_id, leaf.id, "creds"),
        )
        .map_err(|e| ApiError::internal(format!("opening the leaf's creds: {e:#}")))?;
    Ok(crate::pki::creds_user_key(&creds))
}

/// Get the leaf server of an edge site.
#[utoipa::path(get, path = "/edge-sites/{id}/leaf-server", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id")),
    responses((status = 200, body = LeafServerResponse), (status = 404, body = ErrorBody)))]
pub async fn get_site_leaf_server(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<ApiJson<LeafServerResponse>, ApiError> {
    auth.actor.authorize(Action::ReadSites)?;
    let id: EdgeSiteId = path_id(&id)?;
    let leaf = state
        .store
        .scoped(auth.actor.scope())
        .leaf_for_site(id)
        .await?;
    Ok(ApiJson(leaf.into()))
}

/// List leaf servers.
#[utoipa::path(get, path = "/leaf-servers", tag = "leaf-servers", params(LeafQuery),
    responses((status = 200, body = LeafServerList), (status = 400, body = ErrorBody)))]
pub async fn list_leaf_servers(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiQuery(query): ApiQuery<LeafQuery>,
) -> Result<ApiJson<LeafServerList>, ApiError> {
    auth.actor.authorize(Action::ReadSites)?;
    let mut errors = FieldErrors::default();
    let page = PageParams {
        limit: query.limit,
        cursor: query.cursor.clone(),
    }
    .parse(&mut errors);
    let filter = LeafFilter {
        status: parse_filter("status", query.status.as_deref(), &mut errors),
    };
    errors.into_result()?;
    let page = state
        .store
        .scoped(auth.actor.scope())
        .list_leaf_servers(&filter, &page)
        .await?;
    Ok(ApiJson(LeafServerList {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Get one leaf server.
#[utoipa::path(get, path = "/leaf-servers/{id}", tag = "leaf-servers",
    params(("id" = String, Path, description = "Leaf server id")),
    responses((status = 200, body = LeafServerResponse), (status = 404, body = ErrorBody)))]
pub async fn get_leaf_server(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<ApiJson<LeafServerResponse>, ApiError> {
    auth.actor.authorize(Action::ReadSites)?;
    let id: LeafServerId = path_id(&id)?;
    let leaf = state
        .store
        .scoped(auth.actor.scope())
        .leaf_server(id)
        .await?;
    Ok(ApiJson(leaf.into()))
}
