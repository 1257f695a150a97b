//! Edge agents, site/leaf health, disconnect alerts and webhooks (issue 5).
//!
//! * **Agents**: one per site, certificate issued during provisioning. The
//!   gateway maps the agent id from a verified certificate to its row.
//! * **Health**: agent contact moves the site to `active` and stamps
//!   `last_seen_at`; the leaf checker moves the leaf `connected`/`disconnected`.
//!   Status changes are compare-and-set on the old status, so concurrent
//!   gateways (replicas) never write a state the domain rules do not allow.
//! * **Sweeps** ([`Store::sweep_offline_sites`], [`Store::due_alerts`]) are
//!   single conditional statements, safe to run on every replica at once.
//! * **Alerts**: at most one unresolved alert per (site, kind), enforced by a
//!   partial unique index, so two sweepers raise it once.

use serde::Serialize;
use serviceradar_domain::state::{
    AlertEvent, AlertStatus, LeafEvent, LeafStatus, SiteEvent, SiteStatus,
};
use serviceradar_domain::{EdgeSiteId, TenantId};
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::Scoped;
use crate::db::{Store, now_ms};
use crate::error::StoreError;
use crate::page::{Arg, ListQuery, Page, PageRequest};
use crate::row::{self, Cols};

/// Alert kind: the site had no agent contact for longer than the rule allows.
pub const ALERT_SITE_OFFLINE: &str = "site_offline";
/// Alert kind: the site's leaf lost its hub link for longer than the rule allows.
pub const ALERT_LEAF_DISCONNECTED: &str = "leaf_disconnected";
/// Alert kind: the gateway could not reach a site's agent in gateway-initiated
/// mode (seed 004) for longer than its unreachable timeout.
pub const ALERT_AGENT_UNREACHABLE: &str = "agent_unreachable";

/// A stored edge agent (no key material).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AgentRecord {
    /// Agent id (the id in its SPIFFE URI).
    pub id: Uuid,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Site the agent belongs to.
    pub edge_site_id: EdgeSiteId,
    /// Certificate PEM.
    pub cert_pem: String,
    /// Certificate serial (hex).
    pub cert_serial: String,
    /// Certificate expiry (Unix ms).
    pub cert_expires_at: i64,
    /// Version the agent reported in `Hello`.
    pub agent_version: Option<String>,
    /// Capabilities reported in `Hello` (comma-separated).
    pub capabilities: Option<String>,
    /// Host name reported in `Hello`.
    pub hostname: Option<String>,
    /// Last gateway call (Unix ms).
    pub last_seen_at: Option<i64>,
    /// Set when the agent's certificate was revoked.
    pub revoked_at: Option<i64>,
    /// Created (Unix ms).
    pub created_at: i64,
    /// Expiry of the newest certificate issued to the edge through
    /// enrollment or renewal (Unix ms); `None` for a bundle-installed agent.
    pub edge_cert_expires_at: Option<i64>,
    /// Last successful renewal (Unix ms).
    pub renewed_at: Option<i64>,
    /// Last refused renewal (Unix ms), cleared by a successful one.
    pub renewal_refused_at: Option<i64>,
    /// Why that renewal was refused.
    pub renewal_refusal: Option<String>,
}

/// A newly issued agent certificate (key sealed by the caller).
#[derive(Clone)]
pub struct AgentCert {
    /// Agent id (keep the existing one on renewal).
    pub agent_id: Uuid,
    /// Certificate PEM.
    pub cert_pem: String,
    /// Sealed private key.
    pub key_sealed: Vec<u8>,
    /// Serial (hex).
    pub cert_serial: String,
    /// Expiry (Unix ms).
    pub cert_expires_at: i64,
}

impl std::fmt::Debug for AgentCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCert")
            .field("agent_id", &self.agent_id)
            .field("cert_serial", &self.cert_serial)
            .finish_non_exhaustive()
    }
}

/// A status change, for live updates and alert resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Change<S> {
    /// Before.
    pub from: S,
    /// After.
    pub to: S,
}

/// An alert.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Alert {
    /// Alert id.
    pub id: Uuid,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Site the alert is about.
    pub edge_site_id: EdgeSiteId,
    /// `site_offline` or `leaf_disconnected`.
    pub kind: String,
    /// `pending`, `acknowledged`, `resolved`.
    pub status: AlertStatus,
    /// Human-readable description.
    pub message: String,
    /// User id that acknowledged it.
    pub acknowledged_by: Option<String>,
    /// When it was acknowledged (Unix ms).
    pub acknowledged_at: Option<i64>,
    /// When it was resolved (Unix ms).
    pub resolved_at: Option<i64>,
    /// Raised (Unix ms).
    pub created_at: i64,
    /// Last change (Unix ms).
    pub updated_at: i64,
}

/// A webhook endpoint (the secret is never read back in clear by the store).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Webhook {
    /// Webhook id.
    pub id: Uuid,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Target URL.
    pub url: String,
    /// Created (Unix ms).
    pub created_at: i64,
}

/// One delivery attempt of a webhook.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WebhookDelivery {
    /// Delivery id.
    pub id: Uuid,
    /// Webhook.
    pub webhook_id: Uuid,
    /// Alert.
    pub alert_id: Uuid,
    /// `alert.raised` or `alert.resolved`.
    pub event: String,
    /// Attempt number (1-based).
    pub attempt: i64,
    /// HTTP status, when the endpoint answered.
    pub status_code: Option<i64>,
    /// Error, when the attempt failed.
    pub error: Option<String>,
    /// When (Unix ms).
    pub created_at: i64,
}

/// A site or leaf that the alert rule says should alert now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueAlert {
    /// Tenant.
    pub tenant_id: TenantId,
    /// Site.
    pub edge_site_id: EdgeSiteId,
    /// Kind.
    pub kind: &'static str,
    /// Since when (Unix ms) the condition holds.
    pub since: i64,
}

const AGENT_SELECT: &str = "SELECT a.id, a.tenant_id, a.edge_site_id, a.cert_pem, a.cert_serial, \
    a.cert_expires_at, a.agent_version, a.capabilities, a.hostname, a.last_seen_at, a.revoked_at, \
    a.created_at, a.edge_cert_expires_at, a.renewed_at, a.renewal_refused_at, a.renewal_refusal \
    FROM agents a";
const ALERT_SELECT: &str = "SELECT a.id, a.tenant_id, a.edge_site_id, a.kind, a.status, a.message, \
    a.acknowledged_by, a.acknowledged_at, a.resolved_at, a.created_at, a.updated_at FROM alerts a";
const WEBHOOK_SELECT: &str = "SELECT w.id, w.tenant_id, w.url, w.created_at FROM webhooks w";
const DELIVERY_SELECT: &str = "SELECT d.id, d.webhook_id, d.alert_id, d.event, d.attempt, \
    d.status_code, d.error, d.created_at FROM webhook_deliveries d";

fn decode_agent(row: &AnyRow) -> Result<AgentRecord, StoreError> {
    let r = Cols::of(row, "agents");
    Ok(AgentRecord {
        id: r.id("id")?,
        tenant_id: r.id("tenant_id")?,
        edge_site_id: r.id("edge_site_id")?,
        cert_pem: r.get("cert_pem")?,
        cert_serial: r.get("cert_serial")?,
        cert_expires_at: r.get("cert_expires_at")?,
        agent_version: r.get("agent_version")?,
        capabilities: r.get("capabilities")?,
        hostname: r.get("hostname")?,
        last_seen_at: r.get("last_seen_at")?,
        revoked_at: r.get("revoked_at")?,
        created_at: r.get("created_at")?,
        edge_cert_expires_at: r.get("edge_cert_expires_at")?,
        renewed_at: r.get("renewed_at")?,
        renewal_refused_at: r.get("renewal_refused_at")?,
        renewal_refusal: r.get("renewal_refusal")?,
    })
}

fn decode_alert(row: &AnyRow) -> Result<Alert, StoreError> {
    let r = Cols::of(row, "alerts");
    Ok(Alert {
        id: r.id("id")?,
        tenant_id: r.id("tenant_id")?,
        edge_site_id: r.id("edge_site_id")?,
        kind: r.get("kind")?,
        status: r.parse("status")?,
        message: r.get("message")?,
        acknowledged_by: r.get("acknowledged_by")?,
        acknowledged_at: r.get("acknowledged_at")?,
        resolved_at: r.get("resolved_at")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
    })
}

fn decode_webhook(row: &AnyRow) -> Result<Webhook, StoreError> {
    let r = Cols::of(row, "webhooks");
    Ok(Webhook {
        id: r.id("id")?,
        tenant_id: r.id("tenant_id")?,
        url: r.get("url")?,
        created_at: r.get("created_at")?,
    })
}

fn decode_delivery(row: &AnyRow) -> Result<WebhookDelivery, StoreError> {
    let r = Cols::of(row, "webhook_deliveries");
    Ok(WebhookDelivery {
        id: r.id("id")?,
        webhook_id: r.id("webhook_id")?,
        alert_id: r.id("alert_id")?,
        event: r.get("event")?,
        attempt: r.get("attempt")?,
        status_code: r.get("status_code")?,
        error: r.get("error")?,
        created_at: r.get("created_at")?,
    })
}

/// A [`DueAlert`] from a row with `tenant_id`, `edge_site_id` and `since`
/// (both due-alert queries select those names).
fn decode_due(
    table: &'static str,
    kind: &'static str,
) -> impl Fn(&AnyRow) -> Result<DueAlert, StoreError> {
    move |row| {
        let r = Cols::of(row, table);
        Ok(DueAlert {
            tenant_id: r.id("tenant_id")?,
            edge_site_id: r.id("edge_site_id")?,
            kind,
            since: r.get("since")?,
        })
    }
}

impl Scoped<'_> {
    /// The agent of a site, if one was issued.
    pub async fn agent_for_site(
        &self,
        site: EdgeSiteId,
    ) -> Result<Option<AgentRecord>, StoreError> {
        match ListQuery::new(AGENT_SELECT, "a", self.tenant())
            .fetch_one(
                "a",
                "a.edge_site_id",
                site.to_string(),
                &self.store.pool,
                decode_agent,
            )
            .await
        {
            Ok(agent) => Ok(Some(agent)),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One agent of this tenant.
    pub async fn agent(&self, id: Uuid) -> Result<AgentRecord, StoreError> {
        ListQuery::new(AGENT_SELECT, "a", self.tenant())
            .fetch_one("a", "a.id", id.to_string(), &self.store.pool, decode_agent)
            .await
    }

    /// The sealed key of an agent.
    pub async fn agent_key_sealed(&self, id: Uuid) -> Result<Vec<u8>, StoreError> {
        let row = sqlx::query("SELECT key_sealed FROM agents WHERE tenant_id = $1 AND id = $2")
            .bind(self.tenant())
            .bind(id.to_string())
            .fetch_optional(&self.store.pool)
            .await?;
        row::found(row, |row| Cols::of(row, "agents").get("key_sealed"))
    }

    /// Stores the (new or renewed) certificate of the site's agent. The site
    /// keeps one agent row; renewal replaces certificate and key.
    pub async fn store_agent_cert(
        &self,
        site: EdgeSiteId,
        cert: &AgentCert,
    ) -> Result<AgentRecord, StoreError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO agents (id, tenant_id, edge_site_id, cert_pem, key_sealed, cert_serial, \
             cert_expires_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
             ON CONFLICT (edge_site_id) DO UPDATE SET cert_pem = excluded.cert_pem, \
             key_sealed = excluded.key_sealed, cert_serial = excluded.cert_serial, \
             cert_expires_at = excluded.cert_expires_at, updated_at = excluded.updated_at \
             WHERE agents.id = excluded.id AND agents.tenant_id = excluded.tenant_id",
        )
        .bind(cert.agent_id.to_string())
        .bind(self.tenant())
        .bind(site.to_string())
        .bind(cert.cert_pem.as_str())
        .bind(cert.key_sealed.clone())
        .bind(cert.cert_serial.as_str())
        .bind(cert.cert_expires_at)
        .bind(now)
        .execute(&self.store.pool)
        .await?;
        self.agent(cert.agent_id).await
    }

    /// Revokes a site's agent: the gateway refuses its certificate from now
    /// on (within its identity cache lifetime). Sticky: renewing the
    /// certificate does not clear it.
    pub async fn revoke_agent(&self, site: EdgeSiteId) -> Result<AgentRecord, StoreError> {
        let agent = self
            .agent_for_site(site)
            .await?
            .ok_or(StoreError::NotFound)?;
        sqlx::query(
            "UPDATE agents SET revoked_at = COALESCE(revoked_at, $1), updated_at = $1 \
             WHERE tenant_id = $2 AND id = $3",
        )
        .bind(now_ms())
        .bind(self.tenant())
        .bind(agent.id.to_string())
        .execute(&self.store.pool)
        .await?;
        self.agent(agent.id).await
    }

    /// Records an agent's `Hello`.
    pub async fn record_agent_hello(
        &self,
        id: Uuid,
        version: &str,
        capabilities: &str,
        hostname: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE agents SET agent_version = $1, capabilities = $2, hostname = $3, updated_at = $4 \
             WHERE tenant_id = $5 AND id = $6",
        )
        .bind(version)
        .bind(capabilities)
        .bind(hostname)
        .bind(now_ms())
        .bind(self.tenant())
        .bind(id.to_string())
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }

    /// Agent contact: stamps `last_seen_at` on agent and site and moves the
    /// site to `active`. Returns the site's status change, if any.
    pub async fn agent_seen(
        &self,
        agent: Uuid,
        site: EdgeSiteId,
    ) -> Result<Option<Change<SiteStatus>>, StoreError> {
        let now = now_ms();
        sqlx::query("UPDATE agents SET last_seen_at = $1 WHERE tenant_id = $2 AND id = $3")
            .bind(now)
            .bind(self.tenant())
            .bind(agent.to_string())
            .execute(&self.store.pool)
            .await?;
        // Fast path: already active, only the timestamp moves.
        let done = sqlx::query(
            "UPDATE edge_sites SET last_seen_at = $1 WHERE tenant_id = $2 AND id = $3 AND status = $4",
        )
        .bind(now)
        .bind(self.tenant())
        .bind(site.to_string())
        .bind(SiteStatus::Active.as_str())
        .execute(&self.store.pool)
        .await?;
        if done.rows_affected() > 0 {
            return Ok(None);
        }
        let current = self.site(site).await?.status;
        let next = current.apply(SiteEvent::AgentSeen)?;
        let done = sqlx::query(
            "UPDATE edge_sites SET status = $1, last_seen_at = $2, updated_at = $2 \
             WHERE tenant_id = $3 AND id = $4 AND status = $5",
        )
        .bind(next.as_str())
        .bind(now)
        .bind(self.tenant())
        .bind(site.to_string())
        .bind(current.as_str())
        .execute(&self.store.pool)
        .await?;
        // Lost a race with another replica: it made the same move.
        Ok(
            (done.rows_affected() > 0 && current != next).then_some(Change {
                from: current,
                to: next,
            }),
        )
    }

    /// The leaf checker's verdict on the site's leaf link. Returns the leaf's
    /// status change, if any (a pending leaf cannot connect: that is an error).
    pub async fn set_leaf_link(
        &self,
        site: EdgeSiteId,
        up: bool,
    ) -> Result<Option<Change<LeafStatus>>, StoreError> {
        let leaf = self.leaf_for_site(site).await?;
        let event = if up {
            LeafEvent::LinkUp
        } else {
            LeafEvent::LinkDown
        };
        if leaf.status == LeafStatus::Provisioned && !up {
            // Never connected yet: nothing to report.
            return Ok(None);
        }
        let next = leaf.status.apply(event)?;
        if next == leaf.status {
            return Ok(None);
        }
        let now = now_ms();
        let mut tx = self.store.begin_write().await?;
        let done = sqlx::query(
            "UPDATE nats_leaf_servers SET status = $1, link_changed_at = $2, updated_at = $2 \
             WHERE tenant_id = $3 AND id = $4 AND status = $5",
        )
        .bind(next.as_str())
        .bind(now)
        .bind(self.tenant())
        .bind(leaf.id.to_string())
        .bind(leaf.status.as_str())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() > 0 {
            self.mirror_leaf_status(&mut tx, site, next).await?;
        }
        tx.commit().await?;
        Ok((done.rows_affected() > 0).then_some(Change {
            from: leaf.status,
            to: next,
        }))
    }

    /// Raises an alert unless an unresolved one of the same kind exists for
    /// the site. `None` when it already existed (another replica raised it).
    pub async fn raise_alert(
        &self,
        site: EdgeSiteId,
        kind: &str,
        message: &str,
    ) -> Result<Option<Alert>, StoreError> {
        let id = Uuid::now_v7();
        let now = now_ms();
        let done = sqlx::query(
            "INSERT INTO alerts (id, tenant_id, edge_site_id, kind, status, message, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT DO NOTHING",
        )
        .bind(id.to_string())
        .bind(self.tenant())
        .bind(site.to_string())
        .bind(kind)
        .bind(AlertStatus::Open.as_str())
        .bind(message)
        .bind(now)
        .execute(&self.store.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        self.alert(id).await.map(Some)
    }

    /// One alert.
    pub async fn alert(&self, id: Uuid) -> Result<Alert, StoreError> {
        ListQuery::new(ALERT_SELECT, "a", self.tenant())
            .fetch_one("a", "a.id", id.to_string(), &self.store.pool, decode_alert)
            .await
    }

    /// A page of alerts, optionally only in `status`.
    pub async fn list_alerts(
        &self,
        status: Option<AlertStatus>,
        page: &PageRequest,
    ) -> Result<Page<Alert>, StoreError> {
        let mut q = ListQuery::new(ALERT_SELECT, "a", self.tenant());
        if let Some(status) = status {
            q.eq("a.status", Arg::Text(status.as_str().into()));
        }
        q.page("a", page)
            .fetch(&self.store.pool, decode_alert)
            .await
    }

    /// Applies `event` to an alert (compare-and-set on its status).
    pub async fn transition_alert(
        &self,
        id: Uuid,
        event: AlertEvent,
        user: Option<&str>,
    ) -> Result<Alert, StoreError> {
        let alert = self.alert(id).await?;
        let next = alert.status.apply(event)?;
        let now = now_ms();
        let sql = match event {
            AlertEvent::Acknowledge => {
                "UPDATE alerts SET status = $1, updated_at = $2, acknowledged_at = $2, acknowledged_by = $3 \
                 WHERE tenant_id = $4 AND id = $5 AND status = $6"
            }
            AlertEvent::Resolve => {
                "UPDATE alerts SET status = $1, updated_at = $2, resolved_at = $2, \
                 acknowledged_by = COALESCE(acknowledged_by, $3) \
                 WHERE tenant_id = $4 AND id = $5 AND status = $6"
            }
        };
        let done = sqlx::query(sql)
            .bind(next.as_str())
            .bind(now)
            .bind(user)
            .bind(self.tenant())
            .bind(id.to_string())
            .bind(alert.status.as_str())
            .execute(&self.store.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict(
                "the alert changed meanwhile; retry".into(),
            ));
        }
        self.alert(id).await
    }

    /// Resolves the unresolved alerts of `kind` on `site` (the condition
    /// cleared). Returns the alerts this call resolved.
    pub async fn resolve_alerts(
        &self,
        site: EdgeSiteId,
        kind: &str,
    ) -> Result<Vec<Alert>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM alerts WHERE tenant_id = $1 AND edge_site_id = $2 AND kind = $3 AND status <> $4",
        )
        .bind(self.tenant())
        .bind(site.to_string())
        .bind(kind)
        .bind(AlertStatus::Resolved.as_str())
        .fetch_all(&self.store.pool)
        .await?;
        let ids: Vec<Uuid> = row::all(&rows, |row| Cols::of(row, "alerts").id("id"))?;
        let mut resolved = Vec::new();
        for id in ids {
            match self.transition_alert(id, AlertEvent::Resolve, None).await {
                Ok(alert) => resolved.push(alert),
                // Another replica resolved it first.
                Err(StoreError::Conflict(_) | StoreError::Transition(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(resolved)
    }

    /// Creates a webhook with its sealed secret.
    pub async fn create_webhook(
        &self,
        id: Uuid,
        url: &str,
        secret_sealed: &[u8],
    ) -> Result<Webhook, StoreError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO webhooks (id, tenant_id, url, secret_sealed, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(id.to_string())
        .bind(self.tenant())
        .bind(url)
        .bind(secret_sealed.to_vec())
        .bind(now)
        .execute(&self.store.pool)
        .await?;
        self.webhook(id).await
    }

    /// One webhook.
    pub async fn webhook(&self, id: Uuid) -> Result<Webhook, StoreError> {
        ListQuery::new(WEBHOOK_SELECT, "w", self.tenant())
            .fetch_one(
                "w",
                "w.id",
                id.to_string(),
                &self.store.pool,
                decode_webhook,
            )
            .await
    }

    /// The sealed secret of a webhook.
    pub async fn webhook_secret_sealed(&self, id: Uuid) -> Result<Vec<u8>, StoreError> {
        let row =
            sqlx::query("SELECT secret_sealed FROM webhooks WHERE tenant_id = $1 AND id = $2")
                .bind(self.tenant())
                .bind(id.to_string())
                .fetch_optional(&self.store.pool)
                .await?;
        row::found(row, |row| Cols::of(row, "webhooks").get("secret_sealed"))
    }

    /// A page of webhooks.
    pub async fn list_webhooks(&self, page: &PageRequest) -> Result<Page<Webhook>, StoreError> {
        ListQuery::new(WEBHOOK_SELECT, "w", self.tenant())
            .page("w", page)
            .fetch(&self.store.pool, decode_webhook)
            .await
    }

    /// Every webhook of the tenant (for fan-out).
    pub async fn all_webhook_ids(&self) -> Result<Vec<Uuid>, StoreError> {
        let rows = sqlx::query("SELECT id FROM webhooks WHERE tenant_id = $1")
            .bind(self.tenant())
            .fetch_all(&self.store.pool)
            .await?;
        row::all(&rows, |row| Cols::of(row, "webhooks").id("id"))
    }

    /// Deletes a webhook.
    pub async fn delete_webhook(&self, id: Uuid) -> Result<(), StoreError> {
        self.delete_by_id("webhooks", id.to_string()).await
    }

    /// Logs one delivery attempt.
    pub async fn record_delivery(
        &self,
        webhook: Uuid,
        alert: Uuid,
        event: &str,
        attempt: i64,
        status_code: Option<i64>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO webhook_deliveries (id, tenant_id, webhook_id, alert_id, event, attempt, \
             status_code, error, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(self.tenant())
        .bind(webhook.to_string())
        .bind(alert.to_string())
        .bind(event)
        .bind(attempt)
        .bind(status_code)
        .bind(error)
        .bind(now)
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }

    /// The delivery log of a webhook.
    pub async fn list_deliveries(
        &self,
        webhook: Uuid,
        page: &PageRequest,
    ) -> Result<Page<WebhookDelivery>, StoreError> {
        let mut q = ListQuery::new(DELIVERY_SELECT, "d", self.tenant());
        q.eq("d.webhook_id", Arg::Text(webhook.to_string()));
        q.page("d", page)
            .fetch(&self.store.pool, decode_delivery)
            .await
    }
}

impl Store {
    /// Moves every `active` site whose last agent contact is older than
    /// `cutoff` (Unix ms) to `offline`, in one conditional statement (safe on
    /// several replicas: each site is moved by exactly one of them). Returns
    /// the sites moved.
    pub async fn sweep_offline_sites(
        &self,
        cutoff: i64,
    ) -> Result<Vec<(TenantId, EdgeSiteId)>, StoreError> {
        let next = SiteStatus::Active.apply(SiteEvent::ContactTimedOut)?;
        let rows = sqlx::query(
            "UPDATE edge_sites SET status = $1, updated_at = $2 \
             WHERE status = $3 AND last_seen_at < $4 RETURNING id, tenant_id",
        )
        .bind(next.as_str())
        .bind(now_ms())
        .bind(SiteStatus::Active.as_str())
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        row::all(&rows, |row| {
            let r = Cols::of(row, "edge_sites");
            Ok((r.id("tenant_id")?, r.id("id")?))
        })
    }

    /// Sites offline since before `site_cutoff` and leaves disconnected since
    /// before `leaf_cutoff` that have no unresolved alert of that kind yet.
    pub async fn due_alerts(
        &self,
        site_cutoff: i64,
        leaf_cutoff: i64,
    ) -> Result<Vec<DueAlert>, StoreError> {
        let sites = sqlx::query(
            "SELECT s.id AS edge_site_id, s.tenant_id, s.last_seen_at AS since FROM edge_sites s \
             WHERE s.status = $1 AND s.last_seen_at < $2 AND NOT EXISTS (SELECT 1 FROM alerts a \
             WHERE a.edge_site_id = s.id AND a.kind = $3 AND a.status <> $4)",
        )
        .bind(SiteStatus::Offline.as_str())
        .bind(site_cutoff)
        .bind(ALERT_SITE_OFFLINE)
        .bind(AlertStatus::Resolved.as_str())
        .fetch_all(&self.pool)
        .await?;
        let mut due = row::all(&sites, decode_due("edge_sites", ALERT_SITE_OFFLINE))?;
        let leaves = sqlx::query(
            "SELECT l.edge_site_id, l.tenant_id, l.link_changed_at AS since FROM nats_leaf_servers l \
             WHERE l.status = $1 AND l.link_changed_at < $2 AND NOT EXISTS (SELECT 1 FROM alerts a \
             WHERE a.edge_site_id = l.edge_site_id AND a.kind = $3 AND a.status <> $4)",
        )
        .bind(LeafStatus::Disconnected.as_str())
        .bind(leaf_cutoff)
        .bind(ALERT_LEAF_DISCONNECTED)
        .bind(AlertStatus::Resolved.as_str())
        .fetch_all(&self.pool)
        .await?;
        due.extend(row::all(
            &leaves,
            decode_due("nats_leaf_servers", ALERT_LEAF_DISCONNECTED),
        )?);
        Ok(due)
    }

    /// Records a gateway call whose claims disagreed with its certificate.
    pub async fn audit_gateway(
        &self,
        tenant: Option<TenantId>,
        agent: Option<Uuid>,
        peer_cn: &str,
        rpc: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO gateway_audit (id, tenant_id, agent_id, peer_cn, rpc, reason, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(tenant.map(|t| t.to_string()))
        .bind(agent.map(|a| a.to_string()))
        .bind(peer_cn)
        .bind(rpc)
        .bind(reason)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The reasons recorded in the gateway audit log for `tenant`, newest last.
    pub async fn gateway_audit_reasons(&self, tenant: TenantId) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT reason FROM gateway_audit WHERE tenant_id = $1 ORDER BY created_at, id",
        )
        .bind(tenant.to_string())
        .fetch_all(&self.pool)
        .await?;
        row::all(&rows, |row| Cols::of(row, "gateway_audit").get("reason"))
    }
}
