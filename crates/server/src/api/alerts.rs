//! Alerts (`/api/v1/alerts`) and alert webhooks (`/api/v1/webhooks`).
//!
//! Alerts are raised by the health sweeper (site offline / leaf disconnected
//! longer than the rule allows) and resolved automatically on recovery; people
//! list and acknowledge them here (`pending -> acknowledged -> resolved`).
//! Webhooks receive `alert.raised` / `alert.resolved` as signed JSON
//! (see [`crate::alerts`]); the secret is shown once, at creation.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serviceradar_domain::Action;
use serviceradar_domain::state::{AlertEvent, AlertStatus};
use serviceradar_domain::validate::{FieldError, FieldErrors};
use serviceradar_store::health::{Alert, Webhook, WebhookDelivery};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::common::{ApiJson, ApiQuery, PageParams, parse_filter, path_id};
use super::error::{ApiError, ErrorBody};
use crate::app::AppState;
use crate::auth::Authenticated;

pub(super) fn router() -> OpenApiRouter<AppState> {
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
        }
    }
}

/// The site's edge agent (404 until provisioning issued its certificate).
#[utoipa::path(get, path = "/edge-sites/{id}/agent", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id")),
    responses((status = 200, body = AgentResponse), (status = 404, body = ErrorBody)))]
pub async fn get_site_agent(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<ApiJson<AgentResponse>, ApiError> {
    auth.actor.authorize(Action::ReadSites)?;
    let id: serviceradar_domain::EdgeSiteId = path_id(&id)?;
    let agent = state
        .store
        .scoped(auth.actor.scope())
        .agent_for_site(id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(ApiJson(agent.into()))
}

/// Revoke the site's edge agent: the gateway refuses its certificate (within
/// a minute, the gateway's identity cache lifetime). Admins only.
#[utoipa::path(post, path = "/edge-sites/{id}/agent/revoke", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id")),
    responses((status = 200, body = AgentResponse), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_site_agent(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<ApiJson<AgentResponse>, ApiError> {
    auth.actor.authorize(Action::DeleteSites)?;
    let id: serviceradar_domain::EdgeSiteId = path_id(&id)?;
    let agent = state
        .store
        .scoped(auth.actor.scope())
        .revoke_agent(id)
        .await?;
    tracing::warn!(site_id = %id, agent_id = %agent.id, "edge agent revoked");
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
    /// `pending`, `acknowledged` or `resolved`.
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

/// A page of alerts.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertList {
    /// Alerts, oldest first.
    pub items: Vec<AlertResponse>,
    /// Cursor for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Filters for listing alerts.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    /// Only alerts in this status.
    pub status: Option<String>,
    /// Rows per page, 1–200 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// List alerts.
#[utoipa::path(get, path = "/alerts", tag = "alerts", params(AlertQuery),
    responses((status = 200, body = AlertList), (status = 400, body = ErrorBody)))]
pub async fn list_alerts(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiQuery(query): ApiQuery<AlertQuery>,
) -> Result<ApiJson<AlertList>, ApiError> {
    auth.actor.authorize(Action::ReadData)?;
    let mut errors = FieldErrors::default();
    let page = PageParams {
        limit: query.limit,
        cursor: query.cursor.clone(),
    }
    .parse(&mut errors);
    let status: Option<AlertStatus> = parse_filter("status", query.status.as_deref(), &mut errors);
    errors.into_result()?;
    let page = state
        .store
        .scoped(auth.actor.scope())
        .list_alerts(status, &page)
        .await?;
    Ok(ApiJson(AlertList {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Get one alert.
#[utoipa::path(get, path = "/alerts/{id}", tag = "alerts",
    params(("id" = String, Path, description = "Alert id")),
    responses((status = 200, body = AlertResponse), (status = 404, body = ErrorBody)))]
pub async fn get_alert(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<ApiJson<AlertResponse>, ApiError> {
    auth.actor.authorize(Action::ReadData)?;
    let id: uuid::Uuid = path_id(&id)?;
    let alert = state.store.scoped(auth.actor.scope()).alert(id).await?;
    Ok(ApiJson(alert.into()))
}

async fn transition(
    state: &AppState,
    auth: &Authenticated,
    id: &str,
    event: AlertEvent,
) -> Result<ApiJson<AlertResponse>, ApiError> {
    auth.actor.authorize(Action::WriteAlerts)?;
    let id: uuid::Uuid = path_id(id)?;
    let user = auth.actor.user_id.to_string();
    let alert = state
        .store
        .scoped(auth.actor.scope())
        .transition_alert(id, event, Some(&user))
        .await?;
    tracing::info!(alert_id = %id, status = %alert.status, "alert changed by a user");
    if event == AlertEvent::Resolve {
        crate::alerts::notify(&state.store, &alert, crate::alerts::EVENT_RESOLVED).await;
    }
    Ok(ApiJson(alert.into()))
}

/// Acknowledge an alert (`pending -> acknowledged`).
#[utoipa::path(post, path = "/alerts/{id}/acknowledge", tag = "alerts",
    params(("id" = String, Path, description = "Alert id")),
    responses((status = 200, body = AlertResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn acknowledge_alert(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<ApiJson<AlertResponse>, ApiError> {
    transition(&state, &auth, &id, AlertEvent::Acknowledge).await
}

/// Resolve an alert by hand (it also resolves itself on recovery).
#[utoipa::path(post, path = "/alerts/{id}/resolve", tag = "alerts",
    params(("id" = String, Path, description = "Alert id")),
    responses((status = 200, body = AlertResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn resolve_alert(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<ApiJson<AlertResponse>, ApiError> {
    transition(&state, &auth, &id, AlertEvent::Resolve).await
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
    pub secret: String,
}

/// A page of webhooks.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    /// Webhooks.
    pub items: Vec<WebhookResponse>,
    /// Cursor for the next page.
    pub next_cursor: Option<String>,
}

/// Body of `POST /api/v1/webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// `http://` or `https://` URL receiving alert notifications.
    pub url: String,
}

fn parse_webhook_url(raw: &str) -> Result<String, FieldError> {
    let err = |m: &str| FieldError::new("url", m);
    if raw.len() > 2048 {
        return Err(err("must be at most 2048 characters"));
    }
    let url = reqwest::Url::parse(raw).map_err(|_| err("must be an absolute URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(err("must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(err("must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err("must not carry credentials"));
    }
    if url.fragment().is_some() {
        return Err(err("must not have a fragment"));
    }
    Ok(url.to_string())
}

/// List webhooks.
#[utoipa::path(get, path = "/webhooks", tag = "alerts", params(PageParams),
    responses((status = 200, body = WebhookList), (status = 403, body = ErrorBody)))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<ApiJson<WebhookList>, ApiError> {
    auth.actor.authorize(Action::ManageWebhooks)?;
    let mut errors = FieldErrors::default();
    let page = params.parse(&mut errors);
    errors.into_result()?;
    let page = state
        .store
        .scoped(auth.actor.scope())
        .list_webhooks(&page)
        .await?;
    Ok(ApiJson(WebhookList {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Create a webhook; the response carries its signing secret, once.
#[utoipa::path(post, path = "/webhooks", tag = "alerts", request_body = CreateWebhook,
    responses((status = 201, body = CreatedWebhook), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn create_webhook(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> Result<(StatusCode, ApiJson<CreatedWebhook>), ApiError> {
    auth.actor.authorize(Action::ManageWebhooks)?;
    let mut errors = FieldErrors::default();
    let url = errors.check("url", parse_webhook_url(&body.url));
    errors.clone().into_result()?;
    let Some(url) = url else {
        return Err(ApiError::validation(errors));
    };
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("whsec_{}", hex::encode(bytes));
    let id = uuid::Uuid::now_v7();
    let tenant = auth.actor.tenant_id;
    let sealed = state
        .pki
        .seal(&secret, &crate::alerts::secret_aad(tenant, id));
    let webhook = state
        .store
        .scoped(auth.actor.scope())
        .create_webhook(id, &url, &sealed)
        .await?;
    tracing::info!(webhook_id = %id, "webhook created");
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedWebhook {
            webhook: webhook.into(),
            secret,
        }),
    ))
}

/// Delete a webhook.
#[utoipa::path(delete, path = "/webhooks/{id}", tag = "alerts",
    params(("id" = String, Path, description = "Webhook id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    auth.actor.authorize(Action::ManageWebhooks)?;
    let id: uuid::Uuid = path_id(&id)?;
    state
        .store
        .scoped(auth.actor.scope())
        .delete_webhook(id)
        .await?;
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

/// A page of deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    /// Deliveries, oldest first.
    pub items: Vec<DeliveryResponse>,
    /// Cursor for the next page.
    pub next_cursor: Option<String>,
}

/// The delivery log of a webhook.
#[utoipa::path(get, path = "/webhooks/{id}/deliveries", tag = "alerts",
    params(("id" = String, Path, description = "Webhook id"), PageParams),
    responses((status = 200, body = DeliveryList), (status = 404, body = ErrorBody)))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<ApiJson<DeliveryList>, ApiError> {
    auth.actor.authorize(Action::ManageWebhooks)?;
    let id: uuid::Uuid = path_id(&id)?;
    let mut errors = FieldErrors::default();
    let page = params.parse(&mut errors);
    errors.into_result()?;
    let scoped = state.store.scoped(auth.actor.scope());
    scoped.webhook(id).await?;
    let page = scoped.list_deliveries(id, &page).await?;
    Ok(ApiJson(DeliveryList {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_are_validated() {
        assert!(parse_webhook_url("https://hooks.example.com/x?y=1").is_ok());
        assert!(parse_webhook_url("http://127.0.0.1:9000/hook").is_ok());
        for bad in [
            "",
            "hooks.example.com",
            "ftp://example.com/",
            "file:///etc/passwd",
            "https://user:pw@example.com/",
            "https://example.com/#frag",
            "javascript:alert(1)",
        ] {
            assert!(parse_webhook_url(bad).is_err(), "{bad}");
        }
    }
}
