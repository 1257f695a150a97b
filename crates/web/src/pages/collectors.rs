//! Collector packages: create with an edge-site selector (none = direct to
//! the SaaS hub), list with the assigned site, filter by site, download a
//! bundle (a write: it mints credentials), revoke.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serviceradar_control::PageParams;
use serviceradar_control::packages::{CreatePackage, PackageQuery};
use serviceradar_domain::PackageId;
use serviceradar_domain::resources::CollectorType;
use serviceradar_store::now_ms;

use super::render;
use crate::session::{NoFields, Posted, Viewer};
use crate::view::{Badge, Chrome, When};
use crate::{WebError, WebState};

pub struct PackageRow {
    id: String,
    name: String,
    kind: String,
    site_id: String,
    site_name: String,
    badge: Badge,
    created: When,
}

#[derive(Template)]
#[template(path = "collectors.html")]
struct CollectorsPage {
    chrome: Chrome,
    title: String,
    live: String,
    rows: Vec<PackageRow>,
    sites: Vec<(String, String)>,
    types: Vec<&'static str>,
    site: String,
    bundle_note: Option<String>,
}

/// Query of the list.
#[derive(Debug, Deserialize)]
pub struct CollectorsQuery {
    site: Option<String>,
}

/// `GET /admin/collectors`.
pub async fn list(
    State(state): State<WebState>,
    viewer: Viewer,
    Query(q): Query<CollectorsQuery>,
) -> Result<Response, WebError> {
    let actor = &viewer.auth.actor;
    let site = q.site.unwrap_or_default();
    let packages = state
        .control
        .list_packages(
            actor,
            &PackageQuery {
                edge_site_id: Some(site.clone()),
                ..PackageQuery::default()
            },
            &PageParams {
                limit: Some(200),
                cursor: None,
            },
        )
        .await?;
    let sites = super::first_sites(&state.control, actor).await?;
    let now = now_ms();
    render(&CollectorsPage {
        chrome: Chrome::new(&viewer, "collectors"),
        title: "Collectors".into(),
        live: String::new(),
        rows: packages
            .items
            .iter()
            .map(|p| PackageRow {
                id: p.package.id.to_string(),
                name: p.package.name.to_string(),
                kind: p.package.collector_type.to_string(),
                site_id: p
                    .edge_site
                    .as_ref()
                    .map(|s| s.id.to_string())
                    .unwrap_or_default(),
                site_name: p
                    .edge_site
                    .as_ref()
                    .map(|s| s.name.to_string())
                    .unwrap_or_default(),
                badge: Badge::of(p.package.status.as_str()),
                created: When::at(p.package.created_at, now),
            })
            .collect(),
        sites: sites
            .iter()
            .map(|s| (s.id.to_string(), s.name.to_string()))
            .collect(),
        types: CollectorType::ALL.iter().map(|t| t.as_str()).collect(),
        site,
        bundle_note: None,
    })
}

/// The create form.
#[derive(Debug, Deserialize)]
pub struct CreateForm {
    name: Option<String>,
    collector_type: String,
    edge_site_id: Option<String>,
}

/// `POST /admin/collectors`.
pub async fn create(
    State(state): State<WebState>,
    posted: Posted<CreateForm>,
) -> Result<Response, WebError> {
    let form = posted.form;
    state
        .control
        .create_package(
            &posted.auth.actor,
            &CreatePackage {
                collector_type: form.collector_type,
                name: form.name.filter(|n| !n.trim().is_empty()),
                edge_site_id: form.edge_site_id.filter(|s| !s.is_empty()),
            },
        )
        .await?;
    Ok(Redirect::to("/admin/collectors").into_response())
}

fn package_id(raw: &str) -> Result<PackageId, WebError> {
    raw.parse().map_err(|_| WebError::not_found())
}

/// `POST /admin/collectors/{id}/bundle`: builds and downloads a bundle.
pub async fn bundle(
    State(state): State<WebState>,
    Path(id): Path<String>,
    posted: Posted<NoFields>,
) -> Result<Response, WebError> {
    let built = state
        .control
        .collector_bundle(&posted.auth.actor, package_id(&id)?)
        .await?;
    Ok(serviceradar_http::gzip_download(
        &built.file_name,
        built.bytes,
        &[],
    ))
}

/// `POST /admin/collectors/{id}/revoke`.
pub async fn revoke(
    State(state): State<WebState>,
    Path(id): Path<String>,
    posted: Posted<NoFields>,
) -> Result<Response, WebError> {
    state
        .control
        .revoke_package(&posted.auth.actor, package_id(&id)?)
        .await?;
    Ok(Redirect::to("/admin/collectors").into_response())
}
