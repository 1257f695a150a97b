//! What the pipeline is told: where the hub is, how it batches and how often
//! it looks again ([`IngestSettings`] and its defaults), and the bound on the
//! messages it holds unacknowledged that follows from them.
//!
//! It exists so that the binary builds one value (from its flags) and every
//! part of the pipeline reads the same numbers.

use serviceradar_hub::client::HubEndpoint;
use std::time::Duration;

/// How often the supervisor looks for new tenants.
pub const TENANT_REFRESH: Duration = Duration::from_secs(30);
/// Default messages per batch.
pub const DEFAULT_BATCH_SIZE: usize = 1000;
/// Default number of batches written at the same time.
pub const DEFAULT_WRITERS: usize = 3;
/// Default stream retention on the hub.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How `serviceradar-core` reads the tenants' telemetry from the hub.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum IngestMode {
    /// One pipeline per tenant, each with its own hub connection as a user
    /// of the tenant's account, its own durable consumer and writers.
    #[default]
    Tenant,
    /// One platform account whose stream sources every tenant's `INGEST`
    /// stream: one hub connection, one consumer and one pipeline for all
    /// tenants (see `platform`), plus a few short-lived tenant connections
    /// for setup, site buffers, the device registry and dead letters.
    Platform,
}

/// Default cap of a tenant's messages in flight between its `INGEST` stream
/// and the platform stream (platform mode).
pub const DEFAULT_TENANT_IN_FLIGHT: usize = 2000;
/// Default number of tenant connections platform mode keeps open at once.
pub const DEFAULT_TENANT_CONNECTIONS: usize = 4;

/// Where the hub is and how the pipeline batches.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// The hub, and the lifetime of the users the pipelines mint for
    /// themselves (renewed before they expire; held in memory only).
    pub hub: HubEndpoint,
    /// Messages per batch (one database transaction each).
    pub batch_size: usize,
    /// Batches written at the same time, each in its own transaction on its
    /// own database connection (at least 1).
    pub writers: usize,
    /// Longest wait for a batch to fill.
    pub batch_timeout: Duration,
    /// How long the hub's ingest streams keep messages.
    pub retention: Duration,
    /// Per-tenant pipelines, or one platform pipeline for all tenants.
    pub mode: IngestMode,
    /// Platform mode: most messages of one tenant in flight from its stream
    /// into the platform stream (its source consumer's `max_ack_pending`).
    pub tenant_in_flight: usize,
    /// Platform mode: most tenant connections kept open at once (for
    /// setup, site buffers, the device registry and dead letters).
    pub tenant_connections: usize,
    /// Replicas of the tenants' streams on the hub (`INGEST`, `DEAD_LETTERS`,
    /// the device registry): 1 for one hub server, 3 for a hub cluster (the
    /// default of [`IngestSettings::for_hub`] when the hub has 3 or more URLs).
    pub stream_replicas: usize,
    /// How long the hub waits for an acknowledgement before redelivering
    /// (a pipeline that died mid-batch is redelivered after this).
    pub ack_wait: Duration,
    /// How often the pipeline reconciles the sites' buffers and the stream's
    /// sources with the database.
    pub site_sync_interval: Duration,
    /// How often the supervisor looks for new tenants (and pushes accounts).
    pub tenant_refresh: Duration,
    /// Leaves admitted by the leaf authorization service (when it runs in
    /// this process): a joining site's buffer is set up within seconds, not
    /// at the next `site_sync_interval`.
    pub leaf_admissions: Option<serviceradar_hub::leaf_auth::Admissions>,
    /// How long each tenant's `DEAD_LETTERS` stream keeps a dead letter.
    pub dead_letter_retention: Duration,
    /// Where the pipelines register their hub connections so the API can
    /// read the dead letters back (shared with `ControlSettings`).
    pub dead_letters: crate::DeadLetters,
    /// Where the control plane announces device changes, so the tenant's
    /// pipeline syncs the device registry on the hub at once (shared with
    /// `ControlSettings`).
    pub device_changes: crate::DeviceChanges,
}

impl IngestSettings {
    /// Defaults: batches of [`DEFAULT_BATCH_SIZE`] written by
    /// [`DEFAULT_WRITERS`] writers, 1 s batch timeout, 7 days of retention.
    pub fn new(hub_url: impl Into<String>) -> Self {
        Self::for_hub(HubEndpoint::new(hub_url))
    }

    /// Defaults (as [`IngestSettings::new`]) for the hub `hub`.
    pub fn for_hub(hub: HubEndpoint) -> Self {
        let stream_replicas = if hub.servers() >= 3 { 3 } else { 1 };
        Self {
            stream_replicas,
            hub,
            batch_size: DEFAULT_BATCH_SIZE,
            writers: DEFAULT_WRITERS,
            batch_timeout: Duration::from_secs(1),
            retention: DEFAULT_RETENTION,
            mode: IngestMode::Tenant,
            tenant_in_flight: DEFAULT_TENANT_IN_FLIGHT,
            tenant_connections: DEFAULT_TENANT_CONNECTIONS,
            ack_wait: Duration::from_secs(30),
            site_sync_interval: TENANT_REFRESH,
            tenant_refresh: TENANT_REFRESH,
            leaf_admissions: None,
            dead_letter_retention: DEFAULT_DEAD_LETTER_RETENTION,
            dead_letters: crate::DeadLetters::new(),
            device_changes: crate::DeviceChanges::default(),
        }
    }

    /// What platform mode's set-up of a tenant depends on (its `INGEST`
    /// stream's retention and replicas, its source consumer's in-flight cap),
    /// kept in the platform stream's metadata: a restarted process whose
    /// settings say the same trusts the tenants an earlier one set up.
    /// `v1` names what the set-up does; change it when that changes.
    pub(crate) fn tenant_setup(&self) -> String {
        format!(
            "v1 retention={}s replicas={} in-flight={}",
            self.retention.as_secs(),
            self.stream_replicas.max(1),
            self.tenant_in_flight.max(1)
        )
    }
}

/// How long dead letters are kept by default: 14 days.
pub const DEFAULT_DEAD_LETTER_RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);

/// How many fetched batches wait for a free writer (the fetcher is then
/// already pulling the next one: fetching overlaps writing).
pub(crate) const QUEUED_BATCHES: usize = 1;

/// Most messages the pipeline holds unacknowledged: every writer's batch, the
/// queued ones and the one being fetched.
pub(crate) fn max_in_flight(settings: &IngestSettings) -> usize {
    settings.batch_size.max(1) * (settings.writers.max(1) + QUEUED_BATCHES + 1)
}
