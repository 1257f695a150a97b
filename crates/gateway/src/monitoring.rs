//! ServiceRadar agent compatibility: `monitoring.AgentGatewayService`, the
//! interface ServiceRadar's own (Go) agents speak, served on the gateway's
//! mTLS port beside our `AgentGateway`.
//!
//! It exists so that an existing ServiceRadar agent holding a certificate
//! from a tenant CA of this platform can connect, report and be managed.
//! Every call is translated onto [`GatewayService`]: the caller comes from
//! its certificate the same way, claims are checked (and refusals audited)
//! by the same function, `Hello` registers, `PushStatus`/`StreamStatus`
//! record through the same path as our `PushStatus`, `ControlStream` is the
//! same session with another `Dialect`. Only the message shapes differ:
//!
//! * `agent_id` is required (`INVALID_ARGUMENT` when empty, as ServiceRadar
//!   answers) and must be the certificate's agent id (`PERMISSION_DENIED`,
//!   audited, otherwise);
//! * `GetConfig` answers `not_modified` with the version and the config's
//!   timestamp (when the agent's checks last changed, Unix seconds) when
//!   the agent's `config_version` is current;
//! * a service status is a check result: `available` is `ok`/`fail`,
//!   `response_time` is in nanoseconds, `message` bytes are text;
//! * commands carry `command_type` (our command kinds), `ttl_seconds` and
//!   `created_at` (Unix seconds); `CommandAck`/`CommandProgress`/
//!   `CommandResult` and `ConfigAck` answer them.

use std::sync::Arc;

use serviceradar_proto::monitoring::agent_gateway_service_server::AgentGatewayService;
use serviceradar_proto::monitoring::control_stream_request::Payload as In;
use serviceradar_proto::monitoring::control_stream_response::Payload as Out;
use serviceradar_proto::monitoring::{
    AgentCheckConfig, AgentConfigRequest, AgentConfigResponse, AgentHelloRequest,
    AgentHelloResponse, CommandRequest, ControlStreamRequest, ControlStreamResponse,
    GatewayServiceStatus, GatewayStatusChunk, GatewayStatusRequest, GatewayStatusResponse,
};
use serviceradar_proto::v1::{AgentConfig, CheckResult, CheckSpec, CommandUpdate, IdentityClaim};
use serviceradar_store::AgentCommand;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::control::{Dialect, Inbound, OutStream};
use crate::identity::AgentIdentity;
use crate::service::{GatewayService, MAX_RESULTS_PER_PUSH, span};

/// The ServiceRadar-protocol face of a [`GatewayService`].
pub struct Monitoring {
    inner: Arc<GatewayService>,
}

impl Monitoring {
    /// Serves ServiceRadar's protocol over `inner`.
    pub fn new(inner: Arc<GatewayService>) -> Self {
        Self { inner }
    }

    /// The claim in `agent_id`: required, then checked like every claim.
    async fn claim(&self, rpc: &str, id: &AgentIdentity, agent_id: &str) -> Result<(), Status> {
        if agent_id.is_empty() {
            return Err(Status::invalid_argument("agent_id is required"));
        }
        let claim = IdentityClaim {
            agent_id: agent_id.to_owned(),
            ..IdentityClaim::default()
        };
        self.inner.check_claim(rpc, id, Some(&claim)).await
    }

    /// Checks the claims of a batch of statuses and records them.
    async fn record(
        &self,
        rpc: &str,
        id: &AgentIdentity,
        services: &[GatewayServiceStatus],
        timestamp: i64,
    ) -> Result<(), Status> {
        for s in services {
            if !s.agent_id.is_empty() {
                self.claim(rpc, id, &s.agent_id).await?;
            }
        }
        let results: Vec<CheckResult> = services
            .iter()
            .map(|s| check_result(s, timestamp))
            .collect();
        self.inner.record_status(id, &results, 0).await?;
        Ok(())
    }
}

/// A ServiceRadar service status as one of our check results.
fn check_result(s: &GatewayServiceStatus, timestamp_secs: i64) -> CheckResult {
    let observed_at_ms = if timestamp_secs > 0 {
        timestamp_secs.saturating_mul(1000)
    } else {
        serviceradar_store::now_ms()
    };
    CheckResult {
        name: s.service_name.clone(),
        kind: s.service_type.clone(),
        target: String::new(),
        status: if s.available { "ok" } else { "fail" }.into(),
        message: String::from_utf8_lossy(&s.message).into_owned(),
        observed_at_ms,
        response_time_us: u64::try_from(s.response_time / 1000).unwrap_or(0),
        leaf: None,
    }
}

/// One of our checks in ServiceRadar's shape.
fn check_config(c: &CheckSpec) -> AgentCheckConfig {
    let port = match c.kind.as_str() {
        "tcp" => c
            .target
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(0),
        _ => 0,
    };
    AgentCheckConfig {
        check_id: c.name.clone(),
        check_type: c.kind.clone(),
        name: c.name.clone(),
        enabled: true,
        interval_sec: i32::try_from(c.interval_secs).unwrap_or(i32::MAX),
        timeout_sec: i32::try_from(c.timeout_ms.div_ceil(1000).max(1)).unwrap_or(i32::MAX),
        target: c.target.clone(),
        port,
        path: String::new(),
        method: if c.kind == "http" {
            "GET".into()
        } else {
            String::new()
        },
        settings: [("timeout_ms".to_owned(), c.timeout_ms.to_string())].into(),
    }
}

/// The whole config in ServiceRadar's shape.
fn config_response(config: AgentConfig, changed_at_ms: i64) -> AgentConfigResponse {
    AgentConfigResponse {
        not_modified: false,
        config_timestamp: changed_at_ms / 1000,
        heartbeat_interval_sec: i32::try_from(config.push_interval_secs).unwrap_or(i32::MAX),
        config_poll_interval_sec: i32::try_from(config.config_poll_interval_secs)
            .unwrap_or(i32::MAX),
        checks: config.checks.iter().map(check_config).collect(),
        config_json: Vec::new(),
        config_version: config.version,
    }
}

/// ServiceRadar's control stream messages.
pub(crate) struct ServiceRadar;

impl Dialect for ServiceRadar {
    type In = ControlStreamRequest;
    type Out = ControlStreamResponse;

    fn first(message: ControlStreamRequest) -> Result<(IdentityClaim, Option<Inbound>), Status> {
        match message.payload {
            Some(In::Hello(hello)) if !hello.agent_id.is_empty() => Ok((
                IdentityClaim {
                    agent_id: hello.agent_id,
                    ..IdentityClaim::default()
                },
                None,
            )),
            Some(In::Hello(_)) => Err(Status::invalid_argument("agent_id is required")),
            _ => Err(Status::invalid_argument(
                "the first message on the control stream must be a hello",
            )),
        }
    }

    fn next(message: ControlStreamRequest) -> (Option<String>, Option<Inbound>) {
        let update = |command_id: String, phase: &str, ok: bool, message: String, json: &[u8]| {
            Inbound::Update(CommandUpdate {
                command_id,
                phase: phase.into(),
                ok,
                message,
                result_json: String::from_utf8_lossy(json).into_owned(),
            })
        };
        match message.payload {
            // A repeated hello only restates who it is.
            Some(In::Hello(hello)) => (Some(hello.agent_id), None),
            Some(In::CommandAck(a)) => (
                None,
                Some(update(a.command_id, "ack", true, a.message, b"")),
            ),
            Some(In::CommandProgress(p)) => {
                let note = if p.message.is_empty() {
                    format!("{}%", p.progress_percent.clamp(0, 100))
                } else {
                    p.message
                };
                (
                    None,
                    Some(update(p.command_id, "progress", true, note, b"")),
                )
            }
            Some(In::CommandResult(r)) => (
                None,
                Some(update(
                    r.command_id,
                    "result",
                    r.success,
                    r.message,
                    &r.payload_json,
                )),
            ),
            Some(In::ConfigAck(a)) => (None, Some(Inbound::ConfigAck(a.config_version))),
            None => (None, None),
        }
    }

    fn config(config: AgentConfig, changed_at: i64) -> ControlStreamResponse {
        ControlStreamResponse {
            payload: Some(Out::Config(config_response(config, changed_at))),
        }
    }

    fn command(c: &AgentCommand) -> ControlStreamResponse {
        ControlStreamResponse {
            payload: Some(Out::Command(CommandRequest {
                command_id: c.id.to_string(),
                command_type: c.kind.as_str().to_owned(),
                payload_json: b"{}".to_vec(),
                ttl_seconds: c.ttl_secs,
                created_at: c.created_at / 1000,
            })),
        }
    }
}

#[tonic::async_trait]
impl AgentGatewayService for Monitoring {
    type ControlStreamStream = OutStream<ControlStreamResponse>;

    async fn hello(
        &self,
        request: Request<AgentHelloRequest>,
    ) -> Result<Response<AgentHelloResponse>, Status> {
        let id = self.inner.caller(&request).await?;
        async {
            let req = request.into_inner();
            self.claim("monitoring.Hello", &id, &req.agent_id).await?;
            self.inner
                .register(&id, &req.version, &req.capabilities, &req.hostname)
                .await?;
            let config = self.inner.config_for(&id).await?;
            tracing::info!(version = %req.version, "ServiceRadar agent registered");
            Ok(Response::new(AgentHelloResponse {
                accepted: true,
                agent_id: id.agent_id.to_string(),
                message: "agent accepted".into(),
                gateway_id: self
                    .inner
                    .settings()
                    .hosts
                    .first()
                    .cloned()
                    .unwrap_or_default(),
                server_time: serviceradar_store::now_ms() / 1000,
                heartbeat_interval_sec: i32::try_from(config.push_interval_secs)
                    .unwrap_or(i32::MAX),
                config_outdated: req.config_version != config.version,
            }))
        }
        .instrument(span("monitoring.Hello", &id))
        .await
    }

    async fn get_config(
        &self,
        request: Request<AgentConfigRequest>,
    ) -> Result<Response<AgentConfigResponse>, Status> {
        let id = self.inner.caller(&request).await?;
        async {
            let req = request.into_inner();
            self.claim("monitoring.GetConfig", &id, &req.agent_id)
                .await?;
            self.inner.seen(&id).await?;
            let config = self.inner.config_for(&id).await?;
            let changed_at = self.inner.config_changed_at(&id).await?;
            if config.version == req.config_version {
                return Ok(Response::new(AgentConfigResponse {
                    not_modified: true,
                    config_version: config.version,
                    config_timestamp: changed_at / 1000,
                    ..AgentConfigResponse::default()
                }));
            }
            Ok(Response::new(config_response(config, changed_at)))
        }
        .instrument(span("monitoring.GetConfig", &id))
        .await
    }

    async fn push_status(
        &self,
        request: Request<GatewayStatusRequest>,
    ) -> Result<Response<GatewayStatusResponse>, Status> {
        let id = self.inner.caller(&request).await?;
        async {
            let req = request.into_inner();
            self.claim("monitoring.PushStatus", &id, &req.agent_id)
                .await?;
            self.record("monitoring.PushStatus", &id, &req.services, req.timestamp)
                .await?;
            Ok(Response::new(GatewayStatusResponse { received: true }))
        }
        .instrument(span("monitoring.PushStatus", &id))
        .await
    }

    async fn stream_status(
        &self,
        request: Request<Streaming<GatewayStatusChunk>>,
    ) -> Result<Response<GatewayStatusResponse>, Status> {
        let id = self.inner.caller(&request).await?;
        async {
            let mut stream = request.into_inner();
            let mut services = Vec::new();
            let mut timestamp = 0;
            while let Some(chunk) = stream.message().await? {
                self.claim("monitoring.StreamStatus", &id, &chunk.agent_id)
                    .await?;
                // The same bound as one push, checked as chunks arrive.
                if services.len() + chunk.services.len() > MAX_RESULTS_PER_PUSH {
                    return Err(Status::invalid_argument(format!(
                        "at most {MAX_RESULTS_PER_PUSH} results per push"
                    )));
                }
                services.extend(chunk.services);
                timestamp = timestamp.max(chunk.timestamp);
                if chunk.is_final {
                    break;
                }
            }
            self.record("monitoring.StreamStatus", &id, &services, timestamp)
                .await?;
            Ok(Response::new(GatewayStatusResponse { received: true }))
        }
        .instrument(span("monitoring.StreamStatus", &id))
        .await
    }

    async fn control_stream(
        &self,
        request: Request<Streaming<ControlStreamRequest>>,
    ) -> Result<Response<Self::ControlStreamStream>, Status> {
        self.inner
            .open_control_stream::<ServiceRadar>("monitoring.ControlStream", request)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_checks_translate() {
        let s = GatewayServiceStatus {
            service_name: "web".into(),
            available: false,
            message: b"refused".to_vec(),
            service_type: "tcp".into(),
            response_time: 2_500_000,
            ..GatewayServiceStatus::default()
        };
        let r = check_result(&s, 1_700_000_000);
        assert_eq!(
            (r.status.as_str(), r.response_time_us, r.observed_at_ms),
            ("fail", 2_500, 1_700_000_000_000)
        );
        let c = check_config(&CheckSpec {
            name: "db".into(),
            kind: "tcp".into(),
            target: "10.0.0.5:5432".into(),
            interval_secs: 30,
            timeout_ms: 1_500,
        });
        assert_eq!((c.port, c.timeout_sec, c.interval_sec), (5432, 2, 30));
    }

    #[test]
    fn the_first_control_message_must_be_a_hello_with_an_agent_id() {
        let ack = ControlStreamRequest {
            payload: Some(In::ConfigAck(Default::default())),
        };
        assert_eq!(
            ServiceRadar::first(ack).err().map(|e| e.code()),
            Some(tonic::Code::InvalidArgument)
        );
        let anonymous = ControlStreamRequest {
            payload: Some(In::Hello(Default::default())),
        };
        assert_eq!(
            ServiceRadar::first(anonymous).err().map(|e| e.code()),
            Some(tonic::Code::InvalidArgument)
        );
    }
}
