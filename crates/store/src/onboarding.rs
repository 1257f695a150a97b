//! Onboarding packages and enrollment conflicts (migration 0014).
//!
//! An onboarding package is a site's onboarding material with the package
//! lifecycle of [`PackageStatus`]: one per site/agent enrollment token
//! (source `token`: created with the token, `downloaded` when it is redeemed,
//! `expired` when it expires unredeemed, `revoked` when the token is revoked
//! before anyone fetched the material: revoking a token does not cut off a
//! box that already joined, so a fetched package keeps its state) and one per
//! classic site-bundle download (source `bundle`, created `downloaded`).
//! Either becomes `installed` when the site's agent first says `Hello`, and
//! fetched ones are `revoked` when the site's agent is revoked.
//! Every status written is one [`PackageStatus::apply`] accepted, with a
//! compare-and-set on the old status.
//!
//! A conflict is an enrollment event of kind `conflict` (another host
//! presenting a spent single-use token, or a renewal from another machine);
//! it is open until an operator resolves it, which is recorded on the event
//! and as a `resolved` event in the token's history.

use serviceradar_domain::EdgeSiteId;
use serviceradar_domain::state::{PackageEvent, PackageStatus};
use sqlx::any::AnyRow;

use crate::Scoped;
use crate::db::now_ms;
use crate::error::StoreError;
use crate::page::{Arg, ListQuery, Page, PageRequest};
use crate::row::Cols;

/// Where an onboarding package's material came from.
pub const SOURCE_TOKEN: &str = "token";
/// A classic site-bundle download.
pub const SOURCE_BUNDLE: &str = "bundle";

/// A site's onboarding package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnboardingPackage {
    /// Id.
    pub id: uuid::Uuid,
    /// Its site.
    pub edge_site_id: EdgeSiteId,
    /// The enrollment token it belongs to (source `token`).
    pub token_id: Option<uuid::Uuid>,
    /// `token` or `bundle`.
    pub source: String,
    /// Lifecycle state.
    pub status: PackageStatus,
    /// Creation (Unix ms).
    pub created_at: i64,
    /// Last change (Unix ms).
    pub updated_at: i64,
    /// When an undownloaded package expires (its token's expiry).
    pub expires_at: Option<i64>,
    /// When its material was fetched.
    pub downloaded_at: Option<i64>,
    /// When the site's agent first reported after the download.
    pub installed_at: Option<i64>,
}

/// Filters for listing onboarding packages.
#[derive(Debug, Clone, Default)]
pub struct OnboardingFilter {
    /// Only this site's.
    pub edge_site_id: Option<EdgeSiteId>,
    /// Only in this status.
    pub status: Option<PackageStatus>,
}

/// An enrollment conflict (a `conflict` event of a token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentConflict {
    /// Id (the event's).
    pub id: uuid::Uuid,
    /// The token presented.
    pub token_id: uuid::Uuid,
    /// The token's site.
    pub edge_site_id: EdgeSiteId,
    /// The host's name, as it said (when the event recorded it).
    pub hostname: Option<String>,
    /// Where the request came from.
    pub remote_addr: Option<String>,
    /// What happened.
    pub detail: Option<String>,
    /// When (Unix ms).
    pub at: i64,
    /// When an operator resolved it.
    pub resolved_at: Option<i64>,
    /// Who resolved it (user id).
    pub resolved_by: Option<String>,
}

/// Filters for listing conflicts.
#[derive(Debug, Clone, Default)]
pub struct ConflictFilter {
    /// Only this site's.
    pub edge_site_id: Option<EdgeSiteId>,
    /// `Some(true)`: only open ones; `Some(false)`: only resolved ones.
    pub open: Option<bool>,
}

const SELECT_PACKAGE: &str = "SELECT o.id, o.tenant_id, o.edge_site_id, o.token_id, o.source, \
     o.status, o.created_at, o.updated_at, o.expires_at, o.downloaded_at, o.installed_at \
     FROM onboarding_packages o";

fn decode_package(row: &AnyRow) -> Result<OnboardingPackage, StoreError> {
    let r = Cols::of(row, "onboarding_packages");
    Ok(OnboardingPackage {
        id: r.id("id")?,
        edge_site_id: r.id("edge_site_id")?,
        token_id: r.parse_opt("token_id")?,
        source: r.get("source")?,
        status: r.parse("status")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
        expires_at: r.get("expires_at")?,
        downloaded_at: r.get("downloaded_at")?,
        installed_at: r.get("installed_at")?,
    })
}

// The conflict's `at` is its `created_at` for keyset pagination.
const SELECT_CONFLICT: &str = "SELECT c.* FROM (SELECT ev.id, ev.tenant_id, ev.token_id, \
     t.edge_site_id, ev.hostname, ev.remote_addr, ev.detail, ev.at AS created_at, \
     ev.resolved_at, ev.resolved_by FROM enrollment_events ev \
     JOIN enrollment_tokens t ON t.id = ev.token_id AND t.tenant_id = ev.tenant_id \
     WHERE ev.kind = 'conflict') c";

fn decode_conflict(row: &AnyRow) -> Result<EnrollmentConflict, StoreError> {
    let r = Cols::of(row, "enrollment_events");
    Ok(EnrollmentConflict {
        id: r.id("id")?,
        token_id: r.id("token_id")?,
        edge_site_id: r.id("edge_site_id")?,
        hostname: r.get("hostname")?,
        remote_addr: r.get("remote_addr")?,
        detail: r.get("detail")?,
        at: r.get("created_at")?,
        resolved_at: r.get("resolved_at")?,
        resolved_by: r.get("resolved_by")?,
    })
}

/// Inserts a package in `status` (inside the caller's transaction).
pub(crate) async fn insert_package(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant: &str,
    site: EdgeSiteId,
    token: Option<uuid::Uuid>,
    source: &str,
    status: PackageStatus,
    expires_at: Option<i64>,
) -> Result<uuid::Uuid, StoreError> {
    let id = uuid::Uuid::now_v7();
    let now = now_ms();
    let downloaded = (status == PackageStatus::Downloaded).then_some(now);
    sqlx::query(
        "INSERT INTO onboarding_packages (id, tenant_id, edge_site_id, token_id, source, status, \
         created_at, updated_at, expires_at, downloaded_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9)",
    )
    .bind(id.to_string())
    .bind(tenant)
    .bind(site.to_string())
    .bind(token.map(|t| t.to_string()))
    .bind(source)
    .bind(status.as_str())
    .bind(now)
    .bind(expires_at)
    .bind(downloaded)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

/// Moves the package of `token` (if it has one) by `event` when it is in
/// one of `from`, inside the caller's transaction. A move the state machine
/// refuses changes nothing (a resumed redemption of an installed package
/// stays installed). Returns the new status.
pub(crate) async fn move_token_package(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant: &str,
    token: uuid::Uuid,
    from: &[PackageStatus],
    event: PackageEvent,
) -> Result<Option<PackageStatus>, StoreError> {
    let row = sqlx::query(
        "SELECT status FROM onboarding_packages WHERE tenant_id = $1 AND token_id = $2",
    )
    .bind(tenant)
    .bind(token.to_string())
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let current: PackageStatus = Cols::of(&row, "onboarding_packages").parse("status")?;
    if !from.contains(&current) {
        return Ok(None);
    }
    let Ok(next) = current.apply(event) else {
        return Ok(None);
    };
    if next == current {
        return Ok(Some(current));
    }
    let now = now_ms();
    let done = sqlx::query(
        "UPDATE onboarding_packages SET status = $1, updated_at = $2, \
         downloaded_at = CASE WHEN $1 = 'downloaded' THEN $2 ELSE downloaded_at END \
         WHERE tenant_id = $3 AND token_id = $4 AND status = $5",
    )
    .bind(next.as_str())
    .bind(now)
    .bind(tenant)
    .bind(token.to_string())
    .bind(current.as_str())
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::InvalidState(
            "the onboarding package changed concurrently; retry".into(),
        ));
    }
    Ok(Some(next))
}

impl Scoped<'_> {
    /// Records a classic site-bundle download as an onboarding package:
    /// created and downloaded at once.
    pub async fn record_bundle_onboarding_package(
        &self,
        site: EdgeSiteId,
    ) -> Result<OnboardingPackage, StoreError> {
        let status = PackageStatus::Created.apply(PackageEvent::Download)?;
        let mut tx = self.store.begin_write().await?;
        let id = insert_package(
            &mut tx,
            &self.tenant(),
            site,
            None,
            SOURCE_BUNDLE,
            status,
            None,
        )
        .await?;
        tx.commit().await?;
        self.onboarding_package(id).await
    }

    /// One onboarding package of this tenant.
    pub async fn onboarding_package(
        &self,
        id: uuid::Uuid,
    ) -> Result<OnboardingPackage, StoreError> {
        ListQuery::new(SELECT_PACKAGE, "o", self.tenant())
            .fetch_one(
                "o",
                "o.id",
                id.to_string(),
                &self.store.pool,
                decode_package,
            )
            .await
    }

    /// A page of the tenant's onboarding packages.
    pub async fn list_onboarding_packages(
        &self,
        filter: &OnboardingFilter,
        page: &PageRequest,
    ) -> Result<Page<OnboardingPackage>, StoreError> {
        let mut q = ListQuery::new(SELECT_PACKAGE, "o", self.tenant());
        if let Some(site) = filter.edge_site_id {
            q.eq("o.edge_site_id", Arg::Text(site.to_string()));
        }
        if let Some(status) = filter.status {
            q.eq("o.status", Arg::Text(status.as_str().into()));
        }
        q.page("o", page)
            .fetch(&self.store.pool, decode_package)
            .await
    }

    /// Expires the site's packages still `created` whose token expired
    /// before `now`. Returns how many.
    pub async fn expire_onboarding_packages(
        &self,
        site: EdgeSiteId,
        now: i64,
    ) -> Result<u64, StoreError> {
        let from = PackageStatus::Created;
        let to = from.apply(PackageEvent::Expire)?;
        let done = sqlx::query(
            "UPDATE onboarding_packages SET status = $1, updated_at = $2 \
             WHERE tenant_id = $3 AND edge_site_id = $4 AND status = $5 \
             AND expires_at IS NOT NULL AND expires_at <= $2",
        )
        .bind(to.as_str())
        .bind(now)
        .bind(self.tenant())
        .bind(site.to_string())
        .bind(from.as_str())
        .execute(&self.store.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// The site's agent said `Hello`: its downloaded onboarding packages are
    /// installed. Returns how many moved (0 on every later `Hello`).
    pub async fn install_onboarding_packages(&self, site: EdgeSiteId) -> Result<u64, StoreError> {
        let from = PackageStatus::Downloaded;
        let to = from.apply(PackageEvent::Install)?;
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE onboarding_packages SET status = $1, updated_at = $2, installed_at = $2 \
             WHERE tenant_id = $3 AND edge_site_id = $4 AND status = $5",
        )
        .bind(to.as_str())
        .bind(now)
        .bind(self.tenant())
        .bind(site.to_string())
        .bind(from.as_str())
        .execute(&self.store.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// The site's agent was revoked: the material its boxes fetched
    /// (`downloaded` and `installed` packages) no longer works, so those
    /// packages are revoked. Returns how many.
    pub async fn revoke_fetched_onboarding_packages(
        &self,
        site: EdgeSiteId,
    ) -> Result<u64, StoreError> {
        let now = now_ms();
        let mut moved = 0;
        for from in [PackageStatus::Downloaded, PackageStatus::Installed] {
            let to = from.apply(PackageEvent::Revoke)?;
            let done = sqlx::query(
                "UPDATE onboarding_packages SET status = $1, updated_at = $2 \
                 WHERE tenant_id = $3 AND edge_site_id = $4 AND status = $5",
            )
            .bind(to.as_str())
            .bind(now)
            .bind(self.tenant())
            .bind(site.to_string())
            .bind(from.as_str())
            .execute(&self.store.pool)
            .await?;
            moved += done.rows_affected();
        }
        Ok(moved)
    }

    /// One conflict of this tenant.
    pub async fn enrollment_conflict(
        &self,
        id: uuid::Uuid,
    ) -> Result<EnrollmentConflict, StoreError> {
        ListQuery::new(SELECT_CONFLICT, "c", self.tenant())
            .fetch_one(
                "c",
                "c.id",
                id.to_string(),
                &self.store.pool,
                decode_conflict,
            )
            .await
    }

    /// A page of the tenant's conflicts, oldest first.
    pub async fn list_enrollment_conflicts(
        &self,
        filter: &ConflictFilter,
        page: &PageRequest,
    ) -> Result<Page<EnrollmentConflict>, StoreError> {
        let mut q = ListQuery::new(SELECT_CONFLICT, "c", self.tenant());
        if let Some(site) = filter.edge_site_id {
            q.eq("c.edge_site_id", Arg::Text(site.to_string()));
        }
        if let Some(open) = filter.open {
            q.null("c.resolved_at", open);
        }
        q.page("c", page)
            .fetch(&self.store.pool, decode_conflict)
            .await
    }

    /// Marks an open conflict resolved by `by` and records a `resolved`
    /// event in its token's history. A resolved one is a
    /// [`StoreError::InvalidState`].
    pub async fn resolve_enrollment_conflict(
        &self,
        id: uuid::Uuid,
        by: &str,
    ) -> Result<EnrollmentConflict, StoreError> {
        let conflict = self.enrollment_conflict(id).await?;
        let now = now_ms();
        let mut tx = self.store.begin_write().await?;
        let done = sqlx::query(
            "UPDATE enrollment_events SET resolved_at = $1, resolved_by = $2 \
             WHERE tenant_id = $3 AND id = $4 AND kind = 'conflict' AND resolved_at IS NULL",
        )
        .bind(now)
        .bind(by)
        .bind(self.tenant())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::InvalidState(
                "this conflict is already resolved".into(),
            ));
        }
        crate::enrollment::insert_event_fields(
            &mut tx,
            &self.tenant(),
            conflict.token_id,
            crate::enrollment::EventFields {
                kind: "resolved",
                actor: Some(by),
                detail: Some(&format!("conflict {id} resolved")),
                ..Default::default()
            },
        )
        .await?;
        tx.commit().await?;
        self.enrollment_conflict(id).await
    }
}
