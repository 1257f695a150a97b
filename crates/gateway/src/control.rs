//! `ControlStream`: the long-lived bidirectional stream an agent opens after
//! `Hello`. The gateway sends the agent's config when the stream opens and
//! on every change (read in batches with other streams', [`crate::configs`]),
//! and the commands people issue ([`crate::links`]); the agent answers with
//! `ConfigAck` (stored, written behind in batches by [`crate::acks`], shown
//! by the API) and command
//! updates (ack / progress / result, stored with a compare-and-set on the
//! command's status).
//!
//! The same session serves both protocols: ours (`serviceradar.agent.v1`)
//! and ServiceRadar's (`monitoring`, [`crate::monitoring`]); a [`Dialect`]
//! only translates messages, so every rule (claim check, acknowledgements,
//! the command status compare-and-set, result limits) exists once.
//!
//! The caller is resolved from its certificate *without* the identity cache,
//! so a revoked agent cannot open a stream; a revocation closes an open one
//! with `PERMISSION_DENIED` (through [`crate::links::AgentLinks::revoked`]).

use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use serviceradar_domain::TenantScope;
use serviceradar_domain::agent_control::CommandStatus;
use serviceradar_proto::MAX_COMMAND_RESULT_BYTES;
use serviceradar_proto::v1::agent_message::Body as AgentBody;
use serviceradar_proto::v1::control_message::Body as ControlBody;
use serviceradar_proto::v1::{
    AgentConfig, AgentMessage, Command, CommandUpdate, ControlMessage, IdentityClaim,
};
use serviceradar_store::{AgentCommand, Store};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::acks::AckWriter;
use crate::configs::ConfigReader;
use crate::identity::{AgentIdentity, lookup, revoked};
use crate::links::LinkEvent;
use crate::service::{GatewayService, internal_status, span};

/// The gateway's half of a control stream.
pub type OutStream<T> =
    Pin<Box<dyn futures_core::Stream<Item = Result<T, Status>> + Send + 'static>>;
/// The gateway's half of our own protocol's control stream.
pub type ControlStreamOut = OutStream<ControlMessage>;

/// What an agent says on its control stream, whichever protocol it speaks.
pub(crate) enum Inbound {
    /// The config version it now runs.
    ConfigAck(String),
    /// Ack, progress or result of a command.
    Update(CommandUpdate),
}

/// A control stream protocol: how its messages translate to and from the
/// session's.
pub(crate) trait Dialect: Send + Sync + 'static {
    /// Agent -> gateway.
    type In: Send + 'static;
    /// Gateway -> agent.
    type Out: Send + 'static;
    /// The first message: the identity it claims and what else it says.
    fn first(message: Self::In) -> Result<(IdentityClaim, Option<Inbound>), Status>;
    /// A later message: the agent id it claims (if any) and what it says.
    fn next(message: Self::In) -> (Option<String>, Option<Inbound>);
    /// The agent's config (`changed_at`: when its checks last changed, Unix ms).
    fn config(config: AgentConfig, changed_at: i64) -> Self::Out;
    /// A command, already marked `sent`.
    fn command(command: &AgentCommand) -> Self::Out;
}

/// Our own protocol (`serviceradar.agent.v1.AgentGateway/ControlStream`).
pub(crate) struct Native;

impl Dialect for Native {
    type In = AgentMessage;
    type Out = ControlMessage;

    fn first(message: AgentMessage) -> Result<(IdentityClaim, Option<Inbound>), Status> {
        let (claim, body) = Self::next_parts(message);
        Ok((claim.unwrap_or_default(), body))
    }

    fn next(message: AgentMessage) -> (Option<String>, Option<Inbound>) {
        let (claim, body) = Self::next_parts(message);
        (claim.map(|c| c.agent_id), body)
    }

    fn config(config: AgentConfig, _changed_at: i64) -> ControlMessage {
        ControlMessage {
            body: Some(ControlBody::Config(config)),
        }
    }

    fn command(c: &AgentCommand) -> ControlMessage {
        ControlMessage {
            body: Some(ControlBody::Command(Command {
                id: c.id.to_string(),
                kind: c.kind.as_str().to_owned(),
                expires_at_ms: c.expires_at,
            })),
        }
    }
}

impl Native {
    fn next_parts(message: AgentMessage) -> (Option<IdentityClaim>, Option<Inbound>) {
        let body = message.body.map(|b| match b {
            AgentBody::ConfigAck(ack) => Inbound::ConfigAck(ack.version),
            AgentBody::Update(update) => Inbound::Update(update),
        });
        (message.claim, body)
    }
}

/// How long the gateway waits for the agent's first message.
const FIRST_MESSAGE: Duration = Duration::from_secs(10);

impl GatewayService {
    /// Opens a control stream of dialect `D` (`rpc` names it in logs and audits).
    pub(crate) async fn open_control_stream<D: Dialect>(
        &self,
        rpc: &'static str,
        request: Request<Streaming<D::In>>,
    ) -> Result<Response<OutStream<D::Out>>, Status> {
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
        let span = span(rpc, &id);
        async {
            let mut inbound = request.into_inner();
            let first = tokio::time::timeout(FIRST_MESSAGE, inbound.message())
                .await
                .map_err(|_| Status::deadline_exceeded("send a first message with the claim"))??
                .ok_or_else(|| Status::cancelled("the stream ended before its first message"))?;
            let (claim, body) = D::first(first)?;
            self.check_claim(rpc, &id, Some(&claim)).await?;
            self.seen(&id).await?;
            let (generation, events) = self.links.attach(id.agent_id);
            let (out, out_rx) = mpsc::channel(16);
            let (config, changed_at) = self
                .configs
                .read(&id)
                .await
                .map_err(|e| internal_status("reading the agent's config", &e))?;
            let _ = out.try_send(Ok(D::config(config, changed_at)));
            let stream = Session::<D> {
                store: self.store.clone(),
                configs: self.configs.clone(),
                acks: self.acks.clone(),
                id: id.clone(),
                out,
                dialect: PhantomData,
            };
            if let Some(body) = body {
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
            let out: OutStream<D::Out> =
                Box::pin(tokio_stream::wrappers::ReceiverStream::new(out_rx));
            Ok(Response::new(out))
        }
        .instrument(span)
        .await
    }
}

/// One open stream.
struct Session<D: Dialect> {
    store: Store,
    configs: ConfigReader,
    acks: Option<AckWriter>,
    id: AgentIdentity,
    out: mpsc::Sender<Result<D::Out, Status>>,
    dialect: PhantomData<D>,
}

impl<D: Dialect> Session<D> {
    async fn run(&self, mut inbound: Streaming<D::In>, mut events: mpsc::Receiver<LinkEvent>) {
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    // Replaced by a newer stream of the same agent.
                    None => return,
                    Some(LinkEvent::Command(c)) => {
                        let message = D::command(&c);
                        tracing::info!(command_id = %c.id, kind = c.kind.as_str(), "command sent");
                        if self.out.send(Ok(message)).await.is_err() {
                            return;
                        }
                    }
                    Some(LinkEvent::ConfigChanged) => {
                        // Read together with every other stream's that
                        // changed at the same time (`crate::configs`).
                        match self.configs.read(&self.id).await {
                            Ok((config, changed_at)) => {
                                tracing::info!(version = %config.version, "config pushed");
                                let message = D::config(config, changed_at);
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
                        let (claimed, body) = D::next(m);
                        if let Some(claimed) = claimed
                            && (!claimed.is_empty() && !claimed.eq_ignore_ascii_case(&self.id.agent_id.to_string()))
                        {
                            let _ = self.out.send(Err(Status::permission_denied(
                                "agent_id does not match the client certificate"))).await;
                            return;
                        }
                        if let Some(body) = body {
                            self.handle(body).await;
                        }
                    }
                    Ok(None) | Err(_) => return,
                },
                () = self.out.closed() => return,
            }
        }
    }

    async fn handle(&self, body: Inbound) {
        let scoped = self
            .store
            .scoped(TenantScope::for_system_task(self.id.tenant_id));
        match body {
            Inbound::ConfigAck(version) => {
                let version: String = version.chars().take(64).collect();
                if let Some(acks) = &self.acks {
                    // Stored with the next flush (`crate::acks`).
                    tracing::debug!(%version, "agent runs config");
                    acks.record(self.id.tenant_id, self.id.agent_id, version);
                } else if let Err(e) = scoped.ack_agent_config(self.id.agent_id, &version).await {
                    tracing::error!(error = %e, "recording a config acknowledgement failed");
                } else {
                    tracing::info!(%version, "agent runs config");
                }
            }
            Inbound::Update(update) => {
                if let Err(e) = record_update(&self.store, &self.id, update).await {
                    tracing::error!(error = %e, "recording a command update failed");
                }
            }
        }
    }
}

/// Records an agent's ack, progress or result of one of its commands,
/// from its control stream or (gateway-initiated mode) its poll answer.
/// An update for a command of another agent or tenant is ignored.
pub(crate) async fn record_update(
    store: &Store,
    id: &AgentIdentity,
    update: CommandUpdate,
) -> Result<(), serviceradar_store::StoreError> {
    let scoped = store.scoped(TenantScope::for_system_task(id.tenant_id));
    let Ok(command_id) = update.command_id.parse::<uuid::Uuid>() else {
        tracing::warn!("command update with a malformed id ignored");
        return Ok(());
    };
    // Another tenant's command is NotFound; another agent's is ignored.
    let command = match scoped.agent_command(command_id).await {
        Ok(c) if c.agent_id == id.agent_id => c,
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
                    Some("the agent's result was not a JSON document of at most 1 MiB".to_owned()),
                    None,
                )
            } else if update.ok {
                (CommandStatus::Succeeded, message, Some(update.result_json))
            } else {
                (CommandStatus::Failed, message, Some(update.result_json))
            };
            let result = result.filter(|r| !r.is_empty());
            let moved = scoped
                .set_agent_command_status(command.id, status, message.as_deref(), result.as_deref())
                .await?;
            tracing::info!(%command_id, status = status.as_str(), recorded = moved, "command finished");
        }
        other => tracing::warn!(phase = %other, "command update with an unknown phase ignored"),
    }
    Ok(())
}
