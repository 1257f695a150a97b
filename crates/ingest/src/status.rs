//! Each tenant's pipeline as an operator or the tenant sees it: running or
//! failing, since when, with which error, how far behind, how much written
//! and dead-lettered ([`IngestStatus`], one [`PipelineStatus`] per tenant).
//!
//! It exists so that a stalled pipeline is visible — in the API, in the
//! metrics and in readiness — instead of only in the log: a tenant whose
//! ingestion stopped once went unnoticed for minutes while `/readyz` said
//! `ready`. The supervisor and the writers report into it; everything else
//! only reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serviceradar_domain::ids::TenantId;
use serviceradar_store::now_ms;

/// What a pipeline is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineState {
    /// Connecting, or waiting for its first batch.
    Starting,
    /// Its last attempt worked.
    Running,
    /// Its last attempt failed; it is retrying with backoff.
    Failing,
}

impl PipelineState {
    /// The state as the API and the metrics name it.
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineState::Starting => "starting",
            PipelineState::Running => "running",
            PipelineState::Failing => "failing",
        }
    }
}

/// One tenant's pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineStatus {
    /// The tenant's slug (metric label, log context).
    pub tenant: String,
    /// What it is doing.
    pub state: PipelineState,
    /// When it entered `state` (Unix ms).
    pub since_ms: i64,
    /// Failed attempts since the last success (the retry delay grows with
    /// it and starts over after a success).
    pub consecutive_failures: u32,
    /// The last failure and when (Unix ms); kept after recovery, so a
    /// flapping pipeline can be diagnosed. It says what failed (`writing
    /// the batch`, `fetching a batch`), not the causes, which name internal
    /// hosts and are logged instead: tenants read this.
    pub last_error: Option<(i64, String)>,
    /// Messages waiting in the tenant's stream behind the last batch fetched.
    pub lag: Option<u64>,
    /// When a batch was last written (Unix ms).
    pub last_batch_ms: Option<i64>,
    /// Rows written since this process started.
    pub written: u64,
    /// Messages dead-lettered since this process started.
    pub dead_lettered: u64,
    /// Monotonic twin of `since_ms`, for "failing for how long".
    since: Instant,
}

impl PipelineStatus {
    fn new(tenant: &str) -> Self {
        Self {
            tenant: tenant.to_owned(),
            state: PipelineState::Starting,
            since_ms: now_ms(),
            consecutive_failures: 0,
            last_error: None,
            lag: None,
            last_batch_ms: None,
            written: 0,
            dead_lettered: 0,
            since: Instant::now(),
        }
    }

    /// How long it has been failing, if it is.
    pub fn failing_for(&self) -> Option<Duration> {
        (self.state == PipelineState::Failing).then(|| self.since.elapsed())
    }

    /// It works: running, and the retry delay starts over.
    fn succeeded(&mut self) {
        self.enter(PipelineState::Running);
        self.consecutive_failures = 0;
    }

    fn enter(&mut self, state: PipelineState) {
        if self.state != state {
            self.state = state;
            self.since_ms = now_ms();
            self.since = Instant::now();
        }
    }
}

/// Every tenant's pipeline status. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct IngestStatus {
    tenants: Arc<Mutex<HashMap<TenantId, Entry>>>,
}

/// A tenant's status and the handles of its metrics.
#[derive(Debug)]
struct Entry {
    status: PipelineStatus,
    metrics: TenantMetrics,
}

/// A tenant's ingestion metrics, labelled with its slug. Each series is
/// registered the first time it is written (as the `metrics!` macros did on
/// every write) and then set or counted through its handle, with no label
/// built and no registry lookup: in platform mode one batch holds hundreds
/// of tenants' records and every fetch updates every tenant's status, which
/// made thousands of lookups per batch.
#[derive(Debug, Default)]
struct TenantMetrics {
    failing: Option<metrics::Gauge>,
    consecutive_failures: Option<metrics::Gauge>,
    lag: Option<metrics::Gauge>,
    last_batch: Option<metrics::Gauge>,
    counted: Option<Counted>,
}

/// The written-message counters ([`IngestStatus::counted`]).
#[derive(Debug)]
struct Counted {
    messages: metrics::Counter,
    rows: metrics::Counter,
    dead_letters: metrics::Counter,
}

impl Counted {
    fn register(tenant: &str) -> Self {
        Self {
            messages: metrics::counter!("serviceradar_ingest_messages_total", "tenant" => tenant.to_owned()),
            rows: metrics::counter!("serviceradar_ingest_rows_total", "tenant" => tenant.to_owned()),
            dead_letters: metrics::counter!("serviceradar_ingest_dead_letters_total", "tenant" => tenant.to_owned()),
        }
    }

    fn add(&self, fetched: u64, inserted: u64, dead_lettered: u64) {
        self.messages.increment(fetched);
        self.rows.increment(inserted);
        // Always touched, so the series exists (at 0) before the first
        // poison message and `increase()` sees the first one.
        self.dead_letters.increment(dead_lettered);
    }
}

impl Entry {
    fn new(slug: &str) -> Self {
        Self {
            status: PipelineStatus::new(slug),
            metrics: TenantMetrics::default(),
        }
    }

    /// The status as metrics.
    fn publish(&mut self) {
        let (status, metrics) = (&self.status, &mut self.metrics);
        let tenant = status.tenant.as_str();
        gauge(&mut metrics.failing, "serviceradar_ingest_failing", tenant).set(
            if status.state == PipelineState::Failing {
                1.0
            } else {
                0.0
            },
        );
        gauge(
            &mut metrics.consecutive_failures,
            "serviceradar_ingest_consecutive_failures",
            tenant,
        )
        .set(f64::from(status.consecutive_failures));
        if let Some(lag) = status.lag {
            gauge(&mut metrics.lag, "serviceradar_ingest_lag_messages", tenant).set(lag as f64);
        }
        if let Some(at) = status.last_batch_ms {
            gauge(
                &mut metrics.last_batch,
                "serviceradar_ingest_last_batch_timestamp_seconds",
                tenant,
            )
            .set(at as f64 / 1000.0);
        }
    }
}

/// The gauge in `slot`, registered as `name{tenant}` the first time.
fn gauge<'a>(
    slot: &'a mut Option<metrics::Gauge>,
    name: &'static str,
    tenant: &str,
) -> &'a metrics::Gauge {
    slot.get_or_insert_with(|| metrics::gauge!(name, "tenant" => tenant.to_owned()))
}

impl IngestStatus {
    /// An empty status (no pipeline started yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// `tenant`'s pipeline, if one was started.
    pub fn tenant(&self, tenant: TenantId) -> Option<PipelineStatus> {
        self.lock().get(&tenant).map(|entry| entry.status.clone())
    }

    /// Pipelines that have been failing for at least `at_least`.
    pub fn stalled(&self, at_least: Duration) -> Vec<PipelineStatus> {
        let mut stalled: Vec<_> = self
            .lock()
            .values()
            .map(|entry| &entry.status)
            .filter(|p| p.failing_for().is_some_and(|d| d >= at_least))
            .cloned()
            .collect();
        stalled.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        stalled
    }

    /// A pipeline for `tenant` is starting (again). A new tenant's is
    /// `starting` until its first fetch; a failing one stays failing until
    /// it works, and a running one stays running while it renews its NATS
    /// user (a routine reconnect, not a restart an operator should see, nor
    /// a reason to reset `since`).
    pub(crate) fn starting(&self, tenant: TenantId, slug: &str) {
        let mut tenants = self.lock();
        tenants
            .entry(tenant)
            .or_insert_with(|| Entry::new(slug))
            .publish();
    }

    /// `tenant`'s last fetched batch had `lag` messages behind it.
    pub(crate) fn lag(&self, tenant: TenantId, lag: u64) {
        self.update(tenant, |status| status.lag = Some(lag));
    }

    /// `tenant`'s fetch came back empty: caught up, nothing to write.
    pub(crate) fn idle(&self, tenant: TenantId) {
        self.update(tenant, |status| {
            status.lag = Some(0);
            status.succeeded();
        });
    }

    /// `tenant`'s pipeline wrote a batch: `written` new rows,
    /// `dead_lettered` messages dead-lettered.
    pub(crate) fn wrote(&self, tenant: TenantId, written: u64, dead_lettered: u64) {
        self.update(tenant, |status| {
            status.last_batch_ms = Some(now_ms());
            status.written += written;
            status.dead_lettered += dead_lettered;
            status.succeeded();
        });
    }

    /// Counts `tenant`'s written messages in the metrics (labelled with
    /// its slug): the ingest rate and dead letters per tenant. Both
    /// pipelines count here (the per-tenant one per batch, platform
    /// ingestion per tenant of a batch).
    pub(crate) fn counted(
        &self,
        tenant: TenantId,
        slug: &str,
        fetched: u64,
        inserted: u64,
        dead_lettered: u64,
    ) {
        let mut tenants = self.lock();
        match tenants.get_mut(&tenant) {
            Some(entry) => entry
                .metrics
                .counted
                .get_or_insert_with(|| Counted::register(slug))
                .add(fetched, inserted, dead_lettered),
            // Not started here (no status to keep): counted all the same.
            None => Counted::register(slug).add(fetched, inserted, dead_lettered),
        }
    }

    fn update(&self, tenant: TenantId, change: impl FnOnce(&mut PipelineStatus)) {
        let mut tenants = self.lock();
        if let Some(entry) = tenants.get_mut(&tenant) {
            change(&mut entry.status);
            entry.publish();
        }
    }

    /// `tenant`'s pipeline failed with `error`; returns the failures in a
    /// row (the caller's retry delay grows with it).
    pub(crate) fn failed(&self, tenant: TenantId, error: String) -> u32 {
        let mut tenants = self.lock();
        let Some(entry) = tenants.get_mut(&tenant) else {
            return 1;
        };
        let status = &mut entry.status;
        status.enter(PipelineState::Failing);
        status.consecutive_failures = status.consecutive_failures.saturating_add(1);
        status.last_error = Some((now_ms(), error));
        let failures = status.consecutive_failures;
        entry.publish();
        failures
    }

    /// Platform mode: the one pipeline fetched (`Some(lag)`: with that many
    /// messages of all tenants behind; `None`: caught up): every tenant's
    /// ingestion is running, and its lag is the shared stream's.
    pub(crate) fn progress_all(&self, lag: Option<u64>) {
        let mut tenants = self.lock();
        for entry in tenants.values_mut() {
            entry.status.lag = Some(lag.unwrap_or(0));
            entry.status.succeeded();
            entry.publish();
        }
    }

    /// Platform mode: the one pipeline failed with `error`, so every
    /// tenant's ingestion did; returns the most failures in a row.
    pub(crate) fn failed_all(&self, error: &str) -> u32 {
        let ids: Vec<TenantId> = self.lock().keys().copied().collect();
        ids.into_iter()
            .map(|id| self.failed(id, error.to_owned()))
            .max()
            .unwrap_or(1)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TenantId, Entry>> {
        // A panic while holding the lock leaves plain data behind: use it.
        self.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_success_resets_the_failure_count_and_failing_time_is_measured() {
        let status = IngestStatus::new();
        let tenant = TenantId::new();
        status.starting(tenant, "acme");
        assert_eq!(status.failed(tenant, "hub down".into()), 1);
        assert_eq!(status.failed(tenant, "hub down".into()), 2);
        let failing = status.tenant(tenant).unwrap();
        assert_eq!(failing.state, PipelineState::Failing);
        assert!(failing.failing_for().is_some());
        assert_eq!(status.stalled(Duration::ZERO).len(), 1);
        assert!(status.stalled(Duration::from_secs(3600)).is_empty());
        // Restarting does not hide that it is failing.
        status.starting(tenant, "acme");
        assert_eq!(status.tenant(tenant).unwrap().state, PipelineState::Failing);
        status.lag(tenant, 5);
        assert_eq!(status.tenant(tenant).unwrap().state, PipelineState::Failing);
        status.wrote(tenant, 10, 1);
        let running = status.tenant(tenant).unwrap();
        assert_eq!(running.state, PipelineState::Running);
        assert_eq!(running.consecutive_failures, 0);
        assert_eq!((running.written, running.dead_lettered), (10, 1));
        assert_eq!(running.lag, Some(5));
        assert_eq!(
            running.last_error.map(|(_, e)| e).as_deref(),
            Some("hub down")
        );
        assert!(status.stalled(Duration::ZERO).is_empty());
        // Renewing the NATS user restarts the pipeline: still running, since
        // the same moment.
        status.starting(tenant, "acme");
        let renewed = status.tenant(tenant).unwrap();
        assert_eq!(renewed.state, PipelineState::Running);
        assert_eq!(renewed.since_ms, running.since_ms);
        // The next failure starts the delay over.
        assert_eq!(status.failed(tenant, "again".into()), 1);
    }

    /// The value of `series` in a rendered Prometheus page.
    fn value(page: &str, series: &str) -> Option<f64> {
        page.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn each_update_reaches_the_tenant_series_through_their_handles() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let page = recorder.handle();
        let status = IngestStatus::new();
        let (acme, other) = (TenantId::new(), TenantId::new());
        metrics::with_local_recorder(&recorder, || {
            status.starting(acme, "acme");
            // No lag or batch yet: those series do not exist yet.
            let started = page.render();
            assert_eq!(
                value(&started, r#"serviceradar_ingest_failing{tenant="acme"}"#),
                Some(0.0)
            );
            assert!(!started.contains("serviceradar_ingest_lag_messages"));
            assert!(!started.contains("serviceradar_ingest_last_batch_timestamp_seconds"));

            status.failed(acme, "hub down".into());
            status.failed(acme, "hub down".into());
            let failing = page.render();
            assert_eq!(
                value(&failing, r#"serviceradar_ingest_failing{tenant="acme"}"#),
                Some(1.0)
            );
            assert_eq!(
                value(
                    &failing,
                    r#"serviceradar_ingest_consecutive_failures{tenant="acme"}"#
                ),
                Some(2.0)
            );

            status.lag(acme, 5);
            status.wrote(acme, 10, 1);
            status.counted(acme, "acme", 11, 10, 1);
            status.progress_all(Some(7));
            status.counted(acme, "acme", 4, 4, 0);
            // A tenant this status never started is counted all the same.
            status.counted(other, "other", 3, 3, 0);
        });
        let page = page.render();
        for (series, expected) in [
            (r#"serviceradar_ingest_failing{tenant="acme"}"#, 0.0),
            (
                r#"serviceradar_ingest_consecutive_failures{tenant="acme"}"#,
                0.0,
            ),
            (r#"serviceradar_ingest_lag_messages{tenant="acme"}"#, 7.0),
            (r#"serviceradar_ingest_messages_total{tenant="acme"}"#, 15.0),
            (r#"serviceradar_ingest_rows_total{tenant="acme"}"#, 14.0),
            (
                r#"serviceradar_ingest_dead_letters_total{tenant="acme"}"#,
                1.0,
            ),
            (r#"serviceradar_ingest_rows_total{tenant="other"}"#, 3.0),
        ] {
            assert_eq!(value(&page, series), Some(expected), "{series}\n{page}");
        }
        let last_batch = value(
            &page,
            r#"serviceradar_ingest_last_batch_timestamp_seconds{tenant="acme"}"#,
        )
        .expect("last batch time");
        assert!(last_batch > 1.7e9, "{last_batch}");
    }
}
