//! Gateway-initiated mode of a site's agent (seed 004):
//! `/api/v1/edge-sites/{id}/agent/endpoint`: how the platform reaches the
//! agent and how its polling goes; deleting it puts the agent back to
//! dial-out. The endpoint is registered at enrollment only (a token created
//! with `agent_endpoint`), never set here. Thin handlers over
//! `control::agent_poll`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use serviceradar_control::Control;
use serviceradar_http::{ApiError, ApiJson, Caller, ErrorBody, path_id};
use serviceradar_store::agent_polls::AgentPoll;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub(super) fn router() -> OpenApiRouter<Control> {
    OpenApiRouter::new().routes(routes!(get_endpoint, remove_endpoint))
}

/// How the platform reaches the site's agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointResponse {
    /// `dial_out` (the agent calls the gateway; the default) or
    /// `gateway_initiated` (the gateway polls the agent at `endpoint`).
    pub mode: String,
    /// Where the agent listens (gateway-initiated mode).
    pub endpoint: Option<String>,
    /// Seconds between polls.
    pub poll_interval_secs: Option<i64>,
    /// `unknown` (not polled yet), `reachable` or `unreachable`.
    pub reachability: Option<String>,
    /// Consecutive failed polls.
    pub failures: Option<i64>,
    /// Why the last poll failed.
    pub last_error: Option<String>,
    /// Last successful poll (Unix ms).
    pub last_polled_at: Option<i64>,
    /// Next poll (Unix ms).
    pub next_poll_at: Option<i64>,
}

impl From<Option<AgentPoll>> for EndpointResponse {
    fn from(poll: Option<AgentPoll>) -> Self {
        match poll {
            None => Self {
                mode: "dial_out".into(),
                endpoint: None,
                poll_interval_secs: None,
                reachability: None,
                failures: None,
                last_error: None,
                last_polled_at: None,
                next_poll_at: None,
            },
            Some(p) => Self {
                mode: "gateway_initiated".into(),
                endpoint: Some(p.endpoint),
                poll_interval_secs: Some(p.interval_secs),
                reachability: Some(p.reachability.as_str().into()),
                failures: Some(p.failures),
                last_error: p.last_error,
                last_polled_at: p.last_success_at,
                next_poll_at: Some(p.next_poll_at),
            },
        }
    }
}

/// How the platform reaches the site's agent (dial-out, or polled by the
/// gateway with its reachability).
#[utoipa::path(get, path = "/edge-sites/{id}/agent/endpoint", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id")),
    responses((status = 200, body = EndpointResponse), (status = 404, body = ErrorBody)))]
pub async fn get_endpoint(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<ApiJson<EndpointResponse>, ApiError> {
    let poll = control.agent_endpoint(&auth.actor, path_id(&id)?).await?;
    Ok(ApiJson(poll.into()))
}

/// Put the site's agent back to dial-out (operators): the gateway stops
/// polling it.
#[utoipa::path(delete, path = "/edge-sites/{id}/agent/endpoint", tag = "edge-sites",
    params(("id" = String, Path, description = "Site id")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn remove_endpoint(
    State(control): State<Control>,
    Caller(auth): Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    control
        .remove_agent_endpoint(&auth.actor, path_id(&id)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
