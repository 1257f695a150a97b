//! Ingested telemetry (`/api/v1/events`, `/api/v1/metrics`, `/api/v1/logs`).

use axum::extract::State;
use serde::Serialize;
use serviceradar_control::telemetry::TelemetryQuery;
use serviceradar_control::{Control, PageParams};
use serviceradar_domain::telemetry::TelemetryKind;
use serviceradar_http::{ApiError, ApiJson, ApiQuery, Caller, ErrorBody, ListResponse};
use serviceradar_store::StoredRecord;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn router() -> OpenApiRouter<Control> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(list_metrics))
        .routes(routes!(list_logs))
}

/// One ingested record.
#[derive(Debug, Serialize, ToSchema)]
pub struct TelemetryResponse {
    /// Id.
    pub id: String,
    /// Event time (Unix ms): the payload's `ts`, else when the hub stored it.
    pub time: i64,
    /// When the control plane wrote it (Unix ms).
    pub received_at: i64,
    /// NATS subject it arrived on.
    pub subject: String,
    /// Subject tokens after the tenant (site, collector, ...).
    pub source: String,
    /// Position in the tenant's ingest stream.
    pub stream_seq: i64,
    /// Events: severity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// Logs: level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// Events and logs: text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Metrics: name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Metrics: value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The payload as published (a JSON object).
    #[schema(value_type = Object)]
    pub body: serde_json::Value,
}

fn response(kind: TelemetryKind, r: StoredRecord) -> TelemetryResponse {
    let body = serde_json::from_str(&r.body).unwrap_or(serde_json::Value::String(r.body));
    let (mut severity, mut level, mut message, mut name, mut value) =
        (None, None, None, None, None);
    match kind {
        TelemetryKind::Event => {
            severity = Some(r.label);
            message = Some(r.message);
        }
        TelemetryKind::Log => {
            level = Some(r.label);
            message = Some(r.message);
        }
        TelemetryKind::Metric => {
            name = Some(r.label);
            value = Some(r.value);
        }
    }
    TelemetryResponse {
        id: r.id,
        time: r.time_ms,
        received_at: r.received_at,
        subject: r.subject,
        source: r.source,
        stream_seq: r.stream_seq,
        severity,
        level,
        message,
        name,
        value,
        body,
    }
}

async fn list(
    control: Control,
    Caller(auth): Caller,
    query: TelemetryQuery,
    page: PageParams,
    kind: TelemetryKind,
) -> Result<ApiJson<ListResponse<TelemetryResponse>>, ApiError> {
    let page = control
        .list_telemetry(&auth.actor, kind, &query, &page)
        .await?;
    Ok(ApiJson(ListResponse::from_page(page, |r| {
        response(kind, r)
    })))
}

/// Ingested events, by event time.
#[utoipa::path(get, path = "/events", tag = "telemetry", params(TelemetryQuery, PageParams),
    responses((status = 200, body = ListResponse<TelemetryResponse>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_events(
    State(control): State<Control>,
    caller: Caller,
    ApiQuery(query): ApiQuery<TelemetryQuery>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<ApiJson<ListResponse<TelemetryResponse>>, ApiError> {
    list(control, caller, query, page, TelemetryKind::Event).await
}

/// Ingested metrics, by event time.
#[utoipa::path(get, path = "/metrics", tag = "telemetry", params(TelemetryQuery, PageParams),
    responses((status = 200, body = ListResponse<TelemetryResponse>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_metrics(
    State(control): State<Control>,
    caller: Caller,
    ApiQuery(query): ApiQuery<TelemetryQuery>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<ApiJson<ListResponse<TelemetryResponse>>, ApiError> {
    list(control, caller, query, page, TelemetryKind::Metric).await
}

/// Ingested logs, by event time.
#[utoipa::path(get, path = "/logs", tag = "telemetry", params(TelemetryQuery, PageParams),
    responses((status = 200, body = ListResponse<TelemetryResponse>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_logs(
    State(control): State<Control>,
    caller: Caller,
    ApiQuery(query): ApiQuery<TelemetryQuery>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<ApiJson<ListResponse<TelemetryResponse>>, ApiError> {
    list(control, caller, query, page, TelemetryKind::Log).await
}
