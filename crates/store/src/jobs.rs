//! The durable job queue.
//!
//! Jobs are rows. A worker *claims* one with a single atomic statement that
//! marks it `running` with a lease (`locked_until`); on PostgreSQL the inner
//! select uses `FOR UPDATE SKIP LOCKED`, so replicas never claim the same job
//! and never wait on each other; on SQLite the statement runs under SQLite's
//! single writer lock, which gives the same guarantee for one process.
//!
//! A job whose worker dies is reclaimed when its lease expires. A failed
//! attempt is retried with exponential backoff until `max_attempts`, then the
//! job is `failed` with its last error kept. Handlers must therefore be
//! idempotent — an attempt may run again after a crash.
//!
//! `dedupe_key` keeps at most one *unfinished* job per key (e.g. one
//! provisioning job per leaf); the key is released when the job finishes.
//! A job enqueued because something it depends on changed
//! ([`Store::enqueue_job_after_change`]) must still run when the job holding
//! its key is already running (that run may have read the state before the
//! change): it is queued as that run's one follow-up
//! (`<key>:after:<running job id>`).

use serviceradar_domain::{JobId, TenantId};
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Transaction};

use crate::db::{Backend, Store, now_ms};
use crate::error::StoreError;
use crate::row::{self, Cols};

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Handler name, e.g. `provision_leaf`.
    pub kind: String,
    /// Handler input (JSON).
    pub payload: serde_json::Value,
    /// At most one unfinished job per key.
    pub dedupe_key: Option<String>,
    /// Attempts before giving up.
    pub max_attempts: i64,
    /// Earliest start (Unix ms); `None` for now.
    pub run_at: Option<i64>,
}

impl NewJob {
    /// A job of `kind` with `payload`, 8 attempts, runnable now.
    pub fn new(kind: &str, payload: serde_json::Value) -> Self {
        Self {
            kind: kind.to_string(),
            payload,
            dedupe_key: None,
            max_attempts: 8,
            run_at: None,
        }
    }

    /// Sets the dedupe key.
    pub fn dedupe(mut self, key: impl Into<String>) -> Self {
        self.dedupe_key = Some(key.into());
        self
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Waiting to run (possibly after a backoff).
    Queued,
    /// Claimed by a worker.
    Running,
    /// Finished successfully.
    Done,
    /// Gave up after `max_attempts`.
    Failed,
}

impl JobStatus {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
        }
    }
}

impl std::str::FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            JobStatus::Queued,
            JobStatus::Running,
            JobStatus::Done,
            JobStatus::Failed,
        ]
        .into_iter()
        .find(|j| j.as_str() == s)
        .ok_or_else(|| format!("unknown job status {s:?}"))
    }
}

/// A job row.
#[derive(Debug, Clone)]
pub struct Job {
    /// Id.
    pub id: JobId,
    /// Tenant the job works for, if any.
    pub tenant_id: Option<TenantId>,
    /// Handler name.
    pub kind: String,
    /// Handler input.
    pub payload: serde_json::Value,
    /// Status.
    pub status: JobStatus,
    /// Attempts so far (including the running one).
    pub attempts: i64,
    /// Attempt limit.
    pub max_attempts: i64,
    /// Last failure.
    pub last_error: Option<String>,
}

/// The columns [`decode`] reads: claiming returns them, the lookup selects them.
macro_rules! job_columns {
    () => {
        "id, tenant_id, kind, payload, status, attempts, max_attempts, last_error"
    };
}

fn decode(row: &AnyRow) -> Result<Job, StoreError> {
    let r = Cols::of(row, "jobs");
    Ok(Job {
        id: r.id("id")?,
        tenant_id: r.parse_opt("tenant_id")?,
        kind: r.get("kind")?,
        payload: r.json("payload")?,
        status: r.parse("status")?,
        attempts: r.get("attempts")?,
        max_attempts: r.get("max_attempts")?,
        last_error: r.get("last_error")?,
    })
}

/// Inserts a job inside a caller's transaction. With a dedupe key that an
/// unfinished job holds, nothing is inserted and `None` returned.
pub(crate) async fn insert_job(
    tx: &mut Transaction<'_, Any>,
    job: &NewJob,
    tenant: Option<TenantId>,
) -> Result<Option<JobId>, StoreError> {
    let id = JobId::new();
    let now = now_ms();
    let done = sqlx::query(
        "INSERT INTO jobs (id, tenant_id, kind, payload, status, attempts, max_attempts, run_at, dedupe_key, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, 'queued', 0, $5, $6, $7, $8, $8) ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(tenant.map(|t| t.to_string()))
    .bind(job.kind.as_str())
    .bind(job.payload.to_string())
    .bind(job.max_attempts)
    .bind(job.run_at.unwrap_or(now))
    .bind(job.dedupe_key.clone())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok((done.rows_affected() == 1).then_some(id))
}

/// [`insert_job`], or, when a running job holds the key, the running job's
/// one follow-up (see [`Store::enqueue_job_after_change`]). `None` when an
/// unfinished job that has not started yet (it will read the change) or a
/// follow-up already holds the key.
pub(crate) async fn insert_job_after_change(
    tx: &mut Transaction<'_, Any>,
    job: &NewJob,
    tenant: Option<TenantId>,
) -> Result<Option<JobId>, StoreError> {
    if let Some(id) = insert_job(tx, job, tenant).await? {
        return Ok(Some(id));
    }
    let Some(key) = &job.dedupe_key else {
        return Ok(None);
    };
    let holder = sqlx::query("SELECT id FROM jobs WHERE dedupe_key = $1 AND status = 'running'")
        .bind(key.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    match holder {
        Some(row) => {
            let running: String = Cols::of(&row, "jobs").get("id")?;
            let follow_up = job.clone().dedupe(format!("{key}:after:{running}"));
            insert_job(tx, &follow_up, tenant).await
        }
        None => Ok(None),
    }
}

/// Delay before retry number `attempt` (1-based): 1 s, 2 s, 4 s, ... capped at 10 min.
pub fn backoff_ms(attempt: i64) -> i64 {
    let exp = attempt.clamp(1, 20) - 1;
    (1_000i64 << exp).min(600_000)
}

impl Store {
    /// Enqueues a job. `None` if an unfinished job holds the same dedupe key.
    pub async fn enqueue_job(
        &self,
        job: &NewJob,
        tenant: Option<TenantId>,
    ) -> Result<Option<JobId>, StoreError> {
        let mut tx = self.begin_write().await?;
        let id = insert_job(&mut tx, job, tenant).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Enqueues a job that must run because something it depends on just
    /// changed: like [`Store::enqueue_job`], but when a *running* job holds
    /// the dedupe key (it may have read the state before the change), the
    /// job is queued as that run's follow-up instead of being dropped.
    pub async fn enqueue_job_after_change(
        &self,
        job: &NewJob,
        tenant: Option<TenantId>,
    ) -> Result<Option<JobId>, StoreError> {
        let mut tx = self.begin_write().await?;
        let id = insert_job_after_change(&mut tx, job, tenant).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Claims the next runnable job for `worker`, holding it for `lease_ms`.
    /// Runnable: queued and due, or running with an expired lease (its worker died).
    pub async fn claim_job(&self, worker: &str, lease_ms: i64) -> Result<Option<Job>, StoreError> {
        let now = now_ms();
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, locked_by = $1, \
             locked_until = $2, updated_at = $3 \
             WHERE id = (SELECT id FROM jobs WHERE (status = 'queued' AND run_at <= $3) \
                         OR (status = 'running' AND locked_until < $3) \
                         ORDER BY run_at, id LIMIT 1{lock}) \
             RETURNING {}",
            job_columns!()
        );
        // A job whose worker died on its last attempt is not reclaimed forever:
        // it fails, keeping the reason.
        sqlx::query(
            "UPDATE jobs SET status = 'failed', locked_by = NULL, locked_until = NULL, dedupe_key = NULL, \
             last_error = 'worker lease expired on the last attempt', updated_at = $1 \
             WHERE status = 'running' AND locked_until < $1 AND attempts >= max_attempts",
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(worker)
            .bind(now + lease_ms)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Extends `worker`'s lease on a running job to `lease_ms` from now;
    /// `false` when the worker no longer holds it.
    pub async fn renew_job_lease(
        &self,
        id: JobId,
        worker: &str,
        lease_ms: i64,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let renewed = sqlx::query(
            "UPDATE jobs SET locked_until = $1, updated_at = $2 \
             WHERE id = $3 AND status = 'running' AND locked_by = $4",
        )
        .bind(now + lease_ms)
        .bind(now)
        .bind(id.to_string())
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    /// Marks a claimed job done. Ignored if `worker` lost the lease meanwhile.
    pub async fn complete_job(&self, id: JobId, worker: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'done', locked_by = NULL, locked_until = NULL, dedupe_key = NULL, \
             last_error = NULL, updated_at = $1 WHERE id = $2 AND status = 'running' AND locked_by = $3",
        )
        .bind(now_ms())
        .bind(id.to_string())
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a failed attempt: back to `queued` after a backoff, or `failed`
    /// once attempts are used up. Returns the new status.
    pub async fn fail_job(
        &self,
        id: JobId,
        worker: &str,
        error: &str,
    ) -> Result<Option<JobStatus>, StoreError> {
        let now = now_ms();
        let row = sqlx::query(
            "SELECT attempts, max_attempts FROM jobs WHERE id = $1 AND status = 'running' AND locked_by = $2",
        )
        .bind(id.to_string())
        .bind(worker)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let r = Cols::of(&row, "jobs");
        let attempts: i64 = r.get("attempts")?;
        let max: i64 = r.get("max_attempts")?;
        let status = if attempts >= max {
            JobStatus::Failed
        } else {
            JobStatus::Queued
        };
        let (run_at, dedupe) = match status {
            JobStatus::Failed => (now, "NULL"),
            _ => (now + backoff_ms(attempts), "dedupe_key"),
        };
        let sql = format!(
            "UPDATE jobs SET status = $1, run_at = $2, last_error = $3, locked_by = NULL, \
             locked_until = NULL, dedupe_key = {dedupe}, updated_at = $4 \
             WHERE id = $5 AND locked_by = $6"
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(status.as_str())
            .bind(run_at)
            .bind(truncate(error, 2_000))
            .bind(now)
            .bind(id.to_string())
            .bind(worker)
            .execute(&self.pool)
            .await?;
        Ok(Some(status))
    }

    /// A job by id.
    pub async fn job(&self, id: JobId) -> Result<Job, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row::found(row, decode)
    }

    /// Makes a queued job (e.g. one backing off after a failure) runnable now.
    /// For tests; finished or running jobs are left alone.
    #[doc(hidden)]
    pub async fn make_job_due(&self, id: JobId) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET run_at = $1 WHERE id = $2 AND status = 'queued'")
            .bind(now_ms())
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Counts jobs by status (for metrics and tests).
    pub async fn count_jobs(&self, status: JobStatus) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM jobs WHERE status = $1")
            .bind(status.as_str())
            .fetch_one(&self.pool)
            .await?;
        Cols::of(&row, "jobs").get("n")
    }
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff_ms(1), 1_000);
        assert_eq!(backoff_ms(2), 2_000);
        assert_eq!(backoff_ms(5), 16_000);
        assert_eq!(backoff_ms(100), 600_000);
    }
}
