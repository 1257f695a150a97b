//! Collector packages, optionally bound to an edge site of the same tenant.

use serde::Serialize;
use serviceradar_domain::resources::{CollectorPackage, CollectorType};
use serviceradar_domain::state::{PackageEvent, PackageStatus};
use serviceradar_domain::validate::{DisplayName, NatsUrl, Slug};
use serviceradar_domain::{EdgeSiteId, PackageId};
use sqlx::any::AnyRow;

use crate::Scoped;
use crate::db::now_ms;
use crate::error::StoreError;
use crate::page::{Arg, ListQuery, Page, PageRequest};
use crate::row::{self, Cols};

/// A package to create.
#[derive(Debug, Clone)]
pub struct NewPackage {
    /// Display name.
    pub name: DisplayName,
    /// What it installs.
    pub collector_type: CollectorType,
    /// Edge site whose leaf the collector uses; `None` for direct SaaS.
    pub edge_site_id: Option<EdgeSiteId>,
}

/// Filters for listing packages.
#[derive(Debug, Clone, Default)]
pub struct PackageFilter {
    /// Only packages in this status.
    pub status: Option<PackageStatus>,
    /// Only packages of this type.
    pub collector_type: Option<CollectorType>,
    /// Only packages bound to this site.
    pub edge_site_id: Option<EdgeSiteId>,
    /// Only packages whose name contains this (case-insensitive).
    pub name_contains: Option<String>,
}

/// The site facts a package response includes (seed 001, 4.3.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiteSummary {
    /// Site id.
    pub id: EdgeSiteId,
    /// Site name.
    pub name: DisplayName,
    /// Site slug.
    pub slug: Slug,
    /// The leaf URL collectors of this package use.
    pub nats_leaf_url: NatsUrl,
}

/// A package with its site, if bound to one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageWithSite {
    /// The package.
    pub package: CollectorPackage,
    /// Its edge site.
    pub edge_site: Option<SiteSummary>,
}

const SELECT: &str = "SELECT p.id, p.tenant_id, p.name, p.collector_type, p.edge_site_id, p.status, \
                      p.created_at, p.updated_at, s.name AS site_name, s.slug AS site_slug, \
                      s.nats_leaf_url AS site_url \
                      FROM collector_packages p \
                      LEFT JOIN edge_sites s ON s.id = p.edge_site_id AND s.tenant_id = p.tenant_id";

fn decode(row: &AnyRow) -> Result<PackageWithSite, StoreError> {
    let r = Cols::of(row, "collector_packages");
    let edge_site_id: Option<EdgeSiteId> = r.parse_opt("edge_site_id")?;
    let site_name: Option<String> = r.get("site_name")?;
    let edge_site = match (edge_site_id, site_name) {
        (Some(id), Some(_)) => Some(SiteSummary {
            id,
            name: r.valid("site_name", DisplayName::parse)?,
            slug: r.valid("site_slug", Slug::parse)?,
            nats_leaf_url: r.valid("site_url", NatsUrl::parse)?,
        }),
        _ => None,
    };
    Ok(PackageWithSite {
        package: CollectorPackage {
            id: r.id("id")?,
            tenant_id: r.id("tenant_id")?,
            name: r.valid("name", DisplayName::parse)?,
            collector_type: r.parse("collector_type")?,
            edge_site_id,
            status: r.parse("status")?,
            created_at: r.get("created_at")?,
            updated_at: r.get("updated_at")?,
        },
        edge_site,
    })
}

impl Scoped<'_> {
    /// Creates a package. The edge site, if given, must exist in this tenant
    /// (otherwise [`StoreError::BadReference`], never a hint about other tenants).
    pub async fn create_package(&self, new: &NewPackage) -> Result<PackageWithSite, StoreError> {
        if let Some(site) = new.edge_site_id {
            match self.site(site).await {
                Ok(_) => {}
                Err(StoreError::NotFound) => {
                    return Err(StoreError::BadReference {
                        field: "edge_site_id",
                        message: "no such edge site".into(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        let id = PackageId::new();
        let now = now_ms();
        sqlx::query(
            "INSERT INTO collector_packages (id, tenant_id, name, collector_type, edge_site_id, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(id.to_string())
        .bind(self.tenant())
        .bind(new.name.as_str())
        .bind(new.collector_type.as_str())
        .bind(new.edge_site_id.map(|s| s.to_string()))
        .bind(PackageStatus::Created.as_str())
        .bind(now)
        .execute(&self.store.pool)
        .await?;
        self.package(id).await
    }

    /// One package of this tenant.
    pub async fn package(&self, id: PackageId) -> Result<PackageWithSite, StoreError> {
        ListQuery::new(SELECT, "p", self.tenant())
            .fetch_one("p", "p.id", id.to_string(), &self.store.pool, decode)
            .await
    }

    /// A page of packages.
    pub async fn list_packages(
        &self,
        filter: &PackageFilter,
        page: &PageRequest,
    ) -> Result<Page<PackageWithSite>, StoreError> {
        let mut q = ListQuery::new(SELECT, "p", self.tenant());
        if let Some(status) = filter.status {
            q.eq("p.status", Arg::Text(status.as_str().into()));
        }
        if let Some(kind) = filter.collector_type {
            q.eq("p.collector_type", Arg::Text(kind.as_str().into()));
        }
        if let Some(site) = filter.edge_site_id {
            q.eq("p.edge_site_id", Arg::Text(site.to_string()));
        }
        if let Some(name) = &filter.name_contains {
            q.contains("p.name", name);
        }
        q.page("p", page).fetch(&self.store.pool, decode).await
    }

    /// Moves a package through its state machine.
    pub async fn transition_package(
        &self,
        id: PackageId,
        event: PackageEvent,
    ) -> Result<PackageWithSite, StoreError> {
        let current = self.package(id).await?;
        let next = current.package.status.apply(event)?;
        // Compare-and-set on the old status, so two concurrent transitions
        // cannot both pass the state-machine check.
        let done = sqlx::query(
            "UPDATE collector_packages SET status = $1, updated_at = $2 \
             WHERE tenant_id = $3 AND id = $4 AND status = $5",
        )
        .bind(next.as_str())
        .bind(now_ms())
        .bind(self.tenant())
        .bind(id.to_string())
        .bind(current.package.status.as_str())
        .execute(&self.store.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::InvalidState(
                "the package changed concurrently; retry".into(),
            ));
        }
        self.package(id).await
    }

    /// Records a NATS user key minted for the package's bundle.
    pub async fn add_package_user_key(&self, id: PackageId, key: &str) -> Result<(), StoreError> {
        if key.is_empty() || key.contains(' ') {
            return Err(StoreError::InvalidState("invalid NATS user key".into()));
        }
        let done = sqlx::query(
            "UPDATE collector_packages SET nats_user_keys = TRIM(nats_user_keys || ' ' || $1) \
             WHERE tenant_id = $2 AND id = $3",
        )
        .bind(key)
        .bind(self.tenant())
        .bind(id.to_string())
        .execute(&self.store.pool)
        .await?;
        row::affected(&done)
    }

    /// The NATS user keys minted for the package's bundles.
    pub async fn package_user_keys(&self, id: PackageId) -> Result<Vec<String>, StoreError> {
        let row = sqlx::query(
            "SELECT nats_user_keys FROM collector_packages WHERE tenant_id = $1 AND id = $2",
        )
        .bind(self.tenant())
        .bind(id.to_string())
        .fetch_optional(&self.store.pool)
        .await?;
        let keys: String = row::found(row, |row| {
            Cols::of(row, "collector_packages").get("nats_user_keys")
        })?;
        Ok(keys.split_whitespace().map(str::to_owned).collect())
    }

    /// Deletes a package.
    pub async fn delete_package(&self, id: PackageId) -> Result<(), StoreError> {
        self.delete_by_id("collector_packages", id.to_string())
            .await
    }
}
