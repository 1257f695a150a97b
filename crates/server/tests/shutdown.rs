//! Shutdown is bounded (issue 11, finding 12): a worker stuck in a job, an
//! open HTTP request and the other background tasks are drained in parallel
//! for at most the grace period, then aborted; the server stops in time and
//! says which task it aborted.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serviceradar_jobs::{JobHandler, JobResult, Jobs};
use serviceradar_server::app::{Application, Settings};
use serviceradar_store::jobs::{Job, JobStatus, NewJob};

mod support;

/// A job that never finishes.
struct Stuck;

impl JobHandler for Stuck {
    fn run<'a>(&'a self, _job: &'a Job) -> Pin<Box<dyn Future<Output = JobResult> + Send + 'a>> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_worker_cannot_hold_shutdown_past_the_grace_period() {
    support::init();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings::new(format!("sqlite://{}", dir.path().join("t.db").display()));
    settings.job_workers = 2;
    settings.shutdown_grace = Duration::from_secs(2);
    let mut jobs = Jobs::default();
    jobs.register("stuck", Arc::new(Stuck));
    let app = Application::build_with_jobs(settings, jobs).await.unwrap();
    let store = app.store().clone();
    let job = store
        .enqueue_job(&NewJob::new("stuck", serde_json::json!({})), None)
        .await
        .unwrap()
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    // The job is running (claimed) before the stop.
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.job(job).await.unwrap().status != JobStatus::Running {
        assert!(Instant::now() < deadline, "the stuck job never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopping = Instant::now();
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("shutdown is bounded")
        .unwrap()
        .unwrap();
    let took = stopping.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "stopping took {took:?} with a 2 s grace period"
    );
    let logs = support::captured_logs();
    assert!(
        logs.contains("did not stop within the shutdown grace period")
            && logs.contains("a job worker"),
        "{logs}"
    );
}
