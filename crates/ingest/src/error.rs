//! What can go wrong while ingesting ([`IngestError`]), and the text it is
//! logged with.
//!
//! It exists so that callers (the supervisor's retry loop, the binaries that
//! call [`open_consumer`](crate::open_consumer) or
//! [`next_batch`](crate::next_batch)) get one typed error naming what failed,
//! with the cause kept as its [`source`](Error::source) rather than flattened
//! into text.

use std::error::Error;
use std::time::Duration;

use serviceradar_natsconf::ConfigError;
use serviceradar_store::StoreError;

/// A cause of any type: NATS client errors, and the errors of the identity
/// service and the hub client (which this crate does not name, so that it
/// works whether they are `anyhow` errors or typed ones).
pub type BoxError = Box<dyn Error + Send + Sync>;

/// Why ingesting failed: a pipeline (the supervisor logs it and reconnects),
/// an account push, a site-buffer reconciliation, or one of the public calls.
///
/// `Display` says what failed; the cause is the [`source`](Error::source).
/// The pipeline logs the whole chain (`what failed: cause: its cause`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// Minting credentials (identity service) or connecting to the hub (hub
    /// client) failed; `.0` says which, for whom.
    #[error("{0}")]
    Upstream(&'static str, #[source] BoxError),
    /// Reading a tenant's account JWT or pushing it to the hub failed.
    #[error("tenant {tenant}'s account: {step}")]
    Account {
        /// The tenant's slug.
        tenant: String,
        /// What was done with the account (`reading its JWT`, `pushing it to the hub`).
        step: &'static str,
        /// Why it failed.
        #[source]
        source: BoxError,
    },
    /// Creating, updating, reading or resetting the `INGEST` stream or its
    /// durable consumer failed; `.0` says which.
    #[error("{0}")]
    Consumer(&'static str, #[source] BoxError),
    /// Fetching a batch from the consumer failed.
    #[error("fetching a batch")]
    Fetch(#[source] BoxError),
    /// A fetch got no reply in time (its request was lost, e.g. in a hub
    /// restart).
    #[error("no reply to a fetch within {limit:?}")]
    FetchTimeout {
        /// The batch timeout plus the grace the fetcher allows.
        limit: Duration,
    },
    /// A fetched message carried no JetStream metadata.
    #[error("message without JetStream metadata")]
    Metadata(#[source] BoxError),
    /// A delivery skipped consumer sequences: messages were lost (with a
    /// connection), so nothing after them may be acknowledged.
    #[error("delivery {delivery} arrived after {after}: deliveries went missing")]
    DeliveryGap {
        /// The last consumer sequence received before the gap.
        after: u64,
        /// The consumer sequence that arrived instead of `after + 1`.
        delivery: u64,
    },
    /// The database failed; `.0` says at what.
    #[error("{0}")]
    Store(&'static str, #[source] StoreError),
    /// Publishing a dead letter or flushing the dead letters failed; `.0`
    /// says which.
    #[error("{0}")]
    DeadLetter(&'static str, #[source] BoxError),
    /// Syncing the device registry's bucket on the hub failed; `.0` says at
    /// what.
    #[error("{0}")]
    Registry(&'static str, #[source] BoxError),
    /// Acknowledging the committed batches failed.
    #[error("acknowledging up to a batch")]
    Ack(#[source] BoxError),
    /// A task of the pipeline (`.0`: the fetcher, a writer, every writer)
    /// stopped while the pipeline was running.
    #[error("{0} stopped")]
    TaskStopped(&'static str),
    /// A task of the pipeline (`.0`) panicked.
    #[error("{0} panicked")]
    TaskPanicked(&'static str, #[source] tokio::task::JoinError),
    /// A JetStream API request through the hub (to the hub's or a leaf's
    /// JetStream) failed.
    #[error("{subject}: {step}")]
    Request {
        /// The API subject.
        subject: String,
        /// What failed (`encoding the request`, `no reply`, `request failed`,
        /// `decoding the reply`).
        step: &'static str,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// A JetStream API request was answered with an error.
    #[error("{action}: {error}")]
    Refused {
        /// What was asked.
        action: &'static str,
        /// The error object of the reply (JSON).
        error: String,
    },
    /// A site's buffer stream or its source for `INGEST` could not be
    /// rendered.
    #[error("site {site}'s buffer stream")]
    BufferConfig {
        /// The site's slug.
        site: String,
        /// Why.
        #[source]
        source: ConfigError,
    },
    /// A site's rendered buffer source names no JetStream API prefix.
    #[error("site {site}'s buffer source without an API prefix")]
    BufferSourceWithoutApi {
        /// The site's slug.
        site: String,
    },
    /// The hub's `INGEST` stream info carried no config.
    #[error("INGEST stream info without config")]
    StreamInfoWithoutConfig,
}

/// A `map_err` adapter: `variant(context, error)`.
pub(crate) fn wrap<E: Into<BoxError>>(
    variant: fn(&'static str, BoxError) -> IngestError,
    context: &'static str,
) -> impl FnOnce(E) -> IngestError {
    move |e| variant(context, e.into())
}

/// A `map_err` adapter for the identity service and the hub client: their
/// error becomes [`IngestError::Upstream`], whatever its type (an
/// `anyhow::Error` or a typed error).
pub(crate) fn upstream<E: Into<BoxError>>(context: &'static str) -> impl FnOnce(E) -> IngestError {
    wrap(IngestError::Upstream, context)
}

/// The error and its causes, `: `-separated: the text a failure is logged
/// with.
pub(crate) fn report(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logged_text_names_what_failed_and_every_cause() {
        let io = std::io::Error::other("connection refused");
        let e = upstream("connecting to the hub as the tenant's ingest user")(io);
        assert_eq!(
            report(&e),
            "connecting to the hub as the tenant's ingest user: connection refused"
        );
        // Today's identity and hub errors are `anyhow` errors: their whole
        // context chain is kept, as `{:#}` printed it before.
        let upstream_error = anyhow::Error::new(std::io::Error::other("permission denied"))
            .context("creating /var/lib/creds");
        let e = upstream("connecting to the hub as a system account user")(upstream_error);
        assert_eq!(
            report(&e),
            "connecting to the hub as a system account user: creating /var/lib/creds: \
             permission denied"
        );
        let gap = IngestError::DeliveryGap {
            after: 7,
            delivery: 9,
        };
        assert_eq!(
            report(&gap),
            "delivery 9 arrived after 7: deliveries went missing"
        );
    }
}
