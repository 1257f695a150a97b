//! Alerts (`/api/v1/alerts`), alert webhooks (`/api/v1/webhooks`) and sites'
//! edge agents.
//!
//! Alerts are raised by the health sweeper (site offline / leaf disconnected
//! longer than the rule allows) and resolved automatically on recovery; people
//! list and acknowledge them here (`open -> acknowledged -> resolved`).
//! Webhooks receive `alert.raised` / `alert.resolved` as signed JSON; the
//! secret is shown once, at creation.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use serviceradar_control::alerts::{AlertQuery, CreateWebhook};
use serviceradar_control::{Control, PageParams};
use serviceradar_domain::Secret;
use serviceradar_domain::state::AlertEvent;
use serviceradar_http::{ApiError, ApiJson, ApiQuery, Caller, ErrorBody, ListResponse, path_id};
use serviceradar_store::health::{Alert, Webhook, WebhookDelivery};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn router() -> OpenApiRouter<Control> {
    OpenApiRouter::new()
        .routes(routes!(list_alerts))
        .routes(routes!(get_alert))
        .routes(routes!(acknowledge_alert))
        .routes(routes!(resolve_alert))
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(delete_webhook))
        .routes(routes!(list_deliveries))
        .routes(routes!(get_site_agent))
        .routes(routes!(revoke_site_agent))
}

/// A site's edge agent (never its key).
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentResponse {
    /// Agent id (in its certificate's SPIFFE id).
    pub id: String,
    /// Site.
    pub edge_site_id: String,
    /// Version reported at registration.
    pub agent_version: Option<String>,
    /// Capabilities reported at registration (comma-separated).
    pub capabilities: Option<String>,
    /// Host name reported at registration.
    pub hostname: Option<String>,
    /// Last gateway contact (Unix ms).
    pub last_seen_at: Option<i64>,
    /// Certificate serial (hex).
    pub cert_serial: String,
    /// Certificate expiry (Unix ms).
    pub cert_expires_at: i64,
    /// When the agent was revoked (Unix ms).
    pub revoked_at: Option<i64>,
    /// For a box enrolled with a token: when the certificates it holds now
    /// expire (Unix ms; its agent renews them at about 2/3 of their lifetime).
    pub edge_cert_expires_at: Option<i64>,
    /// Last successful renewal (Unix ms).
    pub renewed_at: Option<i64>,
    /// Last refused renewal (Unix ms); cleared by a successful one.
    pub renewal_refused_at: Option<i64>,
    /// Why that renewal was refused.
    pub renewal_refusal: Option<String>,
    /// The latest result of each check the agent runs, by name (not in the
    /// answer to a revocation).
    pub checks: Vec<AgentCheckResponse>,
    /// The config version the agent acknowledged running (over its control
    /// stream); compare with `GET .../agent/checks`' `config_version`.
    pub config_version: Option<String>,
    /// When it acknowledged it (Unix ms).
    pub config_acked_at: Option<i64>,
}

/// The latest result of one of the agent's checks.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentCheckResponse {
    /// Check name.
    pub name: String,
    /// `nats_leaf`, `tcp`, `http`, `dns` or `icmp`.
    pub kind: String,
    /// What it checks.
    pub target: String,
    /// `ok`, `fail` or `unsupported`.
    pub status: String,
    /// What the check said.
    pub message: String,
    /// How long it took (µs).
    pub response_time_us: i64,
    /// When the agent observed it (Unix ms).
    pub observed_at: i64,
}

impl From<serviceradar_control::alerts::SiteAgent> for AgentResponse {
    fn from(s: serviceradar_control::alerts::SiteAgent) -> Self {
        let mut response = Self::from(s.agent);
        if let Some((version, at)) = s.config_ack {
            response.config_version = Some(version);
            response.config_acked_at = Some(at);
        }
        response.checks = s
            .checks
            .into_iter()
            .map(|c| AgentCheckResponse {
                name: c.name,
                kind: c.kind,
                target: c.target,
                status: c.status,
                message: c.message,
                response_time_us: c.response_time_us,
                observed_at: c.observed_at,
            })
            .collect();
        response
    }
}

impl From<serviceradar_store::health::AgentRecord> for AgentResponse {
    fn from(a: serviceradar_store::health::AgentRecord) -> Self {
        Self {
            id: a.id.to_string(),
            edge_site_id: a.edge_site_id.to_string(),
            agent_version: a.agent_version,
            capabilities: a.capabilities,
            hostname: a.hostname,
            last_seen_at: a.last_seen_at,
            cert_serial: a.cert_serial,
            cert_expires_at: a.cert_expires_at,
            revoked_at: a.revoked_at,
            edge_cert_expires_at: a.edge_cert_expires_at,
            renewed_at: a.renewed_at,
            renewal_refused_at: a.renewal_refused_at,
            renewal_refusal: a.renewal_refusal,
            checks: Vec::new(),
            config_version: None,
            config_acked_at: None,
        }
    }
}

/// The site's edge agent (404 until provisioning issued its certificate).
#[utoipa::path(get, path = "/edge-sites/{id}/agent", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id")),
    responses((status = 200, body = AgentResponse), (status = 404, body = ErrorBody)))]
pub async fn get_site_agent(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<ApiJson<AgentResponse>, ApiError> {
    Ok(ApiJson(
        control.site_agent(&auth.actor, path_id(&id)?).await?.into(),
    ))
}

/// Revoke the site's edge agent: the gateways refuse its certificate and
/// close its control stream at once (a replica that missed the relayed
/// revocation: within its identity cache lifetime, a minute). Admins only.
#[utoipa::path(post, path = "/edge-sites/{id}/agent/revoke", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id")),
    responses((status = 200, body = AgentResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_site_agent(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<ApiJson<AgentResponse>, ApiError> {
    let agent = control
        .revoke_site_agent(&auth.actor, path_id(&id)?)
        .await?;
    Ok(ApiJson(agent.into()))
}

/// An alert.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertResponse {
    /// Id.
    pub id: String,
    /// Site the alert is about.
    pub edge_site_id: String,
    /// `site_offline` or `leaf_disconnected`.
    pub kind: String,
    /// `open`, `acknowledged` or `resolved`.
    pub status: String,
    /// What happened.
    pub message: String,
    /// User who acknowledged it.
    pub acknowledged_by: Option<String>,
    /// When it was acknowledged (Unix ms).
    pub acknowledged_at: Option<i64>,
    /// When it was resolved (Unix ms).
    pub resolved_at: Option<i64>,
    /// Raised (Unix ms).
    pub created_at: i64,
    /// Last change (Unix ms).
    pub updated_at: i64,
}

impl From<Alert> for AlertResponse {
    fn from(a: Alert) -> Self {
        Self {
            id: a.id.to_string(),
            edge_site_id: a.edge_site_id.to_string(),
            kind: a.kind,
            status: a.status.to_string(),
            message: a.message,
            acknowledged_by: a.acknowledged_by,
            acknowledged_at: a.acknowledged_at,
            resolved_at: a.resolved_at,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

/// List alerts.
#[utoipa::path(get, path = "/alerts", tag = "alerts", params(AlertQuery, PageParams),
    responses((status = 200, body = ListResponse<AlertResponse>), (status = 400, body = ErrorBody)))]
pub async fn list_alerts(
    State(control): State<Control>,
    Caller(auth): Caller,
    ApiQuery(query): ApiQuery<AlertQuery>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<ApiJson<ListResponse<AlertResponse>>, ApiError> {
    let page = control.list_alerts(&auth.actor, &query, &page).await?;
    Ok(ApiJson(ListResponse::from_page(page, Into::into)))
}

/// Get one alert.
#[utoipa::path(get, path = "/alerts/{id}", tag = "alerts",
    params(("id" = String, Path, description = "Alert id")),
    responses((status = 200, body = AlertResponse), (status = 404, body = ErrorBody)))]
pub async fn get_alert(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<ApiJson<AlertResponse>, ApiError> {
    Ok(ApiJson(
        control.alert(&auth.actor, path_id(&id)?).await?.into(),
    ))
}

/// Acknowledge an alert (`open -> acknowledged`).
#[utoipa::path(post, path = "/alerts/{id}/acknowledge", tag = "alerts",
    params(("id" = String, Path, description = "Alert id")),
    responses((status = 200, body = AlertResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn acknowledge_alert(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<ApiJson<AlertResponse>, ApiError> {
    let alert = control
        .transition_alert(&auth.actor, path_id(&id)?, AlertEvent::Acknowledge)
        .await?;
    Ok(ApiJson(alert.into()))
}

/// Resolve an alert by hand (it also resolves itself on recovery).
#[utoipa::path(post, path = "/alerts/{id}/resolve", tag = "alerts",
    params(("id" = String, Path, description = "Alert id")),
    responses((status = 200, body = AlertResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn resolve_alert(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<ApiJson<AlertResponse>, ApiError> {
    let alert = control
        .transition_alert(&auth.actor, path_id(&id)?, AlertEvent::Resolve)
        .await?;
    Ok(ApiJson(alert.into()))
}

/// A webhook (never with its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookResponse {
    /// Id.
    pub id: String,
    /// Target URL.
    pub url: String,
    /// Created (Unix ms).
    pub created_at: i64,
}

impl From<Webhook> for WebhookResponse {
    fn from(w: Webhook) -> Self {
        Self {
            id: w.id.to_string(),
            url: w.url,
            created_at: w.created_at,
        }
    }
}

/// A created webhook with its signing secret (shown once).
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    /// The webhook.
    #[serde(flatten)]
    pub webhook: WebhookResponse,
    /// HMAC-SHA256 key for `X-ServiceRadar-Signature`; not retrievable later.
    #[schema(value_type = String)]
    pub secret: Secret,
}

/// List webhooks.
#[utoipa::path(get, path = "/webhooks", tag = "alerts", params(PageParams),
    responses((status = 200, body = ListResponse<WebhookResponse>), (status = 403, body = ErrorBody)))]
pub async fn list_webhooks(
    State(control): State<Control>,
    Caller(auth): Caller,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<ApiJson<ListResponse<WebhookResponse>>, ApiError> {
    let page = control.list_webhooks(&auth.actor, &page).await?;
    Ok(ApiJson(ListResponse::from_page(page, Into::into)))
}

/// Create a webhook; the response carries its signing secret, once.
#[utoipa::path(post, path = "/webhooks", tag = "alerts", request_body = CreateWebhook,
    responses((status = 201, body = CreatedWebhook), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_webhook(
    State(control): State<Control>,
    Caller(auth): Caller,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> Result<(StatusCode, ApiJson<CreatedWebhook>), ApiError> {
    let created = control.create_webhook(&auth.actor, &body).await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedWebhook {
            webhook: created.webhook.into(),
            secret: created.secret,
        }),
    ))
}

/// Delete a webhook.
#[utoipa::path(delete, path = "/webhooks/{id}", tag = "alerts",
    params(("id" = String, Path, description = "Webhook id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_webhook(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    control.delete_webhook(&auth.actor, path_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One delivery attempt.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryResponse {
    /// Id.
    pub id: String,
    /// Alert delivered.
    pub alert_id: String,
    /// `alert.raised` or `alert.resolved`.
    pub event: String,
    /// Attempt number.
    pub attempt: i64,
    /// HTTP status of the endpoint, if it answered.
    pub status_code: Option<i64>,
    /// Why the attempt failed.
    pub error: Option<String>,
    /// When (Unix ms).
    pub created_at: i64,
}

impl From<WebhookDelivery> for DeliveryResponse {
    fn from(d: WebhookDelivery) -> Self {
        Self {
            id: d.id.to_string(),
            alert_id: d.alert_id.to_string(),
            event: d.event,
            attempt: d.attempt,
            status_code: d.status_code,
            error: d.error,
            created_at: d.created_at,
        }
    }
}

/// The delivery log of a webhook.
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", tag = "alerts",
    params(("id" = String, Path, description = "Webhook id"), PageParams),
    responses((status = 200, body = ListResponse<DeliveryResponse>), (status = 404, body = ErrorBody)))]
pub async fn list_deliveries(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<ApiJson<ListResponse<DeliveryResponse>>, ApiError> {
    let page = control
        .list_deliveries(&auth.actor, path_id(&id)?, &page)
        .await?;
    Ok(ApiJson(ListResponse::from_page(page, Into::into)))
}
