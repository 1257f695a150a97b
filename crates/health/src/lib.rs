//! Site and leaf health from agent activity, the offline sweeper and the
//! disconnect alert rule.
//!
//! * Agent contact (any gateway call) stamps `last_seen_at` and moves the
//!   site to `active`; the leaf checker's verdict moves the leaf
//!   `connected`/`disconnected`. Recovery resolves the matching alerts.
//! * [`Health::sweep`] (run every `health_sweep_interval` by the server)
//!   moves sites without contact for
//!   `agent_offline_after` to `offline` and raises alerts for sites offline,
//!   or leaves disconnected, longer than `alert_after`. Both steps are
//!   conditional statements (and a partial unique index on open alerts), so
//!   every replica can run the sweeper: each change happens once.
//! * Every status change is published as a [`HealthEvent`] on an in-process
//!   `tokio::sync::broadcast` channel ([`Health::subscribe`]) for live UI
//!   updates. The replica that made a change (the conditional writes decide
//!   which one) also sends it with PostgreSQL `NOTIFY` on
//!   [`HEALTH_CHANNEL`]; every other replica's relay ([`Health::spawn_relay`])
//!   forwards it to its own subscribers, so a UI on any replica sees every
//!   change. On SQLite one process owns the database and there is no relay.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serviceradar_domain::state::{LeafStatus, SiteStatus};
use serviceradar_domain::{EdgeSiteId, TenantId, TenantScope};
use serviceradar_store::health::{
    ALERT_AGENT_UNREACHABLE, ALERT_LEAF_DISCONNECTED, ALERT_SITE_OFFLINE, Alert,
};
use serviceradar_store::{Store, StoreError, now_ms};
use tokio::sync::{broadcast, watch};

use serviceradar_domain::AgentIdentity;

pub mod fleet_metrics;
pub mod webhooks;

/// Health timing: when a quiet site is offline, and when an alert is raised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    /// A site without agent contact for this long becomes `offline`.
    pub agent_offline_after: Duration,
    /// A site offline (or a leaf disconnected) this long raises an alert.
    pub alert_after: Duration,
    /// How often the health sweeper runs.
    pub sweep_interval: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            agent_offline_after: Duration::from_secs(300),
            alert_after: Duration::from_secs(600),
            sweep_interval: Duration::from_secs(15),
        }
    }
}

/// A published status change.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HealthEvent {
    /// A site's status changed.
    Site {
        /// Tenant.
        tenant_id: TenantId,
        /// Site.
        site_id: EdgeSiteId,
        /// New status.
        status: SiteStatus,
    },
    /// A leaf's link status changed.
    Leaf {
        /// Tenant.
        tenant_id: TenantId,
        /// Site of the leaf.
        site_id: EdgeSiteId,
        /// New status.
        status: LeafStatus,
    },
    /// An alert was raised.
    AlertRaised(Alert),
    /// An alert was resolved.
    AlertResolved(Alert),
}

/// Health bookkeeping shared by the gateway and the sweeper.
#[derive(Clone)]
pub struct Health {
    store: Store,
    settings: Arc<HealthSettings>,
    events: broadcast::Sender<HealthEvent>,
    /// Whether the relay's `LISTEN` is in force ([`Health::relay_listening`]).
    listening: Arc<watch::Sender<bool>>,
    /// Tags this replica's notifications so it ignores its own.
    replica: uuid::Uuid,
}

/// PostgreSQL notification channel carrying health events between replicas.
pub const HEALTH_CHANNEL: &str = "serviceradar_health";

#[derive(Serialize, serde::Deserialize)]
struct Relayed {
    replica: uuid::Uuid,
    event: HealthEvent,
}

impl Health {
    /// A health service over `store`.
    pub fn new(store: Store, settings: Arc<HealthSettings>) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            store,
            settings,
            events,
            listening: Arc::new(watch::channel(false).0),
            replica: uuid::Uuid::new_v4(),
        }
    }

    /// Live status changes made by this replica and, on PostgreSQL, by every
    /// other replica (relayed by [`Health::spawn_relay`]).
    pub fn subscribe(&self) -> broadcast::Receiver<HealthEvent> {
        self.events.subscribe()
    }

    fn publish(&self, event: HealthEvent) {
        // Other replicas hear it through PostgreSQL NOTIFY (best effort: a
        // missed notification only delays a UI until its next read).
        if let Ok(payload) = serde_json::to_string(&Relayed {
            replica: self.replica,
            event: event.clone(),
        }) {
            let store = self.store.clone();
            tokio::spawn(async move {
                if let Err(e) = store.notify(HEALTH_CHANNEL, &payload).await {
                    tracing::warn!(error = %e, "relaying a health event failed");
                }
            });
        }
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    /// On PostgreSQL: forwards the health events other replicas publish to
    /// this replica's subscribers, until `stop` flips. Reconnects on error.
    pub fn spawn_relay(&self, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let health = self.clone();
        tokio::spawn(async move {
            loop {
                let listener = match health.store.listen(HEALTH_CHANNEL).await {
                    Ok(Some(listener)) => {
                        health.listening.send_replace(true);
                        listener
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "listening for health events failed");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                            _ = stop.changed() => return,
                        }
                    }
                };
                let stopped = health.relay(listener, &mut stop).await;
                health.listening.send_replace(false);
                if stopped {
                    return;
                }
            }
        })
    }

    /// Resolves once this replica's relay listens (PostgreSQL), so every
    /// event another replica publishes from then on reaches its subscribers.
    /// Never resolves on SQLite, which has no relay.
    pub async fn relay_listening(&self) {
        let mut listening = self.listening.subscribe();
        let _ = listening.wait_for(|l| *l).await;
    }

    /// Relays until `stop` (returns true) or a listener error (false).
    async fn relay(
        &self,
        mut listener: serviceradar_store::NotificationListener,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        loop {
            tokio::select! {
                _ = stop.changed() => return true,
                received = listener.recv() => match received {
                    Ok(notification) => {
                        match serde_json::from_str::<Relayed>(notification.payload()) {
                            Ok(relayed) if relayed.replica != self.replica => {
                                let _ = self.events.send(relayed.event);
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "undecodable health event"),
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "health event listener failed; reconnecting");
                        return false;
                    }
                },
            }
        }
    }

    /// Agent contact.
    pub async fn agent_seen(&self, id: &AgentIdentity) -> Result<(), StoreError> {
        let scoped = self
            .store
            .scoped(TenantScope::for_system_task(id.tenant_id));
        if let Some(change) = scoped.agent_seen(id.agent_id, id.site_id).await? {
            tracing::info!(from = %change.from, to = %change.to, "site status changed");
            self.publish(HealthEvent::Site {
                tenant_id: id.tenant_id,
                site_id: id.site_id,
                status: change.to,
            });
        }
        for alert in scoped
            .resolve_alerts(id.site_id, ALERT_SITE_OFFLINE)
            .await?
        {
            self.alert_resolved(alert).await;
        }
        Ok(())
    }

    /// The leaf checker's verdict.
    pub async fn leaf_link(&self, id: &AgentIdentity, up: bool) -> Result<(), StoreError> {
        self.site_leaf_link(id.tenant_id, id.site_id, up).await
    }

    /// Whether a site's leaf is linked to the hub, from any source: the
    /// agent's leaf checker, or the hub's own connect/disconnect advisories.
    pub async fn site_leaf_link(
        &self,
        tenant_id: TenantId,
        site_id: EdgeSiteId,
        up: bool,
    ) -> Result<(), StoreError> {
        let scoped = self.store.scoped(TenantScope::for_system_task(tenant_id));
        if let Some(change) = scoped.set_leaf_link(site_id, up).await? {
            tracing::info!(from = %change.from, to = %change.to, %site_id, "leaf status changed");
            self.publish(HealthEvent::Leaf {
                tenant_id,
                site_id,
                status: change.to,
            });
        }
        if up {
            for alert in scoped
                .resolve_alerts(site_id, ALERT_LEAF_DISCONNECTED)
                .await?
            {
                self.alert_resolved(alert).await;
            }
        }
        Ok(())
    }

    /// The gateway cannot reach the site's agent (gateway-initiated mode):
    /// raises `agent_unreachable` once (the open-alert index keeps one per
    /// site), with webhooks and live events like the sweeper's alerts.
    pub async fn agent_unreachable(
        &self,
        tenant_id: TenantId,
        site_id: EdgeSiteId,
        message: &str,
    ) -> Result<(), StoreError> {
        let scoped = self.store.scoped(TenantScope::for_system_task(tenant_id));
        if let Some(alert) = scoped
            .raise_alert(site_id, ALERT_AGENT_UNREACHABLE, message)
            .await?
        {
            tracing::warn!(%tenant_id, %site_id, alert_id = %alert.id,
                kind = ALERT_AGENT_UNREACHABLE, "alert raised");
            crate::webhooks::notify(&self.store, &alert, crate::webhooks::EVENT_RAISED).await;
            self.publish(HealthEvent::AlertRaised(alert));
        }
        Ok(())
    }

    /// The gateway reaches the site's agent again: resolves its
    /// `agent_unreachable` alert, if one is open.
    pub async fn agent_reachable(
        &self,
        tenant_id: TenantId,
        site_id: EdgeSiteId,
    ) -> Result<(), StoreError> {
        let scoped = self.store.scoped(TenantScope::for_system_task(tenant_id));
        for alert in scoped
            .resolve_alerts(site_id, ALERT_AGENT_UNREACHABLE)
            .await?
        {
            self.alert_resolved(alert).await;
        }
        Ok(())
    }

    async fn alert_resolved(&self, alert: Alert) {
        tracing::info!(alert_id = %alert.id, kind = %alert.kind, "alert resolved");
        crate::webhooks::notify(&self.store, &alert, crate::webhooks::EVENT_RESOLVED).await;
        self.publish(HealthEvent::AlertResolved(alert));
    }

    /// Runs [`Health::sweep`] now and then every `interval` until `stop`
    /// flips (a failed sweep is logged; the next one retries).
    pub async fn sweep_every(self, interval: Duration, stop: watch::Receiver<bool>) {
        serviceradar_runtime::tasks::every(interval, stop, || async {
            if let Err(e) = self.sweep().await {
                tracing::warn!(error = %e, "health sweep failed");
            }
        })
        .await;
    }

    /// One sweep: offline timeouts, the alert rule, then the fleet status
    /// totals' fold ([`Store::fold_status_deltas`]).
    pub async fn sweep(&self) -> Result<(), StoreError> {
        let now = now_ms();
        let offline_after = ms(self.settings.agent_offline_after);
        let alert_after = ms(self.settings.alert_after);
        for (tenant_id, site_id) in self.store.sweep_offline_sites(now - offline_after).await? {
            tracing::info!(%tenant_id, %site_id, "site offline: no agent contact");
            self.publish(HealthEvent::Site {
                tenant_id,
                site_id,
                status: SiteStatus::Offline,
            });
        }
        // A site is offline `offline_after` after its last contact; it alerts
        // once it has been offline for `alert_after`.
        for due in self
            .store
            .due_alerts(now - offline_after - alert_after, now - alert_after)
            .await?
        {
            let message = alert_message(due.kind, now - due.since);
            let scoped = self
                .store
                .scoped(TenantScope::for_system_task(due.tenant_id));
            if let Some(alert) = scoped
                .raise_alert(due.edge_site_id, due.kind, &message)
                .await?
            {
                tracing::warn!(tenant_id = %due.tenant_id, site_id = %due.edge_site_id,
                    alert_id = %alert.id, kind = due.kind, "alert raised");
                crate::webhooks::notify(&self.store, &alert, crate::webhooks::EVENT_RAISED).await;
                self.publish(HealthEvent::AlertRaised(alert));
            }
        }
        // The fleet gauges' totals of sites and leaves per status (kept by
        // triggers, migration 0035): this pass's changes and every other
        // writer's since the last pass are folded in, so the changes not
        // folded yet stay a pass's worth whether or not the gauges run.
        self.store.fold_status_deltas().await?;
        Ok(())
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The text of an alert of `kind` whose condition has held for `held_ms`.
fn alert_message(kind: &str, held_ms: i64) -> String {
    let held = serviceradar_domain::duration::human(held_ms);
    match kind {
        ALERT_SITE_OFFLINE => format!("no agent contact from the site for {held}"),
        _ => format!("the site's NATS leaf has been disconnected from the hub for {held}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_text_never_says_zero_minutes() {
        assert_eq!(
            alert_message(ALERT_LEAF_DISCONNECTED, 50_000),
            "the site's NATS leaf has been disconnected from the hub for 50 s"
        );
        assert_eq!(
            alert_message(ALERT_SITE_OFFLINE, 3 * 60_000 + 20_000),
            "no agent contact from the site for 3 min 20 s"
        );
    }
}
