//! Dead letters: a message that does not decode, or that the database
//! refused, is published to `deadletter.{tenant}` with why (`SR-Reason`),
//! where it came from (`SR-Subject`) and its stream sequence
//! (`SR-Stream-Seq`), into the tenant's `DEAD_LETTERS` stream on the hub,
//! which keeps them for [`IngestSettings::dead_letter_retention`] (and at
//! most [`MAX_BYTES`]); [`DeadLetters`] reads them back for the API.
//!
//! It exists so that poison is kept for inspection and the batch around it
//! is still written and acknowledged, instead of the pipeline stopping on it
//! — and so that a tenant can see what was refused and why without a NATS
//! client on the hub.
//!
//! [`IngestSettings::dead_letter_retention`]: crate::IngestSettings::dead_letter_retention

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use serviceradar_domain::ids::TenantId;
use serviceradar_domain::resources::Tenant;

use crate::error::{IngestError, wrap};
use crate::fetch::Fetched;

/// Name of each tenant's dead-letter stream on the hub.
pub const STREAM: &str = "DEAD_LETTERS";
/// Most bytes a tenant's dead-letter stream keeps (the oldest go first).
pub const MAX_BYTES: i64 = 256 * 1024 * 1024;
/// Bytes of an oversized payload that are kept (enough to identify it).
const KEPT_OF_OVERSIZED: usize = 1024;

/// The dead-letter subject of a tenant.
pub fn deadletter_subject(tenant_slug: &str) -> String {
    format!("deadletter.{tenant_slug}")
}

/// The configuration of a tenant's dead-letter stream.
pub fn stream_config(tenant_slug: &str, retention: Duration) -> stream::Config {
    stream::Config {
        name: STREAM.into(),
        subjects: vec![deadletter_subject(tenant_slug)],
        max_age: retention,
        max_bytes: MAX_BYTES,
        discard: stream::DiscardPolicy::Old,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

/// Makes sure the tenant's dead-letter stream exists with `retention`
/// (an existing stream with another retention is updated).
pub(crate) async fn open_stream(
    client: &async_nats::Client,
    tenant_slug: &str,
    retention: Duration,
    replicas: usize,
) -> Result<(), IngestError> {
    let js = jetstream::new(client.clone());
    let wanted = stream::Config {
        num_replicas: replicas.max(1),
        ..stream_config(tenant_slug, retention)
    };
    let stream = js.get_or_create_stream(wanted.clone()).await.map_err(wrap(
        IngestError::Consumer,
        "creating the dead-letter stream",
    ))?;
    let have = &stream.cached_info().config;
    if have.max_age != wanted.max_age
        || have.max_bytes != wanted.max_bytes
        || have.num_replicas < wanted.num_replicas
    {
        js.update_stream(wanted).await.map_err(wrap(
            IngestError::Consumer,
            "updating the dead-letter stream",
        ))?;
    }
    Ok(())
}

/// A tenant's dead-letter stream as a pipeline sees it: created (or its
/// retention updated) with the tenant's first dead letter, not when the
/// pipeline starts. Each stream reserves [`MAX_BYTES`] of the hub's
/// JetStream storage, so creating one per tenant up front stopped the hub
/// from taking new streams at about a hundred tenants; most tenants never
/// have a dead letter. Clones share the state (one per pipeline, cloned into
/// its writers).
#[derive(Debug, Clone)]
pub(crate) struct DeadLetterStream {
    retention: Duration,
    replicas: usize,
    opened: std::sync::Arc<tokio::sync::OnceCell<()>>,
}

impl DeadLetterStream {
    pub(crate) fn new(retention: Duration, replicas: usize) -> Self {
        Self {
            retention,
            replicas,
            opened: std::sync::Arc::default(),
        }
    }

    /// Opens the tenant's stream ([`open_stream`]) unless these clones
    /// already did.
    pub(crate) async fn open(
        &self,
        client: &async_nats::Client,
        tenant: &Tenant,
    ) -> Result<(), IngestError> {
        self.opened
            .get_or_try_init(|| {
                open_stream(client, tenant.slug.as_str(), self.retention, self.replicas)
            })
            .await?;
        Ok(())
    }

    /// [`dead_letter`], opening the stream first if this pipeline has not.
    pub(crate) async fn send(
        &self,
        client: &async_nats::Client,
        tenant: &Tenant,
        fetched: &Fetched,
        reason: &(dyn std::fmt::Display + Sync),
    ) -> Result<(), IngestError> {
        self.open(client, tenant).await?;
        dead_letter(client, tenant, fetched, reason).await
    }
}

/// Publishes a message that did not decode (or the database refused) into
/// the tenant's dead-letter stream, with the reason, subject and stream
/// sequence in headers, and waits until the hub stored it (the message is
/// acknowledged from the ingest stream after this).
pub(crate) async fn dead_letter(
    client: &async_nats::Client,
    tenant: &Tenant,
    fetched: &Fetched,
    reason: &(dyn std::fmt::Display + Sync),
) -> Result<(), IngestError> {
    let message = &fetched.message;
    dead_letter_parts(
        client,
        tenant,
        message.subject.as_str(),
        &message.payload,
        fetched.stream_seq,
        reason,
    )
    .await
}

/// [`dead_letter`] of a message given by its parts: the subject it was
/// published on, its payload and its sequence in the tenant's `INGEST`
/// stream (platform ingestion reads them from the platform stream's copy).
pub(crate) async fn dead_letter_parts(
    client: &async_nats::Client,
    tenant: &Tenant,
    subject: &str,
    payload: &[u8],
    stream_seq: i64,
    reason: &(dyn std::fmt::Display + Sync),
) -> Result<(), IngestError> {
    tracing::info!(stream_seq, subject = %subject, %reason, "dead-lettered a message");
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("SR-Reason", reason.to_string().as_str());
    headers.insert("SR-Subject", subject);
    headers.insert("SR-Stream-Seq", stream_seq.to_string().as_str());
    headers.insert("SR-Payload-Bytes", payload.len().to_string().as_str());
    // Redelivered poison (a pipeline died before acknowledging) is stored once.
    headers.insert(
        "Nats-Msg-Id",
        format!("{}:{stream_seq}", tenant.slug.as_str()).as_str(),
    );
    let keep = if payload.len() > serviceradar_domain::telemetry::MAX_PAYLOAD {
        KEPT_OF_OVERSIZED
    } else {
        payload.len()
    };
    jetstream::new(client.clone())
        .publish_with_headers(
            deadletter_subject(tenant.slug.as_str()),
            headers,
            payload[..keep].to_vec().into(),
        )
        .await
        .map_err(wrap(IngestError::DeadLetter, "publishing a dead letter"))?
        .await
        .map_err(wrap(IngestError::DeadLetter, "storing a dead letter"))?;
    Ok(())
}

/// A stored dead letter, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its sequence in the dead-letter stream (the list's cursor).
    pub seq: u64,
    /// When it was dead-lettered (Unix ms).
    pub dead_lettered_at_ms: i64,
    /// Why: the decoder's or the database's reason.
    pub reason: String,
    /// The subject it was published on.
    pub subject: String,
    /// Its sequence in the tenant's `INGEST` stream.
    pub ingest_seq: Option<u64>,
    /// The payload's size as published.
    pub payload_bytes: Option<u64>,
    /// The payload (its first KiB when it was oversized), as text with
    /// invalid UTF-8 replaced.
    pub payload: String,
}

/// Why the dead letters could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterReadError {
    /// This process runs no ingestion pipeline for the tenant (ingestion is
    /// off here, or the pipeline has not connected yet).
    #[error("ingestion is not running for this tenant in this process")]
    NotRunning,
    /// The hub did not answer as expected.
    #[error("reading the dead-letter stream: {0}")]
    Hub(String),
}

/// Reads tenants' dead letters back, through the hub connection of each
/// tenant's running pipeline (registered by the pipeline). Cheap to clone;
/// the API and the ingest supervisor share one.
#[derive(Clone, Default)]
pub struct DeadLetters {
    clients: Arc<Mutex<HashMap<TenantId, async_nats::Client>>>,
    /// Platform mode: tenant connections opened on demand.
    pool: Arc<Mutex<Option<crate::pool::TenantClients>>>,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters").finish_non_exhaustive()
    }
}

impl DeadLetters {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn register(&self, tenant: TenantId, client: async_nats::Client) {
        if let Ok(mut clients) = self.clients.lock() {
            clients.insert(tenant, client);
        }
    }

    /// Platform mode: read through `pool`'s tenant connections.
    pub(crate) fn use_pool(&self, pool: crate::pool::TenantClients) {
        if let Ok(mut current) = self.pool.lock() {
            *current = Some(pool);
        }
    }

    /// Lets go of every connection it holds, when the process stops: after
    /// the pipelines have drained and before the embedded hub stops, so no
    /// connection outlives its pipeline only to retry a hub that is going
    /// away (and log each attempt).
    pub fn release(&self) {
        if let Ok(mut clients) = self.clients.lock() {
            clients.clear();
        }
        if let Ok(mut pool) = self.pool.lock() {
            *pool = None;
        }
    }

    fn client(&self, tenant: TenantId) -> Option<async_nats::Client> {
        self.clients.lock().ok()?.get(&tenant).cloned()
    }

    /// A registered pipeline's connection, or one from the platform pool
    /// (held while reading).
    async fn connection(
        &self,
        tenant: TenantId,
    ) -> Result<(async_nats::Client, Option<crate::pool::InUse>), DeadLetterReadError> {
        if let Some(client) = self.client(tenant) {
            return Ok((client, None));
        }
        let pool = self
            .pool
            .lock()
            .ok()
            .and_then(|p| p.clone())
            .ok_or(DeadLetterReadError::NotRunning)?;
        let known = pool.tenant(tenant).ok_or(DeadLetterReadError::NotRunning)?;
        let in_use = pool
            .client(&known)
            .await
            .map_err(|e| DeadLetterReadError::Hub(e.to_string()))?;
        Ok((in_use.client.clone(), Some(in_use)))
    }

    /// Up to `limit` of the tenant's dead letters, newest first, older than
    /// sequence `before` when given; and the cursor of the next page.
    pub async fn list(
        &self,
        tenant: TenantId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<DeadLetter>, Option<u64>), DeadLetterReadError> {
        let (client, _in_use) = self.connection(tenant).await?;
        let js = jetstream::new(client);
        let stream = match js.get_stream(STREAM).await {
            Ok(stream) => stream,
            // Platform mode creates a tenant's stream with its first dead
            // letter: none yet.
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(j)
                        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                return Ok((Vec::new(), None));
            }
            Err(e) => return Err(DeadLetterReadError::Hub(e.to_string())),
        };
        let state = stream.cached_info().state.clone();
        if state.messages == 0 {
            return Ok((Vec::new(), None));
        }
        let mut seq = before.map_or(state.last_sequence, |b| {
            b.saturating_sub(1).min(state.last_sequence)
        });
        let mut out = Vec::with_capacity(limit);
        while seq >= state.first_sequence.max(1) && out.len() < limit {
            match stream.get_raw_message(seq).await {
                Ok(message) => out.push(from_stream(message)),
                // Deleted by retention meanwhile, or a gap: skip it.
                Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {}
                Err(e) => return Err(DeadLetterReadError::Hub(e.to_string())),
            }
            seq -= 1;
        }
        let next = (seq >= state.first_sequence.max(1) && out.len() == limit)
            .then(|| out.last().map(|d| d.seq))
            .flatten();
        Ok((out, next))
    }
}

fn from_stream(message: jetstream::message::StreamMessage) -> DeadLetter {
    let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned());
    DeadLetter {
        seq: message.sequence,
        dead_lettered_at_ms: i64::try_from(message.time.unix_timestamp_nanos() / 1_000_000)
            .unwrap_or(0),
        reason: header("SR-Reason").unwrap_or_default(),
        subject: header("SR-Subject").unwrap_or_default(),
        ingest_seq: header("SR-Stream-Seq").and_then(|s| s.parse().ok()),
        payload_bytes: header("SR-Payload-Bytes").and_then(|s| s.parse().ok()),
        payload: String::from_utf8_lossy(&message.payload).into_owned(),
    }
}
