//! Downloads and config maintenance: the site bundle
//! (`GET /api/v1/edge-sites/{id}/bundle`), the collector bundle
//! (`GET /api/v1/collector-packages/{id}/bundle`), config regeneration and the
//! drift check.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serviceradar_control::Control;
use serviceradar_control::sites::{LeafLayout, Regenerated};
use serviceradar_http::{
    ApiError, ApiJson, Authenticated, Caller, Credential, ErrorBody, gzip_download, path_id,
};
use serviceradar_provisioning::ConfigDrift;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn router() -> OpenApiRouter<Control> {
    OpenApiRouter::new()
        .routes(routes!(download_site_bundle))
        .routes(routes!(regenerate_config))
        .routes(routes!(get_config_drift))
        .routes(routes!(download_collector_bundle, mint_collector_bundle))
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
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let built = control.site_bundle(&auth.actor, path_id(&id)?).await?;
    Ok(gzip_download(
        &built.file_name,
        built.bytes,
        &[
            ("x-config-checksum", built.config_checksum),
            ("x-config-drift", built.drifted.to_string()),
        ],
    ))
}

/// Re-issue certificates and credentials and re-render the leaf config (queues
/// the provisioning job again; at most one is pending per leaf). An optional
/// JSON body changes the leaf's layout first (`{"leaf_nodes": 3}`: a 3-node
/// cluster; `{"leaf_nodes": 1}`: one server).
#[utoipa::path(post, path = "/edge-sites/{id}/regenerate-config", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id")),
    request_body(content = Option<LeafLayout>, content_type = "application/json"),
    responses((status = 202, body = Regenerated), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn regenerate_config(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, ApiJson<Regenerated>), ApiError> {
    let layout: LeafLayout = if body.iter().all(u8::is_ascii_whitespace) {
        LeafLayout::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
    };
    let done = control
        .regenerate_config_with(&auth.actor, path_id(&id)?, &layout)
        .await?;
    Ok((StatusCode::ACCEPTED, ApiJson(done)))
}

/// Compare the leaf's stored config checksum with the config as it renders now.
#[utoipa::path(get, path = "/edge-sites/{id}/config-drift", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id")),
    responses((status = 200, body = ConfigDrift), (status = 404, body = ErrorBody)))]
pub async fn get_config_drift(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<ApiJson<ConfigDrift>, ApiError> {
    Ok(ApiJson(
        control.config_drift(&auth.actor, path_id(&id)?).await?,
    ))
}

/// Download a collector bundle with an API token: a fresh client
/// certificate and NATS credentials in the tenant's account, pointed at the
/// package's edge site leaf (or the SaaS NATS). Moves the package
/// `created -> downloaded`. Because it mints credentials it is not a safe
/// request: `HEAD` is refused, and browser sessions must `POST` (with
/// `X-CSRF-Token`) instead.
#[utoipa::path(get, path = "/collector-packages/{id}/bundle", tag = "collector-packages",
    params(("id" = String, Path, description = "Package id")),
    responses((status = 200, content_type = "application/gzip", body = Vec<u8>),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 405, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn download_collector_bundle(
    State(control): State<Control>,
    Caller(auth): Caller,
    method: Method,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if method == Method::HEAD {
        return Err(ApiError::method_not_allowed(
            "HEAD does not download a collector bundle (downloading mints credentials)",
        ));
    }
    if auth.credential == Credential::Session {
        return Err(ApiError::method_not_allowed(
            "a collector bundle mints credentials: with a session, POST to this URL with X-CSRF-Token",
        ));
    }
    collector_bundle(&control, &auth, &id).await
}

/// Download a collector bundle (as the `GET`), for browser sessions (the
/// session's `X-CSRF-Token` is required) and tokens alike.
#[utoipa::path(post, path = "/collector-packages/{id}/bundle", tag = "collector-packages",
    params(("id" = String, Path, description = "Package id")),
    responses((status = 200, content_type = "application/gzip", body = Vec<u8>),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn mint_collector_bundle(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    collector_bundle(&control, &auth, &id).await
}

async fn collector_bundle(
    control: &Control,
    auth: &Authenticated,
    id: &str,
) -> Result<Response, ApiError> {
    let built = control.collector_bundle(&auth.actor, path_id(id)?).await?;
    Ok(gzip_download(&built.file_name, built.bytes, &[]))
}
