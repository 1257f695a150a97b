//! Gauges read from the database: sites and leaves per status, the job
//! queue, and certificate expiries.
//!
//! It exists because these numbers are the platform's, not one replica's:
//! every replica reads them from the store every interval (30 s by default
//! in `serviceradar-core`) and publishes the same values, so any replica's `/metrics`
//! answers (alert rules aggregate with `max`). Labels are bounded: the
//! tenant's slug and a status, job kind or certificate kind, never a site
//! (which site is the web UI's and the API's to say).
//!
//! | metric | labels | value |
//! | --- | --- | --- |
//! | `serviceradar_sites` | `tenant`, `status` (`pending`, `active`, `offline`) | sites |
//! | `serviceradar_leaves` | `tenant`, `status` (`pending`, `provisioned`, `connected`, `disconnected`) | leaf servers |
//! | `serviceradar_jobs` | `kind`, `status` (`queued`, `running`, `failed`) | jobs (failed ones until the retention sweep removes them, 7 days) |
//! | `serviceradar_certificate_expiry_timestamp_seconds` | `kind` (`leaf`, `agent`, `tenant_ca`), `tenant`; `kind="root_ca"` alone | the soonest `not_after`, Unix seconds |

use std::collections::HashSet;

use serviceradar_domain::state::{LeafStatus, SiteStatus};
use serviceradar_identity::{IdentityError, Pki};
use serviceradar_store::{Store, StoreError};
use tokio::sync::watch;

/// Sites per tenant and status.
pub const SITES: &str = "serviceradar_sites";
/// Leaf servers per tenant and status.
pub const LEAVES: &str = "serviceradar_leaves";
/// Queued, running and failed jobs per kind.
pub const JOBS: &str = "serviceradar_jobs";
/// The soonest certificate expiry per kind and tenant (Unix seconds).
pub const CERT_EXPIRY: &str = "serviceradar_certificate_expiry_timestamp_seconds";

/// The job statuses [`JOBS`] counts.
const JOB_STATUSES: [&str; 3] = ["queued", "running", "failed"];

/// Job (kind, status) pairs published: each pass sets every one, to zero
/// when it is gone from the table, so a drained queue reads 0, not its last
/// count. It starts with every registered kind, so the series exist before
/// the first job.
#[derive(Debug, Default)]
pub struct Published {
    jobs: HashSet<(String, String)>,
}

impl Published {
    /// Starts with every status of each of `kinds`.
    pub fn with_job_kinds(kinds: &[&str]) -> Self {
        let jobs = kinds
            .iter()
            .flat_map(|kind| {
                JOB_STATUSES
                    .iter()
                    .map(|status| ((*kind).to_owned(), (*status).to_owned()))
            })
            .collect();
        Self { jobs }
    }
}

/// Why one reading of the gauges failed (the gauges keep their values).
#[derive(Debug, thiserror::Error)]
pub enum FleetMetricsError {
    /// The counts query failed.
    #[error("reading the fleet counts: {0}")]
    Counts(#[source] StoreError),
    /// Listing the tenants failed.
    #[error("listing tenants: {0}")]
    Tenants(#[source] StoreError),
    /// The root CA could not be read.
    #[error("reading the root CA: {0}")]
    RootCa(#[source] IdentityError),
}

/// Publishes the gauges now and then every `interval` until `stop` flips
/// (a failed reading is logged; the next one retries).
pub async fn publish_every(
    store: Store,
    pki: std::sync::Arc<Pki>,
    published: Published,
    interval: std::time::Duration,
    stop: watch::Receiver<bool>,
) {
    let published = tokio::sync::Mutex::new(published);
    serviceradar_runtime::tasks::every(interval, stop, || async {
        let mut published = published.lock().await;
        if let Err(e) = publish(&store, &pki, &mut published).await {
            tracing::warn!(error = %e, "reading the fleet metrics failed");
        }
    })
    .await;
}

/// Reads the counts once and publishes them (on failure the gauges keep
/// their values; the caller logs it).
pub async fn publish(
    store: &Store,
    pki: &Pki,
    published: &mut Published,
) -> Result<(), FleetMetricsError> {
    let counts = store
        .fleet_counts()
        .await
        .map_err(FleetMetricsError::Counts)?;
    // Every tenant gets every status, at 0 when it has none, so an alert on
    // `status="offline"` sees the series before the first offline site.
    for tenant in store
        .list_tenants()
        .await
        .map_err(FleetMetricsError::Tenants)?
    {
        let tenant = tenant.slug.to_string();
        for status in SiteStatus::ALL {
            metrics::gauge!(SITES, "tenant" => tenant.clone(), "status" => status.as_str())
                .set(0.0);
        }
        for status in LeafStatus::ALL {
            metrics::gauge!(LEAVES, "tenant" => tenant.clone(), "status" => status.as_str())
                .set(0.0);
        }
    }
    for row in counts.sites {
        metrics::gauge!(SITES, "tenant" => row.tenant, "status" => row.status)
            .set(row.count as f64);
    }
    for row in counts.leaves {
        metrics::gauge!(LEAVES, "tenant" => row.tenant, "status" => row.status)
            .set(row.count as f64);
    }
    let mut jobs = HashSet::new();
    for row in counts.jobs {
        metrics::gauge!(JOBS, "kind" => row.kind.clone(), "status" => row.status.clone())
            .set(row.count as f64);
        jobs.insert((row.kind, row.status));
    }
    for (kind, status) in published.jobs.difference(&jobs) {
        metrics::gauge!(JOBS, "kind" => kind.clone(), "status" => status.clone()).set(0.0);
    }
    published.jobs.extend(jobs);
    for expiry in counts.cert_expiries {
        metrics::gauge!(CERT_EXPIRY, "kind" => expiry.kind.as_str(), "tenant" => expiry.tenant)
            .set(expiry.not_after_ms as f64 / 1000.0);
    }
    let root = pki
        .root_ca(store)
        .await
        .map_err(FleetMetricsError::RootCa)?;
    metrics::gauge!(CERT_EXPIRY, "kind" => "root_ca").set(root.not_after().unix_timestamp() as f64);
    Ok(())
}
