//! The job worker: claims durable jobs from the store and runs their handlers.
//!
//! Handlers are registered by kind. A worker loop claims one job at a time
//! with a lease, runs the handler, and marks the job done or failed (the store
//! schedules retries with backoff). Several loops per process and several
//! processes are safe: claiming is atomic in the store.

pub mod retention;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serviceradar_store::Store;
use serviceradar_store::jobs::{Job, JobStatus, NewJob};
use tokio::sync::watch;
use tracing::Instrument;

/// Kind of the job that provisions a new site's leaf server.
pub const PROVISION_LEAF: &str = "provision_leaf";

/// Result of a handler: `Err` holds a message recorded on the job.
pub type JobResult = Result<(), String>;

/// A job handler.
pub trait JobHandler: Send + Sync {
    /// Runs one attempt. Must be idempotent: an attempt can repeat after a crash.
    fn run<'a>(&'a self, job: &'a Job) -> Pin<Box<dyn Future<Output = JobResult> + Send + 'a>>;
}

/// The registered handlers.
#[derive(Clone, Default)]
pub struct Jobs {
    handlers: HashMap<&'static str, Arc<dyn JobHandler>>,
}

impl Jobs {
    /// Registers `handler` for jobs of `kind`.
    pub fn register(&mut self, kind: &'static str, handler: Arc<dyn JobHandler>) {
        self.handlers.insert(kind, handler);
    }

    /// Whether a handler for `kind` is registered.
    pub fn has(&self, kind: &str) -> bool {
        self.handlers.contains_key(kind)
    }

    /// The kinds with a registered handler, sorted.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds: Vec<_> = self.handlers.keys().copied().collect();
        kinds.sort_unstable();
        kinds
    }

    /// The job to enqueue with a new site, if a provisioning handler exists.
    pub fn provisioning_job_for_new_site(&self) -> Option<NewJob> {
        self.handlers
            .contains_key(PROVISION_LEAF)
            .then(|| NewJob::new(PROVISION_LEAF, serde_json::json!({})))
    }

    /// Spawns `count` worker loops that stop when `shutdown` flips to true.
    pub fn spawn_workers(
        &self,
        store: Store,
        count: usize,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..count)
            .map(|n| {
                let worker = Worker {
                    id: format!("{}-{}-{n}", hostname(), std::process::id()),
                    store: store.clone(),
                    jobs: self.clone(),
                };
                tokio::spawn(worker.run(shutdown.clone()))
            })
            .collect()
    }
}

struct Worker {
    id: String,
    store: Store,
    jobs: Jobs,
}

/// A claim's lease. The worker renews it every [`RENEW_EVERY`] while the
/// handler runs, so a long job keeps it; a worker that died (a killed
/// replica) loses it within this time and another worker reclaims the job.
const LEASE_MS: i64 = 30 * 1000;
/// How often a running job's lease is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How long a worker keeps trying to record an outcome while the database is
/// gone (its lease renewals fail meanwhile, so another worker may reclaim
/// the job after the lease; handlers are idempotent).
const RECORD_FOR: Duration = Duration::from_secs(120);
const IDLE_POLL: Duration = Duration::from_millis(250);

impl Worker {
    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let claimed = match self.store.claim_job(&self.id, LEASE_MS).await {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming a job failed");
                    None
                }
            };
            match claimed {
                Some(job) => self.execute(job).await,
                None => {
                    tokio::select! {
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
    }

    async fn execute(&self, job: Job) {
        let tenant = job.tenant_id.map(|t| t.to_string()).unwrap_or_default();
        let span = tracing::info_span!("job", job_id = %job.id, kind = %job.kind,
            tenant_id = %tenant, attempt = job.attempts);
        async {
            let run = async {
                match self.jobs.handlers.get(job.kind.as_str()) {
                    Some(handler) => handler.run(&job).await,
                    None => Err(format!("no handler for job kind {:?}", job.kind)),
                }
            };
            // Keep the lease while the handler runs.
            let renew = async {
                let mut ticks = tokio::time::interval(RENEW_EVERY);
                ticks.tick().await;
                loop {
                    ticks.tick().await;
                    match self.store.renew_job_lease(job.id, &self.id, LEASE_MS).await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!("lost the job's lease (reclaimed by another worker)"),
                        Err(e) => tracing::warn!(error = %e, "renewing the job's lease failed"),
                    }
                }
            };
            let result = tokio::select! {
                result = run => result,
                never = renew => never,
            };
            if let Err(message) = &result {
                tracing::warn!(error = %message, "job attempt failed");
            }
            // The outcome is recorded even if the database is briefly gone
            // (a restart): retried for up to `RECORD_FOR`, so the job does
            // not wait for its lease to expire and run again.
            let started = std::time::Instant::now();
            let mut wait = Duration::from_millis(250);
            let outcome = loop {
                let recorded = match &result {
                    Ok(()) => self
                        .store
                        .complete_job(job.id, &self.id)
                        .await
                        .map(|_| JobStatus::Done),
                    Err(message) => self
                        .store
                        .fail_job(job.id, &self.id, message)
                        .await
                        .map(|s| s.unwrap_or(JobStatus::Running)),
                };
                match recorded {
                    Err(e) if started.elapsed() + wait < RECORD_FOR => {
                        tracing::warn!(error = %e, retry_in = ?wait, "recording the job outcome failed; retrying");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(5));
                    }
                    other => break other,
                }
            };
            match outcome {
                Ok(status) => {
                    metrics::counter!("serviceradar_jobs_finished_total",
                        "kind" => job.kind.clone(), "status" => format!("{status:?}"))
                    .increment(1);
                    tracing::info!(?status, "job attempt finished");
                }
                Err(e) => tracing::error!(error = %e, "recording the job outcome failed"),
            }
        }
        .instrument(span)
        .await;
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "worker".into())
}
