//! Dead letters: a message that does not decode, or that the database
//! refused, is published to
//! `deadletter.{tenant}` with why (`SR-Reason`), where it came from
//! (`SR-Subject`) and its stream sequence (`SR-Stream-Seq`).
//!
//! It exists so that poison is kept for inspection and the batch around it
//! is still written and acknowledged, instead of the pipeline stopping on it.

use serviceradar_domain::resources::Tenant;

use crate::error::{IngestError, wrap};
use crate::fetch::Fetched;

/// The dead-letter subject of a tenant.
pub fn deadletter_subject(tenant_slug: &str) -> String {
    format!("deadletter.{tenant_slug}")
}

/// Publishes a message that did not decode (or the database refused) to
/// `deadletter.{tenant}`, with the
/// reason, subject and stream sequence in headers.
pub(crate) async fn dead_letter(
    client: &async_nats::Client,
    tenant: &Tenant,
    fetched: &Fetched,
    reason: &(dyn std::fmt::Display + Sync),
) -> Result<(), IngestError> {
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
        .map_err(wrap(
            IngestError::DeadLetter,
            "publishing to the dead-letter subject",
        ))
}
