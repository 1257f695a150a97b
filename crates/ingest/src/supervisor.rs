//! The supervisor: one pipeline per tenant, started for new tenants every
//! [`TENANT_REFRESH`](crate::TENANT_REFRESH) and restarted with backoff when
//! it fails, after the tenant's account JWT reached the hub.
//!
//! It exists so that a tenant created while the hub runs is ingested without
//! a hub restart or config change, and one tenant's failures never stop
//! another's pipeline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serviceradar_domain::resources::Tenant;
use serviceradar_identity::Pki;
use serviceradar_store::Store;
use tokio::sync::watch;
use tracing::Instrument;

use crate::error::{BoxError, IngestError, report};
use crate::hub::{LEAF_API_TIMEOUT, system_client};
use crate::pipeline::{Ended, pipeline};
use crate::settings::IngestSettings;
use crate::status::IngestStatus;

/// How long stopping waits for all pipelines together.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// Shortest wait before retrying a failed pipeline.
const MIN_BACKOFF: Duration = Duration::from_millis(250);

/// Longest wait between reconnection attempts (short: catching up after a
/// hub outage should not wait long).
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Starts the supervisor: one pipeline per tenant until `stop` flips, each
/// reporting into `status`.
pub fn spawn(
    store: Store,
    pki: Arc<Pki>,
    settings: IngestSettings,
    status: IngestStatus,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(supervise(store, pki, Arc::new(settings), status, stop))
}

async fn supervise(
    store: Store,
    pki: Arc<Pki>,
    settings: Arc<IngestSettings>,
    status: IngestStatus,
    mut stop: watch::Receiver<bool>,
) {
    let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut accounts = AccountPusher::default();
    loop {
        match store.list_tenants().await {
            Ok(tenants) => {
                // New tenants' accounts reach the running hub before their
                // pipelines try to connect: no hub restart, no config change.
                if let Err(e) = accounts.push_all(&store, &pki, &settings, &tenants).await {
                    tracing::warn!(
                        error = report(&e),
                        "pushing tenant accounts to the hub failed"
                    );
                    accounts.client = None;
                }
                for tenant in tenants {
                    if !accounts.pushed.contains_key(&tenant.id.to_string()) {
                        continue;
                    }
                    let key = tenant.id.to_string();
                    if running.get(&key).is_some_and(|h| !h.is_finished()) {
                        continue;
                    }
                    let span = tracing::info_span!("ingest", tenant_id = %tenant.id, tenant = %tenant.slug);
                    let task = run_tenant(
                        store.clone(),
                        pki.clone(),
                        settings.clone(),
                        tenant,
                        status.clone(),
                        stop.clone(),
                    )
                    .instrument(span);
                    running.insert(key, tokio::spawn(task));
                }
            }
            Err(e) => tracing::warn!(error = %e, "ingest: listing tenants failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.tenant_refresh) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
    }
    // The pipelines drain at once (each bounded by its own drain time);
    // waiting for each in turn against one deadline waits for all together.
    let deadline = tokio::time::Instant::now() + STOP_DEADLINE;
    for (_, task) in running {
        let _ = tokio::time::timeout_at(deadline, task).await;
    }
}

/// One tenant's pipeline, reconnecting with backoff until `stop` flips. The
/// delay grows with the failures in a row and starts over once the pipeline
/// worked again (see [`IngestStatus`]).
async fn run_tenant(
    store: Store,
    pki: Arc<Pki>,
    settings: Arc<IngestSettings>,
    tenant: Tenant,
    status: IngestStatus,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        status.starting(tenant.id, tenant.slug.as_str());
        let backoff = match pipeline(&store, &pki, &settings, &tenant, &status, &mut stop).await {
            Ok(Ended::Stopped) => return,
            Ok(Ended::Renew) => {
                tracing::info!("renewing the tenant's ingest user");
                continue;
            }
            Err(e) => {
                // The status (which tenants see) says what failed; the log
                // also says why, with every cause (hosts, database errors).
                let failures = status.failed(tenant.id, e.to_string());
                let backoff = retry_delay(failures);
                tracing::warn!(error = report(&e), failures, retry_in = ?backoff, "ingest pipeline failed");
                metrics::counter!("serviceradar_ingest_errors_total", "tenant" => tenant.slug.to_string())
                    .increment(1);
                backoff
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => {}
        }
    }
}

/// The wait before the next attempt after `failures` failures in a row:
/// doubling from [`MIN_BACKOFF`] up to [`MAX_BACKOFF`].
fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (MIN_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

/// Pushes tenant account JWTs to the hub's account resolver as a user of the
/// system account (`$SYS.REQ.CLAIMS.UPDATE`), once per JWT.
#[derive(Default)]
struct AccountPusher {
    /// The system user's connection, while its user is not due for renewal.
    client: Option<crate::hub::HubConnection>,
    /// Tenant id -> the account JWT the hub has.
    pushed: HashMap<String, String>,
}

impl AccountPusher {
    async fn push_all(
        &mut self,
        store: &Store,
        pki: &Pki,
        settings: &IngestSettings,
        tenants: &[Tenant],
    ) -> Result<(), IngestError> {
        for tenant in tenants {
            let (_, jwt) = pki
                .tenant_account(store, tenant)
                .await
                .map_err(account_failed(tenant, "reading its JWT"))?;
            let key = tenant.id.to_string();
            if self.pushed.get(&key) == Some(&jwt) {
                continue;
            }
            // A connection whose user is due for renewal is replaced.
            let client = match &self.client {
                Some(open) if open.renew_at > tokio::time::Instant::now() => open.client.clone(),
                _ => {
                    let open = system_client(store, pki, settings).await?;
                    let client = open.client.clone();
                    self.client = Some(open);
                    client
                }
            };
            serviceradar_hub::client::push_account_jwt(&client, &jwt, LEAF_API_TIMEOUT)
                .await
                .map_err(account_failed(tenant, "pushing it to the hub"))?;
            tracing::info!(tenant_id = %tenant.id, tenant = %tenant.slug, "tenant account pushed to the hub");
            self.pushed.insert(key, jwt);
        }
        Ok(())
    }
}

/// A `map_err` adapter: [`IngestError::Account`] for `tenant` at `step`.
fn account_failed<E: Into<BoxError>>(
    tenant: &Tenant,
    step: &'static str,
) -> impl FnOnce(E) -> IngestError {
    move |e| IngestError::Account {
        tenant: tenant.slug.to_string(),
        step,
        source: e.into(),
    }
}
