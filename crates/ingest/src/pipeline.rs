//! One tenant's pipeline: connect, open and recover the consumer, then run
//! the fetcher, the writers, the site-buffer reconciliation and the
//! acknowledgements until stopped or failed.
//!
//! It exists to wire the tasks of the other modules together and to own the
//! two ways a pipeline ends: `stop` (drain what is in flight) or an error
//! (the supervisor retries; nothing past the contiguous commits was
//! acknowledged).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use serviceradar_domain::resources::Tenant;
use serviceradar_identity::Pki;
use serviceradar_store::Store;
use tokio::sync::watch;
use tracing::Instrument;

use crate::ack::{AckWatermark, acknowledge_batch};
use crate::buffers::sync_site_buffers;
use crate::consumer::{open_stream_and_consumer, recover_unacknowledged};
use crate::error::{IngestError, report};
use crate::fetch::{FetchedBatch, Progress, fetch_limit, fetch_loop};
use crate::hub::{HubConnection, connect};
use crate::settings::{IngestSettings, QUEUED_BATCHES};
use crate::status::IngestStatus;
use crate::write::{WrittenBatch, write_loop};

/// How long a stopping pipeline waits for its batches in flight (after its
/// last fetch finished).
const DRAIN: Duration = Duration::from_secs(5);

/// How long after a leaf's admission its buffer is first looked at.
pub(crate) const JOIN_SETTLE: Duration = Duration::from_millis(200);

/// The waits between the further looks after a leaf joined (then back to
/// the periodic `site_sync_interval`).
pub(crate) const JOIN_SYNCS: [Duration; 4] = [
    Duration::from_millis(300),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// Resolves when a leaf of `tenant` was admitted (also when some admissions
/// were missed, to be safe), or never when nobody announces.
async fn next_admission(
    admissions: &mut Option<
        tokio::sync::broadcast::Receiver<serviceradar_hub::leaf_auth::LeafAdmitted>,
    >,
    tenant: &Tenant,
) {
    let Some(receiver) = admissions.as_mut() else {
        return std::future::pending().await;
    };
    loop {
        match receiver.recv().await {
            Ok(admitted) if admitted.tenant_id == tenant.id => return,
            Ok(_) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                *admissions = None;
                return std::future::pending().await;
            }
        }
    }
}

/// The fetcher and a writer, as their errors name them.
const FETCHER: &str = "the ingest fetcher";
const WRITER: &str = "an ingest writer";

/// How a pipeline ended without failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// `stop` flipped.
    Stopped,
    /// Its NATS user is due for renewal: start a new pipeline now (a new
    /// user, a new connection), no backoff.
    Renew,
}

/// Connects, ensures the stream and consumer, recovers what an earlier
/// pipeline left unacknowledged, then runs the fetcher, the writers and the
/// acknowledgements until `stop` flips or its NATS user is due for renewal
/// (`Ok`, after the batches in flight are written and acknowledged) or
/// something fails (`Err`, the caller retries; nothing past the last
/// contiguous commit was acknowledged).
pub(crate) async fn pipeline(
    store: &Store,
    pki: &Pki,
    settings: &IngestSettings,
    tenant: &Tenant,
    status: &IngestStatus,
    stop: &mut watch::Receiver<bool>,
) -> Result<Ended, IngestError> {
    let HubConnection { client, renew_at } = connect(store, pki, settings, tenant).await?;
    let (stream, consumer) =
        open_stream_and_consumer(&client, tenant.slug.as_str(), settings).await?;
    let (consumer, delivered) = recover_unacknowledged(&stream, consumer, settings).await?;
    // Created with the tenant's first dead letter (each reserves hub storage).
    let dead_letters = crate::deadletter::DeadLetterStream::new(
        settings.dead_letter_retention,
        settings.stream_replicas,
    );
    settings.dead_letters.register(tenant.id, client.clone());
    tracing::info!(
        hub = %settings.hub.url,
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
        let mut admissions = settings.leaf_admissions.as_ref().map(|a| a.subscribe());
        aux.spawn(
            async move {
                let mut restarted = HashMap::new();
                // Syncs still due soon because a leaf of this tenant joined.
                let mut soon: std::collections::VecDeque<Duration> = Default::default();
                loop {
                    if let Err(e) =
                        sync_site_buffers(&store, &client, &tenant, &mut restarted).await
                    {
                        tracing::warn!(error = report(&e), "syncing site buffers failed");
                    }
                    let wait = soon.pop_front().unwrap_or(interval);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        () = next_admission(&mut admissions, &tenant) => {
                            // The leaf's connection completes just after its
                            // admission: look at once, then again a few
                            // times while it settles.
                            soon = JOIN_SYNCS.iter().copied().collect();
                            tokio::time::sleep(JOIN_SETTLE).await;
                        }
                    }
                }
            }
            .instrument(span.clone()),
        );
    }

    // Keep the device registry's copy on the hub in sync, at once when a
    // device of this tenant changes here, else with the sites.
    {
        let (store, client, tenant) = (store.clone(), client.clone(), tenant.clone());
        let interval = settings.site_sync_interval;
        let replicas = settings.stream_replicas;
        let mut changes = settings.device_changes.subscribe();
        aux.spawn(
            async move {
                loop {
                    if let Err(e) =
                        crate::devices::sync_device_registry(&store, &client, &tenant, replicas)
                            .await
                    {
                        tracing::warn!(error = report(&e), "syncing the device registry failed");
                    }
                    let next = tokio::time::sleep(interval);
                    tokio::pin!(next);
                    loop {
                        tokio::select! {
                            _ = &mut next => break,
                            changed = changes.recv() => match changed {
                                Ok(t) if t != tenant.id => {}
                                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                                    (&mut next).await;
                                    break;
                                }
                                _ => break,
                            }
                        }
                    }
                }
            }
            .instrument(span.clone()),
        );
    }

    let writer = crate::write::TenantWriter {
        store: store.clone(),
        client: client.clone(),
        tenant: tenant.clone(),
        status: status.clone(),
        devices: crate::devices::DeviceSites::default(),
        dead_letters,
    };
    let (progress_status, tenant_id) = (status.clone(), tenant.id);
    let slug = tenant.slug.as_str();
    run_batches(
        settings,
        (consumer, delivered),
        move |progress| match progress {
            Progress::Idle => progress_status.idle(tenant_id),
            Progress::Lag(lag) => progress_status.lag(tenant_id, lag),
        },
        |batches, done| write_loop(writer.clone(), batches, done),
        |written: WrittenBatch| {
            let outcome = written.outcome;
            status.counted(
                tenant_id,
                slug,
                outcome.fetched as u64,
                outcome.inserted,
                outcome.dead_lettered as u64,
            );
            (written.number, written.last)
        },
        Ending {
            stop,
            renew_at,
            aux,
        },
    )
    .await
}

/// The queue of fetched batches the writers take from.
pub(crate) type Batches = Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<FetchedBatch>>>;

/// How a running pipeline ends: `stop` flips or its NATS user is due for
/// renewal at `renew_at`; `aux` holds its background tasks, stopped with
/// the fetcher.
pub(crate) struct Ending<'a> {
    pub(crate) stop: &'a mut watch::Receiver<bool>,
    pub(crate) renew_at: tokio::time::Instant,
    pub(crate) aux: tokio::task::JoinSet<()>,
}

/// The part both pipelines (per tenant and platform) share once their
/// consumer is open and recovered: the fetcher, `settings.writers` writers
/// (each the future `writer` makes from the batch queue and the channel its
/// written batches go to) and the acknowledgements up to the contiguous
/// commit watermark (`settle` counts a written batch and names its number
/// and last message), until the pipeline ends (`Ok`, after the fetch in
/// progress finished and the batches in flight are written and
/// acknowledged, for at most [`fetch_limit`] + [`DRAIN`]) or a task fails
/// (`Err`, nothing past the last contiguous commit acknowledged).
pub(crate) async fn run_batches<D, W>(
    settings: &IngestSettings,
    (consumer, delivered): (PullConsumer, u64),
    progress: impl Fn(Progress) + Send + 'static,
    mut writer: impl FnMut(Batches, tokio::sync::mpsc::UnboundedSender<D>) -> W,
    mut settle: impl FnMut(D) -> (u64, jetstream::Message),
    ending: Ending<'_>,
) -> Result<Ended, IngestError>
where
    D: Send + 'static,
    W: Future<Output = Result<(), IngestError>> + Send + 'static,
{
    let Ending {
        stop,
        renew_at,
        mut aux,
    } = ending;
    let span = tracing::Span::current();
    let (batch_tx, batch_rx) = tokio::sync::mpsc::channel::<FetchedBatch>(QUEUED_BATCHES);
    let batch_rx: Batches = Arc::new(tokio::sync::Mutex::new(batch_rx));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<D>();
    let (finish, finishing) = watch::channel(false);
    let mut fetcher = tokio::task::JoinSet::new();
    fetcher.spawn(
        fetch_loop(
            consumer,
            settings.clone(),
            batch_tx,
            delivered,
            finishing,
            progress,
        )
        .instrument(span.clone()),
    );
    let mut writer_tasks = tokio::task::JoinSet::new();
    for n in 0..settings.writers.max(1) {
        writer_tasks.spawn(
            writer(batch_rx.clone(), done_tx.clone())
                .instrument(tracing::debug_span!(parent: &span, "writer", writer = n)),
        );
    }
    drop(done_tx);

    let mut watermark = AckWatermark::default();
    let ended = loop {
        tokio::select! {
            written = done_rx.recv() => match written {
                Some(written) => {
                    let (number, last) = settle(written);
                    acknowledge_batch(&mut watermark, number, last).await?;
                }
                None => return Err(IngestError::TaskStopped("every ingest writer")),
            },
            Some(joined) = fetcher.join_next() => {
                joined.map_err(|e| IngestError::TaskPanicked(FETCHER, e))??;
                return Err(IngestError::TaskStopped(FETCHER));
            }
            Some(joined) = writer_tasks.join_next() => {
                joined.map_err(|e| IngestError::TaskPanicked(WRITER, e))??;
                return Err(IngestError::TaskStopped(WRITER));
            }
            _ = stop.changed() => break Ended::Stopped,
            _ = tokio::time::sleep_until(renew_at) => break Ended::Renew,
        }
    };

    // Stop: the fetcher finishes the fetch it is in (never abandoned: see
    // `fetch_loop`) and fetches no more; write and acknowledge what is in
    // flight. The writers end when the fetcher has and the queue is empty.
    let _ = finish.send(true);
    aux.shutdown().await;
    let drained = tokio::time::timeout(fetch_limit(settings) + DRAIN, async {
        while let Some(written) = done_rx.recv().await {
            let (number, last) = settle(written);
            acknowledge_batch(&mut watermark, number, last).await?;
        }
        while let Some(joined) = writer_tasks.join_next().await {
            joined.map_err(|e| IngestError::TaskPanicked(WRITER, e))??;
        }
        Ok::<(), IngestError>(())
    })
    .await;
    let finished = match drained {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                waiting = watermark.waiting(),
                "stopping with batches in flight; they are redelivered on restart"
            );
            Ok(())
        }
    };
    fetcher.abort_all();
    // A fetch that failed while finishing (a gap, no reply) fails this
    // pipeline: the next one then starts from the ack floor.
    while let Some(joined) = fetcher.join_next().await {
        match joined {
            Ok(result) => result?,
            Err(e) if e.is_panic() => return Err(IngestError::TaskPanicked(FETCHER, e)),
            Err(_) => {} // aborted: the drain gave up above
        }
    }
    finished.map(|()| ended)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::{open_stream_and_consumer, recover_unacknowledged};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A plain JetStream hub on a free loopback port (no accounts: what is
    /// tested here is the consumer, not the hub's authorization).
    fn jetstream_hub(dir: &std::path::Path) -> (serviceradar_testkit::NatsServer, u16) {
        let port = serviceradar_testkit::free_port();
        let config = format!(
            "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\n",
            dir.join("js").display()
        );
        let server = serviceradar_testkit::NatsServer::start(dir, "hub", &config, port)
            .expect("nats-server with JetStream");
        (server, port)
    }

    /// A TCP proxy to `upstream` that holds what its clients send while
    /// `held` is true (what the upstream sends passes): a client whose
    /// writes are slow to reach the hub, as a loaded machine's are.
    async fn holding_proxy(upstream: u16, held: watch::Receiver<bool>) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let outbound = tokio::net::TcpStream::connect(("127.0.0.1", upstream))
                    .await
                    .unwrap();
                let (mut from_client, mut to_client) = inbound.into_split();
                let (mut from_hub, mut to_hub) = outbound.into_split();
                let mut held = held.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0; 64 * 1024];
                    while let Ok(n @ 1..) = from_client.read(&mut buf).await {
                        let _ = held.wait_for(|held| !*held).await;
                        if to_hub.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_hub, &mut to_client).await;
                });
            }
        });
        port
    }

    /// Session 31's CI failure: a pipeline renewing its NATS user abandoned
    /// the fetch it was in. Its client then tells the hub it no longer reads
    /// the replies, but under load that takes a while to arrive, and the
    /// hub handed the abandoned fetch the next message. Nobody read it, so
    /// the next pipeline saw its first delivery skip a sequence and failed
    /// with "deliveries went missing". A pipeline that ends must leave no
    /// fetch on the hub, however slow its client's writes: a message
    /// published just after it ended stays undelivered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_ended_pipeline_leaves_no_fetch_on_the_hub_to_take_the_next_delivery() {
        let tmp = tempfile::tempdir().unwrap();
        let (_hub, hub_port) = jetstream_hub(tmp.path());
        let (hold, held) = watch::channel(false);
        let proxy = holding_proxy(hub_port, held).await;
        let url = format!("nats://127.0.0.1:{proxy}");
        let client = async_nats::connect(&url).await.unwrap();
        let observer = async_nats::connect(format!("nats://127.0.0.1:{hub_port}"))
            .await
            .unwrap();
        let mut settings = IngestSettings::new(&url);
        settings.batch_timeout = Duration::from_secs(1);
        let (stream, consumer) = open_stream_and_consumer(&client, "acme", &settings)
            .await
            .unwrap();
        let (consumer, delivered) = recover_unacknowledged(&stream, consumer, &settings)
            .await
            .unwrap();
        let (_stop_tx, mut stop) = watch::channel(false);
        // The pipeline's first fetch (of the empty stream) reaches the hub;
        // then its writes are held, and renewal comes during that fetch.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = hold.send(true);
            tokio::time::sleep(Duration::from_secs(3)).await;
            let _ = hold.send(false);
        });
        let ended = run_batches(
            &settings,
            (consumer, delivered),
            |_| {},
            |batches: Batches, done: tokio::sync::mpsc::UnboundedSender<FetchedBatch>| async move {
                while let Some(batch) = batches.lock().await.recv().await {
                    let _ = done.send(batch);
                }
                Ok(())
            },
            |batch: FetchedBatch| {
                let last = batch.messages.last().expect("a batch is never empty");
                (batch.number, last.message.clone())
            },
            Ending {
                stop: &mut stop,
                renew_at: tokio::time::Instant::now() + Duration::from_millis(400),
                aux: tokio::task::JoinSet::new(),
            },
        )
        .await
        .unwrap();
        assert!(matches!(ended, Ended::Renew));

        // The pipeline's client is still connected, as it stays until the
        // next pipeline replaces it.
        let js = jetstream::new(observer);
        js.publish("events.acme.plant", "after the renewal".into())
            .await
            .unwrap()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stream = js.get_stream(crate::STREAM).await.unwrap();
        let mut consumer: PullConsumer = stream.get_consumer(crate::CONSUMER).await.unwrap();
        let info = consumer.info().await.unwrap();
        assert_eq!(
            (info.delivered.consumer_sequence, info.num_ack_pending),
            (delivered, 0),
            "the message went to a fetch nobody reads"
        );
        drop(client);
    }
}
