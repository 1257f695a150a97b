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
use crate::{Store, jobs::JobStatus};

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
    pub async fn fleet_counts(&self) -> Result<FleetCounts, StoreError> {
        // Counted per tenant id from the (tenant_id, status) indexes alone,
        // and only then named: grouping by the joined slug made PostgreSQL
        // read every row of the table.
        let sites = sqlx::query(
            "SELECT t.slug AS tenant, c.status AS status, c.n AS n \
             FROM (SELECT tenant_id, status, COUNT(*) AS n FROM edge_sites \
             GROUP BY tenant_id, status) c JOIN tenants t ON t.id = c.tenant_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let leaves = sqlx::query(
            "SELECT t.slug AS tenant, c.status AS status, c.n AS n \
             FROM (SELECT tenant_id, status, COUNT(*) AS n FROM nats_leaf_servers \
             GROUP BY tenant_id, status) c JOIN tenants t ON t.id = c.tenant_id",
        )
        .fetch_all(&self.pool)
        .await?;
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
            sites: row::all(&sites, decode_status_count)?,
            leaves: row::all(&leaves, decode_status_count)?,
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
}
