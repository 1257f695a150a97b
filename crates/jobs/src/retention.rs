//! The retention sweep as a job: one `retention_sweep` job at a time (a
//! dedupe key), enqueued every interval by whichever replica gets there
//! first and run by one worker, which applies the
//! [`serviceradar_store::RetentionPolicy`].
//!
//! It exists so that with several control-plane replicas the tables are
//! swept once per interval, not once per replica, and a sweep that fails is
//! retried with the job queue's backoff like any other job.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serviceradar_store::jobs::{Job, NewJob};
use serviceradar_store::{RetentionPolicy, Store, StoreError};

use crate::{JobHandler, JobResult, Jobs};

/// Kind (and dedupe key) of the retention sweep job.
pub const RETENTION_SWEEP: &str = "retention_sweep";

/// Runs the retention sweep.
struct RetentionSweep {
    store: Store,
    policy: RetentionPolicy,
}

impl JobHandler for RetentionSweep {
    fn run<'a>(&'a self, _job: &'a Job) -> Pin<Box<dyn Future<Output = JobResult> + Send + 'a>> {
        Box::pin(async move {
            let swept = self
                .store
                .sweep_retention(&self.policy, serviceradar_store::now_ms())
                .await
                .map_err(|e| format!("sweeping: {e}"))?;
            for (table, n) in [
                ("sessions", swept.sessions),
                ("telemetry", swept.telemetry),
                ("jobs", swept.jobs),
                ("webhook_deliveries", swept.webhook_deliveries),
                ("gateway_audit", swept.gateway_audit),
                ("alerts", swept.alerts),
                ("agent_commands", swept.agent_commands),
            ] {
                metrics::counter!("serviceradar_retention_deleted_rows_total", "table" => table)
                    .increment(n);
            }
            if swept.total() > 0 {
                tracing::info!(
                    sessions = swept.sessions,
                    telemetry = swept.telemetry,
                    jobs = swept.jobs,
                    webhook_deliveries = swept.webhook_deliveries,
                    gateway_audit = swept.gateway_audit,
                    alerts = swept.alerts,
                    agent_commands = swept.agent_commands,
                    "retention sweep deleted old rows"
                );
            }
            Ok(())
        })
    }
}

/// Registers the retention sweep with `policy`.
pub fn register(jobs: &mut Jobs, store: Store, policy: RetentionPolicy) {
    jobs.register(RETENTION_SWEEP, Arc::new(RetentionSweep { store, policy }));
}

/// Enqueues a retention sweep now and then every `interval` until `stop`
/// flips (one at a time across replicas: the job's dedupe key).
pub async fn enqueue_every(
    store: Store,
    interval: std::time::Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    serviceradar_runtime::tasks::every(interval, stop, || async {
        if let Err(e) = enqueue(&store).await {
            tracing::warn!(error = %e, "enqueueing the retention sweep failed");
        }
    })
    .await;
}

/// Enqueues a sweep unless one is already waiting or running; `true` when
/// this call enqueued it.
pub async fn enqueue(store: &Store) -> Result<bool, StoreError> {
    let job = NewJob::new(RETENTION_SWEEP, serde_json::json!({})).dedupe(RETENTION_SWEEP);
    Ok(store.enqueue_job(&job, None).await?.is_some())
}
