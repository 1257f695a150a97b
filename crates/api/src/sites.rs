//! Edge sites and their NATS leaf servers (`/api/v1/edge-sites`, `/api/v1/leaf-servers`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serviceradar_control::sites::{CreateSite, LeafQuery, SiteQuery, UpdateSite};
use serviceradar_control::{Control, ControlError, PageParams};
use serviceradar_domain::resources::{EdgeSite, EdgeSiteRef, NatsLeafServer};
use serviceradar_http::{
    ApiError, ApiJson, ApiQuery, Caller, ErrorBody, ListResponse, json_body, path_id,
};
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
) -> Result<Response, ApiError> {
    let rows = control.list_site_rows(&auth.actor, &query, &page).await?;
    let sites = rows.sites().map_err(ControlError::from)?;
    Ok(json_body(site_list_json(&sites, rows.next_cursor())))
}

/// About the bytes one site takes in the list (to size the buffer once).
const SITE_JSON_SIZE: usize = 256;

/// The JSON of `ListResponse<SiteResponse>` for a page of sites, written
/// straight from the rows the store read: the edge-site list is the API's
/// hottest read (BENCHMARKS.md, issue 15). Building a `SiteResponse` per
/// site copied every field into a `String` before serde escaped each one
/// again, and an `EdgeSite` per row copied the text and parsed the URL only
/// to write it back. Here only the name, free text, goes through
/// serde_json's escaping; slugs, states and URLs are held by their rules
/// (`EdgeSiteRef::check`) to characters JSON never escapes. A test holds
/// the output to `SiteResponse`'s, byte for byte, so the OpenAPI schema
/// stays the truth.
fn site_list_json(sites: &[EdgeSiteRef<'_>], next_cursor: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + sites.len() * SITE_JSON_SIZE);
    out.extend_from_slice(b"{\"items\":[");
    for (i, site) in sites.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_site(&mut out, site);
    }
    out.extend_from_slice(b"],\"next_cursor\":");
    write_json_str_opt(&mut out, next_cursor);
    out.push(b'}');
    out
}

/// One site as `SiteResponse` (without a leaf server) serializes it.
fn write_site(out: &mut Vec<u8>, site: &EdgeSiteRef<'_>) {
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(
        site.id()
            .as_uuid()
            .hyphenated()
            .encode_lower(&mut id)
            .as_bytes(),
    );
    out.extend_from_slice(b"\",\"name\":");
    write_json_str(out, site.name());
    out.extend_from_slice(b",\"slug\":\"");
    out.extend_from_slice(site.slug().as_bytes());
    out.extend_from_slice(b"\",\"status\":\"");
    out.extend_from_slice(site.status().as_str().as_bytes());
    out.extend_from_slice(b"\",\"nats_leaf_url\":\"");
    out.extend_from_slice(site.nats_leaf_url().as_bytes());
    out.extend_from_slice(b"\",\"last_seen_at\":");
    match site.last_seen_at() {
        Some(ms) => out.extend_from_slice(itoa::Buffer::new().format(ms).as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"created_at\":");
    out.extend_from_slice(itoa::Buffer::new().format(site.created_at()).as_bytes());
    out.extend_from_slice(b",\"updated_at\":");
    out.extend_from_slice(itoa::Buffer::new().format(site.updated_at()).as_bytes());
    out.push(b'}');
}

/// A JSON string. Text with nothing JSON escapes (a control character,
/// `"` or `\`; a checked name holds no control character) is written as
/// it is, the bytes serde_json would write; anything else is escaped by
/// serde_json. Most names need no escape, and the scan is cheaper than
/// serde_json's escaping pass (BENCHMARKS.md, issue 15).
fn write_json_str(out: &mut Vec<u8>, text: &str) {
    if text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        write_json_str_opt(out, Some(text));
    } else {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

/// A JSON string (escaped by serde_json) or `null`.
fn write_json_str_opt(out: &mut Vec<u8>, text: Option<&str>) {
    // Serializing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &text);
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

#[cfg(test)]
mod tests {
    use super::*;
    use serviceradar_domain::ids::{EdgeSiteId, TenantId};
    use serviceradar_domain::resources::ListedSite;
    use serviceradar_domain::state::SiteStatus;
    use serviceradar_domain::validate::{DisplayName, NatsUrl, Slug};

    fn site(name: &str, url: &str, status: SiteStatus, last_seen_at: Option<i64>) -> EdgeSite {
        EdgeSite {
            id: EdgeSiteId::new(),
            tenant_id: TenantId::new(),
            name: DisplayName::parse(name).unwrap(),
            slug: Slug::parse("nyc-office").unwrap(),
            status,
            nats_leaf_url: NatsUrl::parse(url).unwrap(),
            last_seen_at,
            created_at: 1_700_000_000_123,
            updated_at: 1_700_000_000_456,
        }
    }

    /// `site` as the store lists it, its URL stored as `url`.
    fn listed<'a>(site: &'a EdgeSite, url: &'a str) -> EdgeSiteRef<'a> {
        EdgeSiteRef::check(ListedSite {
            id: site.id,
            name: site.name.as_str(),
            slug: site.slug.as_str(),
            status: site.status,
            nats_leaf_url: url,
            last_seen_at: site.last_seen_at,
            created_at: site.created_at,
            updated_at: site.updated_at,
        })
        .unwrap()
    }

    /// A URL stored in another form than `NatsUrl` writes (by hand, or by
    /// an older release) is listed as `NatsUrl` writes it, as before.
    #[test]
    fn a_url_stored_in_another_form_is_listed_as_written() {
        let s = site("n", "nats://10.0.0.5:4222", SiteStatus::Active, None);
        for stored in [
            "NATS://10.0.0.5:04222",
            "nats://10.0.0.5:4222/",
            "nats://10.0.0.5",
        ] {
            let mut fast = Vec::new();
            write_site(&mut fast, &listed(&s, stored));
            let schema = serde_json::to_vec(&SiteResponse::from(s.clone())).unwrap();
            assert_eq!(fast, schema, "{stored}");
        }
    }

    /// What `write_json_str` writes is what serde_json writes, for text that
    /// needs no escape and for text that does.
    #[test]
    fn a_json_string_is_written_as_serde_json_writes_it() {
        for text in [
            "",
            "plain",
            "NYC \"Office\"",
            "back\\slash",
            "tab\there",
            "nul\u{0}",
            "unit\u{1f}",
            "del\u{7f}",
            "東京 – ünïcode",
            "\u{2028}",
        ] {
            let mut ours = Vec::new();
            write_json_str(&mut ours, text);
            assert_eq!(ours, serde_json::to_vec(text).unwrap(), "{text:?}");
        }
    }

    /// The list writes sites without `SiteResponse`; its JSON must stay the
    /// schema's, byte for byte, for every kind of value (escaped names, IPv6
    /// and DNS hosts, a site never seen).
    #[test]
    fn the_list_writes_each_site_exactly_as_its_schema_type_does() {
        let sites = [
            site(
                "NYC \"Office\" \\ 東京 – ünïcode",
                "nats://10.0.0.5:4222",
                SiteStatus::Active,
                Some(1_700_000_000_789),
            ),
            site(
                "plain",
                "tls://leaf.example.com:4443",
                SiteStatus::Pending,
                None,
            ),
            site(
                "v6",
                "nats://[2001:db8::1]:4222",
                SiteStatus::Offline,
                Some(0),
            ),
        ];
        let urls: Vec<String> = sites.iter().map(|s| s.nats_leaf_url.to_string()).collect();
        let refs: Vec<EdgeSiteRef<'_>> = sites
            .iter()
            .zip(&urls)
            .map(|(s, url)| listed(s, url))
            .collect();
        for (s, r) in sites.iter().zip(&refs) {
            let mut fast = Vec::new();
            write_site(&mut fast, r);
            let schema = serde_json::to_vec(&SiteResponse::from(s.clone())).unwrap();
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                String::from_utf8(schema).unwrap()
            );
        }
        for cursor in [Some("eyJjIjoxfQ"), None] {
            for (page, refs) in [
                (&sites[..], &refs[..]),
                (&sites[..1], &refs[..1]),
                (&[], &[]),
            ] {
                let fast = site_list_json(refs, cursor);
                let schema = serde_json::to_vec(&ListResponse {
                    items: page.iter().cloned().map(SiteResponse::from).collect(),
                    next_cursor: cursor.map(str::to_string),
                })
                .unwrap();
                assert_eq!(
                    String::from_utf8(fast).unwrap(),
                    String::from_utf8(schema).unwrap()
                );
            }
        }
    }
}
