//! Hub sessions of edge leaves (migration `0007_leaf_sessions.sql`).
//!
//! The leaf authorization callout admits each leaf connection as a fresh NATS
//! user of the tenant's account (nats-server picks the key per connection).
//! Revoking that key is the only way to disconnect the session, so the callout
//! records it here and site deletion revokes every recorded key. Sessions end
//! on their own when their user JWT expires, so rows older than that are
//! pruned as new ones arrive.

use serviceradar_domain::EdgeSiteId;

use crate::Scoped;
use crate::error::StoreError;
use crate::row::{self, Cols};

impl Scoped<'_> {
    /// Records `user_key` as a hub session of `site`'s leaf, issued at
    /// `issued_at_ms`, and forgets the site's sessions issued before
    /// `prune_before_ms` (already expired).
    pub async fn record_leaf_session(
        &self,
        site: EdgeSiteId,
        user_key: &str,
        issued_at_ms: i64,
        prune_before_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.store.begin_write().await?;
        sqlx::query(
            "DELETE FROM leaf_hub_sessions \
             WHERE tenant_id = $1 AND site_id = $2 AND created_at < $3",
        )
        .bind(self.tenant())
        .bind(site.to_string())
        .bind(prune_before_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO leaf_hub_sessions (tenant_id, site_id, user_key, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, user_key) DO NOTHING",
        )
        .bind(self.tenant())
        .bind(site.to_string())
        .bind(user_key)
        .bind(issued_at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The user keys of `site`'s recorded hub sessions, newest first.
    pub async fn leaf_session_keys(&self, site: EdgeSiteId) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_key FROM leaf_hub_sessions \
             WHERE tenant_id = $1 AND site_id = $2 ORDER BY created_at DESC",
        )
        .bind(self.tenant())
        .bind(site.to_string())
        .fetch_all(&self.store.pool)
        .await?;
        row::all(&rows, |row| {
            Cols::of(row, "leaf_hub_sessions").get("user_key")
        })
    }

    /// Forgets `site`'s hub sessions (after they were revoked).
    pub async fn forget_leaf_sessions(&self, site: EdgeSiteId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leaf_hub_sessions WHERE tenant_id = $1 AND site_id = $2")
            .bind(self.tenant())
            .bind(site.to_string())
            .execute(&self.store.pool)
            .await?;
        Ok(())
    }
}

/// The leaf authorization callout's last refusal of a site's leaf
/// (migration `0011_leaf_refusals.sql`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafRefusal {
    /// Why the leaf was refused, in the callout's words.
    pub reason: String,
    /// When (Unix ms).
    pub refused_at: i64,
}

impl Scoped<'_> {
    /// Records that the callout refused `site`'s leaf (replacing the last one).
    pub async fn record_leaf_refusal(
        &self,
        site: EdgeSiteId,
        reason: &str,
        refused_at_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO leaf_refusals (tenant_id, site_id, reason, refused_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, site_id) \
             DO UPDATE SET reason = excluded.reason, refused_at = excluded.refused_at",
        )
        .bind(self.tenant())
        .bind(site.to_string())
        .bind(reason)
        .bind(refused_at_ms)
        .execute(&self.store.pool)
        .await?;
        Ok(())
    }

    /// The last refusal of `site`'s leaf since it was last admitted.
    pub async fn leaf_refusal(&self, site: EdgeSiteId) -> Result<Option<LeafRefusal>, StoreError> {
        let row = sqlx::query(
            "SELECT reason, refused_at FROM leaf_refusals WHERE tenant_id = $1 AND site_id = $2",
        )
        .bind(self.tenant())
        .bind(site.to_string())
        .fetch_optional(&self.store.pool)
        .await?;
        row.map(|row| {
            let r = Cols::of(&row, "leaf_refusals");
            Ok(LeafRefusal {
                reason: r.get("reason")?,
                refused_at: r.get("refused_at")?,
            })
        })
        .transpose()
    }

    /// Forgets `site`'s last refusal (its leaf was admitted).
    pub async fn forget_leaf_refusal(&self, site: EdgeSiteId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leaf_refusals WHERE tenant_id = $1 AND site_id = $2")
            .bind(self.tenant())
            .bind(site.to_string())
            .execute(&self.store.pool)
            .await?;
        Ok(())
    }
}
