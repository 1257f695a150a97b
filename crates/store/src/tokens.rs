//! API tokens of a tenant. Only a hash of the secret is stored.

use serviceradar_domain::policy::ScopeSet;
use serviceradar_domain::resources::ApiToken;
use serviceradar_domain::{ApiTokenId, UserId};
use sqlx::any::AnyRow;

use crate::Scoped;
use crate::auth_cache::Invalidation;
use crate::db::now_ms;
use crate::error::StoreError;
use crate::page::{Arg, ListQuery, Page, PageRequest};
use crate::row::Cols;

/// A token to store. The caller generated the secret and hashed it.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Id (public half of the token string).
    pub id: ApiTokenId,
    /// The user it acts for.
    pub user_id: UserId,
    /// Label.
    pub name: String,
    /// Scopes.
    pub scopes: ScopeSet,
    /// Expiry (Unix ms).
    pub expires_at: i64,
    /// Hash of the secret half.
    pub secret_hash: String,
}

/// The columns [`decode`] reads, on `api_tokens t`: every query that returns
/// an [`ApiToken`] selects this list (the credential lookup adds the hash).
macro_rules! token_columns {
    () => {
        "t.id, t.tenant_id, t.user_id, t.name, t.scopes, t.created_at, t.expires_at, \
         t.revoked_at, t.last_used_at"
    };
}
pub(crate) use token_columns;

/// One decoder for both row types (`Any`, and native PostgreSQL rows for
/// the credential lookup on the hot path).
macro_rules! token_decoder {
    ($name:ident, $row:ty) => {
        pub(crate) fn $name(row: &$row) -> Result<ApiToken, StoreError> {
            let r = Cols::of(row, "api_tokens");
            Ok(ApiToken {
                id: r.id("id")?,
                tenant_id: r.id("tenant_id")?,
                user_id: r.id("user_id")?,
                name: r.get("name")?,
                scopes: r.valid("scopes", ScopeSet::parse_text)?,
                created_at: r.get("created_at")?,
                expires_at: r.get("expires_at")?,
                revoked_at: r.get("revoked_at")?,
                last_used_at: r.get("last_used_at")?,
            })
        }
    };
}
token_decoder!(decode, AnyRow);
token_decoder!(decode_pg, sqlx::postgres::PgRow);

const SELECT: &str = concat!("SELECT ", token_columns!(), " FROM api_tokens t");

impl Scoped<'_> {
    /// Stores a new token for a user of this tenant.
    pub async fn create_token(&self, new: &NewToken) -> Result<ApiToken, StoreError> {
        // The user must belong to this tenant.
        self.user(new.user_id).await?;
        let token = ApiToken {
            id: new.id,
            tenant_id: self.scope.tenant_id(),
            user_id: new.user_id,
            name: new.name.clone(),
            scopes: new.scopes,
            created_at: now_ms(),
            expires_at: new.expires_at,
            revoked_at: None,
            last_used_at: None,
        };
        sqlx::query(
            "INSERT INTO api_tokens (id, tenant_id, user_id, name, secret_hash, scopes, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(token.id.to_string())
        .bind(self.tenant())
        .bind(token.user_id.to_string())
        .bind(token.name.as_str())
        .bind(new.secret_hash.as_str())
        .bind(token.scopes.to_text())
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(&self.store.pool)
        .await?;
        Ok(token)
    }

    /// One token of this tenant.
    pub async fn token(&self, id: ApiTokenId) -> Result<ApiToken, StoreError> {
        ListQuery::new(SELECT, "t", self.tenant())
            .fetch_one("t", "t.id", id.to_string(), &self.store.pool, decode)
            .await
    }

    /// A page of tokens, optionally only those of one user.
    pub async fn list_tokens(
        &self,
        user: Option<UserId>,
        page: &PageRequest,
    ) -> Result<Page<ApiToken>, StoreError> {
        let mut q = ListQuery::new(SELECT, "t", self.tenant());
        if let Some(user) = user {
            q.eq("t.user_id", Arg::Text(user.to_string()));
        }
        q.page("t", page).fetch(&self.store.pool, decode).await
    }

    /// Revokes a token (idempotent: revoking twice keeps the first time).
    pub async fn revoke_token(&self, id: ApiTokenId) -> Result<ApiToken, StoreError> {
        let what = Invalidation::Token(id);
        let mut tx = self.store.begin_write().await?;
        sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE tenant_id = $2 AND id = $3 AND revoked_at IS NULL",
        )
        .bind(now_ms())
        .bind(self.tenant())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        self.store.notify_auth_in(&mut tx, &what).await?;
        tx.commit().await?;
        self.store.forget_auth(&what);
        self.token(id).await
    }
}
