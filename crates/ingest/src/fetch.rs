//! The fetcher: pulls batches from the consumer in order, numbers them,
//! parses each message's JetStream metadata once and hands the batches to
//! the writers.
//!
//! It exists to give the pipeline back-pressure (a place in the writers'
//! queue is reserved before each fetch, so a slow database stops the pulling
//! and the stream keeps the data) and to notice lost deliveries, which must
//! end the pipeline before anything after them is acknowledged.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;

use crate::error::IngestError;
use crate::settings::IngestSettings;

/// How much longer than the batch timeout a fetch may take before the
/// pipeline gives up on it and reconnects.
const FETCH_GRACE: Duration = Duration::from_secs(2);

/// Fetches up to `batch_size` messages, waiting at most `batch_timeout`.
pub async fn next_batch(
    consumer: &consumer::PullConsumer,
    settings: &IngestSettings,
) -> Result<Vec<jetstream::Message>, IngestError> {
    let mut messages = consumer
        .fetch()
        .max_messages(settings.batch_size)
        .expires(settings.batch_timeout)
        .messages()
        .await
        .map_err(|e| IngestError::Fetch(e.into()))?;
    let mut batch = Vec::with_capacity(settings.batch_size);
    while let Some(message) = messages.next().await {
        match message {
            Ok(message) => batch.push(message),
            Err(e) => {
                if batch.is_empty() {
                    return Err(IngestError::Fetch(e));
                }
                break;
            }
        }
    }
    Ok(batch)
}

/// The longest a fetch may take: its `batch_timeout`, plus a grace for the
/// hub's reply. A fetch whose request was lost (the hub restarted under it)
/// would wait forever, so it is bounded and the pipeline starts over.
pub(crate) fn fetch_limit(settings: &IngestSettings) -> Duration {
    settings.batch_timeout + FETCH_GRACE
}

/// A message with the JetStream metadata the writers need (parsed once, by
/// the fetcher).
pub(crate) struct Fetched {
    pub(crate) message: jetstream::Message,
    pub(crate) stream_seq: i64,
    pub(crate) stored_at_ms: i64,
}

/// What the fetcher reports after each fetch (into the pipeline's status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// The fetch came back empty: caught up.
    Idle,
    /// Messages still waiting in the stream behind the fetched batch.
    Lag(u64),
}

/// A fetched batch, numbered in fetch order.
pub(crate) struct FetchedBatch {
    pub(crate) number: u64,
    pub(crate) messages: Vec<Fetched>,
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
///
/// It stops when `finish` turns true, but only between fetches (see
/// [`fetch_limit`] for how long a fetch may take): a fetch abandoned halfway
/// leaves its request open on the hub until the hub hears that nobody reads
/// its replies any more. The hub hands that request the next message in the
/// meantime, and the next pipeline, which read the consumer's state a moment
/// earlier, sees its first delivery skip a sequence. Under CPU load that
/// failed a user renewal in each of 5 runs of the renewal test (session 31).
pub(crate) async fn fetch_loop(
    consumer: consumer::PullConsumer,
    settings: IngestSettings,
    batches: tokio::sync::mpsc::Sender<FetchedBatch>,
    mut delivered: u64,
    mut finish: tokio::sync::watch::Receiver<bool>,
    report: impl Fn(Progress),
) -> Result<(), IngestError> {
    let limit = fetch_limit(&settings);
    let mut number = 0;
    loop {
        // A place in the writers' queue, unless asked to finish first (a
        // dropped sender asks too).
        let slot = tokio::select! {
            biased;
            _ = finish.wait_for(|finish| *finish) => return Ok(()),
            slot = batches.reserve() => match slot {
                Ok(slot) => slot,
                Err(_) => return Ok(()),
            },
        };
        let started = std::time::Instant::now();
        let messages = tokio::time::timeout(limit, next_batch(&consumer, &settings))
            .await
            .map_err(|_| IngestError::FetchTimeout { limit })??;
        if messages.is_empty() {
            report(Progress::Idle);
            continue;
        }
        let mut batch = Vec::with_capacity(messages.len());
        let mut lag = 0;
        for message in messages {
            let info = message.info().map_err(IngestError::Metadata)?;
            lag = info.pending;
            if info.consumer_sequence != delivered + 1 {
                return Err(IngestError::DeliveryGap {
                    after: delivered,
                    delivery: info.consumer_sequence,
                });
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
        report(Progress::Lag(lag));
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
