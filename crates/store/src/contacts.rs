//! Batched writes of what agents report when nothing changes: contact
//! (`last_seen_at` of agent and site) and the latest results of checks whose
//! status did not change. The gateway's write-behind buffer
//! (`serviceradar_gateway::status`) coalesces these per replica and writes
//! each batch with a few statements instead of one transaction per push.
//!
//! Nothing here changes a status: a site that is not `active` any more is
//! not touched and is returned to the caller, which takes the state path
//! (`Scoped::agent_seen`: the state machine, events, alerts). Every row is
//! matched on its `tenant_id` as well as its id, like every tenant query.
//! Timestamps only move forward, so a batch that lands after a newer write
//! never moves a row back.

use serviceradar_domain::state::SiteStatus;
use serviceradar_domain::{EdgeSiteId, TenantId};
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use crate::agent_checks::AgentCheck;
use crate::db::Store;
use crate::error::StoreError;
use crate::row::{self, Cols};

/// Rows per statement (well under SQLite's 999 bound parameters).
const ROWS_PER_STATEMENT: usize = 100;

/// One agent's contact, coalesced: the newest instant it was heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contact {
    /// Tenant.
    pub tenant_id: TenantId,
    /// The agent.
    pub agent_id: Uuid,
    /// Its site.
    pub site_id: EdgeSiteId,
    /// When it was last heard from (Unix ms).
    pub seen_at: i64,
}

/// The newest result of one check of one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckUpdate {
    /// Tenant.
    pub tenant_id: TenantId,
    /// The agent.
    pub agent_id: Uuid,
    /// The result (its name is the row's key).
    pub check: AgentCheck,
}

fn values(rows: usize, columns: usize) -> String {
    let mut sql = String::new();
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..columns {
            if c > 0 {
                sql.push_str(", ");
            }
            let n = r * columns + c + 1;
            sql.push_str(&format!("${n}"));
        }
        sql.push(')');
    }
    sql
}

impl Store {
    /// Stamps `last_seen_at` of each contact's agent, and of its site while
    /// the site is `active`. Returns the contacts whose site was not
    /// `active` (offline, or never seen): their status must move through
    /// the state path.
    pub async fn record_contacts(&self, contacts: &[Contact]) -> Result<Vec<Contact>, StoreError> {
        let mut not_active = Vec::new();
        for chunk in contacts.chunks(ROWS_PER_STATEMENT) {
            let rows = values(chunk.len(), 3);
            let sql = format!(
                "UPDATE agents SET last_seen_at = v.column3 FROM (VALUES {rows}) AS v \
                 WHERE agents.tenant_id = v.column1 AND agents.id = v.column2 \
                 AND (agents.last_seen_at IS NULL OR agents.last_seen_at < v.column3)"
            );
            // Only placeholders and constants are formatted in.
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for c in chunk {
                q = q
                    .bind(c.tenant_id.to_string())
                    .bind(c.agent_id.to_string())
                    .bind(c.seen_at);
            }
            q.execute(&self.pool).await?;

            let sql = format!(
                "UPDATE edge_sites SET last_seen_at = v.column3 FROM (VALUES {rows}) AS v \
                 WHERE edge_sites.tenant_id = v.column1 AND edge_sites.id = v.column2 \
                 AND edge_sites.status = '{active}' \
                 AND (edge_sites.last_seen_at IS NULL OR edge_sites.last_seen_at <= v.column3) \
                 RETURNING edge_sites.id",
                active = SiteStatus::Active.as_str()
            );
            // Only placeholders and constants are formatted in.
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for c in chunk {
                q = q
                    .bind(c.tenant_id.to_string())
                    .bind(c.site_id.to_string())
                    .bind(c.seen_at);
            }
            let stamped = q.fetch_all(&self.pool).await?;
            let stamped: Vec<EdgeSiteId> =
                row::all(&stamped, |r| Cols::of(r, "edge_sites").id("id"))?;
            // A site stamped later by a newer write is active too: only a
            // site whose status is not `active` takes the state path.
            let missed: Vec<&Contact> = chunk
                .iter()
                .filter(|c| !stamped.contains(&c.site_id))
                .collect();
            for c in missed {
                if self.site_status(c.tenant_id, c.site_id).await? != Some(SiteStatus::Active) {
                    not_active.push(*c);
                }
            }
        }
        Ok(not_active)
    }

    async fn site_status(
        &self,
        tenant: TenantId,
        site: EdgeSiteId,
    ) -> Result<Option<SiteStatus>, StoreError> {
        let row = sqlx::query("SELECT status FROM edge_sites WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.to_string())
            .bind(site.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Cols::of(&r, "edge_sites").parse("status"))
            .transpose()
    }

    /// Replaces stored check results with newer ones. Only rows that exist
    /// are updated (a check the agent reports for the first time is stored
    /// by `Scoped::record_agent_checks`, which keeps the per-agent bound);
    /// an older result never replaces a newer one. `updates` must name each
    /// (tenant, agent, check) once.
    pub async fn update_check_results(&self, updates: &[CheckUpdate]) -> Result<(), StoreError> {
        for chunk in updates.chunks(ROWS_PER_STATEMENT) {
            let rows = values(chunk.len(), 9);
            let sql = format!(
                "UPDATE agent_checks SET kind = v.column4, target = v.column5, status = v.column6, \
                 message = v.column7, response_time_us = v.column8, observed_at = v.column9 \
                 FROM (VALUES {rows}) AS v \
                 WHERE agent_checks.tenant_id = v.column1 AND agent_checks.agent_id = v.column2 \
                 AND agent_checks.name = v.column3 AND agent_checks.observed_at <= v.column9"
            );
            // Only placeholders and constants are formatted in.
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for u in chunk {
                let c = &u.check;
                q = q
                    .bind(u.tenant_id.to_string())
                    .bind(u.agent_id.to_string())
                    .bind(c.name.clone())
                    .bind(c.kind.clone())
                    .bind(c.target.clone())
                    .bind(c.status.clone())
                    .bind(c.message.clone())
                    .bind(c.response_time_us)
                    .bind(c.observed_at);
            }
            q.execute(&self.pool).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::values;

    #[test]
    fn values_number_the_parameters_row_by_row() {
        assert_eq!(values(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }
}
