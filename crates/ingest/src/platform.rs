//! Platform mode: one pipeline for every tenant.
//!
//! The platform ingest account's `PLATFORM_INGEST` stream sources every
//! tenant's `INGEST` stream (durable cross-account sources; see
//! [`serviceradar_natsconf::platform`]), each source putting its tenant's id
//! in front of the subject. `serviceradar-core` reads that one stream with
//! one durable pull consumer over one hub connection, and writes every
//! tenant's rows with a fixed number of writers; the fetcher, the
//! contiguous ack watermark and the recovery of unacknowledged deliveries
//! are the per-tenant pipeline's. The tenant of a row is the one its
//! source names (set by the platform, checked against the known tenants,
//! and the subject's own tenant token must agree); nothing a publisher
//! sends can change it.
//!
//! Beside the pipeline: a setup pass (every tenant refresh) pushes the
//! tenants' account JWTs with their exports and the platform account's
//! JWT with its imports, creates each new tenant's `INGEST` stream (its
//! `DEAD_LETTERS` stream comes with its first dead letter) and its source
//! consumer (whose `max_ack_pending` caps the tenant's messages in flight
//! into the platform stream), and keeps the platform stream's sources equal
//! to the tenants. After a restart, the tenants the platform stream already
//! sources, set up with the same settings (named in the stream's metadata),
//! are not set up again. A chores task keeps the sites' buffers and the
//! device registry in sync, in a sweep paced over its interval. Those need
//! the tenant's own account, through a few pooled tenant connections
//! ([`TenantClients`]), as do dead letters, which stay in each tenant's
//! `DEAD_LETTERS` stream.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use serviceradar_domain::TenantId;
use serviceradar_domain::resources::Tenant;
use serviceradar_domain::telemetry::{IncomingMessage, TelemetryRecord};
use serviceradar_identity::Pki;
use serviceradar_natsconf::platform as names;
use serviceradar_store::Store;
use tokio::sync::watch;
use tracing::Instrument;

use crate::buffers::{stalled_sources, sync_site_buffers};
use crate::consumer::{ensure_consumer, ensure_stream, recover_unacknowledged};
use crate::deadletter::{DeadLetterStream, dead_letter_parts};
use crate::devices::DeviceSites;
use crate::error::{IngestError, report, wrap};
use crate::fetch::{Fetched, FetchedBatch, Progress};
use crate::hub::{
    HubConnection, PLATFORM_API_TIMEOUT, js_request, js_request_within, platform_client,
    stream_info,
};
use crate::pipeline::{Batches, Ended, Ending, JOIN_SETTLE, JOIN_SYNCS, run_batches};
use crate::pool::TenantClients;
use crate::settings::IngestSettings;
use crate::status::IngestStatus;
use crate::supervisor::{AccountPusher, STOP_DEADLINE, restart_until_stopped, retry_delay};
use crate::write::decode_admitted;

/// The platform supervisor: setup passes, the pipeline (restarted with
/// backoff) and the chores, until `stop` flips.
pub(crate) async fn supervise(
    store: Store,
    pki: Arc<Pki>,
    settings: Arc<IngestSettings>,
    status: IngestStatus,
    mut stop: watch::Receiver<bool>,
) {
    let pool = TenantClients::new(store.clone(), pki.clone(), settings.clone());
    settings.dead_letters.use_pool(pool.clone());
    let (stream_ready_tx, stream_ready) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(
        run_pipeline(
            store.clone(),
            pki.clone(),
            settings.clone(),
            pool.clone(),
            status.clone(),
            stream_ready,
            stop.clone(),
        )
        .instrument(tracing::info_span!("ingest", tenant = "platform")),
    );
    tasks.spawn(
        chores(store.clone(), settings.clone(), pool.clone(), stop.clone())
            .instrument(tracing::info_span!("ingest_chores")),
    );
    let mut setup = Setup {
        accounts: AccountPusher::for_platform(),
        ready: HashMap::new(),
        client: None,
        sources: None,
        restarted: HashMap::new(),
        tenant_count: 0,
    };
    let mut first_pass = true;
    loop {
        let started = std::time::Instant::now();
        match setup
            .pass(&store, &pki, &settings, &pool, &status, &stream_ready_tx)
            .instrument(tracing::info_span!("ingest_setup"))
            .await
        {
            Ok(()) => {
                // How long a start takes to reach every tenant (at 1,000
                // tenants, seconds: the accounts are compared with the
                // hub's one by one).
                if std::mem::take(&mut first_pass) {
                    tracing::info!(
                        tenants = setup.tenant_count,
                        ready = setup.ready.len(),
                        secs = started.elapsed().as_secs_f64(),
                        "platform ingest set up"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = report(&e), "platform ingest setup failed");
                setup.client = None;
                setup.accounts.reset();
            }
        }
        // Until every tenant is set up, look again soon.
        let wait = if setup.ready.len() < setup.tenant_count {
            Duration::from_secs(1).min(settings.tenant_refresh)
        } else {
            settings.tenant_refresh
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
    }
    let deadline = tokio::time::Instant::now() + STOP_DEADLINE;
    let _ = tokio::time::timeout_at(deadline, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
}

/// What the setup passes keep between runs.
struct Setup {
    accounts: AccountPusher,
    /// Tenants whose streams and source consumer exist, with their slug.
    ready: HashMap<TenantId, String>,
    /// A platform connection for the stream's configuration.
    client: Option<HubConnection>,
    /// The sources (tenant ids) the platform stream was last given.
    sources: Option<Vec<TenantId>>,
    /// When each tenant's source was last added or restarted.
    restarted: HashMap<TenantId, std::time::Instant>,
    /// How many tenants the last listing had.
    tenant_count: usize,
}

impl Setup {
    async fn pass(
        &mut self,
        store: &Store,
        pki: &Pki,
        settings: &IngestSettings,
        pool: &TenantClients,
        status: &IngestStatus,
        stream_ready: &watch::Sender<bool>,
    ) -> Result<(), IngestError> {
        let tenants = store
            .list_tenants()
            .await
            .map_err(|e| IngestError::Store("listing tenants", e))?;
        self.tenant_count = tenants.len();
        for tenant in &tenants {
            if status.tenant(tenant.id).is_none() {
                status.starting(tenant.id, tenant.slug.as_str());
            }
        }
        // Accounts first: the tenants' exports, then the platform's imports.
        self.accounts
            .push_all(store, pki, settings, &tenants)
            .await?;
        // Only now do the chores see the new tenants: connecting as a tenant
        // whose account the hub does not hold yet is refused (at 1,000
        // tenants the pushes take seconds, and the chores' sweep reached
        // tenants before theirs in every benchmark run).
        pool.set_tenants(&tenants);
        let client = match &self.client {
            Some(open) if open.renew_at > tokio::time::Instant::now() => open.client.clone(),
            _ => {
                let open =
                    platform_client(store, pki, settings, "serviceradar-ingest-setup").await?;
                let client = open.client.clone();
                self.client = Some(open);
                client
            }
        };
        // A platform stream left by an earlier process: the pipeline can start
        // at once, before this pass has looked at every tenant, and the
        // tenants that process set up need not be set up again.
        if self.sources.is_none() {
            let info = stream_info(&client, names::PLATFORM_STREAM).await?;
            if info.get("error").is_none() {
                stream_ready.send_replace(true);
                self.trust_earlier_setup(&info, &tenants, settings);
            }
        }
        let listed: HashSet<TenantId> = tenants.iter().map(|t| t.id).collect();
        self.ready.retain(|id, _| listed.contains(id));
        let new: Vec<Tenant> = tenants
            .iter()
            .filter(|t| !self.ready.contains_key(&t.id))
            .cloned()
            .collect();
        let mut done = Vec::with_capacity(new.len());
        for chunk in new.chunks(settings.tenant_connections.max(1)) {
            let outcomes = futures::future::join_all(
                chunk
                    .iter()
                    .map(|tenant| set_up_tenant(pool, tenant, settings)),
            )
            .await;
            done.extend(chunk.iter().zip(outcomes));
        }
        for (tenant, outcome) in done {
            match outcome {
                Ok(()) => {
                    self.ready.insert(tenant.id, tenant.slug.to_string());
                }
                Err(e) => tracing::warn!(
                    tenant_id = %tenant.id,
                    tenant = %tenant.slug,
                    error = report(&e),
                    "setting up a tenant for platform ingestion failed"
                ),
            }
        }
        let mut ids: Vec<TenantId> = self.ready.keys().copied().collect();
        ids.sort();
        if self.sources.as_ref() != Some(&ids) {
            // Every source in one update: each update of the stream costs the
            // hub about as much as the sources it ends with, not the ones it
            // adds (steps of 100 new sources took ~4 s each at 1,000 tenants,
            // BENCHMARKS.md, issue 15, session 27).
            let sources = self
                .ready
                .iter()
                .map(|(id, slug)| names::platform_source(slug, &id.to_string()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| IngestError::Upstream("rendering a platform source", e.into()))?;
            sync_platform_stream(&client, sources, settings).await?;
            tracing::info!(
                tenants = ids.len(),
                "the platform stream sources every tenant"
            );
            // New sources get time to start before they are judged.
            let now = std::time::Instant::now();
            for id in &ids {
                if self.sources.as_ref().is_none_or(|had| !had.contains(id)) {
                    self.restarted.insert(*id, now);
                }
            }
            self.sources = Some(ids);
        } else {
            self.restart_stalled_sources(store, pki, settings, &tenants, &client)
                .await?;
        }
        stream_ready.send_replace(true);
        Ok(())
    }

    /// On the first pass after a start, with the platform stream an earlier
    /// process left (`info`): the tenants it sourced, set up with the settings
    /// this process has (the stream's [`names::TENANT_SETUP_METADATA`]), whose
    /// sources are not stalled, are taken as set up. Declaring them again
    /// means a connection to each tenant's account and two API requests, for
    /// 1,000 tenants while the backlog drains. A tenant that changed, or whose
    /// source is stalled, is set up as a new one; when every configured source
    /// is a listed tenant's, the stream is not updated either.
    fn trust_earlier_setup(
        &mut self,
        info: &serde_json::Value,
        tenants: &[Tenant],
        settings: &IngestSettings,
    ) {
        let config = &info["config"];
        if config["metadata"][names::TENANT_SETUP_METADATA].as_str()
            != Some(settings.tenant_setup().as_str())
        {
            return;
        }
        let configured = config["sources"].as_array().map_or(&[][..], Vec::as_slice);
        // Each configured source by its API prefix (a tenant's own), so each
        // tenant is one look-up, not a scan of 1,000 sources.
        let by_api: HashMap<&str, &serde_json::Value> = configured
            .iter()
            .filter_map(|source| Some((source["external"]["api"].as_str()?, source)))
            .collect();
        let limit = i64::try_from(STALLED_SOURCE.as_nanos()).unwrap_or(i64::MAX);
        let stalled: HashSet<String> = stalled_sources(info, limit).collect();
        let now = std::time::Instant::now();
        let mut sourced = Vec::new();
        for tenant in tenants {
            let slug = tenant.slug.as_str();
            let Ok(api) = names::api_prefix(slug) else {
                continue;
            };
            let Some(source) = by_api.get(api.as_str()) else {
                continue;
            };
            if !names::is_platform_source_of(source, slug, &tenant.id.to_string()) {
                continue;
            }
            sourced.push(tenant.id);
            if !stalled.contains(&api) {
                self.ready.insert(tenant.id, slug.to_owned());
                self.restarted.insert(tenant.id, now);
            }
        }
        tracing::info!(
            trusted = self.ready.len(),
            sourced = sourced.len(),
            "tenants set up by an earlier process"
        );
        if sourced.len() == configured.len() {
            sourced.sort();
            self.sources = Some(sourced);
        }
    }

    /// Restarts the platform stream's sources that are stuck: nats-server
    /// retries a source whose setup failed (the platform's imports or the
    /// tenant's consumer not in place yet, a hub restart) with a backoff
    /// that grows to minutes, and a stream import resolved before its
    /// export existed stays broken. A source that failed or has been silent for
    /// [`STALLED_SOURCE`] (it gets a heartbeat every second) is removed and
    /// added again, which starts it at once; the durable source consumer
    /// resumes after what the platform stream already stored.
    async fn restart_stalled_sources(
        &mut self,
        store: &Store,
        pki: &Pki,
        settings: &IngestSettings,
        tenants: &[Tenant],
        client: &async_nats::Client,
    ) -> Result<(), IngestError> {
        let info = stream_info(client, names::PLATFORM_STREAM).await?;
        let limit = i64::try_from(STALLED_SOURCE.as_nanos()).unwrap_or(i64::MAX);
        let stalled: HashSet<String> = stalled_sources(&info, limit).collect();
        let now = std::time::Instant::now();
        let due: Vec<TenantId> = self
            .ready
            .iter()
            .filter(|(_, slug)| names::api_prefix(slug).is_ok_and(|api| stalled.contains(&api)))
            .filter(|(id, _)| {
                self.restarted
                    .get(id)
                    .is_none_or(|at| now.duration_since(*at) > STALLED_SOURCE * 2)
            })
            .map(|(id, _)| *id)
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let render = |keep: &dyn Fn(&TenantId) -> bool| {
            self.ready
                .iter()
                .filter(|(id, _)| keep(id))
                .map(|(id, slug)| names::platform_source(slug, &id.to_string()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| IngestError::Upstream("rendering a platform source", e.into()))
        };
        // The hub may have resolved the platform account's imports from a
        // tenant before that tenant's new exports took effect (the two
        // account updates race inside nats-server), leaving the import
        // broken until the platform account changes: push it again.
        self.accounts.forget_platform(&due);
        self.accounts
            .push_all(store, pki, settings, tenants)
            .await?;
        let without = render(&|id| !due.contains(id))?;
        let all = render(&|_| true)?;
        sync_platform_stream(client, without, settings).await?;
        sync_platform_stream(client, all, settings).await?;
        for id in &due {
            self.restarted.insert(*id, now);
        }
        tracing::info!(sources = due.len(), "restarted stalled platform sources");
        Ok(())
    }
}

/// A platform source silent this long (it gets a heartbeat every second)
/// or failed is restarted.
const STALLED_SOURCE: Duration = Duration::from_secs(5);

/// Creates, through a connection to `tenant`'s account, its `INGEST`
/// stream and the durable consumer the platform stream sources it with.
async fn set_up_tenant(
    pool: &TenantClients,
    tenant: &Tenant,
    settings: &IngestSettings,
) -> Result<(), IngestError> {
    let conn = pool.client(tenant).await?;
    let slug = tenant.slug.as_str();
    ensure_stream(&conn.client, slug, settings).await?;
    // The tenant's DEAD_LETTERS stream is created with its first dead letter
    // (see `Writer::dead_letter`): each reserves `deadletter::MAX_BYTES` of
    // the hub's storage, which 1,000 tenants' streams would exhaust.
    let name = names::source_consumer(slug)
        .map_err(|e| IngestError::Upstream("naming the source consumer", e.into()))?;
    let request = names::source_consumer_request(slug, settings.tenant_in_flight)
        .map_err(|e| IngestError::Upstream("rendering the source consumer", e.into()))?;
    let subject = format!("$JS.API.CONSUMER.CREATE.{}.{name}", names::TENANT_STREAM);
    let reply = js_request(&conn.client, &subject, &request).await?;
    if let Some(error) = reply.get("error") {
        // It exists with another in-flight cap: update it.
        if error["err_code"].as_u64() == Some(10148) {
            let mut update = request.clone();
            update["action"] = "update".into();
            let reply = js_request(&conn.client, &subject, &update).await?;
            if let Some(error) = reply.get("error") {
                return Err(IngestError::Refused {
                    action: "updating the tenant's source consumer",
                    error: error.to_string(),
                });
            }
        } else {
            return Err(IngestError::Refused {
                action: "creating the tenant's source consumer",
                error: error.to_string(),
            });
        }
    }
    Ok(())
}

/// Creates the platform stream with `sources`, or gives the existing one
/// exactly those sources.
async fn sync_platform_stream(
    client: &async_nats::Client,
    sources: Vec<serde_json::Value>,
    settings: &IngestSettings,
) -> Result<(), IngestError> {
    let stream = names::PLATFORM_STREAM;
    let config = names::platform_stream_config(
        sources,
        settings.retention,
        settings.stream_replicas,
        &settings.tenant_setup(),
    );
    let info = stream_info(client, stream).await?;
    let (action, subject) = if info.get("error").is_some() {
        (
            "creating the platform stream",
            format!("$JS.API.STREAM.CREATE.{stream}"),
        )
    } else {
        (
            "updating the platform stream's sources",
            format!("$JS.API.STREAM.UPDATE.{stream}"),
        )
    };
    let reply = js_request_within(client, &subject, &config, PLATFORM_API_TIMEOUT).await?;
    match reply.get("error") {
        Some(error) => Err(IngestError::Refused {
            action,
            error: error.to_string(),
        }),
        None => Ok(()),
    }
}

/// The platform pipeline, reconnecting with backoff until `stop` flips.
async fn run_pipeline(
    store: Store,
    pki: Arc<Pki>,
    settings: Arc<IngestSettings>,
    pool: TenantClients,
    status: IngestStatus,
    mut stream_ready: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    // The first setup pass creates the platform stream.
    tokio::select! {
        _ = stream_ready.wait_for(|ready| *ready) => {}
        _ = stop.changed() => return,
    }
    let (store, pki, settings, pool, status) = (&store, &pki, &settings, &pool, &status);
    restart_until_stopped(
        &mut stop,
        |mut stop| async move { pipeline(store, pki, settings, pool, status, &mut stop).await },
        || tracing::info!("renewing the platform ingest user"),
        |e| {
            let failures = status.failed_all(&e.to_string());
            let backoff = retry_delay(failures);
            tracing::warn!(error = report(e), failures, retry_in = ?backoff, "platform ingest pipeline failed");
            for tenant in pool.tenants() {
                metrics::counter!("serviceradar_ingest_errors_total", "tenant" => tenant.slug.to_string())
                    .increment(1);
            }
            backoff
        },
    )
    .await;
}

/// Connects as the platform ingest user, opens the durable consumer on the
/// platform stream, recovers what an earlier pipeline left unacknowledged,
/// then fetches, writes and acknowledges until stopped, due for renewal, or
/// failed (as the per-tenant pipeline does).
async fn pipeline(
    store: &Store,
    pki: &Pki,
    settings: &IngestSettings,
    pool: &TenantClients,
    status: &IngestStatus,
    stop: &mut watch::Receiver<bool>,
) -> Result<Ended, IngestError> {
    let HubConnection { client, renew_at } =
        platform_client(store, pki, settings, "serviceradar-ingest-platform").await?;
    let js = jetstream::new(client.clone());
    let stream = js
        .get_stream(names::PLATFORM_STREAM)
        .await
        .map_err(wrap(IngestError::Consumer, "opening the platform stream"))?;
    let consumer = ensure_consumer(&stream, settings).await?;
    let recovered = recover_unacknowledged(&stream, consumer, settings).await?;
    tracing::info!(
        hub = %settings.hub.url,
        batch_size = settings.batch_size,
        writers = settings.writers,
        "platform ingest pipeline running"
    );
    let devices: Devices = Arc::default();
    let dead_letter_streams: DeadLetterStreams = Arc::default();
    let status_all = status.clone();
    run_batches(
        settings,
        recovered,
        move |progress| match progress {
            Progress::Idle => status_all.progress_all(None),
            Progress::Lag(lag) => status_all.progress_all(Some(lag)),
        },
        |batches, done| {
            let writer = Writer {
                dead_letter_retention: settings.dead_letter_retention,
                stream_replicas: settings.stream_replicas,
                dead_letter_streams: dead_letter_streams.clone(),
                store: store.clone(),
                pool: pool.clone(),
                status: status.clone(),
                devices: devices.clone(),
            };
            write_loop(writer, batches, done)
        },
        |written| written,
        Ending {
            stop,
            renew_at,
            aux: tokio::task::JoinSet::new(),
        },
    )
    .await
}

/// Each tenant's registered devices and their sites (loaded on demand).
type Devices = Arc<std::sync::Mutex<HashMap<TenantId, DeviceSites>>>;
/// Each tenant's dead-letter stream, shared by the writers: opened with the
/// tenant's first dead letter, once.
type DeadLetterStreams = Arc<std::sync::Mutex<HashMap<TenantId, DeadLetterStream>>>;

/// What a platform writer works with.
struct Writer {
    dead_letter_retention: Duration,
    stream_replicas: usize,
    dead_letter_streams: DeadLetterStreams,
    store: Store,
    pool: TenantClients,
    status: IngestStatus,
    devices: Devices,
}

/// A writer: takes the next batch, writes every tenant's records in it, and
/// reports the batch committed (number, last message) to the acknowledger.
async fn write_loop(
    writer: Writer,
    batches: Batches,
    done: tokio::sync::mpsc::UnboundedSender<(u64, jetstream::Message)>,
) -> Result<(), IngestError> {
    loop {
        let next = batches.lock().await.recv().await;
        let Some(FetchedBatch { number, messages }) = next else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let counts = writer.write_batch(&messages).await?;
        let mut written = 0;
        for (tenant, count) in counts {
            written += count.inserted;
            writer
                .status
                .wrote(tenant.id, count.inserted, count.dead_lettered);
            writer.status.counted(
                tenant.id,
                tenant.slug.as_str(),
                count.fetched,
                count.inserted,
                count.dead_lettered,
            );
        }
        tracing::debug!(
            number,
            written,
            write_ms = started.elapsed().as_secs_f64() * 1e3,
            "wrote a batch"
        );
        let Some(last) = messages.into_iter().next_back() else {
            continue;
        };
        if done.send((number, last.message)).is_err() {
            return Ok(());
        }
    }
}

/// One tenant's counts in a batch.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    fetched: u64,
    inserted: u64,
    dead_lettered: u64,
}

/// Where a record of the batch came from: its tenant, the subject it was
/// published on, its sequence in the tenant's `INGEST` stream, its message.
struct Origin<'m> {
    tenant: Arc<Tenant>,
    subject: &'m str,
    seq: i64,
    fetched: &'m Fetched,
}

impl Writer {
    /// Decodes every message of the batch as its tenant's (the tenant the
    /// platform stream's source set), dead-letters poison into that
    /// tenant's `DEAD_LETTERS` stream, and writes every tenant's good
    /// records together. Returns the counts per tenant.
    async fn write_batch(
        &self,
        batch: &[Fetched],
    ) -> Result<Vec<(Arc<Tenant>, Counts)>, IngestError> {
        let mut counts: BTreeMap<TenantId, (Arc<Tenant>, Counts)> = BTreeMap::new();
        let mut records: Vec<(TenantId, TelemetryRecord<'_>)> = Vec::with_capacity(batch.len());
        let mut origins: Vec<Origin<'_>> = Vec::with_capacity(batch.len());
        // Each tenant's device registry, and whether this batch reloaded it.
        let mut registries: HashMap<TenantId, (DeviceSites, bool)> = HashMap::new();
        // Each tenant of the batch looked up once.
        let mut known: HashMap<&str, Option<Arc<Tenant>>> = HashMap::new();
        for fetched in batch {
            let Some(origin) = self.origin(fetched, &mut known) else {
                continue;
            };
            let entry = counts
                .entry(origin.tenant.id)
                .or_insert_with(|| (origin.tenant.clone(), Counts::default()));
            entry.1.fetched += 1;
            let (sites, reloaded) = registries
                .entry(origin.tenant.id)
                .or_insert_with(|| (self.device_sites(origin.tenant.id), false));
            let admitted = decode_admitted(
                &self.store,
                &origin.tenant,
                sites,
                IncomingMessage {
                    subject: origin.subject,
                    payload: &fetched.message.payload,
                    stream_seq: origin.seq,
                    stored_at_ms: fetched.stored_at_ms,
                },
                reloaded,
            )
            .await?;
            match admitted {
                Ok(record) => {
                    records.push((origin.tenant.id, record));
                    origins.push(origin);
                }
                Err(reason) => {
                    self.dead_letter(&origin, &reason).await?;
                    entry.1.dead_lettered += 1;
                }
            }
        }
        if !records.is_empty() {
            let written = self
                .store
                .insert_telemetry_of_tenants(&records)
                .await
                .map_err(|e| IngestError::Store("writing the batch", e))?;
            let mut refused = vec![false; records.len()];
            for (index, reason) in &written.refused {
                if let Some(origin) = origins.get(*index) {
                    self.dead_letter(origin, reason).await?;
                    refused[*index] = true;
                    if let Some(entry) = counts.get_mut(&origin.tenant.id) {
                        entry.1.dead_lettered += 1;
                    }
                }
            }
            // Rows per tenant: exact unless the batch was (partly) written
            // before (a redelivery), when the new rows are counted in batch
            // order up to the total the database reports.
            let mut left = written.inserted;
            for (index, (tenant, _)) in records.iter().enumerate() {
                if refused[index] || left == 0 {
                    continue;
                }
                if let Some(entry) = counts.get_mut(tenant) {
                    entry.1.inserted += 1;
                    left -= 1;
                }
            }
        }
        Ok(counts.into_values().collect())
    }

    /// The tenant, original subject and tenant stream sequence of a message
    /// of the platform stream, or `None` (logged) if it has none: a subject
    /// without the platform's tenant token, or a tenant this database does
    /// not hold (its messages are skipped: the telemetry tables have no
    /// foreign key to `tenants`, so this check is what keeps every row's
    /// tenant a real one).
    fn origin<'m>(
        &self,
        fetched: &'m Fetched,
        known: &mut HashMap<&'m str, Option<Arc<Tenant>>>,
    ) -> Option<Origin<'m>> {
        let subject = fetched.message.subject.as_str();
        let Some((token, original)) = names::split_platform_subject(subject) else {
            tracing::warn!(
                subject,
                "a platform stream message without a tenant: skipped"
            );
            return None;
        };
        let tenant = known
            .entry(token)
            .or_insert_with(|| {
                token
                    .parse::<TenantId>()
                    .ok()
                    .and_then(|id| self.pool.tenant(id))
                    .map(Arc::new)
            })
            .clone();
        let Some(tenant) = tenant else {
            tracing::warn!(tenant_id = token, "a message of an unknown tenant: skipped");
            return None;
        };
        let seq = fetched
            .message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Stream-Source"))
            .and_then(|v| names::origin_sequence(v.as_str()))
            .and_then(|s| i64::try_from(s).ok());
        let Some(seq) = seq else {
            tracing::warn!(
                subject,
                "a platform stream message without its source sequence: skipped"
            );
            return None;
        };
        Some(Origin {
            tenant,
            subject: original,
            seq,
            fetched,
        })
    }

    fn device_sites(&self, tenant: TenantId) -> DeviceSites {
        let mut all = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(tenant).or_default().clone()
    }

    /// Dead-letters a message into its tenant's `DEAD_LETTERS` stream.
    async fn dead_letter(
        &self,
        origin: &Origin<'_>,
        reason: &(dyn std::fmt::Display + Sync),
    ) -> Result<(), IngestError> {
        let conn = self.pool.client(&origin.tenant).await?;
        let stream = {
            let mut all = self
                .dead_letter_streams
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            all.entry(origin.tenant.id)
                .or_insert_with(|| {
                    DeadLetterStream::new(self.dead_letter_retention, self.stream_replicas)
                })
                .clone()
        };
        stream.open(&conn.client, &origin.tenant).await?;
        dead_letter_parts(
            &conn.client,
            &origin.tenant,
            origin.subject,
            &origin.fetched.message.payload,
            origin.seq,
            reason,
        )
        .await
    }
}

/// The sites' buffers and the device registry of every tenant, every
/// `site_sync_interval`, through the pooled tenant connections; a tenant's
/// at once (and a few times more while the link settles) when one of its
/// leaves is admitted, and its registry when its devices change.
async fn chores(
    store: Store,
    settings: Arc<IngestSettings>,
    pool: TenantClients,
    mut stop: watch::Receiver<bool>,
) {
    let restarted: Arc<tokio::sync::Mutex<HashMap<TenantId, HashMap<String, std::time::Instant>>>> =
        Arc::default();
    let mut admissions = settings.leaf_admissions.as_ref().map(|a| a.subscribe());
    let mut changes = settings.device_changes.subscribe();
    let concurrency = settings.tenant_connections.max(1);
    let mut next = tokio::time::Instant::now();
    let mut soon = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {
                let tenants = pool.tenants();
                let pace = sweep_pace(settings.site_sync_interval, tenants.len());
                let started = tokio::time::Instant::now();
                futures::stream::iter(tenants.into_iter().zip(0u32..))
                    .for_each_concurrent(concurrency, |(tenant, i)| {
                        let (store, pool, restarted, settings) =
                            (store.clone(), pool.clone(), restarted.clone(), settings.clone());
                        async move {
                            tokio::time::sleep_until(started + pace * i).await;
                            sync_tenant(&store, &pool, &settings, &tenant, &restarted, true).await;
                        }
                    })
                    .await;
                let earliest = tokio::time::Instant::now() + settings.site_sync_interval / 2;
                next = (started + settings.site_sync_interval).max(earliest);
            }
            admitted = recv_admission(&mut admissions) => {
                if let Some(tenant) = admitted.and_then(|id| pool.tenant(id)) {
                    let (store, pool, restarted, settings) =
                        (store.clone(), pool.clone(), restarted.clone(), settings.clone());
                    soon.spawn(async move {
                        tokio::time::sleep(JOIN_SETTLE).await;
                        sync_tenant(&store, &pool, &settings, &tenant, &restarted, false).await;
                        for wait in JOIN_SYNCS {
                            tokio::time::sleep(wait).await;
                            sync_tenant(&store, &pool, &settings, &tenant, &restarted, false).await;
                        }
                    });
                }
            }
            changed = changes.recv() => {
                if let Ok(id) = changed
                    && let Some(tenant) = pool.tenant(id)
                {
                    let (store, pool, settings) = (store.clone(), pool.clone(), settings.clone());
                    soon.spawn(async move {
                        if let Ok(conn) = pool.client(&tenant).await
                            && let Err(e) = crate::devices::sync_device_registry(
                                &store, &conn.client, &tenant, settings.stream_replicas,
                            )
                            .await
                        {
                            tracing::warn!(tenant = %tenant.slug, error = report(&e), "syncing the device registry failed");
                        }
                    });
                }
            }
            Some(_) = soon.join_next() => {}
            _ = stop.changed() => {
                if *stop.borrow() {
                    soon.abort_all();
                    return;
                }
            }
        }
    }
}

/// How far apart the chores' sweep starts its tenants: at most
/// [`SWEEP_TENANTS_PER_SECOND`], and the whole sweep within half of
/// `interval`. A sweep is a repair (a joining leaf and a changed device are
/// synced at once), and 1,000 tenants synced at once, each through its own
/// connection, compete with a restarted pipeline draining its backlog.
fn sweep_pace(interval: Duration, tenants: usize) -> Duration {
    let per_tenant = Duration::from_secs(1) / SWEEP_TENANTS_PER_SECOND;
    let within = interval / 2 / u32::try_from(tenants.max(1)).unwrap_or(u32::MAX);
    per_tenant.min(within)
}

/// The chores' sweep rate when the interval leaves room for it.
const SWEEP_TENANTS_PER_SECOND: u32 = 50;

/// The tenant of the next admitted leaf (`None` when some were missed or
/// nobody announces).
async fn recv_admission(
    admissions: &mut Option<
        tokio::sync::broadcast::Receiver<serviceradar_hub::leaf_auth::LeafAdmitted>,
    >,
) -> Option<TenantId> {
    let Some(receiver) = admissions.as_mut() else {
        return std::future::pending().await;
    };
    match receiver.recv().await {
        Ok(admitted) => Some(admitted.tenant_id),
        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
            *admissions = None;
            std::future::pending().await
        }
    }
}

/// One tenant's site buffers (and, with `registry`, its device registry).
async fn sync_tenant(
    store: &Store,
    pool: &TenantClients,
    settings: &IngestSettings,
    tenant: &Tenant,
    restarted: &tokio::sync::Mutex<HashMap<TenantId, HashMap<String, std::time::Instant>>>,
    registry: bool,
) {
    let conn = match pool.client(tenant).await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(tenant = %tenant.slug, error = report(&e), "connecting as the tenant failed");
            return;
        }
    };
    let mut mine = restarted
        .lock()
        .await
        .remove(&tenant.id)
        .unwrap_or_default();
    if let Err(e) = sync_site_buffers(store, &conn.client, tenant, &mut mine).await {
        tracing::warn!(tenant = %tenant.slug, error = report(&e), "syncing site buffers failed");
    }
    restarted.lock().await.insert(tenant.id, mine);
    if registry
        && let Err(e) = crate::devices::sync_device_registry(
            store,
            &conn.client,
            tenant,
            settings.stream_replicas,
        )
        .await
    {
        tracing::warn!(tenant = %tenant.slug, error = report(&e), "syncing the device registry failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_of_many_tenants_is_spread_and_still_ends_within_its_interval() {
        let interval = Duration::from_secs(30);
        assert_eq!(sweep_pace(interval, 1), Duration::from_millis(20));
        assert_eq!(sweep_pace(interval, 100), Duration::from_millis(20));
        let pace = sweep_pace(interval, 10_000);
        assert!(pace * 10_000 <= interval / 2, "{pace:?}");
        assert_eq!(sweep_pace(interval, 0), Duration::from_millis(20));
        let tests = sweep_pace(Duration::from_millis(500), 2);
        assert!(tests * 2 <= Duration::from_millis(250), "{tests:?}");
    }

    fn tenant(slug: &str) -> Tenant {
        use serviceradar_domain::validate::{DisplayName, Slug};
        Tenant {
            id: TenantId::new(),
            slug: Slug::parse(slug).unwrap(),
            name: DisplayName::parse(slug).unwrap(),
            created_at: 0,
        }
    }

    fn setup() -> Setup {
        Setup {
            accounts: AccountPusher::for_platform(),
            ready: HashMap::new(),
            client: None,
            sources: None,
            restarted: HashMap::new(),
            tenant_count: 0,
        }
    }

    /// The platform stream's info as the hub reports it: `sourced` tenants
    /// configured, those in `stalled` failing, the set-up `metadata`.
    fn info(sourced: &[&Tenant], stalled: &[&Tenant], metadata: &str) -> serde_json::Value {
        let sources: Vec<_> = sourced
            .iter()
            .map(|t| names::platform_source(t.slug.as_str(), &t.id.to_string()).unwrap())
            .collect();
        let state: Vec<_> = sourced
            .iter()
            .map(|t| {
                let failing = stalled.iter().any(|s| s.id == t.id);
                serde_json::json!({
                    "name": "INGEST",
                    "external": { "api": names::api_prefix(t.slug.as_str()).unwrap() },
                    "active": if failing { -1 } else { 200_000_000 },
                })
            })
            .collect();
        serde_json::json!({
            "config": {
                "name": names::PLATFORM_STREAM,
                "sources": sources,
                "metadata": { names::TENANT_SETUP_METADATA: metadata, "_nats.ver": "2.15.1" },
            },
            "sources": state,
        })
    }

    #[test]
    fn a_restart_trusts_only_flowing_sources_set_up_with_the_same_settings() {
        let settings = IngestSettings::new("nats://127.0.0.1:4222");
        let (a, b, c) = (tenant("acme"), tenant("beta"), tenant("gamma"));
        let tenants = [a.clone(), b.clone(), c.clone()];

        // acme flows, beta's source is stalled, gamma is new.
        let mut s = setup();
        s.trust_earlier_setup(
            &info(&[&a, &b], &[&b], &settings.tenant_setup()),
            &tenants,
            &settings,
        );
        assert_eq!(s.ready.keys().collect::<Vec<_>>(), [&a.id]);
        let mut both = vec![a.id, b.id];
        both.sort();
        assert_eq!(s.sources, Some(both), "the stream already sources both");

        // Other settings (the in-flight cap): nothing is trusted.
        let mut changed = settings.clone();
        changed.tenant_in_flight += 1;
        let mut s = setup();
        s.trust_earlier_setup(
            &info(&[&a, &b], &[], &settings.tenant_setup()),
            &tenants,
            &changed,
        );
        assert!(s.ready.is_empty() && s.sources.is_none());

        // No metadata (a stream an older version created): nothing either.
        let mut s = setup();
        s.trust_earlier_setup(&info(&[&a], &[], ""), &tenants, &settings);
        assert!(s.ready.is_empty() && s.sources.is_none());

        // A source of a tenant no longer listed: trusted tenants stay, but the
        // stream must be updated, so its sources are not taken as current.
        let mut s = setup();
        s.trust_earlier_setup(
            &info(&[&a, &b], &[], &settings.tenant_setup()),
            &tenants[..1],
            &settings,
        );
        assert_eq!(s.ready.keys().collect::<Vec<_>>(), [&a.id]);
        assert!(s.sources.is_none());
    }
}
