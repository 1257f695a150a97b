//! Write-behind of agent status: what agents report when nothing changed is
//! coalesced per replica and written in batches; every change is written at
//! once, in the agent's call, in order.
//!
//! One transaction per `PushStatus` caps a replica at about 1,000-2,000
//! pushes a second (BENCHMARKS.md). Most pushes change nothing: the site is
//! still `active`, the leaf still linked, each check still `ok`; only
//! `last_seen_at` and the checks' latest observations move. So the replica
//! remembers, per agent, the state it last *wrote* (`Known`) and:
//!
//! * a push that matches it is **steady**: its contact and check results go
//!   into a bounded in-memory buffer (newest contact and newest result per
//!   check kept) and the call returns; a flusher writes the buffer every
//!   [`crate::GatewaySettings::status_flush_every`] with a few batched
//!   statements ([`serviceradar_store::contacts`]);
//! * anything else is a **change** (a leaf verdict or a check status that
//!   differs, a check not seen before, a site not known `active`, an agent
//!   this replica has not written for [`KNOWN_TTL`] (plus jitter)): the
//!   agent's buffered
//!   entry and the push are written through the state path at once
//!   (`Health::agent_seen`, `Health::leaf_link`, which raise and resolve
//!   alerts and publish events), before the call answers, so changes are
//!   stored and alerted promptly and in the order the agent sent them;
//! * a status changed by anyone else (the offline sweeper, the hub's leaf
//!   advisories, another replica) arrives as a health event and makes this
//!   replica forget what it knew of that site, so the next push is written
//!   through; a flush that finds a site no longer `active` also takes the
//!   state path for it. What the replica knows of an agent starts from the
//!   store at its first contact (its stored check statuses and leaf
//!   status), so an agent reconnecting after a restart is steady at once;
//!   [`KNOWN_TTL`] bounds what a missed event could hide;
//! * nothing is dropped: when the buffer holds [`MAX_PENDING_AGENTS`] agents
//!   a push is written through; a failed flush puts its batch back; a
//!   failed write-through puts the agent's buffered entry back and fails the
//!   call (the agent keeps its results and pushes them again);
//! * [`StatusWriter::close`] (the gateway stopping) writes what is buffered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serviceradar_domain::{AgentIdentity, EdgeSiteId, TenantScope};
use serviceradar_health::{Health, HealthEvent};
use serviceradar_store::{
    AgentCheck, CheckUpdate, Contact, MAX_CHECKS_PER_AGENT, Store, StoreError, now_ms,
};
use tokio::sync::broadcast;
use tracing::Instrument;
use uuid::Uuid;

use crate::write_behind::{Buffer, WriteBehind};

/// Agents whose steady reports may wait in the buffer at once; beyond it a
/// push is written through.
pub const MAX_PENDING_AGENTS: usize = 100_000;
/// How long what this replica wrote for an agent is trusted without a
/// write-through (a backstop for a missed health event), plus up to as much
/// again of jitter so agents do not expire together.
pub const KNOWN_TTL: Duration = Duration::from_secs(600);

/// A write that failed: what was being done, and why.
#[derive(Debug)]
pub(crate) struct WriteError {
    /// What was being written (for the log line).
    pub what: &'static str,
    /// The store's error.
    pub source: StoreError,
}

fn failed(what: &'static str) -> impl FnOnce(StoreError) -> WriteError {
    move |source| WriteError { what, source }
}

/// The state path: contact, then the leaf verdict, then the check results,
/// each through the rules that move statuses and raise or resolve alerts.
/// One push at a time, as without write-behind.
pub(crate) async fn write_through(
    store: &Store,
    health: &Health,
    id: &AgentIdentity,
    leaf: Option<bool>,
    checks: &[AgentCheck],
) -> Result<(), WriteError> {
    health
        .agent_seen(id)
        .await
        .map_err(failed("recording agent contact"))?;
    if let Some(up) = leaf {
        health
            .leaf_link(id, up)
            .await
            .map_err(failed("recording the leaf link"))?;
    }
    store
        .scoped(TenantScope::for_system_task(id.tenant_id))
        .record_agent_checks(id.agent_id, checks)
        .await
        .map_err(failed("recording check results"))
}

/// What this replica last wrote for an agent.
struct Known {
    site: EdgeSiteId,
    leaf_up: Option<bool>,
    checks: HashMap<String, String>,
    /// Trusted until then.
    until: Instant,
}

/// `KNOWN_TTL` plus a jitter drawn from the agent id (spread, stable).
fn trusted_until(agent: Uuid) -> Instant {
    let jitter = (agent.as_u128() % 1_000) as f64 / 1_000.0;
    Instant::now() + KNOWN_TTL + KNOWN_TTL.mul_f64(jitter)
}

/// An agent's steady reports waiting for the flusher.
struct Pending {
    id: AgentIdentity,
    seen_at: i64,
    checks: HashMap<String, AgentCheck>,
}

impl Pending {
    fn merge(&mut self, seen_at: i64, checks: impl IntoIterator<Item = AgentCheck>) {
        self.seen_at = self.seen_at.max(seen_at);
        for c in checks {
            match self.checks.get(&c.name) {
                Some(held) if held.observed_at > c.observed_at => {}
                _ => {
                    self.checks.insert(c.name.clone(), c);
                }
            }
        }
    }
}

#[derive(Default)]
struct State {
    known: HashMap<Uuid, Known>,
    by_site: HashMap<EdgeSiteId, Uuid>,
    pending: HashMap<Uuid, Pending>,
}

impl State {
    /// Whether a push (leaf verdict, check results) changes nothing this
    /// replica wrote for the agent.
    fn steady(&self, id: &AgentIdentity, leaf: Option<bool>, checks: &[AgentCheck]) -> bool {
        let Some(known) = self.known.get(&id.agent_id) else {
            return false;
        };
        known.site == id.site_id
            && Instant::now() < known.until
            && leaf.is_none_or(|up| known.leaf_up == Some(up))
            && checks
                .iter()
                .all(|c| known.checks.get(&c.name) == Some(&c.status))
            && (self.pending.len() < MAX_PENDING_AGENTS || self.pending.contains_key(&id.agent_id))
    }

    fn enqueue(&mut self, id: &AgentIdentity, seen_at: i64, checks: Vec<AgentCheck>) {
        self.pending
            .entry(id.agent_id)
            .or_insert_with(|| Pending {
                id: id.clone(),
                seen_at,
                checks: HashMap::new(),
            })
            .merge(seen_at, checks);
    }

    /// Puts a batch back (newer entries that arrived meanwhile win).
    fn requeue(&mut self, batch: Vec<Pending>) {
        for p in batch {
            let Pending {
                id,
                seen_at,
                checks,
            } = p;
            self.enqueue(&id, seen_at, checks.into_values().collect());
        }
    }

    /// After a successful write-through of `id`.
    fn wrote(&mut self, id: &AgentIdentity, leaf: Option<bool>, checks: &[AgentCheck]) {
        let known = self.known.entry(id.agent_id).or_insert_with(|| Known {
            site: id.site_id,
            leaf_up: None,
            checks: HashMap::new(),
            until: trusted_until(id.agent_id),
        });
        known.site = id.site_id;
        known.until = trusted_until(id.agent_id);
        if leaf.is_some() {
            known.leaf_up = leaf;
        }
        // Newest result per name decides the status now stored.
        let mut newest: HashMap<&str, &AgentCheck> = HashMap::new();
        for c in checks {
            match newest.get(c.name.as_str()) {
                Some(n) if n.observed_at > c.observed_at => {}
                _ => {
                    newest.insert(&c.name, c);
                }
            }
        }
        for (name, c) in newest {
            if known.checks.len() < MAX_CHECKS_PER_AGENT || known.checks.contains_key(name) {
                known.checks.insert(name.to_owned(), c.status.clone());
            }
        }
        self.by_site.insert(id.site_id, id.agent_id);
    }

    fn forget_agent(&mut self, agent: Uuid) {
        if let Some(k) = self.known.remove(&agent) {
            self.by_site.remove(&k.site);
        }
    }

    fn forget_site(&mut self, site: EdgeSiteId) {
        if let Some(agent) = self.by_site.remove(&site) {
            self.known.remove(&agent);
        }
    }
}

struct Inner {
    store: Store,
    health: Health,
    state: Mutex<State>,
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The agent's stored leaf status (`Some(up)` once linked or unlinked) and
/// check results; `None` when they cannot be read (nothing is assumed then).
async fn stored_state(
    store: &Store,
    id: &AgentIdentity,
) -> Option<(Option<bool>, Vec<AgentCheck>)> {
    use serviceradar_domain::state::LeafStatus;
    let scoped = store.scoped(TenantScope::for_system_task(id.tenant_id));
    let leaf = scoped.leaf_for_site(id.site_id).await.ok()?;
    let checks = scoped.agent_checks(id.agent_id).await.ok()?;
    let leaf_up = match leaf.status {
        LeafStatus::Connected => Some(true),
        LeafStatus::Disconnected => Some(false),
        _ => None,
    };
    Some((leaf_up, checks))
}

/// The replica's write-behind buffer of agent status. Cheap to clone.
#[derive(Clone)]
pub struct StatusWriter {
    inner: Arc<WriteBehind<Inner>>,
}

impl std::fmt::Debug for StatusWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWriter").finish_non_exhaustive()
    }
}

impl StatusWriter {
    /// A writer flushing every `every` on a task of the current runtime,
    /// until [`StatusWriter::close`] or the last clone is dropped.
    pub fn start(store: Store, health: Health, every: Duration) -> Self {
        let events = health.subscribe();
        let inner = Inner {
            store,
            health,
            state: Mutex::new(State::default()),
        };
        Self {
            inner: WriteBehind::start(inner, every, Some(events)),
        }
    }

    /// A push: `leaf` is its newest leaf verdict, `checks` its results.
    pub(crate) async fn record(
        &self,
        id: &AgentIdentity,
        leaf: Option<bool>,
        checks: Vec<AgentCheck>,
    ) -> Result<(), WriteError> {
        let now = now_ms();
        let held = {
            let mut state = self.inner.state();
            if state.steady(id, leaf, &checks) {
                state.enqueue(id, now, checks);
                metrics::gauge!("serviceradar_gateway_status_pending")
                    .set(state.pending.len() as f64);
                metrics::counter!("serviceradar_gateway_status_coalesced_total").increment(1);
                return Ok(());
            }
            state.pending.remove(&id.agent_id)
        };
        let first = !self.inner.state().known.contains_key(&id.agent_id);
        metrics::counter!("serviceradar_gateway_status_written_through_total").increment(1);
        // The agent's buffered (older) results go first; the store keeps
        // the newest per check.
        let mut all: Vec<AgentCheck> = held
            .as_ref()
            .map(|p| p.checks.values().cloned().collect())
            .unwrap_or_default();
        all.extend(checks);
        let written = write_through(&self.inner.store, &self.inner.health, id, leaf, &all).await;
        // First contact: start from what the store holds for the agent.
        let stored = match (&written, first) {
            (Ok(()), true) => stored_state(&self.inner.store, id).await,
            _ => None,
        };
        let mut state = self.inner.state();
        if let Some((leaf_up, checks)) = stored {
            state.forget_agent(id.agent_id);
            state.wrote(id, leaf_up, &checks);
        }
        match &written {
            Ok(()) => state.wrote(id, leaf, &all),
            Err(e) => {
                state.forget_agent(id.agent_id);
                // Reports acknowledged earlier are not lost with this one.
                if let Some(p) = held
                    && !matches!(e.source, StoreError::NotFound)
                {
                    state.requeue(vec![p]);
                }
            }
        }
        written
    }

    /// Contact without results (any other call of the agent).
    pub(crate) async fn contact(&self, id: &AgentIdentity) -> Result<(), WriteError> {
        self.record(id, None, Vec::new()).await
    }

    /// Writes what is buffered now; returns how many agents it held.
    pub async fn flush(&self) -> usize {
        self.inner.flush().await
    }

    /// Stops the flusher and writes what is buffered.
    pub async fn close(&self) {
        let n = self.inner.close().await;
        tracing::info!(agents = n, "status buffer flushed on shutdown");
    }
}

impl Buffer for Inner {
    type Event = HealthEvent;

    fn flush(&self) -> impl std::future::Future<Output = usize> + Send {
        flush(self)
    }

    /// A status changed by anyone else: forget what is known of its site,
    /// so the agent's next push is written through.
    fn on_event(&self, event: Result<HealthEvent, broadcast::error::RecvError>) -> bool {
        let mut state = self.state();
        match event {
            Ok(HealthEvent::Site { site_id, .. } | HealthEvent::Leaf { site_id, .. }) => {
                state.forget_site(site_id);
            }
            Ok(HealthEvent::AlertRaised(a) | HealthEvent::AlertResolved(a)) => {
                state.forget_site(a.edge_site_id);
            }
            // Missed events: trust nothing known.
            Err(broadcast::error::RecvError::Lagged(_)) => {
                state.known.clear();
                state.by_site.clear();
            }
            Err(broadcast::error::RecvError::Closed) => return false,
        }
        true
    }
}

async fn flush(inner: &Inner) -> usize {
    let batch: Vec<Pending> = {
        let mut state = inner.state();
        let pending = std::mem::take(&mut state.pending);
        metrics::gauge!("serviceradar_gateway_status_pending").set(0.0);
        pending.into_values().collect()
    };
    if batch.is_empty() {
        return 0;
    }
    let n = batch.len();
    let span = tracing::debug_span!("status_flush", agents = n);
    async {
        let started = Instant::now();
        let contacts: Vec<Contact> = batch
            .iter()
            .map(|p| Contact {
                tenant_id: p.id.tenant_id,
                agent_id: p.id.agent_id,
                site_id: p.id.site_id,
                seen_at: p.seen_at,
            })
            .collect();
        let not_active = match inner.store.record_contacts(&contacts).await {
            Ok(sites) => sites,
            Err(e) => {
                tracing::warn!(error = %e, agents = n, "flushing agent contact failed; kept for the next flush");
                metrics::counter!("serviceradar_gateway_status_flush_failures_total").increment(1);
                inner.state().requeue(batch);
                return;
            }
        };
        let updates: Vec<CheckUpdate> = batch
            .iter()
            .flat_map(|p| {
                p.checks.values().map(|c| CheckUpdate {
                    tenant_id: p.id.tenant_id,
                    agent_id: p.id.agent_id,
                    check: c.clone(),
                })
            })
            .collect();
        if let Err(e) = inner.store.update_check_results(&updates).await {
            tracing::warn!(error = %e, agents = n, "flushing check results failed; kept for the next flush");
            metrics::counter!("serviceradar_gateway_status_flush_failures_total").increment(1);
            inner.state().requeue(batch);
            return;
        }
        // A site that stopped being active (the sweeper, meanwhile) moves
        // back through the state path.
        for c in not_active {
            let Some(p) = batch.iter().find(|p| p.id.agent_id == c.agent_id) else {
                continue;
            };
            let id = &p.id;
            inner.state().forget_agent(id.agent_id);
            let span = tracing::info_span!("status_flush_site", tenant_id = %id.tenant_id,
                site_id = %id.site_id, agent_id = %id.agent_id);
            match inner.health.agent_seen(id).instrument(span).await {
                Ok(()) | Err(StoreError::NotFound) => {}
                Err(e) => {
                    tracing::warn!(error = %e, site_id = %id.site_id, "recording agent contact failed");
                }
            }
        }
        metrics::counter!("serviceradar_gateway_status_flushed_total").increment(n as u64);
        tracing::debug!(agents = n, checks = updates.len(), ms = started.elapsed().as_millis() as u64, "status flushed");
    }
    .instrument(span)
    .await;
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, status: &str, at: i64) -> AgentCheck {
        AgentCheck {
            name: name.into(),
            kind: "tcp".into(),
            target: "t".into(),
            status: status.into(),
            message: String::new(),
            response_time_us: 1,
            observed_at: at,
        }
    }

    fn identity() -> AgentIdentity {
        AgentIdentity {
            tenant_id: serviceradar_domain::TenantId::new(),
            site_id: EdgeSiteId::new(),
            agent_id: Uuid::now_v7(),
            common_name: "agent.s.t.serviceradar".into(),
        }
    }

    #[test]
    fn only_a_push_that_changes_nothing_written_is_steady() {
        let id = identity();
        let mut state = State::default();
        assert!(!state.steady(&id, None, &[]), "unknown agent");
        state.wrote(&id, Some(true), &[check("a", "ok", 1)]);
        assert!(state.steady(&id, None, &[]));
        assert!(state.steady(&id, Some(true), &[check("a", "ok", 2)]));
        assert!(!state.steady(&id, Some(false), &[]), "leaf went down");
        assert!(
            !state.steady(&id, None, &[check("a", "fail", 2)]),
            "check failed"
        );
        assert!(
            !state.steady(&id, None, &[check("b", "ok", 2)]),
            "new check"
        );
        assert!(
            !state.steady(&id, None, &[check("a", "fail", 2), check("a", "ok", 3)]),
            "a failure inside one push is a change too"
        );
        state.forget_site(id.site_id);
        assert!(!state.steady(&id, None, &[]), "a health event forgets");
    }

    #[test]
    fn a_buffer_keeps_the_newest_contact_and_result_per_check() {
        let id = identity();
        let mut state = State::default();
        state.enqueue(&id, 10, vec![check("a", "ok", 5)]);
        state.enqueue(&id, 8, vec![check("a", "ok", 3), check("b", "ok", 4)]);
        let p = &state.pending[&id.agent_id];
        assert_eq!(p.seen_at, 10);
        assert_eq!(p.checks["a"].observed_at, 5);
        assert_eq!(p.checks.len(), 2);
    }
}
