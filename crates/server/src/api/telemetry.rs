//! Ingested telemetry (`/api/v1/events`, `/api/v1/metrics`, `/api/v1/logs`):
//! tenant-scoped lists in event-time order with a time range and pagination.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serviceradar_domain::Action;
use serviceradar_domain::telemetry::TelemetryKind;
use serviceradar_domain::validate::{FieldError, FieldErrors};
use serviceradar_store::{StoredRecord, TimeRange};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::common::{ApiJson, ApiQuery, PageParams};
use super::error::{ApiError, ErrorBody};
use crate::app::AppState;
use crate::auth::Authenticated;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(list_metrics))
        .routes(routes!(list_logs))
}

/// Time range and page of a telemetry list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TelemetryQuery {
    /// Only records at or after this time (Unix ms).
    pub from: Option<i64>,
    /// Only records before this time (Unix ms).
    pub to: Option<i64>,
    /// Rows per page, 1–200 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
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

/// A page of records.
#[derive(Debug, Serialize, ToSchema)]
pub struct TelemetryList {
    /// Records in event-time order.
    pub items: Vec<TelemetryResponse>,
    /// Cursor for the next page; absent on the last page.
    pub next_cursor: Option<String>,
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
    state: AppState,
    auth: Authenticated,
    query: TelemetryQuery,
    kind: TelemetryKind,
) -> Result<ApiJson<TelemetryList>, ApiError> {
    auth.actor.authorize(Action::ReadData)?;
    let mut errors = FieldErrors::default();
    let page = PageParams {
        limit: query.limit,
        cursor: query.cursor.clone(),
    }
    .parse(&mut errors);
    for (field, value) in [("from", query.from), ("to", query.to)] {
        if value.is_some_and(|v| v < 0) {
            errors
                .0
                .push(FieldError::new(field, "must be Unix milliseconds (>= 0)"));
        }
    }
    if let (Some(from), Some(to)) = (query.from, query.to)
        && from >= to
    {
        errors
            .0
            .push(FieldError::new("to", "must be later than from"));
    }
    errors.into_result()?;
    let range = TimeRange {
        from: query.from,
        to: query.to,
    };
    let page = state
        .store
        .scoped(auth.actor.scope())
        .list_telemetry(kind, range, &page)
        .await?;
    Ok(ApiJson(TelemetryList {
        items: page.items.into_iter().map(|r| response(kind, r)).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// List ingested events.
#[utoipa::path(get, path = "/events", tag = "telemetry", params(TelemetryQuery),
    responses((status = 200, body = TelemetryList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_events(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiQuery(query): ApiQuery<TelemetryQuery>,
) -> Result<ApiJson<TelemetryList>, ApiError> {
    list(state, auth, query, TelemetryKind::Event).await
}

/// List ingested metric samples.
#[utoipa::path(get, path = "/metrics", tag = "telemetry", params(TelemetryQuery),
    responses((status = 200, body = TelemetryList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_metrics(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiQuery(query): ApiQuery<TelemetryQuery>,
) -> Result<ApiJson<TelemetryList>, ApiError> {
    list(state, auth, query, TelemetryKind::Metric).await
}

/// List ingested log lines.
#[utoipa::path(get, path = "/logs", tag = "telemetry", params(TelemetryQuery),
    responses((status = 200, body = TelemetryList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list_logs(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiQuery(query): ApiQuery<TelemetryQuery>,
) -> Result<ApiJson<TelemetryList>, ApiError> {
    list(state, auth, query, TelemetryKind::Log).await
}
