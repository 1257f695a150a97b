//! The tenant's `INGEST` stream on the hub and the durable pull consumer the
//! pipeline reads it with: their configuration, creating or updating them,
//! and recovering what an earlier pipeline left unacknowledged.
//!
//! It exists because exactly-once rests on the consumer's shape (`AckAll`,
//! `max_ack_pending` sized to what the pipeline holds in flight) and on a new
//! pipeline never acknowledging deliveries it has not seen.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use serviceradar_domain::telemetry::TelemetryKind;

use crate::error::{IngestError, wrap};
use crate::settings::{IngestSettings, max_in_flight};

/// Name of each tenant's ingest stream on the hub.
pub const STREAM: &str = "INGEST";
/// Name of the durable pull consumer the pipeline reads with.
pub const CONSUMER: &str = "serviceradar-ingest";

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
) -> Result<consumer::PullConsumer, IngestError> {
    let (_, consumer) = open_stream_and_consumer(client, tenant_slug, settings).await?;
    Ok(consumer)
}

pub(crate) async fn open_stream_and_consumer(
    client: &async_nats::Client,
    tenant_slug: &str,
    settings: &IngestSettings,
) -> Result<(stream::Stream, consumer::PullConsumer), IngestError> {
    let stream = ensure_stream(client, tenant_slug, settings).await?;
    let consumer = ensure_consumer(&stream, settings).await?;
    Ok((stream, consumer))
}

/// Makes sure the tenant's ingest stream exists (with the replicas
/// `settings` asks for) on the hub `client` is connected to (as a user of
/// the tenant's account).
pub(crate) async fn ensure_stream(
    client: &async_nats::Client,
    tenant_slug: &str,
    settings: &IngestSettings,
) -> Result<stream::Stream, IngestError> {
    let js = jetstream::new(client.clone());
    let stream = match js.get_stream(STREAM).await {
        Ok(stream) => stream,
        Err(_) => js
            .create_stream(stream::Config {
                num_replicas: settings.stream_replicas.max(1),
                ..stream_config(tenant_slug, settings.retention)
            })
            .await
            .map_err(wrap(IngestError::Consumer, "creating the ingest stream"))?,
    };
    // A stream created on one hub server gains replicas when the hub became
    // a cluster (nats-server copies it to the new peers).
    let mut stream = stream;
    let have = stream.cached_info().config.clone();
    if have.num_replicas < settings.stream_replicas {
        tracing::info!(
            from = have.num_replicas,
            to = settings.stream_replicas,
            "replicating the ingest stream"
        );
        stream = js
            .update_stream(stream::Config {
                num_replicas: settings.stream_replicas,
                ..have
            })
            .await
            .map(|_| stream)
            .map_err(wrap(IngestError::Consumer, "replicating the ingest stream"))?;
    }
    Ok(stream)
}

/// Makes sure the pipeline's durable pull consumer exists on `stream`; an
/// existing one whose acknowledgement settings differ from `settings`
/// (batch size, writers, ack wait) is updated.
pub(crate) async fn ensure_consumer(
    stream: &stream::Stream,
    settings: &IngestSettings,
) -> Result<consumer::PullConsumer, IngestError> {
    let wanted = consumer_config(settings);
    let consumer: consumer::PullConsumer = stream
        .get_or_create_consumer(CONSUMER, wanted.clone())
        .await
        .map_err(wrap(IngestError::Consumer, "creating the ingest consumer"))?;
    let have = &consumer.cached_info().config;
    if have.max_ack_pending != wanted.max_ack_pending || have.ack_wait != wanted.ack_wait {
        // The delivery policy cannot change (a recovered consumer has a start sequence).
        let updated = consumer::pull::Config {
            deliver_policy: have.deliver_policy,
            ..wanted
        };
        return stream
            .update_consumer(updated)
            .await
            .map_err(wrap(IngestError::Consumer, "updating the ingest consumer"));
    }
    Ok(consumer)
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
pub(crate) async fn recover_unacknowledged(
    stream: &stream::Stream,
    mut consumer: consumer::PullConsumer,
    settings: &IngestSettings,
) -> Result<(consumer::PullConsumer, u64), IngestError> {
    let info = consumer
        .info()
        .await
        .map_err(wrap(
            IngestError::Consumer,
            "reading the ingest consumer's state",
        ))?
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
        .map_err(wrap(IngestError::Consumer, "resetting the ingest consumer"))?;
    let config = consumer::pull::Config {
        deliver_policy: consumer::DeliverPolicy::ByStartSequence {
            start_sequence: ack_floor + 1,
        },
        ..consumer_config(settings)
    };
    let consumer: consumer::PullConsumer = stream.create_consumer(config).await.map_err(wrap(
        IngestError::Consumer,
        "recreating the ingest consumer",
    ))?;
    let delivered = consumer.cached_info().delivered.consumer_sequence;
    Ok((consumer, delivered))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_messages_fit_in_max_ack_pending() {
        let mut settings = IngestSettings::new("nats://127.0.0.1:4222");
        settings.batch_size = 1000;
        settings.writers = 3;
        // Three writers' batches, one queued, one being fetched.
        assert_eq!(max_in_flight(&settings), 5000);
        assert_eq!(consumer_config(&settings).max_ack_pending, 5000);
        settings.writers = 0;
        assert_eq!(max_in_flight(&settings), 3000, "at least one writer");
    }
}
