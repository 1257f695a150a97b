//! The ingestion pipeline: JetStream on the hub -> the database.
//!
//! For every tenant, `serviceradar-core` connects to the hub as a user of the
//! tenant's NATS account (minted by this process, which holds the account
//! keys), makes sure the tenant's `INGEST` stream (`events|metrics|logs.{tenant}.>`)
//! and the durable pull consumer `serviceradar-ingest` exist, and runs:
//!
//! * a **fetcher** that pulls batches (up to `batch_size` messages, waiting at
//!   most `batch_timeout`), numbers them in fetch order and queues them for
//!   the writers. It reserves a queue place before each fetch, so a slow
//!   database stops the pulling (the stream keeps the data; nothing is
//!   dropped), and fetching the next batch overlaps writing the current ones;
//! * `writers` **writers**, each taking the next batch and, on its own
//!   database connection: decoding each message
//!   ([`serviceradar_domain::telemetry::decode`], borrowing from the
//!   message); publishing a message that does not decode to
//!   `deadletter.{tenant}` with the reason in the `SR-Reason` header (and its
//!   subject and stream sequence); writing the good records in one
//!   transaction, idempotent on the stream sequence. Their commits overlap;
//! * the **acknowledger** (the pipeline task): the consumer uses `AckAll`
//!   (acknowledging a message acknowledges every earlier one), so it
//!   acknowledges the last message of the highest batch that committed
//!   together with every batch before it (`AckWatermark`), never past a
//!   batch still in flight.
//!
//! A crash anywhere redelivers everything after the last acknowledgement, and
//! the database writes nothing twice. A pipeline that starts while an earlier
//! one left deliveries unacknowledged first resets the consumer to its ack
//! floor (otherwise its first acknowledgement would cover them), and a gap in
//! the delivery sequence ends the pipeline for the same reason. The tenant of
//! every row is the tenant whose account the consumer is connected to; the
//! subject's tenant token must agree, and nothing in a payload can change it.
//!
//! A supervisor pushes every tenant's account JWT to the hub (as a user of
//! the system account, `$SYS.REQ.CLAIMS.UPDATE`: a new tenant needs no hub
//! restart), starts one pipeline per tenant and looks for new tenants every
//! [`TENANT_REFRESH`]; a pipeline that fails reconnects with backoff.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use serviceradar_domain::TenantScope;
use serviceradar_domain::resources::Tenant;
use serviceradar_domain::telemetry::{IncomingMessage, TelemetryKind, decode};
use serviceradar_store::Store;
use tokio::sync::watch;
use tracing::Instrument;

use serviceradar_identity::Pki;

/// Name of each tenant's ingest stream on the hub.
pub const STREAM: &str = "INGEST";
/// Name of the durable pull consumer the pipeline reads with.
pub const CONSUMER: &str = "serviceradar-ingest";
/// How often the supervisor looks for new tenants.
pub const TENANT_REFRESH: Duration = Duration::from_secs(30);
/// How much longer than the batch timeout a fetch may take before the
/// pipeline gives up on it and reconnects.
const FETCH_GRACE: Duration = Duration::from_secs(2);
/// Longest wait between reconnection attempts (short: catching up after a
/// hub outage should not wait long).
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Default messages per batch.
pub const DEFAULT_BATCH_SIZE: usize = 1000;
/// Default number of batches written at the same time.
pub const DEFAULT_WRITERS: usize = 3;
/// Default stream retention on the hub.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where the hub is and how the pipeline batches.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// The hub's client URL (`nats://host:4222` or `tls://...`).
    pub hub_url: String,
    /// CA file for a `tls://` hub URL.
    pub hub_ca_file: Option<PathBuf>,
    /// Messages per batch (one database transaction each).
    pub batch_size: usize,
    /// Batches written at the same time, each in its own transaction on its
    /// own database connection (at least 1).
    pub writers: usize,
    /// Longest wait for a batch to fill.
    pub batch_timeout: Duration,
    /// How long the hub's ingest streams keep messages.
    pub retention: Duration,
    /// Directory for the pipeline's minted credentials (0600 files).
    pub creds_dir: PathBuf,
    /// How long the hub waits for an acknowledgement before redelivering
    /// (a pipeline that died mid-batch is redelivered after this).
    pub ack_wait: Duration,
    /// How often the pipeline reconciles the sites' buffers and the stream's
    /// sources with the database.
    pub site_sync_interval: Duration,
    /// How often the supervisor looks for new tenants (and pushes accounts).
    pub tenant_refresh: Duration,
}

impl IngestSettings {
    /// Defaults: batches of [`DEFAULT_BATCH_SIZE`] written by
    /// [`DEFAULT_WRITERS`] writers, 1 s batch timeout, 7 days of retention.
    pub fn new(hub_url: impl Into<String>, creds_dir: impl Into<PathBuf>) -> Self {
        Self {
            hub_url: hub_url.into(),
            hub_ca_file: None,
            batch_size: DEFAULT_BATCH_SIZE,
            writers: DEFAULT_WRITERS,
            batch_timeout: Duration::from_secs(1),
            retention: DEFAULT_RETENTION,
            creds_dir: creds_dir.into(),
            ack_wait: Duration::from_secs(30),
            site_sync_interval: TENANT_REFRESH,
            tenant_refresh: TENANT_REFRESH,
        }
    }
}

/// The dead-letter subject of a tenant.
pub fn deadletter_subject(tenant_slug: &str) -> String {
    format!("deadletter.{tenant_slug}")
}

/// The configuration of a tenant's ingest stream.
pub fn stream_config(tenant_slug: &str, retention: Duration) -> stream::Config {
    stream::Config {
        name: STREAM.into(),
        subjects: TelemetryKind::ALL
            .iter()
            .map(|k| k.subjects(tenant_slug))
            .collect(),
        max_age: retention,
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// How many fetched batches wait for a free writer (the fetcher is then
/// already pulling the next one: fetching overlaps writing).
const QUEUED_BATCHES: usize = 1;

/// Most messages the pipeline holds unacknowledged: every writer's batch, the
/// queued ones and the one being fetched.
fn max_in_flight(settings: &IngestSettings) -> usize {
    settings.batch_size.max(1) * (settings.writers.max(1) + QUEUED_BATCHES + 1)
}

fn consumer_config(settings: &IngestSettings) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(CONSUMER.into()),
        ack_policy: consumer::AckPolicy::All,
        ack_wait: settings.ack_wait,
        max_ack_pending: i64::try_from(max_in_flight(settings)).unwrap_or(i64::MAX),
        ..Default::default()
    }
}

/// Makes sure the tenant's ingest stream and durable consumer exist on the
/// hub `client` is connected to (as a user of the tenant's account). An
/// existing consumer whose acknowledgement settings differ from `settings`
/// (batch size, writers, ack wait) is updated.
pub async fn open_consumer(
    client: &async_nats::Client,
    tenant_slug: &str,
    settings: &IngestSettings,
) -> anyhow::Result<consumer::PullConsumer> {
    let (_, consumer) = open_stream_and_consumer(client, tenant_slug, settings).await?;
    Ok(consumer)
}

async fn open_stream_and_consumer(
    client: &async_nats::Client,
    tenant_slug: &str,
    settings: &IngestSettings,
) -> anyhow::Result<(stream::Stream, consumer::PullConsumer)> {
    let js = jetstream::new(client.clone());
    let stream = match js.get_stream(STREAM).await {
        Ok(stream) => stream,
        Err(_) => js
            .create_stream(stream_config(tenant_slug, settings.retention))
            .await
            .context("creating the ingest stream")?,
    };
    let wanted = consumer_config(settings);
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(CONSUMER, wanted.clone())
        .await
        .context("creating the ingest consumer")?;
    let have = &consumer.cached_info().config;
    if have.max_ack_pending != wanted.max_ack_pending || have.ack_wait != wanted.ack_wait {
        // The delivery policy cannot change (a recovered consumer has a start sequence).
        let updated = consumer::pull::Config {
            deliver_policy: have.deliver_policy,
            ..wanted
        };
        let consumer = stream
            .update_consumer(updated)
            .await
            .context("updating the ingest consumer")?;
        return Ok((stream, consumer));
    }
    Ok((stream, consumer))
}

/// Makes the consumer deliver again, at once, everything after its ack floor
/// that an earlier pipeline received but never acknowledged (it crashed, or
/// failed and reconnected, with batches in flight).
///
/// With `AckAll`, acknowledging a message acknowledges every earlier one, so
/// a new pipeline acknowledging its first batch would also acknowledge those
/// pending messages, written or not. Recreating the durable consumer at
/// `ack floor + 1` (the stream keeps its messages: limits retention) hands
/// them to this pipeline first; the rows that were already committed are
/// skipped by the `(tenant_id, stream_seq)` constraint. Returns the consumer
/// and its last delivery sequence.
async fn recover_unacknowledged(
    stream: &stream::Stream,
    mut consumer: consumer::PullConsumer,
    settings: &IngestSettings,
) -> anyhow::Result<(consumer::PullConsumer, u64)> {
    let info = consumer
        .info()
        .await
        .context("reading the ingest consumer's state")?
        .clone();
    let ack_floor = info.ack_floor.stream_sequence;
    let delivered = info.delivered.stream_sequence;
    if info.num_ack_pending == 0 && delivered <= ack_floor {
        return Ok((consumer, info.delivered.consumer_sequence));
    }
    tracing::info!(
        ack_floor,
        delivered,
        pending = info.num_ack_pending,
        "unacknowledged deliveries of an earlier pipeline: redelivering from the ack floor"
    );
    stream
        .delete_consumer(CONSUMER)
        .await
        .context("resetting the ingest consumer")?;
    let config = consumer::pull::Config {
        deliver_policy: consumer::DeliverPolicy::ByStartSequence {
            start_sequence: ack_floor + 1,
        },
        ..consumer_config(settings)
    };
    let consumer: consumer::PullConsumer = stream
        .create_consumer(config)
        .await
        .context("recreating the ingest consumer")?;
    let delivered = consumer.cached_info().delivered.consumer_sequence;
    Ok((consumer, delivered))
}

/// Counts of one processed batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Messages fetched.
    pub fetched: usize,
    /// Rows newly written.
    pub inserted: u64,
    /// Messages sent to the dead-letter subject.
    pub dead_lettered: usize,
}

/// Starts the supervisor: one pipeline per tenant until `stop` flips.
pub fn spawn(
    store: Store,
    pki: Arc<Pki>,
    settings: IngestSettings,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(supervise(store, pki, Arc::new(settings), stop))
}

async fn supervise(
    store: Store,
    pki: Arc<Pki>,
    settings: Arc<IngestSettings>,
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
                        error = format!("{e:#}"),
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
    for (_, task) in running {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
}

/// One tenant's pipeline, reconnecting with backoff until `stop` flips.
async fn run_tenant(
    store: Store,
    pki: Arc<Pki>,
    settings: Arc<IngestSettings>,
    tenant: Tenant,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(250);
    loop {
        if *stop.borrow() {
            return;
        }
        match pipeline(&store, &pki, &settings, &tenant, &mut stop).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), retry_in = ?backoff, "ingest pipeline failed");
                metrics::counter!("serviceradar_ingest_errors_total").increment(1);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Connects, ensures the stream and consumer, recovers what an earlier
/// pipeline left unacknowledged, then runs the fetcher, the writers and the
/// acknowledgements until `stop` flips (`Ok`, after the batches in flight are
/// written and acknowledged) or something fails (`Err`, the caller retries;
/// nothing past the last contiguous commit was acknowledged).
async fn pipeline(
    store: &Store,
    pki: &Pki,
    settings: &IngestSettings,
    tenant: &Tenant,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let client = connect(store, pki, settings, tenant).await?;
    let (stream, consumer) =
        open_stream_and_consumer(&client, tenant.slug.as_str(), settings).await?;
    let (consumer, delivered) = recover_unacknowledged(&stream, consumer, settings).await?;
    tracing::info!(
        hub = %settings.hub_url,
        batch_size = settings.batch_size,
        writers = settings.writers,
        "ingest pipeline running"
    );
    let span = tracing::Span::current();

    // Reconcile the sites' buffers in the background, on its own schedule.
    let mut aux = tokio::task::JoinSet::new();
    {
        let (store, client, tenant) = (store.clone(), client.clone(), tenant.clone());
        let interval = settings.site_sync_interval;
        aux.spawn(
            async move {
                let mut restarted = HashMap::new();
                loop {
                    if let Err(e) =
                        sync_site_buffers(&store, &client, &tenant, &mut restarted).await
                    {
                        tracing::warn!(error = format!("{e:#}"), "syncing site buffers failed");
                    }
                    tokio::time::sleep(interval).await;
                }
            }
            .instrument(span.clone()),
        );
    }

    let writers = settings.writers.max(1);
    let (batch_tx, batch_rx) = tokio::sync::mpsc::channel::<FetchedBatch>(QUEUED_BATCHES);
    let batch_rx = Arc::new(tokio::sync::Mutex::new(batch_rx));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<WrittenBatch>();
    let mut fetcher = tokio::task::JoinSet::new();
    fetcher.spawn(
        fetch_loop(consumer, settings.clone(), batch_tx, delivered).instrument(span.clone()),
    );
    let mut writer_tasks = tokio::task::JoinSet::new();
    for writer in 0..writers {
        let (store, client, tenant) = (store.clone(), client.clone(), tenant.clone());
        let (batches, done) = (batch_rx.clone(), done_tx.clone());
        writer_tasks.spawn(
            write_loop(store, client, tenant, batches, done)
                .instrument(tracing::debug_span!(parent: &span, "writer", writer)),
        );
    }
    drop(done_tx);

    let mut watermark = AckWatermark::default();
    loop {
        tokio::select! {
            written = done_rx.recv() => match written {
                Some(written) => acknowledge(&mut watermark, written).await?,
                None => anyhow::bail!("every ingest writer stopped"),
            },
            Some(joined) = fetcher.join_next() => {
                joined.context("the ingest fetcher panicked")??;
                anyhow::bail!("the ingest fetcher stopped");
            }
            Some(joined) = writer_tasks.join_next() => {
                joined.context("an ingest writer panicked")??;
                anyhow::bail!("an ingest writer stopped");
            }
            _ = stop.changed() => break,
        }
    }

    // Stop: no new fetches; write and acknowledge what is in flight.
    fetcher.shutdown().await;
    aux.shutdown().await;
    let drained = tokio::time::timeout(DRAIN, async {
        while let Some(written) = done_rx.recv().await {
            acknowledge(&mut watermark, written).await?;
        }
        while let Some(joined) = writer_tasks.join_next().await {
            joined.context("an ingest writer panicked")??;
        }
        anyhow::Ok(())
    })
    .await;
    match drained {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                waiting = watermark.waiting(),
                "stopping with batches in flight; they are redelivered on restart"
            );
            Ok(())
        }
    }
}

/// How long a stopping pipeline waits for its batches in flight.
const DRAIN: Duration = Duration::from_secs(5);

/// Records a written batch and acknowledges up to the contiguous commit
/// watermark; counts it in the metrics.
async fn acknowledge(
    watermark: &mut AckWatermark<jetstream::Message>,
    written: WrittenBatch,
) -> anyhow::Result<()> {
    let outcome = written.outcome;
    metrics::counter!("serviceradar_ingest_messages_total").increment(outcome.fetched as u64);
    metrics::counter!("serviceradar_ingest_rows_total").increment(outcome.inserted);
    if outcome.dead_lettered > 0 {
        metrics::counter!("serviceradar_ingest_dead_letters_total")
            .increment(outcome.dead_lettered as u64);
    }
    if let Some(last) = watermark.commit(written.number, written.last) {
        last.ack()
            .await
            .map_err(|e| anyhow::anyhow!("acknowledging up to a batch: {e}"))?;
    }
    Ok(())
}

/// Which acknowledgement may be sent, given batches (numbered in fetch order)
/// that commit in any order.
///
/// The consumer acknowledges with `AckAll`: acknowledging a message
/// acknowledges every earlier one. With several writers, batch 7 can commit
/// before batch 6; acknowledging it then would acknowledge batch 6 too, which
/// a crash could still lose. So the pipeline acknowledges only the last
/// message of the highest batch that has committed together with every batch
/// before it, and holds the others until the gap closes.
#[derive(Debug)]
pub(crate) struct AckWatermark<T> {
    /// The lowest batch number not yet committed.
    next: u64,
    /// Committed batches above `next`, with their acknowledgement handles.
    ahead: std::collections::BTreeMap<u64, T>,
}

impl<T> Default for AckWatermark<T> {
    fn default() -> Self {
        Self {
            next: 0,
            ahead: std::collections::BTreeMap::new(),
        }
    }
}

impl<T> AckWatermark<T> {
    /// Records that batch `number` committed, with `ack` the handle of its
    /// last message. Returns the handle to acknowledge when the contiguous
    /// prefix of committed batches grew (the highest batch's), else `None`.
    pub(crate) fn commit(&mut self, number: u64, ack: T) -> Option<T> {
        if number < self.next {
            // Already covered (cannot happen with unique numbers).
            return None;
        }
        self.ahead.insert(number, ack);
        let mut highest = None;
        while let Some(ack) = self.ahead.remove(&self.next) {
            highest = Some(ack);
            self.next += 1;
        }
        highest
    }

    /// Committed batches held back by an earlier one still in flight.
    pub(crate) fn waiting(&self) -> usize {
        self.ahead.len()
    }
}

async fn connect(
    store: &Store,
    pki: &Pki,
    settings: &IngestSettings,
    tenant: &Tenant,
) -> anyhow::Result<async_nats::Client> {
    let creds = pki
        .user_creds(store, tenant, &format!("ingest-{}", tenant.slug))
        .await?;
    serviceradar_hub::client::connect_with_creds(
        &settings.hub_url,
        settings.hub_ca_file.as_deref(),
        &settings.creds_dir,
        &format!("ingest-{}.creds", tenant.id),
        creds.as_str(),
        &format!("serviceradar-ingest-{}", tenant.slug),
    )
    .await
    .map_err(anyhow::Error::from)
}

/// Reply timeout of JetStream API requests to a site's leaf (through the hub).
const LEAF_API_TIMEOUT: Duration = Duration::from_secs(2);

/// Store and forward: every provisioned site of the tenant gets its
/// `EDGE_BUFFER` stream on its leaf (created through the hub in the site's
/// JetStream domain when the leaf is connected and the stream is missing),
/// and the tenant's `INGEST` stream sources every site's buffer. While a
/// site's link is down its leaf keeps the data; when the link returns the
/// source catches up from where it stopped.
pub async fn sync_site_buffers(
    store: &Store,
    client: &async_nats::Client,
    tenant: &Tenant,
    restarted: &mut HashMap<String, std::time::Instant>,
) -> anyhow::Result<()> {
    use serviceradar_natsconf::{BufferStreamInput, buffer_stream_config, buffer_stream_source};
    let scoped = store.scoped(TenantScope::for_system_task(tenant.id));
    let mut sites = Vec::new();
    let mut page = serviceradar_store::PageRequest {
        limit: serviceradar_store::PageRequest::MAX_LIMIT,
        after: None,
    };
    loop {
        let got = scoped
            .list_sites(&serviceradar_store::SiteFilter::default(), &page)
            .await?;
        sites.extend(got.items.into_iter().map(|s| s.slug.to_string()));
        match got
            .next_cursor
            .and_then(|c| serviceradar_store::Cursor::decode(&c))
        {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    let tenant_slug = tenant.slug.as_str();
    let mut sources = Vec::with_capacity(sites.len());
    let mut reachable = Vec::new();
    for site in &sites {
        let source = buffer_stream_source(tenant_slug, site)?;
        let api = source["external"]["api"]
            .as_str()
            .context("buffer source without an API prefix")?
            .to_owned();
        let buffer = buffer_stream_config(&BufferStreamInput::new(tenant_slug, site))?;
        match js_request(
            client,
            &format!("{api}.STREAM.INFO.EDGE_BUFFER"),
            &serde_json::json!({}),
        )
        .await
        {
            Ok(info) if info.get("error").is_none() => reachable.push(api.clone()),
            Ok(_) => {
                let created =
                    js_request(client, &format!("{api}.STREAM.CREATE.EDGE_BUFFER"), &buffer)
                        .await?;
                if let Some(error) = created.get("error") {
                    tracing::warn!(site = %site, %error, "the leaf refused its buffer stream");
                } else {
                    tracing::info!(site = %site, "created the site's buffer stream on its leaf");
                }
            }
            // The leaf is not connected: its buffer is created when it is.
            Err(e) => tracing::debug!(site = %site, error = %e, "site leaf unreachable"),
        }
        sources.push(source);
    }
    let info = js_request(
        client,
        &format!("$JS.API.STREAM.INFO.{STREAM}"),
        &serde_json::json!({}),
    )
    .await?;
    let mut config = info
        .get("config")
        .cloned()
        .context("INGEST stream info without config")?;
    let names = |v: &serde_json::Value| {
        let mut apis: Vec<String> = v
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["external"]["api"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        apis.sort();
        apis
    };
    let wanted = serde_json::Value::Array(sources);
    if names(&config["sources"]) != names(&wanted) {
        config["sources"] = wanted;
        let updated =
            js_request(client, &format!("$JS.API.STREAM.UPDATE.{STREAM}"), &config).await?;
        if let Some(error) = updated.get("error") {
            anyhow::bail!("updating the INGEST stream's sources: {error}");
        }
        tracing::info!(
            sites = sites.len(),
            "INGEST now sources every site's buffer"
        );
        return Ok(());
    }
    // A source whose leaf answers but that has been silent for long is stuck in
    // nats-server's retry backoff (after a hub restart the first attempts fail
    // before the leaf reconnects, and the next one can be a minute away).
    // Removing and re-adding it restarts it at once; the hub resumes it after
    // the last message it already holds from that source, so nothing repeats.
    let stalled: Vec<String> = info["sources"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|s| {
                    // -1: never active since the hub (re)started.
                    s["active"]
                        .as_i64()
                        .is_some_and(|ns| !(0..=STALLED_SOURCE_NS).contains(&ns))
                        || s.get("error").is_some_and(|e| !e.is_null())
                })
                .filter_map(|s| s["external"]["api"].as_str().map(str::to_owned))
                .filter(|api| reachable.contains(api))
                // Give a restarted source time to start before judging it again.
                .filter(|api| {
                    restarted
                        .get(api)
                        .is_none_or(|at| at.elapsed().as_nanos() > STALLED_SOURCE_NS as u128)
                })
                .collect()
        })
        .unwrap_or_default();
    if !stalled.is_empty() {
        let all = config["sources"].clone();
        config["sources"] = serde_json::Value::Array(
            all.as_array()
                .into_iter()
                .flatten()
                .filter(|s| {
                    s["external"]["api"]
                        .as_str()
                        .is_none_or(|api| !stalled.iter().any(|x| x == api))
                })
                .cloned()
                .collect(),
        );
        js_request(client, &format!("$JS.API.STREAM.UPDATE.{STREAM}"), &config).await?;
        config["sources"] = all;
        let updated =
            js_request(client, &format!("$JS.API.STREAM.UPDATE.{STREAM}"), &config).await?;
        if let Some(error) = updated.get("error") {
            anyhow::bail!("restarting stalled sources: {error}");
        }
        for api in &stalled {
            restarted.insert(api.clone(), std::time::Instant::now());
        }
        for api in &stalled {
            restarted.insert(api.clone(), std::time::Instant::now());
        }
        tracing::info!(sources = ?stalled, "restarted stalled site sources");
    }
    Ok(())
}

/// A source silent this long (ns) while its leaf answers is restarted.
const STALLED_SOURCE_NS: i64 = 5_000_000_000;

async fn js_request(
    client: &async_nats::Client,
    subject: &str,
    body: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let payload = serde_json::to_vec(body)?;
    let reply = tokio::time::timeout(
        LEAF_API_TIMEOUT,
        client.request(subject.to_owned(), payload.into()),
    )
    .await
    .with_context(|| format!("{subject}: no reply"))?
    .with_context(|| format!("{subject}: request failed"))?;
    Ok(serde_json::from_slice(&reply.payload)?)
}

/// Pushes tenant account JWTs to the hub's account resolver as a user of the
/// system account (`$SYS.REQ.CLAIMS.UPDATE`), once per JWT.
#[derive(Default)]
struct AccountPusher {
    client: Option<async_nats::Client>,
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
    ) -> anyhow::Result<()> {
        for tenant in tenants {
            let (_, jwt) = pki.tenant_account(store, tenant).await?;
            let key = tenant.id.to_string();
            if self.pushed.get(&key) == Some(&jwt) {
                continue;
            }
            let client = match &self.client {
                Some(client) => client.clone(),
                None => {
                    let client = system_client(store, pki, settings).await?;
                    self.client = Some(client.clone());
                    client
                }
            };
            serviceradar_hub::client::push_account_jwt(&client, &jwt, LEAF_API_TIMEOUT)
                .await
                .with_context(|| format!("tenant {}'s account", tenant.slug))?;
            tracing::info!(tenant_id = %tenant.id, tenant = %tenant.slug, "tenant account pushed to the hub");
            self.pushed.insert(key, jwt);
        }
        Ok(())
    }
}

async fn system_client(
    store: &Store,
    pki: &Pki,
    settings: &IngestSettings,
) -> anyhow::Result<async_nats::Client> {
    let creds = pki.system_user_creds(store, "serviceradar-core").await?;
    serviceradar_hub::client::connect_with_creds(
        &settings.hub_url,
        settings.hub_ca_file.as_deref(),
        &settings.creds_dir,
        "system.creds",
        creds.as_str(),
        "serviceradar-core-accounts",
    )
    .await
    .map_err(anyhow::Error::from)
}

/// Fetches up to `batch_size` messages, waiting at most `batch_timeout`.
pub async fn next_batch(
    consumer: &consumer::PullConsumer,
    settings: &IngestSettings,
) -> anyhow::Result<Vec<jetstream::Message>> {
    let mut messages = consumer
        .fetch()
        .max_messages(settings.batch_size)
        .expires(settings.batch_timeout)
        .messages()
        .await
        .context("fetching a batch")?;
    let mut batch = Vec::with_capacity(settings.batch_size);
    while let Some(message) = messages.next().await {
        match message {
            Ok(message) => batch.push(message),
            Err(e) => {
                if batch.is_empty() {
                    return Err(anyhow::anyhow!("fetching a batch: {e}"));
                }
                break;
            }
        }
    }
    Ok(batch)
}

/// A message with the JetStream metadata the writers need (parsed once, by
/// the fetcher).
struct Fetched {
    message: jetstream::Message,
    stream_seq: i64,
    stored_at_ms: i64,
}

/// A fetched batch, numbered in fetch order.
struct FetchedBatch {
    number: u64,
    messages: Vec<Fetched>,
}

/// A batch whose rows are committed (and dead letters flushed).
struct WrittenBatch {
    number: u64,
    /// Its last message: acknowledging it acknowledges the batch.
    last: jetstream::Message,
    outcome: BatchOutcome,
}

/// The fetcher: pulls batches in order and hands them to the writers. It
/// reserves a place in the writers' queue before fetching, so a slow
/// database stops the pulling (the stream keeps the data) instead of piling
/// messages up here.
///
/// It also checks that no delivery went missing: every delivery, redeliveries
/// included, carries the next consumer sequence. A gap (messages lost with a
/// connection while the client reconnected) ends the pipeline, because
/// acknowledging anything after it would acknowledge the lost messages too;
/// the next pipeline redelivers from the ack floor.
async fn fetch_loop(
    consumer: consumer::PullConsumer,
    settings: IngestSettings,
    batches: tokio::sync::mpsc::Sender<FetchedBatch>,
    mut delivered: u64,
) -> anyhow::Result<()> {
    // A fetch whose request was lost (the hub restarted under it) would
    // wait forever: bound it and start over.
    let limit = settings.batch_timeout + FETCH_GRACE;
    let mut number = 0;
    loop {
        let Ok(slot) = batches.reserve().await else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let messages = tokio::time::timeout(limit, next_batch(&consumer, &settings))
            .await
            .map_err(|_| anyhow::anyhow!("no reply to a fetch within {limit:?}"))??;
        if messages.is_empty() {
            continue;
        }
        let mut batch = Vec::with_capacity(messages.len());
        for message in messages {
            let info = message
                .info()
                .map_err(|e| anyhow::anyhow!("message without JetStream metadata: {e}"))?;
            if info.consumer_sequence != delivered + 1 {
                anyhow::bail!(
                    "delivery {} arrived after {delivered}: deliveries went missing",
                    info.consumer_sequence
                );
            }
            delivered = info.consumer_sequence;
            let stream_seq = i64::try_from(info.stream_sequence).unwrap_or(i64::MAX);
            let stored_at_ms =
                i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
            batch.push(Fetched {
                message,
                stream_seq,
                stored_at_ms,
            });
        }
        tracing::debug!(
            number,
            fetched = batch.len(),
            fetch_ms = started.elapsed().as_secs_f64() * 1e3,
            "fetched a batch"
        );
        slot.send(FetchedBatch {
            number,
            messages: batch,
        });
        number += 1;
    }
}

/// A writer: takes the next fetched batch, writes it in its own transaction
/// (its own database connection), and reports it written. Several writers
/// overlap their commits' WAL flushes and use more than one core of the
/// database.
async fn write_loop(
    store: Store,
    client: async_nats::Client,
    tenant: Tenant,
    batches: Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<FetchedBatch>>>,
    done: tokio::sync::mpsc::UnboundedSender<WrittenBatch>,
) -> anyhow::Result<()> {
    loop {
        let next = batches.lock().await.recv().await;
        let Some(FetchedBatch { number, messages }) = next else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let outcome = write_batch(&store, &client, &tenant, &messages).await?;
        tracing::debug!(
            number,
            written = outcome.inserted,
            write_ms = started.elapsed().as_secs_f64() * 1e3,
            "wrote a batch"
        );
        let Some(last) = messages.into_iter().next_back() else {
            continue;
        };
        if done
            .send(WrittenBatch {
                number,
                last: last.message,
                outcome,
            })
            .is_err()
        {
            return Ok(());
        }
    }
}

/// Decodes a batch, dead-letters the poison and writes the good records in
/// one transaction (no acknowledgement: see [`AckWatermark`]).
async fn write_batch(
    store: &Store,
    client: &async_nats::Client,
    tenant: &Tenant,
    batch: &[Fetched],
) -> anyhow::Result<BatchOutcome> {
    let mut records = Vec::with_capacity(batch.len());
    let mut dead_lettered = 0;
    for fetched in batch {
        let message = &fetched.message;
        let decoded = decode(
            tenant.slug.as_str(),
            IncomingMessage {
                subject: message.subject.as_str(),
                payload: &message.payload,
                stream_seq: fetched.stream_seq,
                stored_at_ms: fetched.stored_at_ms,
            },
        );
        match decoded {
            Ok(record) => records.push(record),
            Err(reason) => {
                dead_letter(client, tenant, fetched, &reason).await?;
                dead_lettered += 1;
            }
        }
    }
    let inserted = if records.is_empty() {
        0
    } else {
        store
            .scoped(TenantScope::for_system_task(tenant.id))
            .insert_telemetry(&records)
            .await
            .context("writing the batch")?
    };
    if dead_lettered > 0 {
        client.flush().await.context("flushing dead letters")?;
    }
    Ok(BatchOutcome {
        fetched: batch.len(),
        inserted,
        dead_lettered,
    })
}

/// Publishes a message that did not decode to `deadletter.{tenant}`, with the
/// reason, subject and stream sequence in headers.
async fn dead_letter(
    client: &async_nats::Client,
    tenant: &Tenant,
    fetched: &Fetched,
    reason: &serviceradar_domain::telemetry::Rejection,
) -> anyhow::Result<()> {
    let message = &fetched.message;
    let stream_seq = fetched.stream_seq;
    tracing::info!(stream_seq, subject = %message.subject, %reason, "dead-lettered a message");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("SR-Reason", reason.to_string().as_str());
    headers.insert("SR-Subject", message.subject.as_str());
    headers.insert("SR-Stream-Seq", stream_seq.to_string().as_str());
    // An oversized payload is cut to its first KiB (enough to identify it).
    let keep = if message.payload.len() > serviceradar_domain::telemetry::MAX_PAYLOAD {
        1024
    } else {
        message.payload.len()
    };
    client
        .publish_with_headers(
            deadletter_subject(tenant.slug.as_str()),
            headers,
            message.payload.slice(..keep),
        )
        .await
        .context("publishing to the dead-letter subject")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledges_only_a_contiguous_prefix_of_committed_batches() {
        let mut w = AckWatermark::default();
        // Batch 1 commits before batch 0: nothing may be acknowledged yet.
        assert_eq!(w.commit(1, "b1"), None);
        assert_eq!(w.waiting(), 1);
        // Batch 0 closes the gap: acknowledge through batch 1 (its last message).
        assert_eq!(w.commit(0, "b0"), Some("b1"));
        assert_eq!(w.waiting(), 0);
        // In order: each commit acknowledges itself.
        assert_eq!(w.commit(2, "b2"), Some("b2"));
        // 5 and 4 wait for 3; 3 releases all of them.
        assert_eq!(w.commit(5, "b5"), None);
        assert_eq!(w.commit(4, "b4"), None);
        assert_eq!(w.waiting(), 2);
        assert_eq!(w.commit(3, "b3"), Some("b5"));
        assert_eq!(w.waiting(), 0);
        // A number below the watermark changes nothing.
        assert_eq!(w.commit(1, "again"), None);
        assert_eq!(w.commit(6, "b6"), Some("b6"));
    }

    #[test]
    fn a_batch_that_never_commits_holds_every_later_acknowledgement() {
        let mut w = AckWatermark::default();
        assert_eq!(w.commit(0, 0), Some(0));
        // Batch 1 failed (its writer returned an error): 2..=50 commit but
        // none of them may be acknowledged.
        for n in 2..=50 {
            assert_eq!(w.commit(n, n), None);
        }
        assert_eq!(w.waiting(), 49);
    }

    #[test]
    fn in_flight_messages_fit_in_max_ack_pending() {
        let mut settings = IngestSettings::new("nats://127.0.0.1:4222", "/tmp/creds");
        settings.batch_size = 1000;
        settings.writers = 3;
        // Three writers' batches, one queued, one being fetched.
        assert_eq!(max_in_flight(&settings), 5000);
        assert_eq!(consumer_config(&settings).max_ack_pending, 5000);
        settings.writers = 0;
        assert_eq!(max_in_flight(&settings), 3000, "at least one writer");
    }
}
