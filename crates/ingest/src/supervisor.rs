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

use serviceradar_domain::TenantId;
use serviceradar_domain::resources::Tenant;
use serviceradar_identity::{Pki, PlatformExportSigner};
use serviceradar_store::Store;
use tokio::sync::watch;
use tracing::Instrument;

use crate::error::{BoxError, IngestError, report};
use crate::hub::{LEAF_API_TIMEOUT, PLATFORM_API_TIMEOUT, system_client};
use crate::pipeline::{Ended, pipeline};
use crate::settings::IngestSettings;
use crate::status::IngestStatus;

/// How long stopping waits for all pipelines together.
pub(crate) const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// How long the platform account's push waits after tenants' exports changed.
const EXPORTS_SETTLE: Duration = Duration::from_millis(200);

/// Shortest wait before retrying a failed pipeline.
const MIN_BACKOFF: Duration = Duration::from_millis(250);

/// Longest wait between reconnection attempts (short: catching up after a
/// hub outage should not wait long).
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Starts the supervisor: one pipeline per tenant (or, in platform mode,
/// one pipeline for every tenant) until `stop` flips, reporting into
/// `status` per tenant.
pub fn spawn(
    store: Store,
    pki: Arc<Pki>,
    settings: IngestSettings,
    status: IngestStatus,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let settings = Arc::new(settings);
    match settings.mode {
        crate::settings::IngestMode::Tenant => {
            tokio::spawn(supervise(store, pki, settings, status, stop))
        }
        crate::settings::IngestMode::Platform => tokio::spawn(crate::platform::supervise(
            store, pki, settings, status, stop,
        )),
    }
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
                    accounts.reset();
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
    let (store, pki, settings, tenant, status) = (&store, &pki, &settings, &tenant, &status);
    restart_until_stopped(
        &mut stop,
        |mut stop| async move {
            status.starting(tenant.id, tenant.slug.as_str());
            pipeline(store, pki, settings, tenant, status, &mut stop).await
        },
        || tracing::info!("renewing the tenant's ingest user"),
        |e| {
            // The status (which tenants see) says what failed; the log
            // also says why, with every cause (hosts, database errors).
            let failures = status.failed(tenant.id, e.to_string());
            let backoff = retry_delay(failures);
            tracing::warn!(error = report(e), failures, retry_in = ?backoff, "ingest pipeline failed");
            metrics::counter!("serviceradar_ingest_errors_total", "tenant" => tenant.slug.to_string())
                .increment(1);
            backoff
        },
    )
    .await;
}

/// Runs `pipeline` (given its own receiver of `stop`) until `stop` flips
/// (or it ends because `stop` flipped): again at once when its NATS user is
/// due for renewal (after `renewing`), again after the wait `failed` returns
/// (it records and logs the failure) when it fails. Both the per-tenant and
/// the platform pipeline restart so.
pub(crate) async fn restart_until_stopped<F>(
    stop: &mut watch::Receiver<bool>,
    mut pipeline: impl FnMut(watch::Receiver<bool>) -> F,
    mut renewing: impl FnMut(),
    mut failed: impl FnMut(&IngestError) -> Duration,
) where
    F: std::future::Future<Output = Result<Ended, IngestError>>,
{
    loop {
        if *stop.borrow() {
            return;
        }
        let backoff = match pipeline(stop.clone()).await {
            Ok(Ended::Stopped) => return,
            Ok(Ended::Renew) => {
                renewing();
                continue;
            }
            Err(e) => failed(&e),
        };
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => {}
        }
    }
}

/// The wait before the next attempt after `failures` failures in a row:
/// doubling from [`MIN_BACKOFF`] up to [`MAX_BACKOFF`].
pub(crate) fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (MIN_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

/// Pushes tenant account JWTs to the hub's account resolver as a user of the
/// system account (`$SYS.REQ.CLAIMS.UPDATE`), once per JWT. In platform
/// mode each tenant's JWT carries the exports the platform stream sources
/// it through, and the platform ingest account's JWT (importing from every
/// tenant pushed) follows whenever the tenants change.
#[derive(Default)]
pub(crate) struct AccountPusher {
    /// The system user's connection, while its user is not due for renewal.
    client: Option<crate::hub::HubConnection>,
    /// Tenant id -> the stored account JWT the hub has (in platform mode,
    /// re-signed with the exports).
    pub(crate) pushed: HashMap<String, String>,
    /// Platform mode (see above).
    pub(crate) platform: bool,
    /// Platform mode: tenant id -> (slug, account public key) pushed.
    accounts: std::collections::BTreeMap<String, (String, String)>,
    /// Platform mode: the tenants the platform account JWT the hub has
    /// imports from.
    platform_pushed: Option<Vec<(String, String)>>,
    /// Whether a pass has completed. Until then, a JWT this pusher has not
    /// pushed yet is first looked up on the hub and not pushed again when
    /// the hub holds the same claims: a restarted `serviceradar-core` does
    /// not make the hub decode, verify, save and apply every tenant's
    /// account again (with 1,000 tenants, a fifth of a 2-core machine for
    /// seconds, while the backlog waits).
    looked_up: bool,
}

impl AccountPusher {
    /// A pusher for platform mode.
    pub(crate) fn for_platform() -> Self {
        Self {
            platform: true,
            ..Self::default()
        }
    }

    /// Platform mode: push the platform account's JWT, and those of
    /// `tenants`, again at the next [`AccountPusher::push_all`], even if
    /// nothing changed.
    pub(crate) fn forget_platform(&mut self, tenants: &[TenantId]) {
        self.platform_pushed = None;
        for tenant in tenants {
            self.pushed.remove(&tenant.to_string());
        }
    }

    /// Forgets the system connection (after a failure).
    pub(crate) fn reset(&mut self) {
        self.client = None;
    }

    async fn system(
        &mut self,
        store: &Store,
        pki: &Pki,
        settings: &IngestSettings,
    ) -> Result<async_nats::Client, IngestError> {
        // A connection whose user is due for renewal is replaced.
        Ok(match &self.client {
            Some(open) if open.renew_at > tokio::time::Instant::now() => open.client.clone(),
            _ => {
                let open = system_client(store, pki, settings).await?;
                let client = open.client.clone();
                self.client = Some(open);
                client
            }
        })
    }

    pub(crate) async fn push_all(
        &mut self,
        store: &Store,
        pki: &Pki,
        settings: &IngestSettings,
        tenants: &[Tenant],
    ) -> Result<(), IngestError> {
        let mut pushed_any = false;
        // Every tenant's stored account (key and JWT) in one statement (not
        // one statement, an unsealed seed and a key derivation per tenant on
        // every pass).
        let mut stored_accounts: HashMap<TenantId, (String, String)> = store
            .all_tenant_account_jwts()
            .await
            .map_err(|e| IngestError::Store("reading the tenant account JWTs", e))?
            .into_iter()
            .map(|account| (account.tenant_id, (account.account_public_key, account.jwt)))
            .collect();
        // Platform mode: the operator, loaded once a tenant needs signing.
        let mut signer: Option<PlatformExportSigner> = None;
        for tenant in tenants {
            // What the hub should have: the stored JWT (in platform mode, it
            // is re-signed with the exports when it changed). A tenant
            // without an account yet gets one here.
            let (account_key, stored) = match stored_accounts.remove(&tenant.id) {
                Some(account) => account,
                None => {
                    let (key, jwt) = pki
                        .tenant_account(store, tenant)
                        .await
                        .map_err(account_failed(tenant, "reading its JWT"))?;
                    (key.public_key(), jwt)
                }
            };
            let key = tenant.id.to_string();
            if self.pushed.get(&key) == Some(&stored) {
                continue;
            }
            let jwt = if self.platform {
                let signer = match &mut signer {
                    Some(signer) => signer,
                    None => signer.insert(
                        pki.platform_export_signer(store)
                            .await
                            .map_err(account_failed(tenant, "loading the operator to sign it"))?,
                    ),
                };
                let jwt = signer
                    .tenant_account_jwt(tenant, &account_key, &stored)
                    .map_err(account_failed(tenant, "signing it with its exports"))?;
                self.accounts
                    .insert(key.clone(), (tenant.slug.to_string(), account_key));
                jwt
            } else {
                stored.clone()
            };
            let client = self.system(store, pki, settings).await?;
            if self.hub_holds(&client, &jwt, Some(&stored)).await {
                tracing::debug!(tenant_id = %tenant.id, tenant = %tenant.slug, "the hub holds this tenant's account already");
                self.pushed.insert(key, stored);
                continue;
            }
            serviceradar_hub::client::push_account_jwt(&client, &jwt, LEAF_API_TIMEOUT)
                .await
                .map_err(account_failed(tenant, "pushing it to the hub"))?;
            tracing::info!(tenant_id = %tenant.id, tenant = %tenant.slug, "tenant account pushed to the hub");
            self.pushed.insert(key, stored);
            pushed_any = true;
        }
        if self.platform {
            let listed: std::collections::HashSet<String> =
                tenants.iter().map(|t| t.id.to_string()).collect();
            self.accounts.retain(|id, _| listed.contains(id));
            let imports: Vec<(String, String)> = self.accounts.values().cloned().collect();
            if self.platform_pushed.as_ref() != Some(&imports) {
                if pushed_any {
                    // Let the hub apply the tenants' new exports before the
                    // platform account's imports of them are resolved (a
                    // race the platform setup also repairs, slower).
                    tokio::time::sleep(EXPORTS_SETTLE).await;
                }
                let jwt = pki
                    .platform_ingest_account_jwt(store, &imports)
                    .await
                    .map_err(crate::error::upstream(
                        "signing the platform ingest account JWT",
                    ))?;
                let client = self.system(store, pki, settings).await?;
                if self.hub_holds(&client, &jwt, None).await {
                    tracing::debug!("the hub holds the platform ingest account already");
                } else {
                    serviceradar_hub::client::push_account_jwt(&client, &jwt, PLATFORM_API_TIMEOUT)
                        .await
                        .map_err(crate::error::upstream(
                            "pushing the platform ingest account JWT to the hub",
                        ))?;
                    tracing::info!(
                        tenants = imports.len(),
                        jwt_bytes = jwt.len(),
                        "platform ingest account pushed to the hub"
                    );
                }
                self.platform_pushed = Some(imports);
            }
        }
        self.looked_up = true;
        Ok(())
    }

    /// Before the first pass has completed: whether the hub's resolver
    /// already holds `jwt`'s claims, issued no earlier than `stored` (the
    /// database's JWT of the account, which the hub's config preloads).
    /// Anything else, a failed or unanswered look-up included, means push;
    /// an unanswered one also ends the look-ups, so a hub that does not
    /// answer them costs one timeout, not one per tenant.
    async fn hub_holds(
        &mut self,
        client: &async_nats::Client,
        jwt: &str,
        stored: Option<&str>,
    ) -> bool {
        use serviceradar_natsconf::jwt::{decode_claims, same_claims_but_issue_time};
        if self.looked_up {
            return false;
        }
        let Ok(ours) = decode_claims(jwt) else {
            return false;
        };
        let Some(account) = ours["sub"].as_str() else {
            return false;
        };
        let on_hub =
            match serviceradar_hub::client::account_jwt_on_hub(client, account, LOOKUP_TIMEOUT)
                .await
            {
                Ok(Some(on_hub)) => on_hub,
                Ok(None) => return false,
                Err(e) => {
                    tracing::debug!(error = %e, "looking up an account on the hub failed: pushing");
                    if matches!(e, serviceradar_hub::HubError::LookupTimeout { .. }) {
                        self.looked_up = true;
                    }
                    return false;
                }
            };
        let Ok(held) = decode_claims(&on_hub) else {
            return false;
        };
        // The stored JWT's issue time; in tenant mode it is the JWT itself,
        // already decoded and checked.
        let stored_iat = |stored: &str| {
            if stored == jwt {
                ours["iat"].as_i64()
            } else {
                decode_claims(stored).ok().and_then(|c| c["iat"].as_i64())
            }
        };
        let not_older = match stored {
            None => true,
            Some(stored) => match (held["iat"].as_i64(), stored_iat(stored)) {
                (Some(held), Some(stored)) => held >= stored,
                _ => false,
            },
        };
        not_older && same_claims_but_issue_time(&held, &ours)
    }
}

/// The longest wait for the hub's answer to an account look-up.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

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
