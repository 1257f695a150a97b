//! Gateway-initiated mode (seed 004, migration 0025): the agents a gateway
//! polls instead of waiting for them to dial out, and the state of their
//! polling.
//!
//! Redeeming an enrollment token made for this mode sets a site's agent
//! endpoint, people remove it (tenant-scoped, below);
//! every replica's poller claims due agents with a lease (a compare-and-set
//! on `lease_until`, so one replica polls an agent at a time and a dead
//! replica's lease runs out) and records each outcome under its lease.

use serviceradar_domain::agent_poll::{AgentEndpoint, PollInterval, Reachability};
use serviceradar_domain::{EdgeSiteId, TenantId};
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::db::now_ms;
use crate::error::StoreError;
use crate::row::{self, Cols};
use crate::{Scoped, Store};

/// A polled agent and the state of its polling.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AgentPoll {
    /// The agent.
    pub agent_id: Uuid,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Its site.
    pub edge_site_id: EdgeSiteId,
    /// Where it listens (`host:port`, as parsed by `AgentEndpoint`).
    pub endpoint: String,
    /// Poll interval (s).
    pub interval_secs: i64,
    /// Whether the gateway reaches it.
    pub reachability: Reachability,
    /// Consecutive failed polls.
    pub failures: i64,
    /// When the first of them failed (Unix ms).
    pub failing_since: Option<i64>,
    /// Last successful poll (Unix ms).
    pub last_success_at: Option<i64>,
    /// Why the last poll failed (a short, generic reason).
    pub last_error: Option<String>,
    /// When it is polled next (Unix ms).
    pub next_poll_at: i64,
    /// Set (Unix ms).
    pub created_at: i64,
    /// Last change (Unix ms).
    pub updated_at: i64,
}

const SELECT: &str = "SELECT agent_id, tenant_id, edge_site_id, endpoint, interval_secs, \
    reachability, failures, failing_since, last_success_at, last_error, next_poll_at, \
    created_at, updated_at FROM agent_polls";
const RETURNING: &str = " RETURNING agent_id, tenant_id, edge_site_id, endpoint, interval_secs, \
    reachability, failures, failing_since, last_success_at, last_error, next_poll_at, \
    created_at, updated_at";

fn decode(row: &AnyRow) -> Result<AgentPoll, StoreError> {
    let r = Cols::of(row, "agent_polls");
    Ok(AgentPoll {
        agent_id: r.id("agent_id")?,
        tenant_id: r.id("tenant_id")?,
        edge_site_id: r.id("edge_site_id")?,
        endpoint: r.get("endpoint")?,
        interval_secs: r.get("interval_secs")?,
        reachability: r.valid("reachability", |s| {
            Reachability::from_stored(s).ok_or("unknown reachability")
        })?,
        failures: r.get("failures")?,
        failing_since: r.get("failing_since")?,
        last_success_at: r.get("last_success_at")?,
        last_error: r.get("last_error")?,
        next_poll_at: r.get("next_poll_at")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
    })
}

impl Scoped<'_> {
    /// Puts the site's agent in gateway-initiated mode at `endpoint` (or
    /// changes its endpoint or interval): polled at once, reachability
    /// unknown until then. [`StoreError::NotFound`] when the site has no
    /// unrevoked agent in this tenant.
    pub async fn set_agent_poll(
        &self,
        site: EdgeSiteId,
        endpoint: &AgentEndpoint,
        interval: PollInterval,
    ) -> Result<AgentPoll, StoreError> {
        let now = now_ms();
        let agent: Option<String> = sqlx::query_scalar(
            "SELECT id FROM agents WHERE tenant_id = $1 AND edge_site_id = $2 \
             AND revoked_at IS NULL",
        )
        .bind(self.tenant())
        .bind(site.to_string())
        .fetch_optional(&self.store.pool)
        .await?;
        let agent = agent.ok_or(StoreError::NotFound)?;
        let sql = format!(
            "INSERT INTO agent_polls (agent_id, tenant_id, edge_site_id, endpoint, interval_secs, \
             reachability, failures, failing_since, last_success_at, last_error, next_poll_at, \
             lease_owner, lease_until, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, NULL, NULL, NULL, $7, NULL, 0, $7, $7) \
             ON CONFLICT (agent_id) DO UPDATE SET endpoint = excluded.endpoint, \
             interval_secs = excluded.interval_secs, reachability = excluded.reachability, \
             failures = 0, failing_since = NULL, last_error = NULL, \
             next_poll_at = excluded.next_poll_at, updated_at = excluded.updated_at{RETURNING}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(agent)
            .bind(self.tenant())
            .bind(site.to_string())
            .bind(endpoint.to_string())
            .bind(i64::from(interval.secs()))
            .bind(Reachability::Unknown.as_str())
            .bind(now)
            .fetch_one(&self.store.pool)
            .await?;
        decode(&row)
    }

    /// The site's polled agent, if it is in gateway-initiated mode.
    pub async fn agent_poll(&self, site: EdgeSiteId) -> Result<Option<AgentPoll>, StoreError> {
        let sql = format!("{SELECT} WHERE tenant_id = $1 AND edge_site_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(self.tenant())
            .bind(site.to_string())
            .fetch_optional(&self.store.pool)
            .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Pulls the next poll of the site's agent forward to now (a command is
    /// waiting for it), unless it is already due or the agent is failing
    /// (its retries keep their backoff). `Ok(false)` when nothing moved.
    pub async fn poll_agent_now(&self, site: EdgeSiteId) -> Result<bool, StoreError> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE agent_polls SET next_poll_at = $1 \
             WHERE tenant_id = $2 AND edge_site_id = $3 AND next_poll_at > $1 AND failures = 0",
        )
        .bind(now)
        .bind(self.tenant())
        .bind(site.to_string())
        .execute(&self.store.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Puts the site's agent back to dial-out; `Ok(false)` if it was not
    /// polled.
    pub async fn remove_agent_poll(&self, site: EdgeSiteId) -> Result<bool, StoreError> {
        let done =
            sqlx::query("DELETE FROM agent_polls WHERE tenant_id = $1 AND edge_site_id = $2")
                .bind(self.tenant())
                .bind(site.to_string())
                .execute(&self.store.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }
}

/// How a failed poll was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollFailure {
    /// Reachability before this failure.
    pub before: Reachability,
    /// After it (unreachable once the failures lasted the timeout).
    pub after: Reachability,
    /// Consecutive failures, this one included.
    pub failures: i64,
}

impl Store {
    /// Claims up to `limit` agents due for a poll for `owner` until
    /// `lease_until` (Unix ms): only rows whose lease ran out, with a
    /// compare-and-set on it, so two replicas never claim the same agent.
    /// Revoked agents are not polled.
    pub async fn claim_agent_polls(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<AgentPoll>, StoreError> {
        let sql = format!(
            "UPDATE agent_polls SET lease_owner = $1, lease_until = $2 \
             WHERE lease_until < $3 AND agent_id IN (SELECT p.agent_id FROM agent_polls p \
             JOIN agents a ON a.id = p.agent_id AND a.tenant_id = p.tenant_id \
             WHERE p.next_poll_at <= $3 AND p.lease_until < $3 AND a.revoked_at IS NULL \
             ORDER BY p.next_poll_at LIMIT $4){RETURNING}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        row::all(&rows, decode)
    }

    /// Who holds the lease on `agent`'s polling, and until when (Unix ms):
    /// the replica polling it now (`gateway-{replica id}`); `None` when no
    /// replica does.
    pub async fn agent_poll_lease(&self, agent: Uuid) -> Result<Option<(String, i64)>, StoreError> {
        let row =
            sqlx::query("SELECT lease_owner, lease_until FROM agent_polls WHERE agent_id = $1")
                .bind(agent.to_string())
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else { return Ok(None) };
        let r = Cols::of(&row, "agent_polls");
        let owner: Option<String> = r.get("lease_owner")?;
        let until: i64 = r.get("lease_until")?;
        Ok(owner.map(|o| (o, until)))
    }

    /// Releases every lease `owner` holds (a replica stopping): the agents
    /// it was polling are claimed by another replica at their next due
    /// time instead of after the lease ran out. Returns how many.
    pub async fn release_agent_polls(&self, owner: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE agent_polls SET lease_owner = NULL, lease_until = 0 WHERE lease_owner = $1",
        )
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Records a successful poll under `owner`'s lease: reachable, failures
    /// cleared, next poll at `next_poll_at`, lease released. `None` if the
    /// lease was lost (the row was changed or removed meanwhile).
    pub async fn agent_poll_succeeded(
        &self,
        agent: Uuid,
        owner: &str,
        now: i64,
        next_poll_at: i64,
    ) -> Result<Option<AgentPoll>, StoreError> {
        let sql = format!(
            "UPDATE agent_polls SET reachability = $1, failures = 0, failing_since = NULL, \
             last_success_at = $2, last_error = NULL, next_poll_at = $3, lease_owner = NULL, \
             lease_until = 0, updated_at = $2 WHERE agent_id = $4 AND lease_owner = $5{RETURNING}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(Reachability::Reachable.as_str())
            .bind(now)
            .bind(next_poll_at)
            .bind(agent.to_string())
            .bind(owner)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Records a failed poll under `owner`'s lease: one more failure, the
    /// retry at `retry_at`, lease released; the agent becomes unreachable
    /// once its failures have lasted `unreachable_after_ms`. `None` if the
    /// lease was lost.
    pub async fn agent_poll_failed(
        &self,
        agent: Uuid,
        owner: &str,
        now: i64,
        retry_at: i64,
        error: &str,
        unreachable_after_ms: i64,
    ) -> Result<Option<PollFailure>, StoreError> {
        let mut tx = self.begin_write().await?;
        let before: Option<String> = sqlx::query_scalar(
            "SELECT reachability FROM agent_polls WHERE agent_id = $1 AND lease_owner = $2",
        )
        .bind(agent.to_string())
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(before) = before else {
            return Ok(None);
        };
        let sql = format!(
            "UPDATE agent_polls SET failures = failures + 1, \
             failing_since = COALESCE(failing_since, $1), last_error = $2, next_poll_at = $3, \
             reachability = CASE WHEN COALESCE(failing_since, $1) <= $4 THEN $5 \
             ELSE reachability END, lease_owner = NULL, lease_until = 0, updated_at = $1 \
             WHERE agent_id = $6 AND lease_owner = $7{RETURNING}"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(error)
            .bind(retry_at)
            .bind(now - unreachable_after_ms)
            .bind(Reachability::Unreachable.as_str())
            .bind(agent.to_string())
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        let Some(row) = row else { return Ok(None) };
        let after = decode(&row)?;
        Ok(Some(PollFailure {
            before: Reachability::from_stored(&before)
                .ok_or_else(|| StoreError::corrupt("agent_polls", "unknown reachability"))?,
            after: after.reachability,
            failures: after.failures,
        }))
    }
}
