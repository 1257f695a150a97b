//! Tenants: platform-level, created by the operator (`serviceradar-core admin`).

use serviceradar_domain::TenantId;
use serviceradar_domain::resources::Tenant;
use serviceradar_domain::validate::{DisplayName, Slug};
use sqlx::any::AnyRow;

use crate::db::{Store, now_ms};
use crate::error::{StoreError, on_unique};
use crate::row::{self, Cols};

/// The start of every query that returns a [`Tenant`] (what [`decode`] reads).
macro_rules! select {
    () => {
        "SELECT id, slug, name, created_at FROM tenants"
    };
}

fn decode(row: &AnyRow) -> Result<Tenant, StoreError> {
    let r = Cols::of(row, "tenants");
    Ok(Tenant {
        id: r.parse("id")?,
        slug: r.valid("slug", Slug::parse)?,
        name: r.valid("name", DisplayName::parse)?,
        created_at: r.get("created_at")?,
    })
}

impl Store {
    /// Creates a tenant. `Conflict` if the slug is taken.
    pub async fn create_tenant(
        &self,
        slug: &Slug,
        name: &DisplayName,
    ) -> Result<Tenant, StoreError> {
        let tenant = Tenant {
            id: TenantId::new(),
            slug: slug.clone(),
            name: name.clone(),
            created_at: now_ms(),
        };
        sqlx::query("INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, $2, $3, $4)")
            .bind(tenant.id.to_string())
            .bind(tenant.slug.as_str())
            .bind(tenant.name.as_str())
            .bind(tenant.created_at)
            .execute(&self.pool)
            .await
            .map_err(on_unique("a tenant with this slug already exists"))?;
        Ok(tenant)
    }

    /// Looks a tenant up by slug.
    pub async fn tenant_by_slug(&self, slug: &str) -> Result<Tenant, StoreError> {
        self.one_tenant(concat!(select!(), " WHERE slug = $1"), slug.to_string())
            .await
    }

    /// Looks a tenant up by id.
    pub async fn tenant(&self, id: TenantId) -> Result<Tenant, StoreError> {
        self.one_tenant(concat!(select!(), " WHERE id = $1"), id.to_string())
            .await
    }

    /// The tenant `sql` finds with `value` bound to `$1`.
    async fn one_tenant(&self, sql: &'static str, value: String) -> Result<Tenant, StoreError> {
        let row = sqlx::query(sql)
            .bind(value)
            .fetch_optional(&self.pool)
            .await?;
        row::found(row, decode)
    }

    /// All tenants, oldest first.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = sqlx::query(concat!(select!(), " ORDER BY created_at, id"))
            .fetch_all(&self.pool)
            .await?;
        row::all(&rows, decode)
    }

    /// Number of tenants (used to decide whether to bootstrap).
    pub async fn count_tenants(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM tenants")
            .fetch_one(&self.pool)
            .await?;
        Cols::of(&row, "tenants").get("n")
    }
}
