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
//!   `deadletter.{tenant}`, stored in the tenant's `DEAD_LETTERS` stream,
//!   with the reason in the `SR-Reason` header (and its subject and stream
//!   sequence; [`DeadLetters`] reads them back for the API); writing the good records in one
//!   transaction, idempotent on the stream sequence. When the database
//!   refuses a record's data, the batch is split until the refused records
//!   are alone; they are dead-lettered with the database's reason and the
//!   rest is written (one record never stops a tenant). Their commits overlap;
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
//! the delivery sequence ends the pipeline for the same reason. A pipeline
//! that ends (stop, renewal of its NATS user) lets its fetch finish instead of
//! abandoning it on the hub, where it could take the next delivery. The tenant of
//! every row is the tenant whose account the consumer is connected to; the
//! subject's tenant token must agree, and nothing in a payload can change it.
//!
//! A supervisor pushes every tenant's account JWT to the hub (as a user of
//! the system account, `$SYS.REQ.CLAIMS.UPDATE`: a new tenant needs no hub
//! restart), starts one pipeline per tenant and looks for new tenants every
//! [`TENANT_REFRESH`]; a pipeline that fails reconnects with backoff (the
//! delay starts over once it worked again). Each pipeline's state, lag and
//! last error are kept in an [`IngestStatus`], which the API, the metrics
//! and readiness read.
//!
//! That is the default, per-tenant mode. In platform mode
//! ([`IngestMode::Platform`], `platform`) one platform account's stream
//! sources every tenant's `INGEST` stream, and one pipeline over one hub
//! connection writes every tenant's rows, the tenant of each taken from the
//! stream source it arrived through; a few pooled tenant connections
//! (`pool`) do the per-tenant work that needs the tenant's account.
//!
//! Modules, one concern each: `settings` ([`IngestSettings`] and defaults),
//! `supervisor` (tenants, account pushes, retries), `pipeline` (one tenant's
//! tasks wired together), `hub` (connections, JetStream API requests),
//! `consumer` (the `INGEST` stream and its durable consumer, recovery),
//! `fetch` (the fetcher, the delivery-gap check), `write` (the writers),
//! `deadletter` (poison with its `SR-Reason`), `status` (each tenant's
//! pipeline: state, lag, last error, for the API, metrics and readiness),
//! `error` ([`IngestError`]), `ack` (the commit watermark and
//! the acknowledger) and `buffers` (the sites' `EDGE_BUFFER` streams and the
//! `INGEST` stream's sources).

mod ack;
mod buffers;
mod consumer;
mod deadletter;
mod devices;
mod error;
mod fetch;
mod hub;
mod pipeline;
mod platform;
mod pool;
mod settings;
mod status;
mod supervisor;
mod write;

pub use buffers::sync_site_buffers;
pub use consumer::{CONSUMER, STREAM, open_consumer, stream_config};
pub use deadletter::{
    DeadLetter, DeadLetterReadError, DeadLetters, STREAM as DEAD_LETTER_STREAM, deadletter_subject,
};
pub use devices::{DeviceChanges, registry_entry, sync_device_registry};
pub use error::{BoxError, IngestError};
pub use fetch::next_batch;
pub use settings::{
    DEFAULT_BATCH_SIZE, DEFAULT_DEAD_LETTER_RETENTION, DEFAULT_RETENTION,
    DEFAULT_TENANT_CONNECTIONS, DEFAULT_TENANT_IN_FLIGHT, DEFAULT_WRITERS, IngestMode,
    IngestSettings, TENANT_REFRESH,
};
pub use status::{IngestStatus, PipelineState, PipelineStatus};
pub use supervisor::spawn;
pub use write::BatchOutcome;
