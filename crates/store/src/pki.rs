//! PKI and NATS identity material: the platform's root CA and NATS operator,
//! each tenant's intermediate CA and NATS account.
//!
//! Private keys and seeds arrive here already sealed (the store never sees them
//! in clear). Every row is created at most once: `insert_*` uses
//! `ON CONFLICT DO NOTHING` and returns the row that is stored afterwards, so
//! two replicas racing to create the same CA both end up using the winner's.

use serviceradar_domain::TenantId;
use sqlx::any::AnyRow;
use sqlx::{Any, Executor};

use crate::Scoped;
use crate::db::{Store, now_ms};
use crate::error::StoreError;
use crate::row::{self, Cols};

/// A platform-wide secret: public part in clear, secret part sealed.
#[derive(Clone)]
pub struct PlatformSecret {
    /// Name (`root_ca`, `nats_operator`, `nats_system_account`).
    pub name: String,
    /// Public part (certificate PEM, public nkey).
    pub public_text: String,
    /// Sealed secret part (private key PEM, nkey seed).
    pub secret_sealed: Vec<u8>,
    /// Creation time (Unix ms).
    pub created_at: i64,
}

impl std::fmt::Debug for PlatformSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformSecret")
            .field("name", &self.name)
            .field("public_text", &self.public_text)
            .finish_non_exhaustive()
    }
}

/// A tenant's intermediate CA.
#[derive(Clone)]
pub struct TenantCaRecord {
    /// CA certificate (PEM).
    pub cert_pem: String,
    /// Sealed CA private key.
    pub key_sealed: Vec<u8>,
    /// Certificate expiry (Unix ms).
    pub not_after: i64,
    /// Creation time (Unix ms).
    pub created_at: i64,
}

impl std::fmt::Debug for TenantCaRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantCaRecord")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// A tenant's NATS account.
#[derive(Clone)]
pub struct TenantNatsAccount {
    /// Account public nkey (`A...`).
    pub account_public_key: String,
    /// Sealed account seed.
    pub account_seed_sealed: Vec<u8>,
    /// Account JWT signed by the operator.
    pub account_jwt: String,
    /// Creation time (Unix ms).
    pub created_at: i64,
}

impl std::fmt::Debug for TenantNatsAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantNatsAccount")
            .field("account_public_key", &self.account_public_key)
            .finish_non_exhaustive()
    }
}

/// A tenant's NATS account as the hub knows it: no seed
/// ([`Store::all_tenant_account_jwts`]).
#[derive(Debug, Clone)]
pub struct TenantAccountJwt {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Account public nkey (`A...`).
    pub account_public_key: String,
    /// Account JWT signed by the operator.
    pub jwt: String,
}

fn decode_secret(row: &AnyRow) -> Result<PlatformSecret, StoreError> {
    let r = Cols::of(row, "platform_secrets");
    Ok(PlatformSecret {
        name: r.get("name")?,
        public_text: r.get("public_text")?,
        secret_sealed: r.get("secret_sealed")?,
        created_at: r.get("created_at")?,
    })
}

fn decode_ca(row: &AnyRow) -> Result<TenantCaRecord, StoreError> {
    let r = Cols::of(row, "tenant_cas");
    Ok(TenantCaRecord {
        cert_pem: r.get("cert_pem")?,
        key_sealed: r.get("key_sealed")?,
        not_after: r.get("not_after")?,
        created_at: r.get("created_at")?,
    })
}

fn decode_account(row: &AnyRow) -> Result<TenantNatsAccount, StoreError> {
    let r = Cols::of(row, "tenant_nats_accounts");
    Ok(TenantNatsAccount {
        account_public_key: r.get("account_public_key")?,
        account_seed_sealed: r.get("account_seed_sealed")?,
        account_jwt: r.get("account_jwt")?,
        created_at: r.get("created_at")?,
    })
}

impl Store {
    /// The platform secret called `name`, if it exists.
    pub async fn platform_secret(&self, name: &str) -> Result<Option<PlatformSecret>, StoreError> {
        let row = sqlx::query(
            "SELECT name, public_text, secret_sealed, created_at FROM platform_secrets WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode_secret).transpose()
    }

    /// Stores a platform secret unless one with this name exists; returns the
    /// stored row (this one, or the one that was there first).
    pub async fn insert_platform_secret(
        &self,
        name: &str,
        public_text: &str,
        secret_sealed: &[u8],
    ) -> Result<PlatformSecret, StoreError> {
        self.put_platform_secret(name, public_text, secret_sealed, "DO NOTHING")
            .await
    }

    /// Replaces the platform secret called `name` (or stores it when there
    /// is none): a rotated key. Whoever reads it next gets this one.
    pub async fn replace_platform_secret(
        &self,
        name: &str,
        public_text: &str,
        secret_sealed: &[u8],
    ) -> Result<PlatformSecret, StoreError> {
        self.put_platform_secret(
            name,
            public_text,
            secret_sealed,
            "DO UPDATE SET public_text = excluded.public_text, \
             secret_sealed = excluded.secret_sealed, created_at = excluded.created_at",
        )
        .await
    }

    /// Inserts a platform secret, `on_conflict` deciding what an existing
    /// one with the name becomes; returns the stored row.
    async fn put_platform_secret(
        &self,
        name: &str,
        public_text: &str,
        secret_sealed: &[u8],
        on_conflict: &'static str,
    ) -> Result<PlatformSecret, StoreError> {
        // `on_conflict` is one of the two literals above, never input.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO platform_secrets (name, public_text, secret_sealed, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (name) {on_conflict}"
        )))
        .bind(name)
        .bind(public_text)
        .bind(secret_sealed.to_vec())
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.platform_secret(name)
            .await?
            .ok_or_else(|| StoreError::corrupt("platform_secrets", "row vanished after insert"))
    }

    /// The account (public key and JWT) of every tenant that has a NATS
    /// account, oldest first, in one statement: for the hub's preloaded
    /// resolver, and for the account pusher, which compares every tenant's
    /// with what it pushed on each pass (and re-signs it with platform
    /// ingestion's exports without reading the sealed seed).
    pub async fn all_tenant_account_jwts(&self) -> Result<Vec<TenantAccountJwt>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant_id, account_public_key, account_jwt FROM tenant_nats_accounts \
             ORDER BY created_at, tenant_id",
        )
        .fetch_all(&self.pool)
        .await?;
        row::all(&rows, |row| {
            let r = Cols::of(row, "tenant_nats_accounts");
            Ok(TenantAccountJwt {
                tenant_id: r.id("tenant_id")?,
                account_public_key: r.get("account_public_key")?,
                jwt: r.get("account_jwt")?,
            })
        })
    }
}

impl Scoped<'_> {
    /// This tenant's intermediate CA, if it was created.
    pub async fn tenant_ca(&self) -> Result<Option<TenantCaRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT cert_pem, key_sealed, not_after, created_at FROM tenant_cas WHERE tenant_id = $1",
        )
        .bind(self.tenant())
        .fetch_optional(&self.store.pool)
        .await?;
        row.as_ref().map(decode_ca).transpose()
    }

    /// Stores this tenant's intermediate CA unless one exists; returns the
    /// stored one.
    pub async fn insert_tenant_ca(
        &self,
        cert_pem: &str,
        key_sealed: &[u8],
        not_after: i64,
    ) -> Result<TenantCaRecord, StoreError> {
        insert_tenant_ca(
            &self.store.pool,
            &self.tenant(),
            cert_pem,
            key_sealed,
            not_after,
        )
        .await
        .map_err(bad_tenant)?;
        self.tenant_ca()
            .await?
            .ok_or_else(|| StoreError::corrupt("tenant_cas", "row vanished after insert"))
    }

    /// This tenant's NATS account, if it was created.
    pub async fn nats_account(&self) -> Result<Option<TenantNatsAccount>, StoreError> {
        let row = sqlx::query(
            "SELECT account_public_key, account_seed_sealed, account_jwt, created_at \
             FROM tenant_nats_accounts WHERE tenant_id = $1",
        )
        .bind(self.tenant())
        .fetch_optional(&self.store.pool)
        .await?;
        row.as_ref().map(decode_account).transpose()
    }

    /// Stores this tenant's NATS account unless one exists; returns the stored one.
    pub async fn insert_nats_account(
        &self,
        account_public_key: &str,
        account_seed_sealed: &[u8],
        account_jwt: &str,
    ) -> Result<TenantNatsAccount, StoreError> {
        insert_nats_account(
            &self.store.pool,
            &self.tenant(),
            account_public_key,
            account_seed_sealed,
            account_jwt,
        )
        .await
        .map_err(bad_tenant)?;
        self.nats_account()
            .await?
            .ok_or_else(|| StoreError::corrupt("tenant_nats_accounts", "row vanished after insert"))
    }
}

impl Scoped<'_> {
    /// Replaces this tenant's account JWT if it is still `old` (compare and
    /// swap: concurrent re-signings cannot lose each other's revocations).
    /// Returns whether it was replaced.
    pub async fn replace_nats_account_jwt(&self, old: &str, new: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE tenant_nats_accounts SET account_jwt = $1 WHERE tenant_id = $2 AND account_jwt = $3",
        )
        .bind(new)
        .bind(self.tenant())
        .bind(old)
        .execute(&self.store.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// A foreign-key failure here means the tenant does not exist.
fn bad_tenant(err: sqlx::Error) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::NotFound,
        _ => StoreError::Database(err),
    }
}

/// Inserts a tenant's intermediate CA unless it has one (on the pool or
/// inside a transaction).
pub(crate) async fn insert_tenant_ca<'e>(
    db: impl Executor<'e, Database = Any>,
    tenant: &str,
    cert_pem: &str,
    key_sealed: &[u8],
    not_after: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO tenant_cas (tenant_id, cert_pem, key_sealed, not_after, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tenant)
    .bind(cert_pem)
    .bind(key_sealed.to_vec())
    .bind(not_after)
    .bind(now_ms())
    .execute(db)
    .await?;
    Ok(())
}

/// Inserts a tenant's NATS account unless it has one (on the pool or inside
/// a transaction).
pub(crate) async fn insert_nats_account<'e>(
    db: impl Executor<'e, Database = Any>,
    tenant: &str,
    account_public_key: &str,
    account_seed_sealed: &[u8],
    account_jwt: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO tenant_nats_accounts (tenant_id, account_public_key, account_seed_sealed, \
         account_jwt, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tenant)
    .bind(account_public_key)
    .bind(account_seed_sealed.to_vec())
    .bind(account_jwt)
    .bind(now_ms())
    .execute(db)
    .await?;
    Ok(())
}

/// A server certificate of the platform kept across restarts (the gateway's,
/// migration 0024): re-issued only near its expiry or when its names change.
#[derive(Clone)]
pub struct ServerCertRecord {
    /// The host names it was issued for, comma-separated as given.
    pub hosts: String,
    /// Certificate chain (PEM).
    pub cert_pem: String,
    /// Sealed private key.
    pub key_sealed: Vec<u8>,
    /// Expiry (Unix ms).
    pub not_after: i64,
    /// Issue time (Unix ms).
    pub created_at: i64,
}

impl std::fmt::Debug for ServerCertRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCertRecord")
            .field("hosts", &self.hosts)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// The stored server certificate called `name`.
    pub async fn server_certificate(
        &self,
        name: &str,
    ) -> Result<Option<ServerCertRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT hosts, cert_pem, key_sealed, not_after, created_at \
             FROM gateway_certificates WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            let r = Cols::of(&row, "gateway_certificates");
            Ok(ServerCertRecord {
                hosts: r.get("hosts")?,
                cert_pem: r.get("cert_pem")?,
                key_sealed: r.get("key_sealed")?,
                not_after: r.get("not_after")?,
                created_at: r.get("created_at")?,
            })
        })
        .transpose()
    }

    /// Stores `record` as `name`: a first one unless one exists
    /// (`replacing: None`), or in place of the one issued at `replacing`
    /// (compare-and-set, so concurrent replicas replace it once). Returns
    /// the row stored afterwards (this one or the winner's).
    pub async fn put_server_certificate(
        &self,
        name: &str,
        record: &ServerCertRecord,
        replacing: Option<i64>,
    ) -> Result<ServerCertRecord, StoreError> {
        let query = match replacing {
            None => sqlx::query(
                "INSERT INTO gateway_certificates (hosts, cert_pem, key_sealed, not_after, \
                 created_at, name) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING",
            ),
            Some(_) => sqlx::query(
                "UPDATE gateway_certificates SET hosts = $1, cert_pem = $2, key_sealed = $3, \
                 not_after = $4, created_at = $5 WHERE name = $6 AND created_at = $7",
            ),
        };
        let query = query
            .bind(&record.hosts)
            .bind(&record.cert_pem)
            .bind(record.key_sealed.clone())
            .bind(record.not_after)
            .bind(record.created_at)
            .bind(name);
        match replacing {
            None => query.execute(&self.pool).await?,
            Some(old) => query.bind(old).execute(&self.pool).await?,
        };
        self.server_certificate(name)
            .await?
            .ok_or_else(|| StoreError::corrupt("gateway_certificates", "row vanished after insert"))
    }
}
