//! A site's edge agent, driven: commands (`/edge-sites/{id}/agent/commands`)
//! delivered over the agent's control stream, and the agent's configured
//! checks (`/edge-sites/{id}/agent/checks`), pushed to it on every change,
//! and the results it uploaded (`/edge-sites/{id}/agent/results`); a change
//! to the checks of many agents at once (`/agent-checks/apply`: every site
//! of the tenant, or listed sites).
//!
//! A command for an agent without an open control stream answers `409` with
//! code `agent_offline` at once; the history keeps it with status `offline`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use serviceradar_control::agent_control::{ApplyChecks, CheckInput, IssueCommand};
use serviceradar_control::telemetry::TelemetryQuery;
use serviceradar_control::{Control, PageParams};
use serviceradar_domain::agent_control::CheckConfig;
use serviceradar_http::{ApiError, ApiJson, ApiQuery, Caller, ErrorBody, ListResponse, path_id};
use serviceradar_store::{AgentCommand, StoredUpload};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn router() -> OpenApiRouter<Control> {
    OpenApiRouter::new()
        .routes(routes!(list_commands, issue_command))
        .routes(routes!(get_command))
        .routes(routes!(list_checks, add_check))
        .routes(routes!(change_check, remove_check))
        .routes(routes!(list_results))
        .routes(routes!(get_result))
        .routes(routes!(apply_checks))
}

/// A results upload of a site's agent (`PushResults`).
#[derive(Debug, Serialize, ToSchema)]
pub struct ResultUploadResponse {
    /// Id (for `GET .../agent/results/{rid}`).
    pub id: String,
    /// Site.
    pub edge_site_id: String,
    /// Agent.
    pub agent_id: String,
    /// The agent's id for the upload.
    pub upload_id: String,
    /// As the agent declared it.
    pub content_type: String,
    /// Chunks stored.
    pub chunks: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Whether the last chunk arrived.
    pub complete: bool,
    /// When the last chunk arrived (Unix ms).
    pub completed_at: Option<i64>,
    /// First chunk (Unix ms).
    pub created_at: i64,
}

impl From<StoredUpload> for ResultUploadResponse {
    fn from(u: StoredUpload) -> Self {
        Self {
            id: u.id.to_string(),
            edge_site_id: u.edge_site_id.to_string(),
            agent_id: u.agent_id.to_string(),
            upload_id: u.upload_id,
            content_type: u.content_type,
            chunks: u.chunks,
            bytes: u.bytes,
            complete: u.completed_at.is_some(),
            completed_at: u.completed_at,
            created_at: u.created_at,
        }
    }
}

/// The results the site's agent uploaded, created within `from`..`to`
/// (Unix ms), oldest first.
#[utoipa::path(get, path = "/edge-sites/{id}/agent/results", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id"), TelemetryQuery, PageParams),
    responses((status = 200, body = ListResponse<ResultUploadResponse>), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn list_results(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<TelemetryQuery>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<ApiJson<ListResponse<ResultUploadResponse>>, ApiError> {
    let page = control
        .list_agent_results(&auth.actor, path_id(&id)?, &query, &page)
        .await?;
    Ok(ApiJson(ListResponse::from_page(page, Into::into)))
}

/// One upload's content, as bytes (`application/octet-stream`, as an
/// attachment: the agent's declared type is in `X-Upload-Content-Type`).
#[utoipa::path(get, path = "/edge-sites/{id}/agent/results/{rid}", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id"), ("rid" = String, Path, description = "Upload id")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, body = ErrorBody)))]
pub async fn get_result(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path((id, rid)): Path<(String, String)>,
) -> Result<axum::response::Response, ApiError> {
    use axum::http::header;
    use axum::response::IntoResponse;
    let (upload, bytes) = control
        .agent_result(&auth.actor, path_id(&id)?, &rid)
        .await?;
    let declared = header::HeaderValue::from_str(&upload.content_type)
        .unwrap_or(header::HeaderValue::from_static("application/octet-stream"));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/octet-stream"),
            ),
            (
                header::CONTENT_DISPOSITION,
                header::HeaderValue::from_static("attachment"),
            ),
            (
                header::HeaderName::from_static("x-upload-content-type"),
                declared,
            ),
        ],
        bytes,
    )
        .into_response())
}

/// A command to a site's agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandResponse {
    /// Id.
    pub id: String,
    /// Site.
    pub edge_site_id: String,
    /// Agent.
    pub agent_id: String,
    /// `run_checks`, `reload_config`, `renew_certificates` or `collect_diagnostics`.
    pub kind: String,
    /// `pending`, `sent`, `acked`, `succeeded`, `failed`, `expired` or `offline`.
    pub status: String,
    /// User id of who issued it.
    pub issued_by: String,
    /// Time to live (s).
    pub ttl_secs: i64,
    /// When it expires unless finished (Unix ms).
    pub expires_at: i64,
    /// The agent's last note (progress, or why it failed).
    pub message: Option<String>,
    /// The agent's result document.
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// Issued (Unix ms).
    pub created_at: i64,
    /// Last change (Unix ms).
    pub updated_at: i64,
}

impl From<AgentCommand> for CommandResponse {
    fn from(c: AgentCommand) -> Self {
        Self {
            id: c.id.to_string(),
            edge_site_id: c.edge_site_id.to_string(),
            agent_id: c.agent_id.to_string(),
            kind: c.kind.as_str().to_owned(),
            status: c.status.as_str().to_owned(),
            issued_by: c.issued_by,
            ttl_secs: c.ttl_secs,
            expires_at: c.expires_at,
            message: c.message,
            result: c.result.and_then(|r| serde_json::from_str(&r).ok()),
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// Issue a command to the site's agent (operators). `202` once a replica
/// holding the agent's control stream sent it; `409 agent_offline` at once
/// when no replica holds one.
#[utoipa::path(post, path = "/edge-sites/{id}/agent/commands", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id")), request_body = IssueCommand,
    responses((status = 202, body = CommandResponse), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn issue_command(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<IssueCommand>,
) -> Result<(StatusCode, ApiJson<CommandResponse>), ApiError> {
    let command = control
        .issue_agent_command(&auth.actor, path_id(&id)?, &body)
        .await?;
    Ok((StatusCode::ACCEPTED, ApiJson(command.into())))
}

/// The site's command history, oldest first.
#[utoipa::path(get, path = "/edge-sites/{id}/agent/commands", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id"), PageParams),
    responses((status = 200, body = ListResponse<CommandResponse>), (status = 404, body = ErrorBody)))]
pub async fn list_commands(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<ApiJson<ListResponse<CommandResponse>>, ApiError> {
    let page = control
        .list_agent_commands(&auth.actor, path_id(&id)?, &page)
        .await?;
    Ok(ApiJson(ListResponse::from_page(page, Into::into)))
}

/// One command, with its status and result.
#[utoipa::path(get, path = "/edge-sites/{id}/agent/commands/{cid}", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id"), ("cid" = String, Path, description = "Command id")),
    responses((status = 200, body = CommandResponse), (status = 404, body = ErrorBody)))]
pub async fn get_command(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path((id, cid)): Path<(String, String)>,
) -> Result<ApiJson<CommandResponse>, ApiError> {
    let command = control
        .agent_command(&auth.actor, path_id(&id)?, &cid)
        .await?;
    Ok(ApiJson(command.into()))
}

/// A configured check.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckResponse {
    /// Name (unique per agent).
    pub name: String,
    /// `nats_leaf`, `tcp`, `http`, `dns` or `icmp`.
    pub kind: String,
    /// What it checks.
    pub target: String,
    /// Seconds between runs.
    pub interval_secs: u32,
    /// Milliseconds one run may take.
    pub timeout_ms: u32,
}

impl From<CheckConfig> for CheckResponse {
    fn from(c: CheckConfig) -> Self {
        Self {
            name: c.name,
            kind: c.kind.as_str().to_owned(),
            target: c.target,
            interval_secs: c.interval_secs,
            timeout_ms: c.timeout_ms,
        }
    }
}

/// The checks configured for the site's agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChecksResponse {
    /// Configured checks, by name (the platform's own `nats-leaf` check
    /// is added to these).
    pub items: Vec<CheckResponse>,
    /// The config version the agent acknowledged running.
    pub config_version: Option<String>,
    /// When it acknowledged it (Unix ms).
    pub config_acked_at: Option<i64>,
}

/// The checks configured for the site's agent.
#[utoipa::path(get, path = "/edge-sites/{id}/agent/checks", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id")),
    responses((status = 200, body = ChecksResponse), (status = 404, body = ErrorBody)))]
pub async fn list_checks(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<ApiJson<ChecksResponse>, ApiError> {
    let checks = control.agent_checks(&auth.actor, path_id(&id)?).await?;
    let (config_version, config_acked_at) = checks.acked.unzip();
    Ok(ApiJson(ChecksResponse {
        items: checks.checks.into_iter().map(Into::into).collect(),
        config_version,
        config_acked_at,
    }))
}

/// Add a check to the site's agent (operators); pushed to the agent at once.
#[utoipa::path(post, path = "/edge-sites/{id}/agent/checks", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id")), request_body = CheckInput,
    responses((status = 201, body = CheckResponse), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn add_check(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CheckInput>,
) -> Result<(StatusCode, ApiJson<CheckResponse>), ApiError> {
    let check = control
        .add_agent_check(&auth.actor, path_id(&id)?, &body)
        .await?;
    Ok((StatusCode::CREATED, ApiJson(check.into())))
}

/// Change a check of the site's agent (operators); pushed to the agent at once.
#[utoipa::path(put, path = "/edge-sites/{id}/agent/checks/{name}", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id"), ("name" = String, Path, description = "Check name")),
    request_body = CheckInput,
    responses((status = 200, body = CheckResponse), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn change_check(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path((id, name)): Path<(String, String)>,
    ApiJson(body): ApiJson<CheckInput>,
) -> Result<ApiJson<CheckResponse>, ApiError> {
    let check = control
        .change_agent_check(&auth.actor, path_id(&id)?, &name, &body)
        .await?;
    Ok(ApiJson(check.into()))
}

/// Remove a check of the site's agent (operators); pushed to the agent at once.
#[utoipa::path(delete, path = "/edge-sites/{id}/agent/checks/{name}", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id"), ("name" = String, Path, description = "Check name")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn remove_check(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path((id, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    control
        .remove_agent_check(&auth.actor, path_id(&id)?, &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a change to many agents' checks did.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppliedChecksResponse {
    /// Agents changed (each pushed its new config at once).
    pub agents: usize,
    /// Checks set on each (added, or replacing the one of the same name).
    pub set: Vec<CheckResponse>,
    /// Names removed from each that had them.
    pub removed: Vec<String>,
}

/// Change the checks of many agents at once (operators): every site of the
/// tenant with an unrevoked agent, or the listed `site_ids`. One
/// transaction (all or nothing); every changed agent is pushed its config
/// over its control stream at once and acknowledges its new version
/// (`GET /edge-sites/{id}/agent/checks`).
#[utoipa::path(post, path = "/agent-checks/apply", tag = "edge-sites",
    request_body = ApplyChecks,
    responses((status = 200, body = AppliedChecksResponse), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn apply_checks(
    State(control): State<Control>,
    Caller(auth): Caller,
    ApiJson(body): ApiJson<ApplyChecks>,
) -> Result<ApiJson<AppliedChecksResponse>, ApiError> {
    let applied = control.apply_agent_checks(&auth.actor, &body).await?;
    Ok(ApiJson(AppliedChecksResponse {
        agents: applied.agents,
        set: applied.set.into_iter().map(Into::into).collect(),
        removed: applied.removed,
    }))
}
