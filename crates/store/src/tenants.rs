//! Tenants: platform-level, created by the operator (`serviceradar-core admin`).

use serviceradar_domain::resources::{Tenant, User};
use serviceradar_domain::validate::{DisplayName, Slug};
use serviceradar_domain::{TenantId, UserId};
use sqlx::any::AnyRow;
use sqlx::{Any, Executor};

use crate::db::{Store, now_ms};
use crate::error::{StoreError, on_unique};
use crate::row::{self, Cols};
use crate::users::NewUser;

/// The start of every query that returns a [`Tenant`] (what [`decode`] reads).
macro_rules! select {
    () => {
        "SELECT id, slug, name, created_at FROM tenants"
    };
}

fn decode(row: &AnyRow) -> Result<Tenant, StoreError> {
    let r = Cols::of(row, "tenants");
    Ok(Tenant {
        id: r.id("id")?,
        slug: r.valid("slug", Slug::parse)?,
        name: r.valid("name", DisplayName::parse)?,
        created_at: r.get("created_at")?,
    })
}

/// A tenant created whole: the row, its intermediate CA, its NATS account and
/// its first user, with the private parts already sealed by the caller.
pub struct NewTenantRecord<'a> {
    /// The tenant's id (chosen by the caller: the CA names it).
    pub id: TenantId,
    /// Slug.
    pub slug: &'a Slug,
    /// Display name.
    pub name: &'a DisplayName,
    /// The intermediate CA's certificate (PEM).
    pub ca_cert_pem: &'a str,
    /// Its private key, sealed.
    pub ca_key_sealed: &'a [u8],
    /// Its expiry (Unix ms).
    pub ca_not_after: i64,
    /// The NATS account's public key.
    pub account_public_key: &'a str,
    /// Its seed, sealed.
    pub account_seed_sealed: &'a [u8],
    /// Its JWT, signed by the operator.
    pub account_jwt: &'a str,
    /// The first user.
    pub owner: &'a NewUser,
}

impl Store {
    /// Creates a tenant with its CA, NATS account and first user in one
    /// transaction: either all of it exists afterwards or none of it.
    /// `Conflict` if the slug is taken.
    pub async fn create_tenant_with_identity(
        &self,
        new: &NewTenantRecord<'_>,
    ) -> Result<(Tenant, User), StoreError> {
        let now = now_ms();
        let tenant = Tenant {
            id: new.id,
            slug: new.slug.clone(),
            name: new.name.clone(),
            created_at: now,
        };
        let owner = User {
            id: UserId::new(),
            tenant_id: new.id,
            email: new.owner.email.clone(),
            role: new.owner.role,
            created_at: now,
        };
        let id = tenant.id.to_string();
        let mut tx = self.begin_write().await?;
        insert_tenant(&mut *tx, &tenant).await?;
        crate::pki::insert_tenant_ca(
            &mut *tx,
            &id,
            new.ca_cert_pem,
            new.ca_key_sealed,
            new.ca_not_after,
        )
        .await?;
        crate::pki::insert_nats_account(
            &mut *tx,
            &id,
            new.account_public_key,
            new.account_seed_sealed,
            new.account_jwt,
        )
        .await?;
        crate::users::insert_user(&mut *tx, &owner, &new.owner.password_hash).await?;
        tx.commit().await?;
        Ok((tenant, owner))
    }

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
        insert_tenant(&self.pool, &tenant).await?;
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

/// Inserts `tenant` (on the pool or inside a transaction). `Conflict` if the
/// slug is taken.
async fn insert_tenant<'e>(
    db: impl Executor<'e, Database = Any>,
    tenant: &Tenant,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, $2, $3, $4)")
        .bind(tenant.id.to_string())
        .bind(tenant.slug.as_str())
        .bind(tenant.name.as_str())
        .bind(tenant.created_at)
        .execute(db)
        .await
        .map_err(on_unique("a tenant with this slug already exists"))?;
    Ok(())
}
