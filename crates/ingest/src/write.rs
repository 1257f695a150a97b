//! The writers: each takes the next fetched batch and, on its own database
//! connection, decodes it, dead-letters the poison and writes the good
//! records in one transaction, then reports the batch written.
//!
//! It exists so that several batches are written at once (their commits'
//! WAL flushes overlap) while acknowledging stays with the acknowledger: a
//! writer never acknowledges.

use async_nats::jetstream;
use serviceradar_domain::TenantScope;
use serviceradar_domain::resources::Tenant;
use serviceradar_domain::telemetry::{IncomingMessage, TelemetryRecord, decode};
use serviceradar_store::Store;

use crate::deadletter::DeadLetterStream;
use crate::devices::DeviceSites;
use crate::error::IngestError;
use crate::fetch::{Fetched, FetchedBatch};
use crate::status::IngestStatus;

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

/// A batch whose rows are committed (and dead letters flushed).
pub(crate) struct WrittenBatch {
    pub(crate) number: u64,
    /// Its last message: acknowledging it acknowledges the batch.
    pub(crate) last: jetstream::Message,
    pub(crate) outcome: BatchOutcome,
}

/// What every writer of one tenant's pipeline shares.
#[derive(Clone)]
pub(crate) struct TenantWriter {
    pub(crate) store: Store,
    pub(crate) client: async_nats::Client,
    pub(crate) tenant: Tenant,
    pub(crate) status: IngestStatus,
    pub(crate) devices: DeviceSites,
    pub(crate) dead_letters: DeadLetterStream,
}

/// A writer: takes the next fetched batch, writes it in its own transaction
/// (its own database connection), and reports it written. Several writers
/// overlap their commits' WAL flushes and use more than one core of the
/// database.
pub(crate) async fn write_loop(
    writer: TenantWriter,
    batches: crate::pipeline::Batches,
    done: tokio::sync::mpsc::UnboundedSender<WrittenBatch>,
) -> Result<(), IngestError> {
    let TenantWriter {
        store,
        client,
        tenant,
        status,
        devices,
        dead_letters,
    } = writer;
    loop {
        let next = batches.lock().await.recv().await;
        let Some(FetchedBatch { number, messages }) = next else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let outcome =
            write_batch(&store, &client, &tenant, &devices, &dead_letters, &messages).await?;
        status.wrote(tenant.id, outcome.inserted, outcome.dead_lettered as u64);
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

/// Decodes one message as `tenant`'s telemetry and checks a device's record
/// against the tenant's registry ([`DeviceSites::refusal`]): the record, or
/// why it belongs in the tenant's dead letters. Both ingest modes' writers
/// admit records here.
pub(crate) async fn decode_admitted<'m>(
    store: &Store,
    tenant: &Tenant,
    devices: &DeviceSites,
    message: IncomingMessage<'m>,
    reloaded: &mut bool,
) -> Result<Result<TelemetryRecord<'m>, String>, IngestError> {
    let record = match decode(tenant.slug.as_str(), message) {
        Ok(record) => record,
        Err(rejection) => return Ok(Err(rejection.to_string())),
    };
    if let (Some(device), Some(site)) = (record.meta().device_id, record.meta().edge_site())
        && let Some(reason) = devices
            .refusal(store, tenant, device, site, reloaded)
            .await?
    {
        return Ok(Err(reason));
    }
    Ok(Ok(record))
}

/// Decodes a batch, dead-letters the poison and writes the good records in
/// one transaction (no acknowledgement: see [`AckWatermark`]). Records the
/// database refuses are split out of the batch and dead-lettered with the
/// database's reason; the rest is written. A device's record whose device
/// is not registered at the site it came from (the site token of its
/// subject, which only that site's buffer captures) is dead-lettered too.
///
/// [`AckWatermark`]: crate::ack::AckWatermark
async fn write_batch(
    store: &Store,
    client: &async_nats::Client,
    tenant: &Tenant,
    devices: &DeviceSites,
    dead_letters: &DeadLetterStream,
    batch: &[Fetched],
) -> Result<BatchOutcome, IngestError> {
    let mut reloaded = false;
    let mut records = Vec::with_capacity(batch.len());
    // Where each record came from in `batch`.
    let mut origin = Vec::with_capacity(batch.len());
    let mut dead_lettered = 0;
    for fetched in batch {
        let message = &fetched.message;
        let admitted = decode_admitted(
            store,
            tenant,
            devices,
            IncomingMessage {
                subject: message.subject.as_str(),
                payload: &message.payload,
                stream_seq: fetched.stream_seq,
                stored_at_ms: fetched.stored_at_ms,
            },
            &mut reloaded,
        )
        .await?;
        match admitted {
            Ok(record) => {
                records.push(record);
                origin.push(fetched);
            }
            Err(reason) => {
                dead_letters.send(client, tenant, fetched, &reason).await?;
                dead_lettered += 1;
            }
        }
    }
    let inserted = if records.is_empty() {
        0
    } else {
        let written = store
            .scoped(TenantScope::for_system_task(tenant.id))
            .insert_telemetry_isolating(&records)
            .await
            .map_err(|e| IngestError::Store("writing the batch", e))?;
        for (index, reason) in &written.refused {
            if let Some(fetched) = origin.get(*index) {
                dead_letters.send(client, tenant, fetched, reason).await?;
                dead_lettered += 1;
            }
        }
        written.inserted
    };
    Ok(BatchOutcome {
        fetched: batch.len(),
        inserted,
        dead_lettered,
    })
}
