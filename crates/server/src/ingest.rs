//! The ingestion pipeline: JetStream on the hub -> the database.
//!
//! For every tenant, `serviceradar-core` connects to the hub as a user of the
//! tenant's NATS account (minted by this process, which holds the account
//! keys), makes sure the tenant's `INGEST` stream (`events|metrics|logs.{tenant}.>`)
//! and the durable pull consumer `serviceradar-ingest` exist, and loops:
//!
//! 1. fetch a batch (up to `batch_size` messages, waiting at most
//!    `batch_timeout`);
//! 2. decode each message ([`serviceradar_domain::telemetry::decode`]); a
//!    message that does not decode is published to `deadletter.{tenant}` with
//!    the reason in the `SR-Reason` header (and its subject and stream
//!    sequence), and the pipeline goes on;
//! 3. write the good records in one transaction, idempotent on the stream
//!    sequence;
//! 4. only after the commit, acknowledge the batch (the consumer uses
//!    `AckAll`: acknowledging the last message acknowledges the batch).
//!
//! A crash anywhere before step 4 redelivers the batch, and step 3 writes
//! nothing twice. The next batch is fetched only after the commit, so a slow
//! database slows consumption and nothing is dropped (the stream keeps the
//! data). The tenant of every row is the tenant whose account the consumer is
//! connected to; the subject's tenant token must agree, and nothing in a
//! payload can change it.
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

use crate::pki::{Pki, write_secret_file};

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
/// Default stream retention on the hub.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where the hub is and how the pipeline batches.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// The hub's client URL (`nats://host:4222` or `tls://...`).
    pub hub_url: String,
    /// CA file for a `tls://` hub URL.
    pub hub_ca_file: Option<PathBuf>,
    /// Messages per batch.
    pub batch_size: usize,
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
    /// Defaults: batches of 500, 1 s, 7 days of retention.
    pub fn new(hub_url: impl Into<String>, creds_dir: impl Into<PathBuf>) -> Self {
        Self {
            hub_url: hub_url.into(),
            hub_ca_file: None,
            batch_size: 500,
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

fn consumer_config(settings: &IngestSettings) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(CONSUMER.into()),
        ack_policy: consumer::AckPolicy::All,
        ack_wait: settings.ack_wait,
        max_ack_pending: i64::try_from(settings.batch_size.max(1) * 4).unwrap_or(i64::MAX),
        ..Default::default()
    }
}

/// Makes sure the tenant's ingest stream and durable consumer exist on the
/// hub `client` is connected to (as a user of the tenant's account).
pub async fn open_consumer(
    client: &async_nats::Client,
    tenant_slug: &str,
    settings: &IngestSettings,
) -> anyhow::Result<consumer::PullConsumer> {
    let js = jetstream::new(client.clone());
    let stream = match js.get_stream(STREAM).await {
        Ok(stream) => stream,
        Err(_) => js
            .create_stream(stream_config(tenant_slug, settings.retention))
            .await
            .context("creating the ingest stream")?,
    };
    stream
        .get_or_create_consumer(CONSUMER, consumer_config(settings))
        .await
        .context("creating the ingest consumer")
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

/// Connects, ensures the stream and consumer, then processes batches until
/// `stop` flips (`Ok`) or something fails (`Err`, the caller retries).
async fn pipeline(
    store: &Store,
    pki: &Pki,
    settings: &IngestSettings,
    tenant: &Tenant,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let client = connect(store, pki, settings, tenant).await?;
    let consumer = open_consumer(&client, tenant.slug.as_str(), settings).await?;
    tracing::info!(hub = %settings.hub_url, "ingest pipeline running");
    let mut last_sync: Option<std::time::Instant> = None;
    let mut restarted_sources = HashMap::new();
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        if last_sync.is_none_or(|t| t.elapsed() >= settings.site_sync_interval) {
            if let Err(e) = sync_site_buffers(store, &client, tenant, &mut restarted_sources).await
            {
                tracing::warn!(error = format!("{e:#}"), "syncing site buffers failed");
            }
            last_sync = Some(std::time::Instant::now());
        }
        // A fetch whose request was lost (the hub restarted under it) would
        // wait forever: bound it and start over.
        let limit = settings.batch_timeout + FETCH_GRACE;
        let fetch_started = std::time::Instant::now();
        let batch = tokio::select! {
            batch = tokio::time::timeout(limit, next_batch(&consumer, settings)) => {
                batch.map_err(|_| anyhow::anyhow!("no reply to a fetch within {limit:?}"))??
            }
            _ = stop.changed() => return Ok(()),
        };
        if batch.is_empty() {
            continue;
        }
        let fetched_in = fetch_started.elapsed();
        let outcome = process_batch(store, &client, tenant, batch).await?;
        tracing::debug!(
            fetched = outcome.fetched,
            fetch_ms = fetched_in.as_secs_f64() * 1e3,
            total_ms = fetch_started.elapsed().as_secs_f64() * 1e3,
            "batch"
        );
        metrics::counter!("serviceradar_ingest_messages_total").increment(outcome.fetched as u64);
        metrics::counter!("serviceradar_ingest_rows_total").increment(outcome.inserted);
        if outcome.dead_lettered > 0 {
            metrics::counter!("serviceradar_ingest_dead_letters_total")
                .increment(outcome.dead_lettered as u64);
        }
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
    std::fs::create_dir_all(&settings.creds_dir)
        .with_context(|| format!("creating {}", settings.creds_dir.display()))?;
    let path = settings
        .creds_dir
        .join(format!("ingest-{}.creds", tenant.id));
    write_secret_file(&path, creds.as_str().as_bytes())?;
    let mut options = async_nats::ConnectOptions::with_credentials_file(&path)
        .await
        .context("reading the ingest credentials")?
        .name(format!("serviceradar-ingest-{}", tenant.slug))
        .connection_timeout(Duration::from_secs(5));
    if let Some(ca) = &settings.hub_ca_file {
        options = options.require_tls(true).add_root_certificates(ca.clone());
    }
    options
        .connect(&settings.hub_url)
        .await
        .with_context(|| format!("connecting to the hub at {}", settings.hub_url))
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

/// Decodes, dead-letters, writes and acknowledges one batch.
pub async fn process_batch(
    store: &Store,
    client: &async_nats::Client,
    tenant: &Tenant,
    batch: Vec<jetstream::Message>,
) -> anyhow::Result<BatchOutcome> {
    let mut records = Vec::with_capacity(batch.len());
    let mut dead_lettered = 0;
    for message in &batch {
        let info = message
            .info()
            .map_err(|e| anyhow::anyhow!("message without JetStream metadata: {e}"))?;
        let stream_seq = i64::try_from(info.stream_sequence).unwrap_or(i64::MAX);
        let stored_at_ms =
            i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        let decoded = decode(
            tenant.slug.as_str(),
            IncomingMessage {
                subject: message.subject.as_str(),
                payload: &message.payload,
                stream_seq,
                stored_at_ms,
            },
        );
        match decoded {
            Ok(record) => records.push(record),
            Err(reason) => {
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
                let payload = message.payload.slice(..keep);
                client
                    .publish_with_headers(
                        deadletter_subject(tenant.slug.as_str()),
                        headers,
                        payload,
                    )
                    .await
                    .context("publishing to the dead-letter subject")?;
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
    if let Some(last) = batch.last() {
        last.ack()
            .await
            .map_err(|e| anyhow::anyhow!("acknowledging the batch: {e}"))?;
    }
    Ok(BatchOutcome {
        fetched: batch.len(),
        inserted,
        dead_lettered,
    })
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
            let reply = tokio::time::timeout(
                LEAF_API_TIMEOUT,
                client.request("$SYS.REQ.CLAIMS.UPDATE", jwt.clone().into()),
            )
            .await
            .context("no reply to the account push")?
            .context("pushing an account JWT")?;
            let reply: serde_json::Value = serde_json::from_slice(&reply.payload)?;
            if reply["data"]["code"] != 200 {
                anyhow::bail!("the hub refused tenant {}'s account: {reply}", tenant.slug);
            }
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
    std::fs::create_dir_all(&settings.creds_dir)?;
    let path = settings.creds_dir.join("system.creds");
    write_secret_file(&path, creds.as_str().as_bytes())?;
    let mut options = async_nats::ConnectOptions::with_credentials_file(&path)
        .await?
        .name("serviceradar-core-accounts")
        .connection_timeout(Duration::from_secs(5));
    if let Some(ca) = &settings.hub_ca_file {
        options = options.require_tls(true).add_root_certificates(ca.clone());
    }
    options.connect(&settings.hub_url).await.with_context(|| {
        format!(
            "connecting to the hub at {} as the system account",
            settings.hub_url
        )
    })
}
