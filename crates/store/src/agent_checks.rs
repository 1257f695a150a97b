//! The latest result of each check an edge agent runs: one row per agent and
//! check name, replaced only by a newer observation (an agent that pushes a
//! buffered, older result after a newer one does not move the row back).

use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::Scoped;
use crate::error::StoreError;
use crate::row::{self, Cols};

/// Most distinct checks kept per agent (the rest of a push is not stored).
pub const MAX_CHECKS_PER_AGENT: usize = 100;

/// One check's latest result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AgentCheck {
    /// The check's name (unique per agent).
    pub name: String,
    /// `nats_leaf`, `tcp`, `http`, `dns`, `icmp`.
    pub kind: String,
    /// What it checks.
    pub target: String,
    /// `ok`, `fail` or `unsupported`.
    pub status: String,
    /// What the check said.
    pub message: String,
    /// How long the check took (µs).
    pub response_time_us: i64,
    /// When the agent observed it (Unix ms).
    pub observed_at: i64,
}

fn decode(row: &AnyRow) -> Result<AgentCheck, StoreError> {
    let r = Cols::of(row, "agent_checks");
    Ok(AgentCheck {
        name: r.get("name")?,
        kind: r.get("kind")?,
        target: r.get("target")?,
        status: r.get("status")?,
        message: r.get("message")?,
        response_time_us: r.get("response_time_us")?,
        observed_at: r.get("observed_at")?,
    })
}

impl Scoped<'_> {
    /// Keeps the newest of `results` per check name (at most
    /// [`MAX_CHECKS_PER_AGENT`] names per agent), in one transaction.
    pub async fn record_agent_checks(
        &self,
        agent: Uuid,
        results: &[AgentCheck],
    ) -> Result<(), StoreError> {
        let mut newest: Vec<&AgentCheck> = Vec::new();
        for r in results {
            match newest.iter().position(|n| n.name == r.name) {
                Some(i) if newest[i].observed_at < r.observed_at => newest[i] = r,
                Some(_) => {}
                None if newest.len() < MAX_CHECKS_PER_AGENT => newest.push(r),
                None => {}
            }
        }
        if newest.is_empty() {
            return Ok(());
        }
        let mut tx = self.store.begin_write().await?;
        let kept: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM agent_checks WHERE tenant_id = $1 AND agent_id = $2",
        )
        .bind(self.tenant())
        .bind(agent.to_string())
        .fetch_one(&mut *tx)
        .await?;
        let room = MAX_CHECKS_PER_AGENT.saturating_sub(usize::try_from(kept).unwrap_or(usize::MAX));
        let mut added = 0;
        for r in newest {
            // A new name takes room; a known one is replaced if newer.
            let updated = sqlx::query(
                "UPDATE agent_checks SET kind = $1, target = $2, status = $3, message = $4, \
                 response_time_us = $5, observed_at = $6 \
                 WHERE tenant_id = $7 AND agent_id = $8 AND name = $9 AND observed_at <= $6",
            )
            .bind(&r.kind)
            .bind(&r.target)
            .bind(&r.status)
            .bind(&r.message)
            .bind(r.response_time_us)
            .bind(r.observed_at)
            .bind(self.tenant())
            .bind(agent.to_string())
            .bind(&r.name)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() > 0 || added >= room {
                continue;
            }
            let inserted = sqlx::query(
                "INSERT INTO agent_checks (tenant_id, agent_id, name, kind, target, status, \
                 message, response_time_us, observed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (tenant_id, agent_id, name) DO NOTHING",
            )
            .bind(self.tenant())
            .bind(agent.to_string())
            .bind(&r.name)
            .bind(&r.kind)
            .bind(&r.target)
            .bind(&r.status)
            .bind(&r.message)
            .bind(r.response_time_us)
            .bind(r.observed_at)
            .execute(&mut *tx)
            .await?;
            added += usize::try_from(inserted.rows_affected()).unwrap_or(0);
        }
        tx.commit().await?;
        Ok(())
    }

    /// An agent's latest check results, by name.
    pub async fn agent_checks(&self, agent: Uuid) -> Result<Vec<AgentCheck>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, kind, target, status, message, response_time_us, observed_at \
             FROM agent_checks WHERE tenant_id = $1 AND agent_id = $2 ORDER BY name",
        )
        .bind(self.tenant())
        .bind(agent.to_string())
        .fetch_all(&self.store.pool)
        .await?;
        row::all(&rows, decode)
    }
}
