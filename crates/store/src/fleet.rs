//! Counts across every tenant for the operator's metrics: sites and leaves
//! per status, the job queue, and the soonest certificate expiries.
//!
//! It exists because these numbers live in the database, not in any one
//! replica's memory: `serviceradar-core` reads them periodically
//! ([`Store::fleet_counts`]) and publishes them as Prometheus gauges. They
//! are system queries (no [`TenantScope`](serviceradar_domain::TenantScope)):
//! counts and expiry times only, labelled with the tenant's slug, never a
//! row of tenant data. Label cardinality stays bounded: per tenant (and per
//! status or certificate kind), never per site.

use crate::error::StoreError;
use crate::row::{self, Cols};
use crate::{Backend, Store, jobs::JobStatus};

/// `fleet_status_counts.kind` of a site's row.
const SITE: &str = "site";
/// `fleet_status_counts.kind` of a leaf server's row.
const LEAF: &str = "leaf";

/// How many rows of a tenant are in one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantStatusCount {
    /// The tenant's slug.
    pub tenant: String,
    /// The status as stored (`active`, `offline`, `connected`, ...).
    pub status: String,
    /// How many.
    pub count: i64,
}

/// How many jobs of a kind are in one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCount {
    /// The job kind (`provision_leaf`, ...).
    pub kind: String,
    /// `queued`, `running` or `failed` (finished jobs are not counted).
    pub status: String,
    /// How many.
    pub count: i64,
}

/// Which certificate a [`CertExpiry`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKind {
    /// A site leaf's client/server certificates (the earlier of the two).
    Leaf,
    /// A site agent's certificate: the one the enrolled box holds, else the
    /// bundle's; revoked agents are left out.
    Agent,
    /// The tenant's intermediate CA.
    TenantCa,
}

impl CertKind {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CertKind::Leaf => "leaf",
            CertKind::Agent => "agent",
            CertKind::TenantCa => "tenant_ca",
        }
    }
}

/// The soonest expiry of one kind of certificate of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertExpiry {
    /// Which certificates.
    pub kind: CertKind,
    /// The tenant's slug.
    pub tenant: String,
    /// The earliest `not_after` among them (Unix ms).
    pub not_after_ms: i64,
}

/// Everything [`Store::fleet_counts`] reads in one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetCounts {
    /// Sites per tenant and status.
    pub sites: Vec<TenantStatusCount>,
    /// Leaf servers per tenant and status.
    pub leaves: Vec<TenantStatusCount>,
    /// Unfinished and failed jobs per kind and status.
    pub jobs: Vec<JobCount>,
    /// The soonest certificate expiries per tenant and kind.
    pub cert_expiries: Vec<CertExpiry>,
}

fn decode_status_count(r: &sqlx::any::AnyRow) -> Result<TenantStatusCount, StoreError> {
    let r = Cols::of(r, "fleet");
    Ok(TenantStatusCount {
        tenant: r.get("tenant")?,
        status: r.get("status")?,
        count: r.get("n")?,
    })
}

impl Store {
    /// Counts sites, leaves and jobs, and finds each tenant's soonest
    /// certificate expiries: a few grouped queries, for the metrics.
    ///
    /// Sites and leaves per status are not counted here but kept as their
    /// rows change (migration 0035): triggers append each change to
    /// `fleet_status_deltas`, [`Store::fold_status_deltas`] (the health
    /// sweeper's chore) moves them into the totals of
    /// `fleet_status_counts`, and this read adds the totals and the deltas
    /// not folded yet, in one statement (one snapshot, so a fold committing
    /// meanwhile is seen whole or not at all): a few rows per tenant
    /// whatever the fleet's size. Nothing is written here.
    pub async fn fleet_counts(&self) -> Result<FleetCounts, StoreError> {
        let totals = sqlx::query(
            "SELECT t.slug AS tenant, c.kind AS kind, c.status AS status, \
             CAST(SUM(c.n) AS BIGINT) AS n \
             FROM (SELECT tenant_id, kind, status, n FROM fleet_status_counts \
                   UNION ALL SELECT tenant_id, kind, status, delta FROM fleet_status_deltas) c \
             JOIN tenants t ON t.id = c.tenant_id \
             GROUP BY t.slug, c.kind, c.status HAVING SUM(c.n) <> 0 \
             ORDER BY t.slug, c.kind, c.status",
        )
        .fetch_all(&self.pool)
        .await?;
        let (mut sites, mut leaves) = (Vec::new(), Vec::new());
        for r in &totals {
            let kind: String = Cols::of(r, "fleet").get("kind")?;
            match kind.as_str() {
                SITE => sites.push(decode_status_count(r)?),
                LEAF => leaves.push(decode_status_count(r)?),
                _ => {
                    return Err(StoreError::corrupt(
                        "fleet_status_counts",
                        format!("kind {kind:?}"),
                    ));
                }
            }
        }
        let jobs = sqlx::query(
            "SELECT kind, status, COUNT(*) AS n FROM jobs \
             WHERE status IN ($1, $2, $3) GROUP BY kind, status",
        )
        .bind(JobStatus::Queued.as_str())
        .bind(JobStatus::Running.as_str())
        .bind(JobStatus::Failed.as_str())
        .fetch_all(&self.pool)
        .await?;
        let mut cert_expiries = Vec::new();
        for (kind, sql) in [
            (
                CertKind::Leaf,
                // One probe of the (tenant_id, cert_expires_at) index per
                // tenant, not a pass over every leaf; NULL for a tenant
                // without a leaf certificate, which is skipped below.
                "SELECT t.slug AS tenant, (SELECT MIN(l.cert_expires_at) \
                 FROM nats_leaf_servers l WHERE l.tenant_id = t.id) AS not_after \
                 FROM tenants t",
            ),
            (
                CertKind::Agent,
                "SELECT t.slug AS tenant, \
                 MIN(COALESCE(a.edge_cert_expires_at, a.cert_expires_at)) AS not_after \
                 FROM agents a JOIN tenants t ON t.id = a.tenant_id \
                 WHERE a.revoked_at IS NULL GROUP BY t.slug",
            ),
            (
                CertKind::TenantCa,
                "SELECT t.slug AS tenant, MIN(c.not_after) AS not_after \
                 FROM tenant_cas c JOIN tenants t ON t.id = c.tenant_id GROUP BY t.slug",
            ),
        ] {
            let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
            for r in &rows {
                let r = Cols::of(r, "fleet");
                if let Some(not_after_ms) = r.get::<Option<i64>>("not_after")? {
                    cert_expiries.push(CertExpiry {
                        kind,
                        tenant: r.get("tenant")?,
                        not_after_ms,
                    });
                }
            }
        }
        Ok(FleetCounts {
            sites,
            leaves,
            jobs: row::all(&jobs, |r| {
                let r = Cols::of(r, "fleet");
                Ok(JobCount {
                    kind: r.get("kind")?,
                    status: r.get("status")?,
                    count: r.get("n")?,
                })
            })?,
            cert_expiries,
        })
    }

    /// Moves the status changes the triggers of migration 0035 appended to
    /// `fleet_status_deltas` into the totals of `fleet_status_counts`, in one
    /// transaction: each change is added exactly once, even when several
    /// replicas fold at the same moment. Returns how many totals changed.
    ///
    /// The health sweeper calls this on every pass, so the deltas stay a
    /// few seconds' worth whether or not anything reads the counts.
    /// On PostgreSQL the deltas are deleted and added in one statement, so a
    /// change committed meanwhile is either moved whole or left for the next
    /// fold; folds take turns on a lock of the totals that readers do not
    /// wait for (two folds deleting the same deltas in different orders
    /// could deadlock). On SQLite the write transaction holds every other
    /// writer off while it adds and deletes.
    pub async fn fold_status_deltas(&self) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let changed = match self.backend() {
            Backend::Postgres => {
                sqlx::query("LOCK TABLE fleet_status_counts IN SHARE ROW EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await?;
                let done = sqlx::query(
                    "WITH moved AS (DELETE FROM fleet_status_deltas \
                     RETURNING tenant_id, kind, status, delta) \
                     INSERT INTO fleet_status_counts (tenant_id, kind, status, n) \
                     SELECT tenant_id, kind, status, SUM(delta)::BIGINT FROM moved \
                     GROUP BY tenant_id, kind, status \
                     ON CONFLICT (tenant_id, kind, status) \
                     DO UPDATE SET n = fleet_status_counts.n + EXCLUDED.n",
                )
                .execute(&mut *tx)
                .await?;
                done.rows_affected()
            }
            Backend::Sqlite => {
                let done = sqlx::query(
                    "INSERT INTO fleet_status_counts (tenant_id, kind, status, n) \
                     SELECT tenant_id, kind, status, SUM(delta) FROM fleet_status_deltas \
                     WHERE true GROUP BY tenant_id, kind, status \
                     ON CONFLICT (tenant_id, kind, status) DO UPDATE SET n = n + excluded.n",
                )
                .execute(&mut *tx)
                .await?;
                sqlx::query("DELETE FROM fleet_status_deltas")
                    .execute(&mut *tx)
                    .await?;
                done.rows_affected()
            }
        };
        tx.commit().await?;
        Ok(changed)
    }
}
