//! Devices registered at an edge site (`/api/v1/edge-sites/{id}/devices`,
//! issue 16): register, list, read, revoke, and sign a device's CSR.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use serviceradar_control::devices::{DeviceCertificate, DeviceCsr, DeviceQuery, RegisterDevice};
use serviceradar_control::{Control, PageParams};
use serviceradar_http::{ApiError, ApiJson, ApiQuery, Caller, ErrorBody, ListResponse, path_id};
use serviceradar_store::Device;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn router() -> OpenApiRouter<Control> {
    OpenApiRouter::new()
        .routes(routes!(list_devices, register_device))
        .routes(routes!(get_device))
        .routes(routes!(revoke_device))
        .routes(routes!(issue_device_certificate))
}

/// A device registered at an edge site.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceResponse {
    /// Id (in its certificate: SPIFFE `.../device/{id}`, CN `device-{id}.{site}.{tenant}.serviceradar`).
    pub id: String,
    /// The edge site.
    pub edge_site_id: String,
    /// Name, unique in the site.
    pub name: String,
    /// `active` or `revoked`.
    pub status: String,
    /// Largest message in bytes.
    pub max_payload: i64,
    /// Most subscriptions at once.
    pub max_subscriptions: i64,
    /// Data rate in bytes per second.
    pub data_rate: i64,
    /// Serial (hex) of the last certificate issued.
    pub cert_serial: Option<String>,
    /// Expiry of the last certificate issued (Unix ms).
    pub cert_not_after: Option<i64>,
    /// Registration (Unix ms).
    pub created_at: i64,
    /// Revocation (Unix ms).
    pub revoked_at: Option<i64>,
}

impl From<Device> for DeviceResponse {
    fn from(d: Device) -> Self {
        Self {
            id: d.id.to_string(),
            edge_site_id: d.edge_site_id.to_string(),
            name: d.name.to_string(),
            status: d.status.to_string(),
            max_payload: d.limits.max_payload,
            max_subscriptions: d.limits.max_subscriptions,
            data_rate: d.limits.data_rate,
            cert_serial: d.cert_serial,
            cert_not_after: d.cert_not_after,
            created_at: d.created_at,
            revoked_at: d.revoked_at,
        }
    }
}

/// A certificate issued for a device's CSR.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceCertificateResponse {
    /// The device certificate followed by the tenant CA (what the device presents).
    pub certificate_pem: String,
    /// The platform root CA (the trust anchor).
    pub root_ca_pem: String,
    /// Serial, lowercase hex.
    pub serial: String,
    /// Expiry (Unix ms).
    pub not_after: i64,
}

impl From<DeviceCertificate> for DeviceCertificateResponse {
    fn from(c: DeviceCertificate) -> Self {
        Self {
            certificate_pem: c.certificate_pem,
            root_ca_pem: c.root_ca_pem,
            serial: c.serial_hex,
            not_after: c.not_after_ms,
        }
    }
}

/// List the devices of an edge site.
#[utoipa::path(get, path = "/edge-sites/{id}/devices", tag = "devices",
    params(("id" = String, Path, description = "Edge site id"), DeviceQuery, PageParams),
    responses((status = 200, body = ListResponse<DeviceResponse>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_devices(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<DeviceQuery>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<ApiJson<ListResponse<DeviceResponse>>, ApiError> {
    let page = control
        .list_devices(&auth.actor, path_id(&id)?, &query, &page)
        .await?;
    Ok(ApiJson(ListResponse::from_page(page, Into::into)))
}

/// Register a device at an edge site.
#[utoipa::path(post, path = "/edge-sites/{id}/devices", tag = "devices", request_body = RegisterDevice,
    params(("id" = String, Path, description = "Edge site id")),
    responses((status = 201, body = DeviceResponse), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn register_device(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RegisterDevice>,
) -> Result<(StatusCode, ApiJson<DeviceResponse>), ApiError> {
    let device = control
        .register_device(&auth.actor, path_id(&id)?, &body)
        .await?;
    Ok((StatusCode::CREATED, ApiJson(device.into())))
}

/// Get one device of an edge site.
#[utoipa::path(get, path = "/edge-sites/{id}/devices/{device_id}", tag = "devices",
    params(("id" = String, Path, description = "Edge site id"), ("device_id" = String, Path, description = "Device id")),
    responses((status = 200, body = DeviceResponse), (status = 404, body = ErrorBody)))]
pub async fn get_device(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path((id, device_id)): Path<(String, String)>,
) -> Result<ApiJson<DeviceResponse>, ApiError> {
    let device = control
        .device(&auth.actor, path_id(&id)?, path_id(&device_id)?)
        .await?;
    Ok(ApiJson(device.into()))
}

/// Revoke a device: no certificate or renewal from then on.
#[utoipa::path(post, path = "/edge-sites/{id}/devices/{device_id}/revoke", tag = "devices",
    params(("id" = String, Path, description = "Edge site id"), ("device_id" = String, Path, description = "Device id")),
    responses((status = 200, body = DeviceResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn revoke_device(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path((id, device_id)): Path<(String, String)>,
) -> Result<ApiJson<DeviceResponse>, ApiError> {
    let device = control
        .revoke_device(&auth.actor, path_id(&id)?, path_id(&device_id)?)
        .await?;
    Ok(ApiJson(device.into()))
}

/// Issue a device's certificate for the CSR it generated (its key never
/// leaves the device).
#[utoipa::path(post, path = "/edge-sites/{id}/devices/{device_id}/certificate", tag = "devices",
    request_body = DeviceCsr,
    params(("id" = String, Path, description = "Edge site id"), ("device_id" = String, Path, description = "Device id")),
    responses((status = 200, body = DeviceCertificateResponse), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn issue_device_certificate(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path((id, device_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<DeviceCsr>,
) -> Result<ApiJson<DeviceCertificateResponse>, ApiError> {
    let cert = control
        .issue_device_certificate(&auth.actor, path_id(&id)?, path_id(&device_id)?, &body)
        .await?;
    Ok(ApiJson(cert.into()))
}
