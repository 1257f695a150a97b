//! Tenants: platform-level, created by the operator (`serviceradar-core admin`).

use serviceradar_domain::TenantId;
use serviceradar_domain::resources::Tenant;
use serviceradar_domain::validate::{DisplayName, Slug};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::db::{Store, now_ms, parse_col, valid_col};
use crate::error::{StoreError, on_unique};

fn decode(row: &AnyRow) -> Result<Tenant, StoreError> {
    Ok(Tenant {
        id: parse_col(row, "tenants", "id")?,
        slug: valid_col(row, "tenants", "slug", Slug::parse)?,
        name: valid_col(row, "tenants", "name", DisplayName::parse)?,
        created_at: row.try_get("created_at")?,
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
        sqlx::query("SELECT id, slug, name, created_at FROM tenants WHERE slug = $1")
            .bind(slug)
            .fetch_optional(&self.pool)
            .await?
            .map(|row| decode(&row))
            .transpose()?
            .ok_or(StoreError::NotFound)
    }

    /// Looks a tenant up by id.
    pub async fn tenant(&self, id: TenantId) -> Result<Tenant, StoreError> {
        sqlx::query("SELECT id, slug, name, created_at FROM tenants WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?
            .map(|row| decode(&row))
            .transpose()?
            .ok_or(StoreError::NotFound)
    }

    /// All tenants, oldest first.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        sqlx::query("SELECT id, slug, name, created_at FROM tenants ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    /// Number of tenants (used to decide whether to bootstrap).
    pub async fn count_tenants(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM tenants")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }
}
