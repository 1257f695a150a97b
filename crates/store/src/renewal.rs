//! Certificate renewal of enrolled boxes: which hosts enrolled a site (the
//! cloned-machine check compares a renewing host with them), and what the
//! agent row says about the edge's certificates (issued, renewed, refused).

use serviceradar_domain::EdgeSiteId;
use uuid::Uuid;

use crate::Scoped;
use crate::db::now_ms;
use crate::error::StoreError;
use crate::row::{self, Cols};

/// A host that redeemed one of a site's enrollment tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolledHost {
    /// The token it redeemed.
    pub token_id: Uuid,
    /// SHA-256 (hex) of its machine id.
    pub host_fingerprint: String,
    /// Its host name, as it said.
    pub hostname: Option<String>,
    /// When (Unix ms).
    pub redeemed_at: i64,
}

/// What became of a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewalOutcome<'a> {
    /// Certificates were issued at enrollment; the earliest expires then.
    Enrolled {
        /// Expiry of the earliest certificate issued (Unix ms).
        expires_at: i64,
    },
    /// New certificates were issued by a renewal.
    Renewed {
        /// Expiry of the earliest certificate issued.
        expires_at: i64,
    },
    /// Refused, and why (shown on the site page).
    Refused(&'a str),
}

impl Scoped<'_> {
    /// Every host that redeemed a token of `site` (any scope but
    /// collectors'), newest first.
    pub async fn enrolled_hosts(&self, site: EdgeSiteId) -> Result<Vec<EnrolledHost>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.token_id, r.host_fingerprint, r.hostname, r.redeemed_at \
             FROM enrollment_redemptions r JOIN enrollment_tokens t ON t.id = r.token_id \
             WHERE r.tenant_id = $1 AND t.tenant_id = $1 AND t.edge_site_id = $2 \
             AND t.scope NOT LIKE 'collector:%' ORDER BY r.redeemed_at DESC, r.token_id",
        )
        .bind(self.tenant())
        .bind(site.to_string())
        .fetch_all(&self.store.pool)
        .await?;
        row::all(&rows, |row| {
            let r = Cols::of(row, "enrollment_redemptions");
            Ok(EnrolledHost {
                token_id: r.id("token_id")?,
                host_fingerprint: r.get("host_fingerprint")?,
                hostname: r.get("hostname")?,
                redeemed_at: r.get("redeemed_at")?,
            })
        })
    }

    /// Adds an event to a token's history (`renewed`, `conflict`, ...), from
    /// the edge (no user); `hostname` is the host it concerns.
    pub async fn record_enrollment_event(
        &self,
        token: Uuid,
        kind: &str,
        remote_addr: Option<&str>,
        hostname: Option<&str>,
        detail: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.store.begin_write().await?;
        crate::enrollment::insert_event_fields(
            &mut tx,
            &self.tenant(),
            token,
            crate::enrollment::EventFields {
                kind,
                remote_addr,
                detail: Some(detail),
                hostname,
                actor: None,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records on the agent row what the edge was issued (at enrollment or
    /// renewal) or why a renewal was refused.
    pub async fn record_agent_renewal(
        &self,
        agent: Uuid,
        outcome: RenewalOutcome<'_>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let query = match outcome {
            RenewalOutcome::Enrolled { expires_at } => sqlx::query(
                "UPDATE agents SET edge_cert_expires_at = $1, renewal_refused_at = NULL, \
                 renewal_refusal = NULL, updated_at = $2 WHERE tenant_id = $3 AND id = $4",
            )
            .bind(expires_at),
            RenewalOutcome::Renewed { expires_at } => sqlx::query(
                "UPDATE agents SET edge_cert_expires_at = $1, renewed_at = $2, \
                 renewal_refused_at = NULL, renewal_refusal = NULL, updated_at = $2 \
                 WHERE tenant_id = $3 AND id = $4",
            )
            .bind(expires_at),
            RenewalOutcome::Refused(why) => sqlx::query(
                "UPDATE agents SET renewal_refusal = $1, renewal_refused_at = $2, updated_at = $2 \
                 WHERE tenant_id = $3 AND id = $4",
            )
            .bind(why),
        };
        query
            .bind(now)
            .bind(self.tenant())
            .bind(agent.to_string())
            .execute(&self.store.pool)
            .await?;
        Ok(())
    }
}
