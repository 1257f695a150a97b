//! `ControlStream`: the long-lived bidirectional stream an agent opens after
//! `Hello`. The gateway sends the agent's config when the stream opens and
//! on every change, and the commands people issue ([`crate::links`]); the
//! agent answers with `ConfigAck` (stored, shown by the API) and command
//! updates (ack / progress / result, stored with a compare-and-set on the
//! command's status).
//!
//! The caller is resolved from its certificate *without* the identity cache,
//! so a revoked agent cannot open a stream; a revocation closes an open one
//! with `PERMISSION_DENIED` (through [`crate::links::AgentLinks::revoked`]).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serviceradar_domain::TenantScope;
use serviceradar_domain::agent_control::CommandStatus;
use serviceradar_proto::MAX_COMMAND_RESULT_BYTES;
use serviceradar_proto::v1::agent_message::Body as AgentBody;
use serviceradar_proto::v1::control_message::Body as ControlBody;
use serviceradar_proto::v1::{AgentMessage, Command, CommandUpdate, ControlMessage};
use serviceradar_store::Store;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::GatewaySettings;
use crate::identity::{AgentIdentity, lookup, revoked};
use crate::links::LinkEvent;
use crate::service::{GatewayService, agent_config, internal_status, span};

/// The gateway's half of a control stream.
pub type ControlStreamOut =
    Pin<Box<dyn futures_core::Stream<Item = Result<ControlMessage, Status>> + Send + 'static>>;

/// How long the gateway waits for the agent's first message.
const FIRST_MESSAGE: Duration = Duration::from_secs(10);

impl GatewayService {
    pub(crate) async fn open_control_stream(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<ControlStreamOut>, Status> {
        let certs = request.peer_certs();
        let (id, revoked_at) = lookup(
            &self.store,
            self.pki.trust_domain(),
            certs.as_ref().map(|c| c.as_slice()),
        )
        .await?;
        if revoked_at.is_some() {
            return Err(revoked());
        }
        let span = span("ControlStream", &id);
        async {
            let mut inbound = request.into_inner();
            let first = tokio::time::timeout(FIRST_MESSAGE, inbound.message())
                .await
                .map_err(|_| Status::deadline_exceeded("send a first message with the claim"))??
                .ok_or_else(|| Status::cancelled("the stream ended before its first message"))?;
            self.check_claim("ControlStream", &id, first.claim.as_ref())
                .await?;
            self.seen(&id).await?;
            let (generation, events) = self.links.attach(id.agent_id);
            let (out, out_rx) = mpsc::channel(16);
            let config = self.config_for(&id).await?;
            let _ = out.try_send(Ok(ControlMessage {
                body: Some(ControlBody::Config(config)),
            }));
            let stream = Session {
                store: self.store.clone(),
                settings: self.settings.clone(),
                id: id.clone(),
                out,
            };
            if let Some(body) = first.body {
                stream.handle(body).await;
            }
            let links = self.links.clone();
            tracing::info!("control stream opened");
            tokio::spawn(
                async move {
                    stream.run(inbound, events).await;
                    links.detach(stream.id.agent_id, generation);
                    tracing::info!("control stream closed");
                }
                .instrument(tracing::Span::current()),
            );
            let out: ControlStreamOut =
                Box::pin(tokio_stream::wrappers::ReceiverStream::new(out_rx));
            Ok(Response::new(out))
        }
        .instrument(span)
        .await
    }
}

/// One open stream.
struct Session {
    store: Store,
    settings: Arc<GatewaySettings>,
    id: AgentIdentity,
    out: mpsc::Sender<Result<ControlMessage, Status>>,
}

impl Session {
    async fn run(
        &self,
        mut inbound: Streaming<AgentMessage>,
        mut events: mpsc::Receiver<LinkEvent>,
    ) {
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    // Replaced by a newer stream of the same agent.
                    None => return,
                    Some(LinkEvent::Command(c)) => {
                        let message = ControlMessage {
                            body: Some(ControlBody::Command(Command {
                                id: c.id.to_string(),
                                kind: c.kind.as_str().to_owned(),
                                expires_at_ms: c.expires_at,
                            })),
                        };
                        tracing::info!(command_id = %c.id, kind = c.kind.as_str(), "command sent");
                        if self.out.send(Ok(message)).await.is_err() {
                            return;
                        }
                    }
                    Some(LinkEvent::ConfigChanged) => {
                        match agent_config(&self.store, &self.settings, &self.id).await {
                            Ok(config) => {
                                tracing::info!(version = %config.version, "config pushed");
                                let message = ControlMessage { body: Some(ControlBody::Config(config)) };
                                if self.out.send(Ok(message)).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                let _ = self.out.send(Err(internal_status("reading the agent's config", &e))).await;
                                return;
                            }
                        }
                    }
                    Some(LinkEvent::Revoked) => {
                        tracing::warn!("agent revoked; closing its control stream");
                        let _ = self.out.send(Err(revoked())).await;
                        return;
                    }
                },
                message = inbound.message() => match message {
                    Ok(Some(m)) => {
                        if let Some(claim) = &m.claim
                            && (!claim.agent_id.is_empty() && !claim.agent_id.eq_ignore_ascii_case(&self.id.agent_id.to_string()))
                        {
                            let _ = self.out.send(Err(Status::permission_denied(
                                "agent_id does not match the client certificate"))).await;
                            return;
                        }
                        if let Some(body) = m.body {
                            self.handle(body).await;
                        }
                    }
                    Ok(None) | Err(_) => return,
                },
                () = self.out.closed() => return,
            }
        }
    }

    async fn handle(&self, body: AgentBody) {
        let scoped = self
            .store
            .scoped(TenantScope::for_system_task(self.id.tenant_id));
        match body {
            AgentBody::ConfigAck(ack) => {
                let version: String = ack.version.chars().take(64).collect();
                if let Err(e) = scoped.ack_agent_config(self.id.agent_id, &version).await {
                    tracing::error!(error = %e, "recording a config acknowledgement failed");
                } else {
                    tracing::info!(%version, "agent runs config");
                }
            }
            AgentBody::Update(update) => {
                if let Err(e) = self.update(update).await {
                    tracing::error!(error = %e, "recording a command update failed");
                }
            }
        }
    }

    async fn update(&self, update: CommandUpdate) -> Result<(), serviceradar_store::StoreError> {
        let scoped = self
            .store
            .scoped(TenantScope::for_system_task(self.id.tenant_id));
        let Ok(command_id) = update.command_id.parse::<uuid::Uuid>() else {
            tracing::warn!("command update with a malformed id ignored");
            return Ok(());
        };
        // Another tenant's command is NotFound; another agent's is ignored.
        let command = match scoped.agent_command(command_id).await {
            Ok(c) if c.agent_id == self.id.agent_id => c,
            Ok(_) | Err(serviceradar_store::StoreError::NotFound) => {
                tracing::warn!(%command_id, "update for a command of another agent ignored");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let message: String = update.message.chars().take(1024).collect();
        let message = (!message.is_empty()).then_some(message);
        match update.phase.as_str() {
            "ack" => {
                scoped
                    .set_agent_command_status(
                        command.id,
                        CommandStatus::Acked,
                        message.as_deref(),
                        None,
                    )
                    .await?;
            }
            "progress" => {
                if let Some(m) = &message {
                    scoped.note_agent_command(command.id, m).await?;
                }
            }
            "result" => {
                let valid = update.result_json.len() <= MAX_COMMAND_RESULT_BYTES
                    && (update.result_json.is_empty()
                        || serde_json::from_str::<serde_json::Value>(&update.result_json).is_ok());
                let (status, message, result) = if !valid {
                    (
                        CommandStatus::Failed,
                        Some(
                            "the agent's result was not a JSON document of at most 1 MiB"
                                .to_owned(),
                        ),
                        None,
                    )
                } else if update.ok {
                    (CommandStatus::Succeeded, message, Some(update.result_json))
                } else {
                    (CommandStatus::Failed, message, Some(update.result_json))
                };
                let result = result.filter(|r| !r.is_empty());
                let moved = scoped
                    .set_agent_command_status(
                        command.id,
                        status,
                        message.as_deref(),
                        result.as_deref(),
                    )
                    .await?;
                tracing::info!(%command_id, status = status.as_str(), recorded = moved, "command finished");
            }
            other => tracing::warn!(phase = %other, "command update with an unknown phase ignored"),
        }
        Ok(())
    }
}
