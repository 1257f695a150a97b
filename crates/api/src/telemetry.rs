//! Ingested telemetry (`/api/v1/events`, `/api/v1/metrics`, `/api/v1/logs`),
//! the tenant's ingestion pipeline (`/api/v1/ingest`) and the messages it
//! refused (`/api/v1/dead-letters`).

use axum::extract::State;
use serde::Serialize;
use serviceradar_control::telemetry::{DeadLetterQuery, TelemetryQuery};
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
        .routes(routes!(ingest_status))
        .routes(routes!(list_dead_letters))
}

/// A message the ingestion pipeline refused, kept with why.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterResponse {
    /// Its sequence in the tenant's dead-letter stream.
    pub seq: u64,
    /// When it was refused (Unix ms).
    pub dead_lettered_at: i64,
    /// Why: what the decoder or the database said about it.
    pub reason: String,
    /// The subject it was published on.
    pub subject: String,
    /// Its sequence in the tenant's ingest stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest_seq: Option<u64>,
    /// Its size as published, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_bytes: Option<u64>,
    /// The payload as text (only its first KiB when it was over the size
    /// limit; invalid UTF-8 replaced).
    pub payload: String,
}

/// The tenant's dead letters, newest first: messages that did not decode or
/// that the database refused, with the reason. Kept for 14 days by default
/// (`--dead-letter-retention-days`). `503` while this server runs no
/// ingestion pipeline for the tenant.
#[utoipa::path(get, path = "/dead-letters", tag = "telemetry", params(DeadLetterQuery),
    responses((status = 200, body = ListResponse<DeadLetterResponse>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list_dead_letters(
    State(control): State<Control>,
    Caller(auth): Caller,
    ApiQuery(query): ApiQuery<DeadLetterQuery>,
) -> Result<ApiJson<ListResponse<DeadLetterResponse>>, ApiError> {
    let (items, next_cursor) = control.list_dead_letters(&auth.actor, &query).await?;
    Ok(ApiJson(ListResponse {
        items: items
            .into_iter()
            .map(|d| DeadLetterResponse {
                seq: d.seq,
                dead_lettered_at: d.dead_lettered_at_ms,
                reason: d.reason,
                subject: d.subject,
                ingest_seq: d.ingest_seq,
                payload_bytes: d.payload_bytes,
                payload: d.payload,
            })
            .collect(),
        next_cursor,
    }))
}

/// The tenant's ingestion pipeline: is its data arriving?
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestStatusResponse {
    /// `starting`, `running`, `failing`, or `not_running` (ingestion is
    /// disabled on this server, or has not started for the tenant yet).
    pub state: String,
    /// When it entered `state` (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// Failed attempts in a row (0 when running).
    pub consecutive_failures: u32,
    /// What failed last, and when, even if it recovered since.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<IngestErrorResponse>,
    /// Messages waiting in the tenant's stream behind the last batch fetched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
    /// When a batch was last written (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_batch_at: Option<i64>,
    /// Rows written since the server started.
    pub written: u64,
    /// Messages dead-lettered since the server started.
    pub dead_lettered: u64,
}

/// A pipeline failure.
#[derive(Debug, Serialize, ToSchema)]
pub struct IngestErrorResponse {
    /// When (Unix ms).
    pub at: i64,
    /// What failed.
    pub message: String,
}

/// The tenant's ingestion pipeline: state, since when, lag, last error.
#[utoipa::path(get, path = "/ingest", tag = "telemetry",
    responses((status = 200, body = IngestStatusResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn ingest_status(
    State(control): State<Control>,
    Caller(auth): Caller,
) -> Result<ApiJson<IngestStatusResponse>, ApiError> {
    let response = match control.ingest_status(&auth.actor)? {
        None => IngestStatusResponse {
            state: "not_running".into(),
            since: None,
            consecutive_failures: 0,
            last_error: None,
            lag: None,
            last_batch_at: None,
            written: 0,
            dead_lettered: 0,
        },
        Some(status) => IngestStatusResponse {
            state: status.state.as_str().into(),
            since: Some(status.since_ms),
            consecutive_failures: status.consecutive_failures,
            last_error: status
                .last_error
                .map(|(at, message)| IngestErrorResponse { at, message }),
            lag: status.lag,
            last_batch_at: status.last_batch_ms,
            written: status.written,
            dead_lettered: status.dead_lettered,
        },
    };
    Ok(ApiJson(response))
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
    /// The device that published it (from the subject its site's leaf let
    /// it publish on), if a device did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
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
        device_id: r.device_id,
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
