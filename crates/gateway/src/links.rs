//! Agent links: which agents hold a control stream on this replica, and how
//! a command, a config change or a revocation issued anywhere reaches the
//! replica that holds the agent's stream.
//!
//! * **Local**: each open `ControlStream` registers a channel here
//!   ([`AgentLinks::attach`]); a newer stream of the same agent replaces the
//!   older one (whose channel closes, which ends it).
//! * **Across replicas** (PostgreSQL): the issuing replica sends
//!   `NOTIFY sr_agent_link` naming tenant, agent and event; every replica's
//!   relay ([`AgentLinks::spawn_relay`]) hands it to its local stream, if it
//!   holds one. A command is claimed with a compare-and-set `pending -> sent`
//!   by the replica that delivers it, and `pending -> offline` by the issuer
//!   when nobody claimed it within [`LinkSettings::offline_after`]: exactly
//!   one of the two wins, so a command is never both delivered and reported
//!   offline.
//! * **Revocations** are relayed the same way: every replica closes the
//!   agent's stream and refuses its calls at once (before its identity
//!   cache, which keeps identities up to 60 s, would notice).
//! * **SQLite** has one process: local delivery only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serviceradar_domain::agent_control::CommandStatus;
use serviceradar_domain::{TenantId, TenantScope};
use serviceradar_store::{AgentCommand, Backend, Store, StoreError};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

/// PostgreSQL notification channel carrying link events between replicas.
pub const LINK_CHANNEL: &str = "sr_agent_link";

/// What a replica's open control stream is told.
#[derive(Debug, Clone)]
pub enum LinkEvent {
    /// A command, already marked `sent`.
    Command(AgentCommand),
    /// The agent's checks changed: push its config.
    ConfigChanged,
    /// The agent was revoked: close the stream.
    Revoked,
}

/// How long an issuer waits for another replica to claim a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkSettings {
    /// After this, an unclaimed command is `offline`.
    pub offline_after: Duration,
}

impl Default for LinkSettings {
    fn default() -> Self {
        Self {
            offline_after: Duration::from_millis(750),
        }
    }
}

struct Link {
    generation: u64,
    tx: mpsc::Sender<LinkEvent>,
}

struct Inner {
    store: Store,
    settings: LinkSettings,
    replica: Uuid,
    local: Mutex<HashMap<Uuid, Link>>,
    /// Agents revoked while this replica ran (any replica's revocation):
    /// refused at once, before the identity cache would notice.
    revoked: Mutex<std::collections::HashSet<Uuid>>,
    next_generation: std::sync::atomic::AtomicU64,
    listening: watch::Sender<bool>,
}

/// The registry of this replica's control streams. Cheap to clone.
#[derive(Clone)]
pub struct AgentLinks {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AgentLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentLinks")
            .field("replica", &self.inner.replica)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Relayed {
    Command {
        replica: Uuid,
        tenant: TenantId,
        agent: Uuid,
        command: Uuid,
    },
    Config {
        replica: Uuid,
        tenant: TenantId,
        agent: Uuid,
    },
    /// Many agents' checks changed at once (one notification per chunk).
    Configs {
        replica: Uuid,
        tenant: TenantId,
        agents: Vec<Uuid>,
    },
    Revoked {
        replica: Uuid,
        tenant: TenantId,
        agent: Uuid,
    },
}

/// Agents named in one relayed notification of a many-agent config change
/// (about 7,000 bytes of JSON, under PostgreSQL's 8000-byte payload).
pub const CONFIGS_PER_NOTIFY: usize = 170;

/// Events queued per stream before the sender gives up on it.
const LINK_QUEUE: usize = 64;

impl AgentLinks {
    /// A registry over `store`.
    pub fn new(store: Store, settings: LinkSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                settings,
                replica: Uuid::new_v4(),
                local: Mutex::new(HashMap::new()),
                revoked: Mutex::new(std::collections::HashSet::new()),
                next_generation: std::sync::atomic::AtomicU64::new(1),
                listening: watch::channel(false).0,
            }),
        }
    }

    /// This replica's id (in relayed events, and its poller's lease owner
    /// `gateway-{id}`).
    pub fn replica(&self) -> Uuid {
        self.inner.replica
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Link>> {
        self.inner
            .local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers `agent`'s new stream (replacing an older one); returns its
    /// generation (for [`AgentLinks::detach`]) and its events.
    pub fn attach(&self, agent: Uuid) -> (u64, mpsc::Receiver<LinkEvent>) {
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        let generation = self
            .inner
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.local().insert(agent, Link { generation, tx });
        (generation, rx)
    }

    /// Unregisters the stream of `generation` (a newer one stays).
    pub fn detach(&self, agent: Uuid, generation: u64) {
        let mut local = self.local();
        if local
            .get(&agent)
            .is_some_and(|l| l.generation == generation)
        {
            local.remove(&agent);
        }
    }

    /// Ends every stream of this replica (shutdown): each agent sees its
    /// stream end and reconnects, to another replica if there is one.
    pub fn close_all(&self) {
        self.local().clear();
    }

    /// Whether `agent` was revoked while this replica ran.
    pub fn is_revoked(&self, agent: Uuid) -> bool {
        self.inner
            .revoked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&agent)
    }

    fn mark_revoked(&self, agent: Uuid) {
        self.inner
            .revoked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(agent);
        if let Some(tx) = self.sender(agent) {
            let _ = tx.try_send(LinkEvent::Revoked);
        }
    }

    /// Whether this replica holds a control stream of `agent`.
    pub fn is_connected_here(&self, agent: Uuid) -> bool {
        self.local().contains_key(&agent)
    }

    fn sender(&self, agent: Uuid) -> Option<mpsc::Sender<LinkEvent>> {
        self.local().get(&agent).map(|l| l.tx.clone())
    }

    /// Claims a pending command (`pending -> sent`) and hands it to the
    /// local stream; `false` when there is no local stream or it was not
    /// pending any more.
    async fn claim_and_send(&self, tenant: TenantId, command: Uuid) -> Result<bool, StoreError> {
        let scoped = self
            .inner
            .store
            .scoped(TenantScope::for_system_task(tenant));
        let stored = scoped.agent_command(command).await?;
        let Some(tx) = self.sender(stored.agent_id) else {
            return Ok(false);
        };
        if !scoped
            .set_agent_command_status(command, CommandStatus::Sent, None, None)
            .await?
        {
            return Ok(false);
        }
        let sent = AgentCommand {
            status: CommandStatus::Sent,
            ..stored
        };
        if tx.try_send(LinkEvent::Command(sent)).is_err() {
            scoped
                .set_agent_command_status(
                    command,
                    CommandStatus::Failed,
                    Some("the agent's control stream closed or is congested"),
                    None,
                )
                .await?;
        }
        Ok(true)
    }

    /// Delivers a freshly stored (`pending`) command to whichever replica
    /// holds the agent's stream, and returns its status then: `sent` (or
    /// later), or `offline` when no replica claimed it in time.
    pub async fn deliver(
        &self,
        tenant: TenantId,
        command: &AgentCommand,
    ) -> Result<CommandStatus, StoreError> {
        let scoped = self
            .inner
            .store
            .scoped(TenantScope::for_system_task(tenant));
        if self.claim_and_send(tenant, command.id).await? {
            return Ok(scoped.agent_command(command.id).await?.status);
        }
        if self.inner.store.backend() != Backend::Sqlite && *self.inner.listening.borrow() {
            self.notify(&Relayed::Command {
                replica: self.inner.replica,
                tenant,
                agent: command.agent_id,
                command: command.id,
            })
            .await;
            let deadline = tokio::time::Instant::now() + self.inner.settings.offline_after;
            while tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let status = scoped.agent_command(command.id).await?.status;
                if status != CommandStatus::Pending {
                    return Ok(status);
                }
            }
        }
        scoped
            .set_agent_command_status(
                command.id,
                CommandStatus::Offline,
                Some("the agent has no open control stream"),
                None,
            )
            .await?;
        Ok(scoped.agent_command(command.id).await?.status)
    }

    /// The agent's checks changed: its stream (on any replica) pushes the
    /// new config.
    pub async fn config_changed(&self, tenant: TenantId, agent: Uuid) {
        if let Some(tx) = self.sender(agent) {
            let _ = tx.try_send(LinkEvent::ConfigChanged);
        }
        self.notify(&Relayed::Config {
            replica: self.inner.replica,
            tenant,
            agent,
        })
        .await;
    }

    /// Many agents' checks changed at once: each of their streams (on any
    /// replica) pushes its new config. Other replicas are told in
    /// notifications of [`CONFIGS_PER_NOTIFY`] agents (PostgreSQL caps a
    /// payload at 8000 bytes).
    pub async fn configs_changed(&self, tenant: TenantId, agents: &[Uuid]) {
        {
            let local = self.local();
            for agent in agents {
                if let Some(link) = local.get(agent) {
                    let _ = link.tx.try_send(LinkEvent::ConfigChanged);
                }
            }
        }
        if self.inner.store.backend() == Backend::Sqlite {
            return;
        }
        for chunk in agents.chunks(CONFIGS_PER_NOTIFY) {
            self.notify(&Relayed::Configs {
                replica: self.inner.replica,
                tenant,
                agents: chunk.to_vec(),
            })
            .await;
        }
    }

    /// The agent was revoked: its stream (on any replica) is closed.
    pub async fn revoked(&self, tenant: TenantId, agent: Uuid) {
        self.mark_revoked(agent);
        self.notify(&Relayed::Revoked {
            replica: self.inner.replica,
            tenant,
            agent,
        })
        .await;
    }

    async fn notify(&self, event: &Relayed) {
        let Ok(payload) = serde_json::to_string(event) else {
            return;
        };
        if let Err(e) = self.inner.store.notify(LINK_CHANNEL, &payload).await {
            tracing::warn!(error = %e, "relaying an agent link event failed");
        }
    }

    /// Resolves once this replica's relay listens (PostgreSQL only).
    pub async fn relay_listening(&self) {
        let mut listening = self.inner.listening.subscribe();
        let _ = listening.wait_for(|l| *l).await;
    }

    /// On PostgreSQL: applies other replicas' link events to this replica's
    /// streams until `stop` flips; reconnects on error. Returns at once on
    /// SQLite.
    pub fn spawn_relay(&self, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let links = self.clone();
        tokio::spawn(async move {
            loop {
                let mut listener = match links.inner.store.listen(LINK_CHANNEL).await {
                    Ok(Some(listener)) => listener,
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "listening for agent link events failed");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            _ = stop.changed() => return,
                        }
                    }
                };
                links.inner.listening.send_replace(true);
                let stopped = loop {
                    tokio::select! {
                        _ = stop.changed() => break true,
                        received = listener.recv() => match received {
                            Ok(n) => links.apply(n.payload()).await,
                            Err(e) => {
                                tracing::warn!(error = %e, "agent link listener failed; reconnecting");
                                break false;
                            }
                        },
                    }
                };
                links.inner.listening.send_replace(false);
                if stopped {
                    return;
                }
            }
        })
    }

    async fn apply(&self, payload: &str) {
        let event = match serde_json::from_str::<Relayed>(payload) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable agent link event");
                return;
            }
        };
        match event {
            Relayed::Command {
                replica,
                tenant,
                agent,
                command,
            } if replica != self.inner.replica && self.is_connected_here(agent) => {
                if let Err(e) = self.claim_and_send(tenant, command).await {
                    tracing::warn!(error = %e, %command, "delivering a relayed command failed");
                }
            }
            Relayed::Config { replica, agent, .. } if replica != self.inner.replica => {
                if let Some(tx) = self.sender(agent) {
                    let _ = tx.try_send(LinkEvent::ConfigChanged);
                }
            }
            Relayed::Configs {
                replica, agents, ..
            } if replica != self.inner.replica => {
                let local = self.local();
                for agent in agents {
                    if let Some(link) = local.get(&agent) {
                        let _ = link.tx.try_send(LinkEvent::ConfigChanged);
                    }
                }
            }
            Relayed::Revoked { replica, agent, .. } if replica != self.inner.replica => {
                self.mark_revoked(agent);
            }
            _ => {}
        }
    }
}
