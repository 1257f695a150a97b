//! Batched config reads for control streams: one change to every agent of a
//! tenant (`POST /api/v1/agent-checks/apply`) wakes every stream this
//! replica holds at once, and each needs its agent's config. Read one by
//! one, that is two statements per agent through the pool (30,000 with the
//! acknowledgements for 10,000 agents, BENCHMARKS.md); here the streams hand
//! their agents to one reader, which reads all that are waiting with two
//! statements per [`serviceradar_store::agent_control::AGENTS_PER_READ`]
//! agents of a tenant ([`serviceradar_store::Scoped::agent_configs`]) and
//! answers each stream with its own config.
//!
//! The reader does not wait to fill a batch: a lone change is read at once
//! (two statements, as before), and what arrives while [`IN_FLIGHT`]
//! batches are being read is taken together by the next one. The same path
//! serves a stream's first config when it opens, so a reconnect storm is
//! batched too.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use serviceradar_domain::{AgentIdentity, TenantId, TenantScope};
use serviceradar_proto::v1::AgentConfig;
use serviceradar_store::{Store, StoreError};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Instrument;
use uuid::Uuid;

use crate::GatewaySettings;
use crate::service::config_of;

/// Batches read at once.
pub const IN_FLIGHT: usize = 4;
/// Most agents taken into one batch.
pub const MAX_BATCH: usize = 5_000;

/// Why a config could not be read (shared by every stream of a batch).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigReadError {
    /// The agent is not (any more) in the store.
    #[error("the agent is not in the store")]
    NotFound,
    /// The store failed.
    #[error("reading agent configs: {0}")]
    Store(Arc<StoreError>),
    /// The reader stopped (the gateway is shutting down).
    #[error("the config reader stopped")]
    Stopped,
}

/// An agent's config and when its checks last changed (Unix ms).
pub type ReadConfig = (AgentConfig, i64);

struct Request {
    id: AgentIdentity,
    reply: oneshot::Sender<Result<ReadConfig, ConfigReadError>>,
}

/// The replica's config reader. Cheap to clone; its task starts at the
/// first read and ends with the last clone.
#[derive(Clone)]
pub struct ConfigReader {
    store: Store,
    settings: Arc<GatewaySettings>,
    tx: Arc<OnceLock<mpsc::UnboundedSender<Request>>>,
}

impl std::fmt::Debug for ConfigReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigReader").finish_non_exhaustive()
    }
}

impl ConfigReader {
    /// A reader over `store`.
    pub fn new(store: Store, settings: Arc<GatewaySettings>) -> Self {
        Self {
            store,
            settings,
            tx: Arc::new(OnceLock::new()),
        }
    }

    /// The config of `id`'s agent, read with whatever other agents' configs
    /// are wanted at the same time.
    pub async fn read(&self, id: &AgentIdentity) -> Result<ReadConfig, ConfigReadError> {
        if !self.settings.batch_config_reads {
            return read_one(&self.store, &self.settings, id).await;
        }
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run(self.store.clone(), self.settings.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        tx.send(Request {
            id: id.clone(),
            reply,
        })
        .map_err(|_| ConfigReadError::Stopped)?;
        answer.await.map_err(|_| ConfigReadError::Stopped)?
    }
}

/// One agent's config on its own (`batch_config_reads: false`).
async fn read_one(
    store: &Store,
    settings: &GatewaySettings,
    id: &AgentIdentity,
) -> Result<ReadConfig, ConfigReadError> {
    let failed = |e: StoreError| match e {
        StoreError::NotFound => ConfigReadError::NotFound,
        e => ConfigReadError::Store(Arc::new(e)),
    };
    let config = crate::service::agent_config(store, settings, id)
        .await
        .map_err(failed)?;
    let changed_at = store
        .scoped(TenantScope::for_system_task(id.tenant_id))
        .agent_config_changed_at(id.agent_id)
        .await
        .map_err(failed)?;
    Ok((config, changed_at))
}

async fn run(
    store: Store,
    settings: Arc<GatewaySettings>,
    mut rx: mpsc::UnboundedReceiver<Request>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Everything that queued while the previous batches were read.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let (store, settings) = (store.clone(), settings.clone());
        let span = tracing::debug_span!("config_read", agents = batch.len());
        tokio::spawn(
            async move {
                read_batch(&store, &settings, batch).await;
                drop(slot);
            }
            .instrument(span),
        );
    }
}

async fn read_batch(store: &Store, settings: &GatewaySettings, batch: Vec<Request>) {
    metrics::histogram!("serviceradar_gateway_config_read_batch").record(batch.len() as f64);
    let mut by_tenant: HashMap<TenantId, Vec<Request>> = HashMap::new();
    for request in batch {
        by_tenant
            .entry(request.id.tenant_id)
            .or_default()
            .push(request);
    }
    for (tenant, requests) in by_tenant {
        let agents: Vec<Uuid> = requests.iter().map(|r| r.id.agent_id).collect();
        let read = store
            .scoped(TenantScope::for_system_task(tenant))
            .agent_configs(&agents)
            .await;
        match read {
            Ok(found) => {
                for request in requests {
                    // (An agent may be asked for twice in one batch.)
                    let answer = match found.get(&request.id.agent_id) {
                        Some(rows) => {
                            Ok((config_of(settings, rows.checks.clone()), rows.changed_at))
                        }
                        None => Err(ConfigReadError::NotFound),
                    };
                    let _ = request.reply.send(answer);
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for request in requests {
                    let _ = request.reply.send(Err(ConfigReadError::Store(e.clone())));
                }
            }
        }
    }
}
