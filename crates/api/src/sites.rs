//! Edge sites and their NATS leaf servers (`/api/v1/edge-sites`, `/api/v1/leaf-servers`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use serviceradar_control::sites::{CreateSite, LeafQuery, SiteQuery, UpdateSite};
use serviceradar_control::{Control, PageParams};
use serviceradar_domain::resources::{EdgeSite, NatsLeafServer};
use serviceradar_http::{ApiError, ApiJson, ApiQuery, Caller, ErrorBody, ListResponse, path_id};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn router() -> OpenApiRouter<Control> {
    OpenApiRouter::new()
        .routes(routes!(list_sites, create_site))
        .routes(routes!(get_site, update_site, delete_site))
        .routes(routes!(get_site_leaf_server))
        .routes(routes!(get_site_hub_link))
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
    /// When the link to the hub last went up or down (Unix ms): `connected`
    /// or `disconnected` since then.
    pub link_changed_at: Option<i64>,
    /// When provisioning last issued the certificate and config (Unix ms):
    /// the first run, a regenerate or a renewal; `null` while pending.
    pub provisioned_at: Option<i64>,
    /// 1 (one leaf server) or 3 (a leaf cluster).
    pub leaf_nodes: u8,
    /// A cluster's node URLs (where collectors reach each node); empty for
    /// one server.
    pub leaf_node_urls: Vec<String>,
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
            leaf_nodes: if l.cluster.is_some() { 3 } else { 1 },
            leaf_node_urls: l
                .cluster
                .as_ref()
                .map(|c| c.nodes().iter().map(|u| u.to_string()).collect())
                .unwrap_or_default(),
            leaf_cert_pem: l.leaf_cert_pem,
            ca_chain_pem: l.ca_chain_pem,
            cert_expires_at: l.cert_expires_at,
            config_checksum: l.config_checksum,
            last_error: l.last_error,
            link_changed_at: l.link_changed_at,
            provisioned_at: l.provisioned_at,
            created_at: l.created_at,
            updated_at: l.updated_at,
        }
    }
}

fn with_leaf(site: EdgeSite, leaf: NatsLeafServer) -> SiteResponse {
    let mut response = SiteResponse::from(site);
    response.leaf_server = Some(leaf.into());
    response
}

/// List edge sites.
#[utoipa::path(get, path = "/edge-sites", tag = "edge-sites", params(SiteQuery, PageParams),
    responses((status = 200, body = ListResponse<SiteResponse>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_sites(
    State(control): State<Control>,
    Caller(auth): Caller,
    ApiQuery(query): ApiQuery<SiteQuery>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<ApiJson<ListResponse<SiteResponse>>, ApiError> {
    let page = control.list_sites(&auth.actor, &query, &page).await?;
    Ok(ApiJson(ListResponse::from_page(page, SiteResponse::from)))
}

/// Create an edge site (and its pending leaf server).
#[utoipa::path(post, path = "/edge-sites", tag = "edge-sites", request_body = CreateSite,
    responses((status = 201, body = SiteResponse), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_site(
    State(control): State<Control>,
    Caller(auth): Caller,
    ApiJson(body): ApiJson<CreateSite>,
) -> Result<(StatusCode, ApiJson<SiteResponse>), ApiError> {
    let (site, leaf) = control.create_site(&auth.actor, &body).await?;
    Ok((StatusCode::CREATED, ApiJson(with_leaf(site, leaf))))
}

/// Get one edge site with its leaf server.
#[utoipa::path(get, path = "/edge-sites/{id}", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id")),
    responses((status = 200, body = SiteResponse), (status = 404, body = ErrorBody)))]
pub async fn get_site(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<ApiJson<SiteResponse>, ApiError> {
    let (site, leaf) = control.site(&auth.actor, path_id(&id)?).await?;
    Ok(ApiJson(with_leaf(site, leaf)))
}

/// Change an edge site's name or leaf URL.
#[utoipa::path(patch, path = "/edge-sites/{id}", tag = "edge-sites", request_body = UpdateSite,
    params(("id" = String, Path, description = "Site id")),
    responses((status = 200, body = SiteResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn update_site(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateSite>,
) -> Result<ApiJson<SiteResponse>, ApiError> {
    let site = control
        .update_site(&auth.actor, path_id(&id)?, &body)
        .await?;
    Ok(ApiJson(site.into()))
}

/// Delete an edge site and its leaf server.
#[utoipa::path(delete, path = "/edge-sites/{id}", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_site(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    control.delete_site(&auth.actor, path_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Get the leaf server of an edge site.
#[utoipa::path(get, path = "/edge-sites/{id}/leaf-server", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id")),
    responses((status = 200, body = LeafServerResponse), (status = 404, body = ErrorBody)))]
pub async fn get_site_leaf_server(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<ApiJson<LeafServerResponse>, ApiError> {
    let leaf = control.site_leaf_server(&auth.actor, path_id(&id)?).await?;
    Ok(ApiJson(leaf.into()))
}

/// The hub's own view of the site's leaf link.
#[derive(Debug, Serialize, ToSchema)]
pub struct HubLinkResponse {
    /// Whether the hub could be asked (the control plane follows a hub and
    /// it answered); when false, `connections` says nothing.
    pub available: bool,
    /// The leaf's connections, one per hub server holding one; empty when
    /// the hub holds none.
    pub connections: Vec<HubConnectionResponse>,
}

/// One leaf connection as a hub server holds it.
#[derive(Debug, Serialize, ToSchema)]
pub struct HubConnectionResponse {
    /// The hub server's name.
    pub hub_server: String,
    /// The leaf's address as the hub sees it (`ip:port`).
    pub remote: String,
    /// Round-trip time the hub measured (e.g. `1.2ms`).
    pub rtt: String,
    /// Messages from the leaf.
    pub in_msgs: u64,
    /// Messages to the leaf.
    pub out_msgs: u64,
    /// Bytes from the leaf.
    pub in_bytes: u64,
    /// Bytes to the leaf.
    pub out_bytes: u64,
}

/// The hub's own view of the site's leaf link: which hub server holds it,
/// the leaf's remote address, RTT, messages and bytes each way (every hub
/// server's answer to `$SYS.REQ.SERVER.PING.LEAFZ`).
#[utoipa::path(get, path = "/edge-sites/{id}/leaf-server/hub-link", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id")),
    responses((status = 200, body = HubLinkResponse), (status = 404, body = ErrorBody)))]
pub async fn get_site_hub_link(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<ApiJson<HubLinkResponse>, ApiError> {
    let link = control.site_hub_link(&auth.actor, path_id(&id)?).await?;
    Ok(ApiJson(HubLinkResponse {
        available: link.available,
        connections: link
            .connections
            .into_iter()
            .map(|c| HubConnectionResponse {
                hub_server: c.hub_server,
                remote: c.remote,
                rtt: c.rtt,
                in_msgs: c.in_msgs,
                out_msgs: c.out_msgs,
                in_bytes: c.in_bytes,
                out_bytes: c.out_bytes,
            })
            .collect(),
    }))
}

/// List leaf servers.
#[utoipa::path(get, path = "/leaf-servers", tag = "leaf-servers", params(LeafQuery, PageParams),
    responses((status = 200, body = ListResponse<LeafServerResponse>), (status = 400, body = ErrorBody)))]
pub async fn list_leaf_servers(
    State(control): State<Control>,
    Caller(auth): Caller,
    ApiQuery(query): ApiQuery<LeafQuery>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<ApiJson<ListResponse<LeafServerResponse>>, ApiError> {
    let page = control
        .list_leaf_servers(&auth.actor, &query, &page)
        .await?;
    Ok(ApiJson(ListResponse::from_page(page, Into::into)))
}

/// Get one leaf server.
#[utoipa::path(get, path = "/leaf-servers/{id}", tag = "leaf-servers",
    params(("id" = String, Path, description = "Leaf server id")),
    responses((status = 200, body = LeafServerResponse), (status = 404, body = ErrorBody)))]
pub async fn get_leaf_server(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<ApiJson<LeafServerResponse>, ApiError> {
    let leaf = control.leaf_server(&auth.actor, path_id(&id)?).await?;
    Ok(ApiJson(leaf.into()))
}
