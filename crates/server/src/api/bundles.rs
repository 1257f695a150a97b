//! Downloads and config maintenance: the site bundle
//! (`GET /api/v1/edge-sites/{id}/bundle`), the collector bundle
//! (`GET /api/v1/collector-packages/{id}/bundle`), config regeneration and the
//! drift check. Bundles are built from stored material; keys and credentials
//! are unsealed in memory only and never logged.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serviceradar_bundle::{CollectorBundle, EdgeSiteRef, NatsTarget, SecretText, collector_bundle};
use serviceradar_domain::resources::CollectorType;
use serviceradar_domain::state::PackageEvent;
use serviceradar_domain::{Action, EdgeSiteId, PackageId, TenantScope};
use serviceradar_pki::{TenantRef, issue_collector};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::common::{ApiJson, path_id};
use super::error::{ApiError, ErrorBody};
use crate::app::AppState;
use crate::auth::Authenticated;
use crate::provisioning::{self, ConfigDrift, SiteBundleError};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(download_site_bundle))
        .routes(routes!(regenerate_config))
        .routes(routes!(get_config_drift))
        .routes(routes!(download_collector_bundle))
}

impl From<SiteBundleError> for ApiError {
    fn from(err: SiteBundleError) -> Self {
        match err {
            SiteBundleError::Store(e) => e.into(),
            pending @ SiteBundleError::Pending(_) => ApiError::conflict(pending.to_string()),
            SiteBundleError::Internal(e) => ApiError::internal(format!("{e:#}")),
        }
    }
}

fn internal(e: anyhow::Error) -> ApiError {
    ApiError::internal(format!("{e:#}"))
}

fn gzip_download(file_name: &str, bytes: Vec<u8>, extra: &[(&'static str, String)]) -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, "application/gzip".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        bytes,
    )
        .into_response();
    for (name, value) in extra {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(*name, value);
        }
    }
    response
}

/// Download the site bundle (tar.gz: `nats-leaf.conf`, certificates, keys,
/// credentials, `setup.sh`, systemd unit, README). 409 while the leaf is
/// still being provisioned.
#[utoipa::path(get, path = "/edge-sites/{id}/bundle", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id")),
    responses((status = 200, content_type = "application/gzip", body = Vec<u8>,
               description = "The site bundle; `x-config-checksum` names its config's checksum"),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn download_site_bundle(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    auth.actor.authorize(Action::DownloadBundle)?;
    let id: EdgeSiteId = path_id(&id)?;
    let built = provisioning::build_site_bundle(
        &state.store,
        &state.pki,
        &state.settings,
        auth.actor.scope(),
        id,
    )
    .await?;
    tracing::info!(site_id = %id, checksum = %built.config_checksum, "site bundle downloaded");
    metrics::counter!("serviceradar_site_bundles_downloaded_total").increment(1);
    Ok(gzip_download(
        &built.file_name,
        built.bytes,
        &[
            ("x-config-checksum", built.config_checksum),
            ("x-config-drift", built.drifted.to_string()),
        ],
    ))
}

/// Result of `POST /edge-sites/{id}/regenerate-config`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegenerateResponse {
    /// True if a new provisioning job was queued (false: one is already pending).
    pub enqueued: bool,
    /// Drift of the current config before regeneration.
    pub drift: ConfigDrift,
}

/// Re-issue certificates and credentials and re-render the leaf config (queues
/// the provisioning job again; at most one is pending per leaf).
#[utoipa::path(post, path = "/edge-sites/{id}/regenerate-config", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id")),
    responses((status = 202, body = RegenerateResponse), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn regenerate_config(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<(StatusCode, ApiJson<RegenerateResponse>), ApiError> {
    auth.actor.authorize(Action::WriteSites)?;
    let id: EdgeSiteId = path_id(&id)?;
    let scoped = state.store.scoped(auth.actor.scope());
    let site = scoped.site(id).await?;
    let leaf = scoped.leaf_for_site(id).await?;
    let tenant = state.store.tenant(site.tenant_id).await?;
    let drift =
        provisioning::config_drift(&state.settings, &tenant, &site, &leaf).map_err(internal)?;
    let job = provisioning::provisioning_job(&leaf);
    let enqueued = state
        .store
        .enqueue_job(&job, Some(site.tenant_id))
        .await?
        .is_some();
    tracing::info!(site_id = %id, enqueued, drifted = drift.drifted, "leaf config regeneration requested");
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(RegenerateResponse { enqueued, drift }),
    ))
}

/// Compare the leaf's stored config checksum with the config as it renders now.
#[utoipa::path(get, path = "/edge-sites/{id}/config-drift", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id")),
    responses((status = 200, body = ConfigDrift), (status = 404, body = ErrorBody)))]
pub async fn get_config_drift(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<ApiJson<ConfigDrift>, ApiError> {
    auth.actor.authorize(Action::ReadSites)?;
    let id: EdgeSiteId = path_id(&id)?;
    let scoped = state.store.scoped(auth.actor.scope());
    let site = scoped.site(id).await?;
    let leaf = scoped.leaf_for_site(id).await?;
    let tenant = state.store.tenant(site.tenant_id).await?;
    Ok(ApiJson(
        provisioning::config_drift(&state.settings, &tenant, &site, &leaf).map_err(internal)?,
    ))
}

fn bundle_collector_type(t: CollectorType) -> serviceradar_bundle::CollectorType {
    use serviceradar_bundle::CollectorType as B;
    match t {
        CollectorType::Flowgger => B::Flowgger,
        CollectorType::Trapd => B::Trapd,
        CollectorType::Otel => B::Otel,
        CollectorType::Netflow => B::Netflow,
        CollectorType::Syslog => B::Syslog,
    }
}

/// Download a collector bundle: a fresh client certificate and NATS
/// credentials in the tenant's account, pointed at the package's edge site
/// leaf (or the SaaS NATS). Moves the package `created -> downloaded`.
#[utoipa::path(get, path = "/collector-packages/{id}/bundle", tag = "collector-packages",
    params(("id" = String, Path, description = "Package id")),
    responses((status = 200, content_type = "application/gzip", body = Vec<u8>),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn download_collector_bundle(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    auth.actor.authorize(Action::WritePackages)?;
    let id: PackageId = path_id(&id)?;
    let scope: TenantScope = auth.actor.scope();
    let scoped = state.store.scoped(scope);
    let package = scoped.package(id).await?;
    // Refuse revoked/expired/installed packages before issuing anything.
    package.package.status.apply(PackageEvent::Download)?;
    let tenant = state.store.tenant(package.package.tenant_id).await?;
    let ca = state
        .pki
        .tenant_ca(&state.store, &tenant)
        .await
        .map_err(internal)?;
    let cert = issue_collector(
        &ca,
        TenantRef {
            id: tenant.id.as_uuid(),
            slug: tenant.slug.as_str(),
        },
        id.as_uuid(),
        &state.pki.issue_options(),
    )
    .map_err(|e| internal(e.into()))?;
    let creds = state
        .pki
        .collector_creds(
            &state.store,
            &tenant,
            &format!("collector-{}", package.package.id),
        )
        .await
        .map_err(internal)?;
    let root = state.pki.root_ca(&state.store).await.map_err(internal)?;
    let site_url = package
        .edge_site
        .as_ref()
        .map(|s| s.nats_leaf_url.to_string());
    let target = NatsTarget::for_package(
        package
            .edge_site
            .as_ref()
            .zip(site_url.as_deref())
            .map(|(s, url)| EdgeSiteRef {
                name: s.name.as_str(),
                slug: s.slug.as_str(),
                nats_leaf_url: url,
            }),
        &state.settings.saas_nats_url,
    );
    let bundle = CollectorBundle {
        collector_type: bundle_collector_type(package.package.collector_type),
        package_id: id.as_uuid(),
        tenant_slug: tenant.slug.to_string(),
        target,
        creds: SecretText::new(creds.as_str()),
        client_cert_pem: cert.full_chain_pem(),
        client_key_pem: SecretText::new(cert.key_pem.as_str()),
        ca_pem: root.cert_pem().to_owned(),
    };
    let bytes = collector_bundle(&bundle).map_err(|e| internal(e.into()))?;
    if let Some(key) = crate::pki::creds_user_key(creds.as_str()) {
        scoped.add_package_user_key(id, &key).await?;
    }
    scoped
        .transition_package(id, PackageEvent::Download)
        .await?;
    tracing::info!(package_id = %id, serial = %cert.serial_hex, "collector bundle downloaded");
    Ok(gzip_download(&bundle.file_name(), bytes, &[]))
}
