//! Write-behind of config acknowledgements: what version each agent runs.
//!
//! A change to every agent of a tenant brings one `ConfigAck` per agent
//! within a second or two; stored one upsert each, they queue behind each
//! other in the pool (BENCHMARKS.md, issue 18). An acknowledgement changes
//! no status and raises no alert (it is what the API shows as the agent's
//! `config_version`), so the replica keeps the newest one per agent in
//! memory and a flusher stores them every
//! [`crate::GatewaySettings::status_flush_every`] (200 ms by default) with
//! one statement per 200 agents ([`serviceradar_store::Store::record_config_acks`]).
//!
//! Nothing is dropped: a failed flush puts its batch back (newer
//! acknowledgements that arrived meanwhile win), the store never replaces a
//! newer acknowledgement with an older one, and [`AckWriter::close`] (the
//! gateway stopping) writes what is buffered. A replica that dies without
//! stopping loses at most one interval's acknowledgements; their agents
//! acknowledge again when their stream reopens (every stream is sent its
//! config when it opens).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serviceradar_domain::TenantId;
use serviceradar_store::{ConfigAck, Store, StoreError, now_ms};
use uuid::Uuid;

use crate::write_behind::{Buffer, WriteBehind};

struct Inner {
    store: Store,
    pending: Mutex<HashMap<(TenantId, Uuid), ConfigAck>>,
}

impl Inner {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<(TenantId, Uuid), ConfigAck>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Buffers `ack` unless a newer one of the agent is buffered.
    fn keep(&self, ack: ConfigAck) {
        let mut pending = self.pending();
        match pending.get(&(ack.tenant_id, ack.agent_id)) {
            Some(held) if held.acked_at > ack.acked_at => {}
            _ => {
                pending.insert((ack.tenant_id, ack.agent_id), ack);
            }
        }
        metrics::gauge!("serviceradar_gateway_config_acks_pending").set(pending.len() as f64);
    }

    async fn write(&self) -> Result<usize, StoreError> {
        let batch: Vec<ConfigAck> = {
            let mut pending = self.pending();
            let taken = std::mem::take(&mut *pending);
            metrics::gauge!("serviceradar_gateway_config_acks_pending").set(0.0);
            taken.into_values().collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        match self.store.record_config_acks(&batch).await {
            Ok(()) => {
                metrics::counter!("serviceradar_gateway_config_acks_flushed_total")
                    .increment(batch.len() as u64);
                tracing::debug!(acks = batch.len(), "config acknowledgements flushed");
                Ok(batch.len())
            }
            Err(e) => {
                metrics::counter!("serviceradar_gateway_config_ack_flush_failures_total")
                    .increment(1);
                for ack in batch {
                    self.keep(ack);
                }
                Err(e)
            }
        }
    }
}

impl Buffer for Inner {
    type Event = std::convert::Infallible;

    async fn flush(&self) -> usize {
        match self.write().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "flushing config acknowledgements failed; kept for the next flush");
                0
            }
        }
    }
}

/// The replica's write-behind buffer of config acknowledgements. Cheap to
/// clone.
#[derive(Clone)]
pub struct AckWriter {
    inner: Arc<WriteBehind<Inner>>,
}

impl std::fmt::Debug for AckWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckWriter").finish_non_exhaustive()
    }
}

impl AckWriter {
    /// A writer flushing every `every` on a task of the current runtime,
    /// until [`AckWriter::close`] or the last clone is dropped.
    pub fn start(store: Store, every: Duration) -> Self {
        let inner = Inner {
            store,
            pending: Mutex::new(HashMap::new()),
        };
        Self {
            inner: WriteBehind::start(inner, every, None),
        }
    }

    /// The agent acknowledged running `version` (now).
    pub fn record(&self, tenant_id: TenantId, agent_id: Uuid, version: String) {
        self.inner.keep(ConfigAck {
            tenant_id,
            agent_id,
            version,
            acked_at: now_ms(),
        });
    }

    /// Writes what is buffered now; returns how many acknowledgements it
    /// held (0 when the write failed and they were put back).
    pub async fn flush(&self) -> usize {
        self.inner.flush().await
    }

    /// Stops the flusher and writes what is buffered.
    pub async fn close(&self) {
        let n = self.inner.close().await;
        tracing::info!(acks = n, "config acknowledgements flushed on shutdown");
    }
}
