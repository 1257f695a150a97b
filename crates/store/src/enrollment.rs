//! Enrollment tokens, their redemptions and their event history. Only the
//! SHA-256 of a token is stored. Redeeming is one transaction: the use is
//! counted with a compare-and-set (`uses < max_uses`, not revoked, not
//! expired) and the host recorded, so two hosts racing for a single-use token
//! cannot both win. A site/agent token's onboarding package
//! ([`crate::onboarding`]) is created, downloaded and revoked in the same
//! transactions as the token's own changes.

use serviceradar_domain::EdgeSiteId;
use serviceradar_domain::state::{PackageEvent, PackageStatus};
use sqlx::any::AnyRow;

use crate::Scoped;
use crate::db::now_ms;
use crate::error::StoreError;
use crate::onboarding;
use crate::page::{Arg, ListQuery, Page, PageRequest};
use crate::row::{self, Cols};

/// A stored enrollment token (never the token text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentTokenRecord {
    /// The token's id (its `jti`).
    pub id: uuid::Uuid,
    /// The site it enrolls into.
    pub edge_site_id: EdgeSiteId,
    /// `site`, `agent` or `collector:<type>`.
    pub scope: String,
    /// SHA-256 (hex) of the token text.
    pub token_hash: String,
    /// Redemptions allowed.
    pub max_uses: u32,
    /// Redemptions so far (by distinct hosts).
    pub uses: u32,
    /// Who created it (user id).
    pub created_by: Option<String>,
    /// Creation (Unix ms).
    pub created_at: i64,
    /// Expiry (Unix ms).
    pub expires_at: i64,
    /// Revocation (Unix ms).
    pub revoked_at: Option<i64>,
    /// Gateway-initiated mode: where the platform's gateway reaches the
    /// agent this token enrolls (stored with the agent on redemption).
    pub agent_endpoint: Option<String>,
    /// Its poll interval (s), with `agent_endpoint`.
    pub poll_interval_secs: Option<i64>,
}

/// A token to store.
#[derive(Debug, Clone)]
pub struct NewEnrollmentToken {
    /// The token's id (`jti`).
    pub id: uuid::Uuid,
    /// Its site.
    pub edge_site_id: EdgeSiteId,
    /// Its scope, as text.
    pub scope: String,
    /// SHA-256 (hex) of the token text.
    pub token_hash: String,
    /// Redemptions allowed.
    pub max_uses: u32,
    /// Creator (user id).
    pub created_by: String,
    /// Expiry (Unix ms).
    pub expires_at: i64,
    /// Whether the token carries a site's onboarding material (site and
    /// agent scopes): an onboarding package is created with it.
    pub onboarding_package: bool,
    /// Gateway-initiated mode: the agent's endpoint and poll interval (s),
    /// parsed by `domain::agent_poll::PollTarget`; `None`: dial-out.
    pub agent_poll: Option<(String, i64)>,
}

/// One event of a token's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentEvent {
    /// `created`, `redeemed`, `resumed`, `refused`, `conflict`, `resolved`
    /// (a conflict an operator resolved), `revoked`.
    pub kind: String,
    /// The user who acted; `None` for the edge.
    pub actor: Option<String>,
    /// Where a redemption came from.
    pub remote_addr: Option<String>,
    /// What happened, in words.
    pub detail: Option<String>,
    /// When (Unix ms).
    pub at: i64,
}

/// What a redemption attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redemption {
    /// A use was counted for a new host.
    Redeemed,
    /// This host had redeemed the token before: nothing counted.
    Resumed,
    /// Every use is spent by other hosts (or it was revoked or expired
    /// meanwhile): nothing changed.
    Spent,
}

const SELECT: &str = "SELECT e.id, e.tenant_id, e.edge_site_id, e.scope, e.token_hash, e.max_uses, \
     e.uses, e.created_by, e.created_at, e.expires_at, e.revoked_at, e.agent_endpoint, \
     e.poll_interval_secs FROM enrollment_tokens e";

fn decode(row: &AnyRow) -> Result<EnrollmentTokenRecord, StoreError> {
    let r = Cols::of(row, "enrollment_tokens");
    let count = |col: &str| -> Result<u32, StoreError> {
        u32::try_from(r.get::<i64>(col)?)
            .map_err(|_| StoreError::corrupt("enrollment_tokens", format!("{col} out of range")))
    };
    Ok(EnrollmentTokenRecord {
        id: r.id("id")?,
        edge_site_id: r.id("edge_site_id")?,
        scope: r.get("scope")?,
        token_hash: r.get("token_hash")?,
        max_uses: count("max_uses")?,
        uses: count("uses")?,
        created_by: r.get("created_by")?,
        created_at: r.get("created_at")?,
        expires_at: r.get("expires_at")?,
        revoked_at: r.get("revoked_at")?,
        agent_endpoint: r.get("agent_endpoint")?,
        poll_interval_secs: r.get("poll_interval_secs")?,
    })
}

impl Scoped<'_> {
    /// Stores a new token and its `created` event, in one transaction.
    pub async fn create_enrollment_token(
        &self,
        new: &NewEnrollmentToken,
    ) -> Result<EnrollmentTokenRecord, StoreError> {
        // The site must be this tenant's.
        self.site(new.edge_site_id).await?;
        let now = now_ms();
        let mut tx = self.store.begin_write().await?;
        sqlx::query(
            "INSERT INTO enrollment_tokens (id, tenant_id, edge_site_id, scope, token_hash, \
             max_uses, uses, created_by, created_at, expires_at, agent_endpoint, \
             poll_interval_secs) VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9, $10, $11)",
        )
        .bind(new.id.to_string())
        .bind(self.tenant())
        .bind(new.edge_site_id.to_string())
        .bind(new.scope.as_str())
        .bind(new.token_hash.as_str())
        .bind(i64::from(new.max_uses))
        .bind(new.created_by.as_str())
        .bind(now)
        .bind(new.expires_at)
        .bind(new.agent_poll.as_ref().map(|(e, _)| e.clone()))
        .bind(new.agent_poll.as_ref().map(|(_, i)| *i))
        .execute(&mut *tx)
        .await?;
        let mode = match &new.agent_poll {
            Some((endpoint, secs)) => {
                format!(", gateway-initiated: the gateway polls {endpoint} every {secs} s")
            }
            None => String::new(),
        };
        insert_event(
            &mut tx,
            &self.tenant(),
            new.id,
            "created",
            Some(&new.created_by),
            None,
            Some(&format!(
                "scope {}, {} use(s){mode}",
                new.scope, new.max_uses
            )),
        )
        .await?;
        if new.onboarding_package {
            onboarding::insert_package(
                &mut tx,
                &self.tenant(),
                new.edge_site_id,
                Some(new.id),
                onboarding::SOURCE_TOKEN,
                PackageStatus::Created,
                Some(new.expires_at),
            )
            .await?;
        }
        tx.commit().await?;
        self.enrollment_token(new.id).await
    }

    /// One token of this tenant.
    pub async fn enrollment_token(
        &self,
        id: uuid::Uuid,
    ) -> Result<EnrollmentTokenRecord, StoreError> {
        ListQuery::new(SELECT, "e", self.tenant())
            .fetch_one("e", "e.id", id.to_string(), &self.store.pool, decode)
            .await
    }

    /// A page of the tenant's tokens, optionally of one site.
    pub async fn list_enrollment_tokens(
        &self,
        site: Option<EdgeSiteId>,
        page: &PageRequest,
    ) -> Result<Page<EnrollmentTokenRecord>, StoreError> {
        let mut q = ListQuery::new(SELECT, "e", self.tenant());
        if let Some(site) = site {
            q.eq("e.edge_site_id", Arg::Text(site.to_string()));
        }
        q.page("e", page).fetch(&self.store.pool, decode).await
    }

    /// Revokes a token (idempotent: a revoked token keeps its first
    /// revocation) and records who did it.
    pub async fn revoke_enrollment_token(
        &self,
        id: uuid::Uuid,
        by: &str,
    ) -> Result<EnrollmentTokenRecord, StoreError> {
        let mut tx = self.store.begin_write().await?;
        let done = sqlx::query(
            "UPDATE enrollment_tokens SET revoked_at = $1, revoked_by = $2 \
             WHERE tenant_id = $3 AND id = $4 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(by)
        .bind(self.tenant())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            insert_event(&mut tx, &self.tenant(), id, "revoked", Some(by), None, None).await?;
            // Only material nobody fetched is revoked with the token: a box
            // that joined keeps working (revoke its agent for that).
            onboarding::move_token_package(
                &mut tx,
                &self.tenant(),
                id,
                &[PackageStatus::Created],
                PackageEvent::Revoke,
            )
            .await?;
        }
        tx.commit().await?;
        self.enrollment_token(id).await
    }

    /// Counts a redemption of `id` by `host` (or finds that `host` redeemed
    /// it before), and records the event, in one transaction.
    pub async fn redeem_enrollment_token(
        &self,
        id: uuid::Uuid,
        host: &str,
        hostname: &str,
        remote_addr: Option<&str>,
    ) -> Result<Redemption, StoreError> {
        let now = now_ms();
        let mut tx = self.store.begin_write().await?;
        // The first statement writes, so SQLite takes its write lock at once
        // (a read first would have to upgrade, and two redemptions upgrading
        // at once fail with "database is locked").
        let counted = sqlx::query(
            "UPDATE enrollment_tokens SET uses = uses + 1 WHERE tenant_id = $1 AND id = $2 \
             AND uses < max_uses AND revoked_at IS NULL AND expires_at > $3 \
             AND NOT EXISTS (SELECT 1 FROM enrollment_redemptions r \
             WHERE r.token_id = $2 AND r.host_fingerprint = $4)",
        )
        .bind(self.tenant())
        .bind(id.to_string())
        .bind(now)
        .bind(host)
        .execute(&mut *tx)
        .await?;
        let outcome = if counted.rows_affected() == 1 {
            sqlx::query(
                "INSERT INTO enrollment_redemptions (token_id, tenant_id, host_fingerprint, \
                 hostname, redeemed_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id.to_string())
            .bind(self.tenant())
            .bind(host)
            .bind(hostname)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            Redemption::Redeemed
        } else {
            let seen = sqlx::query(
                "SELECT token_id FROM enrollment_redemptions WHERE tenant_id = $1 \
                 AND token_id = $2 AND host_fingerprint = $3",
            )
            .bind(self.tenant())
            .bind(id.to_string())
            .bind(host)
            .fetch_optional(&mut *tx)
            .await?;
            if seen.is_some() {
                Redemption::Resumed
            } else {
                Redemption::Spent
            }
        };
        let (kind, detail) = match outcome {
            Redemption::Redeemed => ("redeemed", format!("host {hostname} ({host})")),
            Redemption::Resumed => ("resumed", format!("host {hostname} ({host}) again")),
            Redemption::Spent => (
                "conflict",
                format!("host {hostname} ({host}) presented a token already redeemed elsewhere"),
            ),
        };
        insert_event_fields(
            &mut tx,
            &self.tenant(),
            id,
            EventFields {
                kind,
                remote_addr,
                detail: Some(&detail),
                hostname: Some(hostname),
                ..EventFields::default()
            },
        )
        .await?;
        if outcome != Redemption::Spent {
            // The site's material was fetched: its onboarding package is downloaded.
            onboarding::move_token_package(
                &mut tx,
                &self.tenant(),
                id,
                PackageStatus::ALL,
                PackageEvent::Download,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    /// Records a refused redemption (expired, revoked, wrong scope, ...).
    pub async fn record_enrollment_refusal(
        &self,
        id: uuid::Uuid,
        remote_addr: Option<&str>,
        why: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.store.begin_write().await?;
        insert_event(
            &mut tx,
            &self.tenant(),
            id,
            "refused",
            None,
            remote_addr,
            Some(why),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A token's history, oldest first.
    pub async fn enrollment_events(
        &self,
        id: uuid::Uuid,
    ) -> Result<Vec<EnrollmentEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, actor, remote_addr, detail, at FROM enrollment_events \
             WHERE tenant_id = $1 AND token_id = $2 ORDER BY at, id",
        )
        .bind(self.tenant())
        .bind(id.to_string())
        .fetch_all(&self.store.pool)
        .await?;
        row::all(&rows, |row| {
            let r = Cols::of(row, "enrollment_events");
            Ok(EnrollmentEvent {
                kind: r.get("kind")?,
                actor: r.get("actor")?,
                remote_addr: r.get("remote_addr")?,
                detail: r.get("detail")?,
                at: r.get("at")?,
            })
        })
    }
}

/// What one history event records.
#[derive(Debug, Default)]
pub(crate) struct EventFields<'a> {
    pub(crate) kind: &'a str,
    pub(crate) actor: Option<&'a str>,
    pub(crate) remote_addr: Option<&'a str>,
    pub(crate) detail: Option<&'a str>,
    pub(crate) hostname: Option<&'a str>,
}

async fn insert_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant: &str,
    token: uuid::Uuid,
    kind: &str,
    actor: Option<&str>,
    remote_addr: Option<&str>,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    insert_event_fields(
        tx,
        tenant,
        token,
        EventFields {
            kind,
            actor,
            remote_addr,
            detail,
            hostname: None,
        },
    )
    .await
}

/// Appends one event to a token's history (inside the caller's transaction).
pub(crate) async fn insert_event_fields(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant: &str,
    token: uuid::Uuid,
    event: EventFields<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO enrollment_events (id, tenant_id, token_id, kind, actor, remote_addr, detail, \
         hostname, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(tenant)
    .bind(token.to_string())
    .bind(event.kind)
    .bind(event.actor)
    .bind(event.remote_addr)
    .bind(event.detail)
    .bind(event.hostname)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
