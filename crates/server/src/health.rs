//! Site and leaf health from agent activity, the offline sweeper and the
//! disconnect alert rule.
//!
//! * Agent contact (any gateway call) stamps `last_seen_at` and moves the
//!   site to `active`; the leaf checker's verdict moves the leaf
//!   `connected`/`disconnected`. Recovery resolves the matching alerts.
//! * [`Health::sweep`] (run every `health_sweep_interval` by
//!   [`Health::spawn_sweeper`]) moves sites without contact for
//!   `agent_offline_after` to `offline` and raises alerts for sites offline,
//!   or leaves disconnected, longer than `alert_after`. Both steps are
//!   conditional statements (and a partial unique index on open alerts), so
//!   every replica can run the sweeper: each change happens once.
//! * Every status change is published as a [`HealthEvent`] on an in-process
//!   `tokio::sync::broadcast` channel ([`Health::subscribe`]) for live UI
//!   updates. Across replicas, each replica publishes only the changes *it*
//!   made (the conditional writes decide which one); a UI connected to
//!   another replica sees them through the database on its next read. A NATS
//!   subject (`sr.health.{tenant}`) can carry the same events across replicas
//!   once the control plane holds a NATS connection (not wired yet).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serviceradar_domain::state::{LeafStatus, SiteStatus};
use serviceradar_domain::{EdgeSiteId, TenantId, TenantScope};
use serviceradar_store::health::{ALERT_LEAF_DISCONNECTED, ALERT_SITE_OFFLINE, Alert};
use serviceradar_store::{Store, StoreError, now_ms};
use tokio::sync::{broadcast, watch};

use crate::app::Settings;
use crate::gateway::identity::AgentIdentity;

/// A published status change.
#[derive(Debug, Clone, Serialize)]
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
    settings: Arc<Settings>,
    events: broadcast::Sender<HealthEvent>,
}

impl Health {
    /// A health service over `store`.
    pub fn new(store: Store, settings: Arc<Settings>) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            store,
            settings,
            events,
        }
    }

    /// Live status changes made by this process.
    pub fn subscribe(&self) -> broadcast::Receiver<HealthEvent> {
        self.events.subscribe()
    }

    fn publish(&self, event: HealthEvent) {
        // No subscriber is fine.
        let _ = self.events.send(event);
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
        let scoped = self
            .store
            .scoped(TenantScope::for_system_task(id.tenant_id));
        if let Some(change) = scoped.set_leaf_link(id.site_id, up).await? {
            tracing::info!(from = %change.from, to = %change.to, "leaf status changed");
            self.publish(HealthEvent::Leaf {
                tenant_id: id.tenant_id,
                site_id: id.site_id,
                status: change.to,
            });
        }
        if up {
            for alert in scoped
                .resolve_alerts(id.site_id, ALERT_LEAF_DISCONNECTED)
                .await?
            {
                self.alert_resolved(alert).await;
            }
        }
        Ok(())
    }

    async fn alert_resolved(&self, alert: Alert) {
        tracing::info!(alert_id = %alert.id, kind = %alert.kind, "alert resolved");
        crate::alerts::notify(&self.store, &alert, crate::alerts::EVENT_RESOLVED).await;
        self.publish(HealthEvent::AlertResolved(alert));
    }

    /// One sweep: offline timeouts, then the alert rule.
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
            let minutes = (now - due.since) / 60_000;
            let message = match due.kind {
                ALERT_SITE_OFFLINE => {
                    format!("no agent contact from the site for {minutes} min")
                }
                _ => format!(
                    "the site's NATS leaf has been disconnected from the hub for {minutes} min"
                ),
            };
            let scoped = self
                .store
                .scoped(TenantScope::for_system_task(due.tenant_id));
            if let Some(alert) = scoped
                .raise_alert(due.edge_site_id, due.kind, &message)
                .await?
            {
                tracing::warn!(tenant_id = %due.tenant_id, site_id = %due.edge_site_id,
                    alert_id = %alert.id, kind = due.kind, "alert raised");
                crate::alerts::notify(&self.store, &alert, crate::alerts::EVENT_RAISED).await;
                self.publish(HealthEvent::AlertRaised(alert));
            }
        }
        Ok(())
    }

    /// Runs [`Self::sweep`] every `interval` until `stop` flips to true.
    pub fn spawn_sweeper(
        &self,
        interval: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let health = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => {}
                }
                if *stop.borrow() {
                    return;
                }
                if let Err(e) = health.sweep().await {
                    tracing::warn!(error = %e, "health sweep failed");
                }
            }
        })
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
