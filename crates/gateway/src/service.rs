//! The `AgentGateway` gRPC service.
//!
//! Every call first resolves the caller from its certificate
//! ([`super::identity`]), then checks the request's identity claims against
//! it. Contact of any kind counts as agent activity ([`Health::agent_seen`]).

use std::sync::Arc;

use prost::Message;
use serviceradar_proto::v1::agent_gateway_server::AgentGateway;
use serviceradar_proto::v1::{
    AgentConfig, CheckSpec, GetConfigRequest, GetConfigResponse, HelloRequest, HelloResponse,
    IdentityClaim, LeafRefusalRequest, LeafRefusalResponse, PushResultsResponse, PushStatusRequest,
    PushStatusResponse, RenewRequest, RenewResponse, ResultsChunk,
};
use serviceradar_proto::{MAX_CHUNK_BYTES, MAX_UPLOAD_BYTES};
use serviceradar_store::{ChunkIn, ChunkOutcome, Store, StoreError};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::identity::{AgentIdentity, IdentityResolver};
use crate::GatewaySettings;
use crate::acks::AckWriter;
use crate::configs::ConfigReader;
use crate::links::AgentLinks;
use crate::status::{StatusWriter, WriteError, write_through};
use serviceradar_health::Health;
use serviceradar_identity::Pki;

/// Most check results in one `PushStatus`.
pub const MAX_RESULTS_PER_PUSH: usize = 1_000;
const MAX_OPEN_UPLOADS_PER_AGENT: i64 = 8;

/// The gateway service.
pub struct GatewayService {
    pub(crate) store: Store,
    pub(crate) pki: Arc<Pki>,
    pub(crate) settings: Arc<GatewaySettings>,
    pub(crate) health: Health,
    resolver: IdentityResolver,
    pub(crate) links: AgentLinks,
    /// The write-behind buffer ([`crate::status`]); `None`: every push is
    /// written in its call.
    pub(crate) status: Option<StatusWriter>,
    /// The write-behind buffer of config acknowledgements ([`crate::acks`]);
    /// `None` (with `status`): each is written when it arrives.
    pub(crate) acks: Option<AckWriter>,
    /// Control streams' config reads, batched ([`crate::configs`]).
    pub(crate) configs: ConfigReader,
}

impl GatewayService {
    /// A service over the store.
    pub fn new(
        store: Store,
        pki: Arc<Pki>,
        settings: Arc<GatewaySettings>,
        health: Health,
        links: AgentLinks,
    ) -> Self {
        // Write-behind needs a runtime for its flusher (the gateway is
        // always bound inside one).
        let every = settings
            .status_flush_every
            .filter(|_| tokio::runtime::Handle::try_current().is_ok());
        let status = every.map(|every| StatusWriter::start(store.clone(), health.clone(), every));
        let acks = every.map(|every| AckWriter::start(store.clone(), every));
        let configs = ConfigReader::new(store.clone(), settings.clone());
        Self {
            acks,
            configs,
            store,
            pki,
            settings,
            health,
            links,
            resolver: IdentityResolver::default(),
            status,
        }
    }

    /// The write-behind buffer of agent status, when enabled.
    pub fn status_writer(&self) -> Option<&StatusWriter> {
        self.status.as_ref()
    }

    /// The write-behind buffer of config acknowledgements, when enabled.
    pub fn ack_writer(&self) -> Option<&AckWriter> {
        self.acks.as_ref()
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn pki(&self) -> &Pki {
        &self.pki
    }

    pub(crate) fn settings(&self) -> &GatewaySettings {
        &self.settings
    }

    pub(crate) async fn caller<T>(&self, request: &Request<T>) -> Result<AgentIdentity, Status> {
        let certs = request.peer_certs();
        let id = self
            .resolver
            .resolve(
                &self.store,
                self.pki.trust_domain(),
                certs.as_ref().map(|c| c.as_slice()),
            )
            .await?;
        // A revocation relayed by any replica wins over the cache.
        if self.links.is_revoked(id.agent_id) {
            return Err(super::identity::revoked());
        }
        Ok(id)
    }

    /// Rejects (and audits) a claim that disagrees with the certificate.
    pub(crate) async fn check_claim(
        &self,
        rpc: &str,
        id: &AgentIdentity,
        claim: Option<&IdentityClaim>,
    ) -> Result<(), Status> {
        let Some(claim) = claim else { return Ok(()) };
        let mismatch = [
            ("tenant_id", &claim.tenant_id, id.tenant_id.to_string()),
            ("site_id", &claim.site_id, id.site_id.to_string()),
            ("agent_id", &claim.agent_id, id.agent_id.to_string()),
        ]
        .into_iter()
        .find(|(_, claimed, actual)| !claimed.is_empty() && !claimed.eq_ignore_ascii_case(actual));
        let Some((field, claimed, _)) = mismatch else {
            return Ok(());
        };
        let reason = format!("{field} claim {claimed:?} disagrees with the certificate");
        metrics::counter!("serviceradar_gateway_denied_total", "rpc" => rpc.to_owned(), "field" => field)
            .increment(1);
        tracing::warn!(rpc, field, claimed = %claimed, peer = %id.common_name,
            "agent claim disagrees with its certificate; rejected");
        if let Err(e) = self
            .store
            .audit_gateway(
                Some(id.tenant_id),
                Some(id.agent_id),
                &id.common_name,
                rpc,
                &reason,
            )
            .await
        {
            tracing::error!(error = %e, "writing the gateway audit record failed");
        }
        Err(Status::permission_denied(format!(
            "{field} does not match the client certificate"
        )))
    }

    pub(crate) async fn seen(&self, id: &AgentIdentity) -> Result<(), Status> {
        let written = match &self.status {
            Some(writer) => writer.contact(id).await,
            None => self
                .health
                .agent_seen(id)
                .await
                .map_err(|source| WriteError {
                    what: "recording agent contact",
                    source,
                }),
        };
        written.map_err(|e| write_status(id, e))
    }

    /// Registers an agent's announcement (`Hello` of either protocol):
    /// version, capabilities and host name (clipped), the site's downloaded
    /// onboarding packages become installed, and the contact counts.
    pub(crate) async fn register(
        &self,
        id: &AgentIdentity,
        version: &str,
        capabilities: &[String],
        hostname: &str,
    ) -> Result<(), Status> {
        let clip = |s: &str, n: usize| s.chars().take(n).collect::<String>();
        let capabilities = capabilities
            .iter()
            .take(32)
            .map(|c| clip(c, 32))
            .collect::<Vec<_>>()
            .join(",");
        let scoped = self
            .store
            .scoped(serviceradar_domain::TenantScope::for_system_task(
                id.tenant_id,
            ));
        scoped
            .record_agent_hello(
                id.agent_id,
                &clip(version, 64),
                &capabilities,
                &clip(hostname, 255),
            )
            .await
            .map_err(|e| internal_status("recording hello", &e))?;
        // The site's agent reports: its downloaded onboarding packages are installed.
        scoped
            .install_onboarding_packages(id.site_id)
            .await
            .map_err(|e| internal_status("installing onboarding", &e))?;
        self.seen(id).await
    }

    /// Records a batch of check results (`PushStatus` of either protocol):
    /// at most [`MAX_RESULTS_PER_PUSH`], the newest leaf verdict moves the
    /// leaf's link, the latest result of each check is kept. Returns how
    /// many were accepted.
    pub(crate) async fn record_status(
        &self,
        id: &AgentIdentity,
        results: &[serviceradar_proto::v1::CheckResult],
        dropped: u64,
    ) -> Result<u32, Status> {
        if results.len() > MAX_RESULTS_PER_PUSH {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_RESULTS_PER_PUSH} results per push"
            )));
        }
        // The newest leaf verdict wins.
        let leaf = results
            .iter()
            .filter(|r| r.kind == "nats_leaf")
            .max_by_key(|r| r.observed_at_ms)
            .map(|r| {
                r.status == "ok" && r.leaf.as_ref().is_some_and(|l| l.up && l.remote_connected)
            });
        let clip = |s: &str, n: usize| s.chars().take(n).collect::<String>();
        let checks: Vec<_> = results
            .iter()
            .map(|r| serviceradar_store::AgentCheck {
                name: clip(&r.name, 128),
                kind: clip(&r.kind, 16),
                target: clip(&r.target, 256),
                status: clip(&r.status, 16),
                message: clip(&r.message, 512),
                response_time_us: i64::try_from(r.response_time_us).unwrap_or(i64::MAX),
                observed_at: r.observed_at_ms,
            })
            .collect();
        let written = match &self.status {
            Some(writer) => writer.record(id, leaf, checks).await,
            None => write_through(&self.store, &self.health, id, leaf, &checks).await,
        };
        written.map_err(|e| write_status(id, e))?;
        metrics::counter!("serviceradar_gateway_results_total").increment(results.len() as u64);
        if dropped > 0 {
            metrics::counter!("serviceradar_gateway_dropped_results_total").increment(dropped);
            tracing::warn!(
                dropped = dropped,
                "agent dropped buffered results while offline"
            );
        }
        Ok(u32::try_from(results.len()).unwrap_or(u32::MAX))
    }

    /// When the agent's configured checks last changed (Unix ms).
    pub(crate) async fn config_changed_at(&self, id: &AgentIdentity) -> Result<i64, Status> {
        self.store
            .scoped(serviceradar_domain::TenantScope::for_system_task(
                id.tenant_id,
            ))
            .agent_config_changed_at(id.agent_id)
            .await
            .map_err(|e| internal_status("reading the agent's config time", &e))
    }

    /// The config of `id`'s agent ([`agent_config`]).
    pub async fn config_for(&self, id: &AgentIdentity) -> Result<AgentConfig, Status> {
        agent_config(&self.store, &self.settings, id)
            .await
            .map_err(|e| internal_status("reading the agent's checks", &e))
    }
}

/// The config of `id`'s agent: the site's leaf checker (pointing at the
/// leaf's local monitoring port), the checks configured for the agent
/// (`agent_check_configs`) and intervals. Its version is a digest of the
/// content, so an unchanged config has an unchanged version.
pub async fn agent_config(
    store: &Store,
    settings: &GatewaySettings,
    id: &AgentIdentity,
) -> Result<AgentConfig, StoreError> {
    let configured = store
        .scoped(serviceradar_domain::TenantScope::for_system_task(
            id.tenant_id,
        ))
        .agent_check_configs(id.agent_id)
        .await?;
    Ok(config_of(settings, configured))
}

/// An agent's config from its configured checks (as [`agent_config`]).
pub(crate) fn config_of(
    settings: &GatewaySettings,
    configured: Vec<serviceradar_domain::agent_control::CheckConfig>,
) -> AgentConfig {
    let monitoring = settings
        .leaf_monitoring_listen
        .as_deref()
        .and_then(|l| l.rsplit_once(':'))
        .map(|(_, port)| format!("http://127.0.0.1:{port}"));
    let checks = monitoring
        .map(|target| CheckSpec {
            name: serviceradar_domain::agent_control::CheckConfig::RESERVED_NAME.into(),
            kind: "nats_leaf".into(),
            target,
            interval_secs: settings.agent_push_interval_secs,
            timeout_ms: 5_000,
        })
        .into_iter()
        .chain(configured.into_iter().map(|c| CheckSpec {
            name: c.name,
            kind: c.kind.as_str().to_owned(),
            target: c.target,
            interval_secs: c.interval_secs,
            timeout_ms: c.timeout_ms,
        }))
        .collect();
    let mut config = AgentConfig {
        version: String::new(),
        config_poll_interval_secs: settings.agent_config_poll_secs,
        push_interval_secs: settings.agent_push_interval_secs,
        checks,
    };
    let digest = Sha256::digest(config.encode_to_vec());
    config.version = hex::encode(&digest[..12]);
    config
}

pub(crate) fn span(rpc: &'static str, id: &AgentIdentity) -> tracing::Span {
    tracing::info_span!("gateway", rpc, tenant_id = %id.tenant_id, site_id = %id.site_id,
        agent_id = %id.agent_id)
}

/// The answer to an agent whose site was deleted: `NOT_FOUND`, which the
/// agent takes as final (it stops instead of retrying). Logged at `info`:
/// it is the expected end of a deleted site's agent, not a server fault.
pub fn agent_gone(common_name: &str) -> Status {
    tracing::info!(peer = %common_name, "refused an agent whose site was deleted");
    Status::not_found(
        "this agent's edge site was deleted: stop the agent and uninstall it \
         (it is not retried)",
    )
}

/// A failed status write as the agent sees it: its site was deleted
/// (between the cached identity lookup and the write), or an internal
/// failure.
fn write_status(id: &AgentIdentity, e: WriteError) -> Status {
    match e.source {
        StoreError::NotFound if e.what == "recording agent contact" => agent_gone(&id.common_name),
        source => internal_status(e.what, &source),
    }
}

/// An internal failure as agents see it: `UNAVAILABLE` with a reference to
/// the log line that holds the cause (never the cause itself).
pub fn internal_status(what: &str, error: &dyn std::fmt::Display) -> Status {
    let reference = uuid::Uuid::now_v7();
    tracing::error!(%reference, error = %error, "{what} failed");
    Status::unavailable(format!(
        "internal error (reference {reference}); try again later"
    ))
}

fn valid_upload_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[tonic::async_trait]
impl AgentGateway for GatewayService {
    type ControlStreamStream = crate::control::ControlStreamOut;

    async fn control_stream(
        &self,
        request: Request<Streaming<serviceradar_proto::v1::AgentMessage>>,
    ) -> Result<Response<Self::ControlStreamStream>, Status> {
        self.open_control_stream::<crate::control::Native>("ControlStream", request)
            .await
    }

    async fn renew_certificates(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
        self.renew(request).await
    }

    async fn leaf_refusal(
        &self,
        request: Request<LeafRefusalRequest>,
    ) -> Result<Response<LeafRefusalResponse>, Status> {
        let id = self.caller(&request).await?;
        async {
            let req = request.into_inner();
            self.check_claim("LeafRefusal", &id, req.claim.as_ref())
                .await?;
            let refusal = self
                .store
                .scoped(serviceradar_domain::TenantScope::for_system_task(
                    id.tenant_id,
                ))
                .leaf_refusal(id.site_id)
                .await
                .map_err(|e| internal_status("reading the leaf's refusal", &e))?;
            Ok(Response::new(match refusal {
                Some(r) => LeafRefusalResponse {
                    refused: true,
                    reason: r.reason,
                    refused_at_ms: r.refused_at,
                },
                None => LeafRefusalResponse::default(),
            }))
        }
        .instrument(span("LeafRefusal", &id))
        .await
    }

    async fn hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloResponse>, Status> {
        let id = self.caller(&request).await?;
        async {
            let req = request.into_inner();
            self.check_claim("Hello", &id, req.claim.as_ref()).await?;
            self.register(&id, &req.agent_version, &req.capabilities, &req.hostname)
                .await?;
            tracing::info!(version = %req.agent_version, "agent registered");
            Ok(Response::new(HelloResponse {
                tenant_id: id.tenant_id.to_string(),
                site_id: id.site_id.to_string(),
                agent_id: id.agent_id.to_string(),
                config: Some(self.config_for(&id).await?),
            }))
        }
        .instrument(span("Hello", &id))
        .await
    }

    async fn get_config(
        &self,
        request: Request<GetConfigRequest>,
    ) -> Result<Response<GetConfigResponse>, Status> {
        let id = self.caller(&request).await?;
        async {
            let req = request.into_inner();
            self.check_claim("GetConfig", &id, req.claim.as_ref())
                .await?;
            self.seen(&id).await?;
            let config = self.config_for(&id).await?;
            let changed = config.version != req.current_version;
            Ok(Response::new(GetConfigResponse {
                changed,
                version: config.version.clone(),
                config: changed.then_some(config),
            }))
        }
        .instrument(span("GetConfig", &id))
        .await
    }

    async fn push_status(
        &self,
        request: Request<PushStatusRequest>,
    ) -> Result<Response<PushStatusResponse>, Status> {
        let id = self.caller(&request).await?;
        async {
            let req = request.into_inner();
            self.check_claim("PushStatus", &id, req.claim.as_ref())
                .await?;
            let accepted = self.record_status(&id, &req.results, req.dropped).await?;
            Ok(Response::new(PushStatusResponse { accepted }))
        }
        .instrument(span("PushStatus", &id))
        .await
    }

    async fn push_results(
        &self,
        request: Request<Streaming<ResultsChunk>>,
    ) -> Result<Response<PushResultsResponse>, Status> {
        let id = self.caller(&request).await?;
        async {
            let mut stream = request.into_inner();
            let mut last_response = None;
            while let Some(chunk) = stream.message().await? {
                self.check_claim("PushResults", &id, chunk.claim.as_ref())
                    .await?;
                if !valid_upload_id(&chunk.upload_id) {
                    return Err(Status::invalid_argument(
                        "upload_id must be 1-64 characters of [A-Za-z0-9_-]",
                    ));
                }
                if chunk.data.len() > MAX_CHUNK_BYTES {
                    return Err(Status::invalid_argument(format!(
                        "a chunk holds at most {MAX_CHUNK_BYTES} bytes"
                    )));
                }
                let response = self.accept_chunk(&id, chunk).await?;
                last_response = Some(response);
            }
            self.seen(&id).await?;
            last_response
                .map(Response::new)
                .ok_or_else(|| Status::invalid_argument("no chunks sent"))
        }
        .instrument(span("PushResults", &id))
        .await
    }
}

impl GatewayService {
    /// Stores one chunk durably ([`serviceradar_store::agent_results`]):
    /// resumable across restarts and replicas, each chunk stored once.
    async fn accept_chunk(
        &self,
        id: &AgentIdentity,
        chunk: ResultsChunk,
    ) -> Result<PushResultsResponse, Status> {
        let content_type: String = chunk.content_type.chars().take(128).collect();
        let outcome = self
            .store
            .scoped(serviceradar_domain::TenantScope::for_system_task(
                id.tenant_id,
            ))
            .store_upload_chunk(
                id.site_id,
                id.agent_id,
                ChunkIn {
                    upload_id: &chunk.upload_id,
                    content_type: &content_type,
                    index: chunk.chunk_index,
                    data: &chunk.data,
                    last: chunk.last,
                },
                MAX_UPLOAD_BYTES,
                MAX_OPEN_UPLOADS_PER_AGENT,
            )
            .await
            .map_err(|e| internal_status("storing a results chunk", &e))?;
        match outcome {
            ChunkOutcome::Accepted {
                next_chunk,
                bytes,
                complete,
            } => {
                if complete && chunk.last && chunk.chunk_index + 1 == next_chunk {
                    tracing::info!(upload_id = %chunk.upload_id, bytes, %content_type,
                        "results upload complete");
                    metrics::counter!("serviceradar_gateway_upload_bytes_total").increment(bytes);
                }
                Ok(PushResultsResponse {
                    upload_id: chunk.upload_id,
                    next_chunk_index: next_chunk,
                    total_bytes: bytes,
                    complete,
                })
            }
            ChunkOutcome::Gap { expected } => Err(Status::failed_precondition(format!(
                "expected chunk {expected} of upload {}",
                chunk.upload_id
            ))),
            ChunkOutcome::TooLarge => Err(Status::resource_exhausted(format!(
                "an upload holds at most {MAX_UPLOAD_BYTES} bytes"
            ))),
            ChunkOutcome::TooManyOpen => {
                Err(Status::resource_exhausted("too many unfinished uploads"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_reach_agents_without_their_detail() {
        let cause = "error returned from database: relation \"agents\" does not exist";
        let status = internal_status("recording the leaf link", &cause);
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(status.message().starts_with("internal error (reference "));
        assert!(
            !status.message().contains("database"),
            "{}",
            status.message()
        );
        assert!(!status.message().contains("agents"), "{}", status.message());
    }
}
