//! Credential lookups used while authenticating a request. These run before a
//! tenant scope exists (the credential is what establishes it), so they live
//! on [`Store`] and return exactly what authentication needs.

use serviceradar_domain::policy::Role;
use serviceradar_domain::resources::{ApiToken, User};
use serviceradar_domain::{ApiTokenId, TenantId, UserId};

use crate::auth_cache::Invalidation;
use crate::db::{Store, now_ms};
use crate::error::StoreError;
use crate::row::{self, Cols};
use crate::tokens::{self, token_columns};
use crate::users::{self, user_columns};

/// A token's last use is written at most this often (ms).
const TOUCH_INTERVAL_MS: i64 = 60_000;

/// A user and their password hash, for verifying a login.
pub struct LoginRecord {
    /// The user.
    pub user: User,
    /// Argon2 PHC string.
    pub password_hash: String,
}

impl std::fmt::Debug for LoginRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRecord")
            .field("user", &self.user)
            .field("password_hash", &"...")
            .finish()
    }
}

/// A live browser session.
#[derive(Clone)]
pub struct SessionRecord {
    /// Tenant.
    pub tenant_id: TenantId,
    /// User.
    pub user_id: UserId,
    /// The user's current role (role changes apply to open sessions).
    pub role: Role,
    /// Anti-CSRF token bound to the session.
    pub csrf_token: String,
    /// Expiry (Unix ms).
    pub expires_at: i64,
}

impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("tenant_id", &self.tenant_id)
            .field("user_id", &self.user_id)
            .field("role", &self.role)
            .field("csrf_token", &"...")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// An API token with its secret hash and its user's current role.
#[derive(Clone)]
pub struct TokenRecord {
    /// Token metadata.
    pub token: ApiToken,
    /// Hash of the secret half.
    pub secret_hash: String,
    /// The owning user's current role.
    pub role: Role,
}

impl Store {
    /// The user with `email` in the tenant with slug `tenant_slug`.
    pub async fn login_record(
        &self,
        tenant_slug: &str,
        email: &str,
    ) -> Result<LoginRecord, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            ", u.password_hash FROM users u JOIN tenants t ON t.id = u.tenant_id \
             WHERE t.slug = $1 AND u.email = $2"
        ))
        .bind(tenant_slug)
        .bind(email)
        .fetch_optional(&self.pool)
        .await?;
        row::found(row, |row| {
            Ok(LoginRecord {
                user: users::decode(row)?,
                password_hash: Cols::of(row, "users").get("password_hash")?,
            })
        })
    }

    /// Stores a session keyed by the hash of its cookie value.
    pub async fn create_session(
        &self,
        token_hash: &str,
        user: &User,
        csrf_token: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sessions (token_hash, tenant_id, user_id, csrf_token, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(token_hash)
        .bind(user.tenant_id.to_string())
        .bind(user.id.to_string())
        .bind(csrf_token)
        .bind(now_ms())
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The unexpired session with this cookie hash (from this replica's
    /// credential cache when it was read recently).
    pub async fn session(&self, token_hash: &str) -> Result<SessionRecord, StoreError> {
        if let Some(session) = self.auth_cache.session(token_hash) {
            if session.expires_at > now_ms() {
                return Ok(session);
            }
            return Err(StoreError::NotFound);
        }
        let generation = self.auth_cache.generation();
        const SQL: &str = "SELECT s.tenant_id, s.user_id, s.csrf_token, s.expires_at, u.role \
             FROM sessions s JOIN users u ON u.id = s.user_id AND u.tenant_id = s.tenant_id \
             WHERE s.token_hash = $1 AND s.expires_at > $2";
        macro_rules! decode_session {
            ($row:expr) => {{
                let r = Cols::of($row, "sessions");
                Ok(SessionRecord {
                    tenant_id: r.id("tenant_id")?,
                    user_id: r.id("user_id")?,
                    role: r.parse("role")?,
                    csrf_token: r.get("csrf_token")?,
                    expires_at: r.get("expires_at")?,
                })
            }};
        }
        let session = match &self.hot {
            // The native driver on PostgreSQL: no `Any` row conversion.
            Some(hot) => {
                let now = now_ms();
                let row = hot
                    .fetch_optional(|| sqlx::query(SQL).bind(token_hash).bind(now))
                    .await?;
                row::found(row, |row| decode_session!(row))?
            }
            None => {
                let row = sqlx::query(SQL)
                    .bind(token_hash)
                    .bind(now_ms())
                    .fetch_optional(&self.pool)
                    .await?;
                row::found(row, |row| decode_session!(row))?
            }
        };
        self.auth_cache
            .put_session(generation, token_hash, &session);
        Ok(session)
    }

    /// Ends a session.
    pub async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError> {
        let what = Invalidation::Session(token_hash.to_string());
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&mut *tx)
            .await?;
        self.notify_auth_in(&mut tx, &what).await?;
        tx.commit().await?;
        self.forget_auth(&what);
        Ok(())
    }

    /// A token by id, with its secret hash and owner's role (from this
    /// replica's credential cache when it was read recently). Revocation and
    /// expiry are checked by the caller (so it can say which).
    pub async fn token_record(&self, id: ApiTokenId) -> Result<TokenRecord, StoreError> {
        if let Some(record) = self.auth_cache.token(id) {
            return Ok(record);
        }
        let generation = self.auth_cache.generation();
        const SQL: &str = concat!(
            "SELECT ",
            token_columns!(),
            ", t.secret_hash, u.role \
             FROM api_tokens t JOIN users u ON u.id = t.user_id AND u.tenant_id = t.tenant_id \
             WHERE t.id = $1"
        );
        let record = match &self.hot {
            // The native driver on PostgreSQL: no `Any` row conversion.
            Some(hot) => {
                let row = hot
                    .fetch_optional(|| sqlx::query(SQL).bind(id.to_string()))
                    .await?;
                row::found(row, |row| {
                    Ok(TokenRecord {
                        token: tokens::decode_pg(row)?,
                        secret_hash: Cols::of(row, "api_tokens").get("secret_hash")?,
                        role: Cols::of(row, "users").parse("role")?,
                    })
                })?
            }
            None => {
                let row = sqlx::query(SQL)
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await?;
                row::found(row, |row| {
                    Ok(TokenRecord {
                        token: tokens::decode(row)?,
                        secret_hash: Cols::of(row, "api_tokens").get("secret_hash")?,
                        role: Cols::of(row, "users").parse("role")?,
                    })
                })?
            }
        };
        self.auth_cache.put_token(generation, id, &record);
        Ok(record)
    }

    /// Records a token use, at most once a minute per token (keeps the hot
    /// path free of writes): of the requests that find the last use a
    /// minute old, the one that claims it in the cache writes it.
    pub async fn touch_token(
        &self,
        id: ApiTokenId,
        last_used_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        if last_used_at.is_some_and(|t| now - t < TOUCH_INTERVAL_MS)
            || !self.auth_cache.claim_touch(id, now, TOUCH_INTERVAL_MS)
        {
            return Ok(());
        }
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
