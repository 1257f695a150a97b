//! Platform ingestion: one account on the hub whose single stream sources
//! every tenant's `INGEST` stream, so `serviceradar-core` reads all tenants'
//! telemetry through one connection and one consumer.
//!
//! Why it exists: with one connection per tenant, 1,000 tenants cost 1,000
//! hub connections and pull requests. Here each tenant account *exports* the
//! three subjects a durable cross-account source needs (its own source
//! consumer's reset API, that consumer's delivery subject, its flow-control
//! replies), the platform account *imports* them under a per-tenant API
//! prefix, and the platform stream's source for that tenant carries a subject
//! transform that puts the tenant id in front of every subject
//! (`t.{tenant_id}.events.acme...`). The tenant of a row therefore comes
//! from which source the message arrived through, which only the platform
//! configures, never from anything a publisher sends. nats-server keeps
//! enforcing the isolation: a tenant's users see nothing of the platform
//! account or of other tenants, and the exported subjects name only the
//! tenant's own consumer.
//!
//! Every name here is per tenant (slug), so no import in the platform account
//! overlaps another tenant's: a flow-control reply reaches exactly its tenant.

use serde_json::json;

use crate::jwt::{Export, ExportKind, Import};
use crate::syntax::{ConfigError, validate_slug};

/// Name of the platform stream (in the platform ingest account).
pub const PLATFORM_STREAM: &str = "PLATFORM_INGEST";
/// Name of the platform account (its JWT's `name`).
pub const PLATFORM_ACCOUNT_NAME: &str = "PLATFORM_INGEST";
/// The first token of every platform stream subject; the second is the
/// tenant id the source's transform put there.
pub const PLATFORM_SUBJECT_PREFIX: &str = "t";
/// Name of each tenant's stream the platform sources (the tenant's `INGEST`).
pub const TENANT_STREAM: &str = "INGEST";

/// The platform stream's metadata key naming the settings its tenants'
/// `INGEST` streams and source consumers were set up with (see
/// [`platform_stream_config`]).
pub const TENANT_SETUP_METADATA: &str = "serviceradar.tenant-setup";

/// The durable consumer on the tenant's `INGEST` stream that feeds the
/// platform stream: `sr-platform-{tenant}`.
pub fn source_consumer(tenant_slug: &str) -> Result<String, ConfigError> {
    validate_slug("tenant slug", tenant_slug)?;
    Ok(format!("sr-platform-{tenant_slug}"))
}

/// Where that consumer delivers (in the tenant account, exported to the
/// platform account under the same name).
pub fn deliver_subject(tenant_slug: &str) -> Result<String, ConfigError> {
    validate_slug("tenant slug", tenant_slug)?;
    Ok(format!("sr-platform.{tenant_slug}.deliver"))
}

/// The JetStream API prefix under which the platform account reaches the
/// tenant's (imported) API subjects.
pub fn api_prefix(tenant_slug: &str) -> Result<String, ConfigError> {
    validate_slug("tenant slug", tenant_slug)?;
    Ok(format!("$JS.sr-platform-{tenant_slug}.API"))
}

fn reset_subject(tenant_slug: &str) -> Result<String, ConfigError> {
    Ok(format!(
        "$JS.API.CONSUMER.RESET.{TENANT_STREAM}.{}",
        source_consumer(tenant_slug)?
    ))
}

fn flow_control_subject(tenant_slug: &str) -> Result<String, ConfigError> {
    Ok(format!(
        "$JS.FC.{TENANT_STREAM}.{}.>",
        source_consumer(tenant_slug)?
    ))
}

/// What a tenant account exports for the platform stream to source its
/// `INGEST` stream: the reset API of its own source consumer (nothing else
/// of its JetStream API), that consumer's deliveries, and their
/// flow-control replies.
pub fn tenant_exports(tenant_slug: &str) -> Result<Vec<Export>, ConfigError> {
    Ok(vec![
        Export {
            name: "platform ingest: source consumer reset".into(),
            subject: reset_subject(tenant_slug)?,
            kind: ExportKind::Service,
        },
        Export {
            name: "platform ingest: deliveries".into(),
            subject: format!("{}.>", deliver_prefix(tenant_slug)?),
            kind: ExportKind::Stream,
        },
        Export {
            name: "platform ingest: flow control".into(),
            subject: flow_control_subject(tenant_slug)?,
            kind: ExportKind::Service,
        },
    ])
}

fn deliver_prefix(tenant_slug: &str) -> Result<String, ConfigError> {
    validate_slug("tenant slug", tenant_slug)?;
    Ok(format!("sr-platform.{tenant_slug}"))
}

/// What the platform account imports from the tenant account
/// `tenant_account` (public key): the counterparts of [`tenant_exports`],
/// the API under [`api_prefix`].
pub fn platform_imports(
    tenant_slug: &str,
    tenant_account: &str,
) -> Result<Vec<Import>, ConfigError> {
    let reset = reset_subject(tenant_slug)?;
    let local_reset = reset.replacen("$JS.API", &api_prefix(tenant_slug)?, 1);
    Ok(vec![
        Import {
            name: format!("{tenant_slug}: source consumer reset"),
            account: tenant_account.to_owned(),
            subject: reset,
            local_subject: Some(local_reset),
            kind: ExportKind::Service,
        },
        Import {
            name: format!("{tenant_slug}: deliveries"),
            account: tenant_account.to_owned(),
            subject: format!("{}.>", deliver_prefix(tenant_slug)?),
            local_subject: None,
            kind: ExportKind::Stream,
        },
        Import {
            name: format!("{tenant_slug}: flow control"),
            account: tenant_account.to_owned(),
            subject: flow_control_subject(tenant_slug)?,
            local_subject: None,
            kind: ExportKind::Service,
        },
    ])
}

/// The consumer-create request body (`$JS.API.CONSUMER.CREATE.INGEST.{name}`,
/// sent in the tenant's account) of the tenant's source consumer: push to
/// [`deliver_subject`], acknowledged by flow control (durable sourcing:
/// the consumer remembers what the platform stream stored, across
/// restarts), at most `in_flight` messages unacknowledged: the tenant's
/// share of the sourcing, so one tenant's backlog cannot flood it.
pub fn source_consumer_request(
    tenant_slug: &str,
    in_flight: usize,
) -> Result<serde_json::Value, ConfigError> {
    let name = source_consumer(tenant_slug)?;
    Ok(json!({
        "stream_name": TENANT_STREAM,
        "config": {
            "name": name,
            "durable_name": name,
            "deliver_subject": deliver_subject(tenant_slug)?,
            "deliver_policy": "all",
            "ack_policy": "flow_control",
            "flow_control": true,
            "idle_heartbeat": 1_000_000_000u64,
            "max_ack_pending": in_flight.max(1),
        }
    }))
}

/// The platform stream's source for one tenant: its `INGEST` stream through
/// the imported API, read by its durable source consumer, every subject
/// prefixed with `t.{tenant_id}` (the tenant is set here, by the platform).
pub fn platform_source(
    tenant_slug: &str,
    tenant_id: &str,
) -> Result<serde_json::Value, ConfigError> {
    validate_tenant_token(tenant_id)?;
    Ok(json!({
        "name": TENANT_STREAM,
        "external": { "api": api_prefix(tenant_slug)? },
        "consumer": {
            "name": source_consumer(tenant_slug)?,
            "deliver_subject": deliver_subject(tenant_slug)?,
        },
        "subject_transforms": [
            { "src": ">", "dest": format!("{PLATFORM_SUBJECT_PREFIX}.{tenant_id}.>") }
        ],
    }))
}

/// A tenant id as it appears in a platform subject: lowercase hex digits and
/// hyphens only (a UUID).
fn validate_tenant_token(tenant_id: &str) -> Result<(), ConfigError> {
    if tenant_id.is_empty()
        || !tenant_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-')
    {
        return Err(ConfigError::invalid(
            "tenant id",
            tenant_id,
            "must be a lowercase UUID",
        ));
    }
    Ok(())
}

/// The tenant id and the original subject of a platform stream subject
/// (`t.{tenant_id}.{subject}`), or `None` if it is not one.
pub fn split_platform_subject(subject: &str) -> Option<(&str, &str)> {
    let rest = subject
        .strip_prefix(PLATFORM_SUBJECT_PREFIX)?
        .strip_prefix('.')?;
    let (tenant, original) = rest.split_once('.')?;
    (!tenant.is_empty() && !original.is_empty()).then_some((tenant, original))
}

/// The sequence in the tenant's `INGEST` stream of a sourced message, from
/// its `Nats-Stream-Source` header (`{stream}[:hashes] {seq} {filter}
/// {transform} {subject} ...`).
pub fn origin_sequence(stream_source_header: &str) -> Option<u64> {
    stream_source_header.split(' ').nth(1)?.parse().ok()
}

/// The platform stream's configuration (JSON, the body of
/// `$JS.API.STREAM.CREATE|UPDATE.PLATFORM_INGEST`): no subjects of its own
/// (nobody publishes into it: it only sources), file storage, `sources`.
/// `tenant_setup` (kept in the stream's metadata under
/// [`TENANT_SETUP_METADATA`]) names the settings the sourced tenants were set
/// up with, so a restarted process can tell whether they need it again.
pub fn platform_stream_config(
    sources: Vec<serde_json::Value>,
    max_age: std::time::Duration,
    replicas: usize,
    tenant_setup: &str,
) -> serde_json::Value {
    json!({
        "name": PLATFORM_STREAM,
        "subjects": [],
        "sources": sources,
        "retention": "limits",
        "storage": "file",
        "discard": "old",
        "max_age": i64::try_from(max_age.as_nanos()).unwrap_or(i64::MAX),
        "num_replicas": replicas.max(1),
        "metadata": { TENANT_SETUP_METADATA: tenant_setup },
    })
}

/// Whether `source` (one of the platform stream's configured sources, as
/// the hub reports them) is the one [`platform_source`] renders for this
/// tenant: its `INGEST` stream through the tenant's API prefix, its
/// subjects put under this tenant id.
pub fn is_platform_source_of(
    source: &serde_json::Value,
    tenant_slug: &str,
    tenant_id: &str,
) -> bool {
    let (Ok(api), Ok(consumer)) = (api_prefix(tenant_slug), source_consumer(tenant_slug)) else {
        return false;
    };
    let dest = format!("{PLATFORM_SUBJECT_PREFIX}.{tenant_id}.>");
    let transforms = source["subject_transforms"].as_array();
    source["name"] == TENANT_STREAM
        && source["external"]["api"] == api.as_str()
        && source["consumer"]["name"] == consumer.as_str()
        && transforms
            .is_some_and(|t| t.len() == 1 && t[0]["src"] == ">" && t[0]["dest"] == dest.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_per_tenant_and_slugs_are_checked() {
        assert_eq!(source_consumer("acme").unwrap(), "sr-platform-acme");
        assert_eq!(deliver_subject("acme").unwrap(), "sr-platform.acme.deliver");
        assert_eq!(api_prefix("acme").unwrap(), "$JS.sr-platform-acme.API");
        assert!(source_consumer("a.b").is_err());
        assert!(deliver_subject("a >").is_err());
        let exports = tenant_exports("acme").unwrap();
        let subjects: Vec<&str> = exports.iter().map(|e| e.subject.as_str()).collect();
        assert_eq!(
            subjects,
            [
                "$JS.API.CONSUMER.RESET.INGEST.sr-platform-acme",
                "sr-platform.acme.>",
                "$JS.FC.INGEST.sr-platform-acme.>",
            ]
        );
        let imports = platform_imports("acme", "AKEY").unwrap();
        assert_eq!(
            imports[0].local_subject.as_deref(),
            Some("$JS.sr-platform-acme.API.CONSUMER.RESET.INGEST.sr-platform-acme")
        );
        assert!(imports.iter().all(|i| i.account == "AKEY"));
    }

    #[test]
    fn the_source_puts_the_tenant_in_front_and_it_is_read_back() {
        let id = "0190a0b1-0000-7000-8000-00000000abcd";
        let source = platform_source("acme", id).unwrap();
        assert_eq!(source["subject_transforms"][0]["dest"], format!("t.{id}.>"));
        assert!(platform_source("acme", "t.x").is_err());
        assert!(platform_source("acme", "*").is_err());
        assert!(is_platform_source_of(&source, "acme", id));
        let other = "0190a0b1-0000-7000-8000-00000000ffff";
        assert!(!is_platform_source_of(&source, "acme", other));
        assert!(!is_platform_source_of(&source, "globex", id));
        let mut wider = source.clone();
        wider["subject_transforms"][0]["src"] = "events.>".into();
        assert!(!is_platform_source_of(&wider, "acme", id));
        let subject = format!("t.{id}.events.acme.nyc");
        assert_eq!(
            split_platform_subject(&subject),
            Some((id, "events.acme.nyc"))
        );
        assert_eq!(split_platform_subject("events.acme.nyc"), None);
        assert_eq!(split_platform_subject("t.x"), None);
        assert_eq!(
            origin_sequence("INGEST:b53YB7RC:C=W94u3dA9 17 > t.x.> events.t1.x ydqEGjC5"),
            Some(17)
        );
        assert_eq!(origin_sequence("INGEST"), None);
    }
}
