//! Retention: deleting what has outlived its use, so that no table grows
//! forever. Expired sessions go at once; telemetry after the tenant's number
//! of days (its own, else the server's default); finished jobs, webhook
//! deliveries, gateway audit rows and resolved alerts after their age limit.
//!
//! It exists as one sweep over every table with a retention rule, deleting
//! in bounded chunks (each its own short statement, so neither backend holds
//! a long lock and a sweep interrupted half-way loses nothing it should
//! have kept). Telemetry ages by event time (`created_at`), the order the
//! API lists it in.

use std::time::Duration;

use sqlx::AssertSqlSafe;

use crate::db::Store;
use crate::error::StoreError;
use crate::page::Arg;
use crate::row::Cols;

/// Rows deleted per statement.
const CHUNK: i64 = 5_000;

/// How long each kind of row is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Days of telemetry a tenant without its own setting keeps.
    pub telemetry_days: u32,
    /// How long finished (done or failed) jobs are kept.
    pub finished_jobs: Duration,
    /// How long webhook delivery attempts are kept.
    pub webhook_deliveries: Duration,
    /// How long gateway audit rows and agent commands are kept.
    pub gateway_audit: Duration,
    /// How long resolved alerts are kept.
    pub resolved_alerts: Duration,
}

/// One day.
const DAY: Duration = Duration::from_secs(24 * 3600);

impl Default for RetentionPolicy {
    /// 30 days of telemetry, 7 of finished jobs, 30 of webhook deliveries,
    /// 90 of gateway audit rows and resolved alerts.
    fn default() -> Self {
        Self {
            telemetry_days: 30,
            finished_jobs: DAY * 7,
            webhook_deliveries: DAY * 30,
            gateway_audit: DAY * 90,
            resolved_alerts: DAY * 90,
        }
    }
}

/// Rows one sweep deleted, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Expired sessions.
    pub sessions: u64,
    /// Events, metrics and logs.
    pub telemetry: u64,
    /// Finished jobs.
    pub jobs: u64,
    /// Webhook delivery attempts.
    pub webhook_deliveries: u64,
    /// Gateway audit rows.
    pub gateway_audit: u64,
    /// Resolved alerts.
    pub alerts: u64,
    /// Agent commands (the command history, kept like the gateway audit).
    pub agent_commands: u64,
    /// Agents' results uploads (kept like the tenant's telemetry).
    pub results: u64,
}

impl Swept {
    /// Rows deleted in all.
    pub fn total(&self) -> u64 {
        self.sessions
            + self.telemetry
            + self.jobs
            + self.webhook_deliveries
            + self.gateway_audit
            + self.alerts
            + self.agent_commands
            + self.results
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Store {
    /// Deletes everything `policy` no longer keeps, as of `now` (Unix ms).
    pub async fn sweep_retention(
        &self,
        policy: &RetentionPolicy,
        now: i64,
    ) -> Result<Swept, StoreError> {
        let before = |age: Duration| now.saturating_sub(ms(age));
        let mut swept = Swept {
            sessions: self
                .delete_chunked(
                    "sessions",
                    "token_hash",
                    "expires_at <= $1",
                    &[Arg::Int(now)],
                )
                .await?,
            jobs: self
                .delete_chunked(
                    "jobs",
                    "id",
                    "status IN ('done', 'failed') AND updated_at < $1",
                    &[Arg::Int(before(policy.finished_jobs))],
                )
                .await?,
            webhook_deliveries: self
                .delete_chunked(
                    "webhook_deliveries",
                    "id",
                    "created_at < $1",
                    &[Arg::Int(before(policy.webhook_deliveries))],
                )
                .await?,
            gateway_audit: self
                .delete_chunked(
                    "gateway_audit",
                    "id",
                    "created_at < $1",
                    &[Arg::Int(before(policy.gateway_audit))],
                )
                .await?,
            alerts: self
                .delete_chunked(
                    "alerts",
                    "id",
                    "status = 'resolved' AND resolved_at < $1",
                    &[Arg::Int(before(policy.resolved_alerts))],
                )
                .await?,
            agent_commands: self
                .delete_chunked(
                    "agent_commands",
                    "id",
                    "created_at < $1",
                    &[Arg::Int(before(policy.gateway_audit))],
                )
                .await?,
            telemetry: 0,
            results: 0,
        };
        for (tenant, days) in self.telemetry_retention(policy.telemetry_days).await? {
            let cutoff = before(DAY * days);
            for table in ["events", "metrics", "logs"] {
                swept.telemetry += self
                    .delete_chunked(
                        table,
                        "id",
                        "tenant_id = $1 AND created_at < $2",
                        &[Arg::Text(tenant.clone()), Arg::Int(cutoff)],
                    )
                    .await?;
            }
            // Results uploads (their chunks go with them).
            swept.results += self
                .delete_chunked(
                    "agent_uploads",
                    "id",
                    "tenant_id = $1 AND created_at < $2",
                    &[Arg::Text(tenant.clone()), Arg::Int(cutoff)],
                )
                .await?;
        }
        Ok(swept)
    }

    /// Every tenant's telemetry retention in days: its own, else `default`.
    async fn telemetry_retention(&self, default: u32) -> Result<Vec<(String, u32)>, StoreError> {
        let rows = sqlx::query("SELECT id, telemetry_retention_days FROM tenants")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let cols = Cols::of(row, "tenants");
                let days: Option<i64> = cols.get("telemetry_retention_days")?;
                let days = days.and_then(|d| u32::try_from(d).ok()).unwrap_or(default);
                Ok((cols.get::<String>("id")?, days))
            })
            .collect()
    }

    /// Sets how many days of telemetry `tenant` keeps (`None`: the server's
    /// default). At least one day.
    pub async fn set_telemetry_retention(
        &self,
        tenant: serviceradar_domain::TenantId,
        days: Option<u32>,
    ) -> Result<(), StoreError> {
        if days == Some(0) {
            return Err(StoreError::InvalidState(
                "telemetry retention must be at least one day".into(),
            ));
        }
        let updated = sqlx::query("UPDATE tenants SET telemetry_retention_days = $1 WHERE id = $2")
            .bind(days.map(i64::from))
            .bind(tenant.to_string())
            .execute(&self.pool)
            .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// The days of telemetry `tenant` keeps by its own setting, if it has one.
    pub async fn telemetry_retention_of(
        &self,
        tenant: serviceradar_domain::TenantId,
    ) -> Result<Option<u32>, StoreError> {
        let row = sqlx::query("SELECT telemetry_retention_days FROM tenants WHERE id = $1")
            .bind(tenant.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)?;
        let days: Option<i64> = Cols::of(&row, "tenants").get("telemetry_retention_days")?;
        Ok(days.and_then(|d| u32::try_from(d).ok()))
    }

    /// Deletes rows of `table` matching `condition` (its `$n` bound to
    /// `args`), [`CHUNK`] at a time by `key`; returns how many.
    async fn delete_chunked(
        &self,
        table: &'static str,
        key: &'static str,
        condition: &'static str,
        args: &[Arg],
    ) -> Result<u64, StoreError> {
        let sql = format!(
            "DELETE FROM {table} WHERE {key} IN \
             (SELECT {key} FROM {table} WHERE {condition} LIMIT {CHUNK})"
        );
        let mut deleted = 0;
        loop {
            let mut query = sqlx::query(AssertSqlSafe(sql.clone()));
            for arg in args {
                query = match arg {
                    Arg::Int(n) => query.bind(*n),
                    Arg::Text(text) => query.bind(text.clone()),
                };
            }
            let n = query.execute(&self.pool).await?.rows_affected();
            deleted += n;
            if n < CHUNK as u64 {
                return Ok(deleted);
            }
        }
    }
}
