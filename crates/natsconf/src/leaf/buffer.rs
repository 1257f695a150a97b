//! The leaf's store-and-forward stream and how the hub sources it.
//!
//! Why: collectors at a site publish into a stream on the *leaf*, so nothing is lost
//! while the WAN is down; the hub sources that stream across the leafnode link
//! (through the leaf's JetStream domain) and catches up when the link returns. The
//! stream's subjects are namespaced per site (`edge.{tenant}.{site}.>`), distinct
//! from what hub streams capture directly (`events.{tenant}.>` and friends): a
//! subject captured by streams in both the leaf and hub domains of one account would
//! be stored twice.

use std::time::Duration;

use serde_json::json;

use crate::syntax::{ConfigError, JetStreamDomain, validate_slug};

/// Name of the buffer stream on every leaf. The same name on every site is fine:
/// each lives in its own JetStream domain.
pub const BUFFER_STREAM_NAME: &str = "EDGE_BUFFER";

/// Default retention of buffered data: 7 days (seed 000, open question 3).
pub const DEFAULT_BUFFER_RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// JetStream's default duplicate-detection window (2 minutes), capped by retention.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// What varies between the buffer streams of two sites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferStreamInput {
    /// The tenant's slug.
    pub tenant_slug: String,
    /// The site's slug.
    pub site_slug: String,
    /// How long messages are kept (`max_age`); at least one second.
    pub retention: Duration,
    /// Cap of the stream's size in bytes; `None` is bounded only by the leaf's
    /// `max_file_store`.
    pub max_bytes: Option<u64>,
    /// Copies of the stream: 1 on a single leaf server, 3 on a 3-node leaf
    /// cluster (each node holds one, so the buffer survives losing a node).
    pub replicas: u8,
}

impl BufferStreamInput {
    /// A buffer with the default retention and no size cap of its own.
    pub fn new(tenant_slug: &str, site_slug: &str) -> Self {
        Self {
            tenant_slug: tenant_slug.to_owned(),
            site_slug: site_slug.to_owned(),
            retention: DEFAULT_BUFFER_RETENTION,
            max_bytes: None,
            replicas: 1,
        }
    }

    /// The same with `replicas` copies.
    pub fn with_replicas(mut self, replicas: u8) -> Self {
        self.replicas = replicas;
        self
    }
}

/// The subject prefix collectors at this site publish under: `edge.{tenant}.{site}`
/// (the stream captures `edge.{tenant}.{site}.>`).
pub fn buffer_subject_prefix(tenant_slug: &str, site_slug: &str) -> Result<String, ConfigError> {
    validate_slug("tenant slug", tenant_slug)?;
    validate_slug("site slug", site_slug)?;
    Ok(format!("edge.{tenant_slug}.{site_slug}"))
}

fn nanos(field: &'static str, d: Duration) -> Result<i64, ConfigError> {
    i64::try_from(d.as_nanos())
        .map_err(|_| ConfigError::invalid(field, &format!("{d:?}"), "too long"))
}

/// The JetStream `StreamConfig` (as JSON, the body of `$JS.API.STREAM.CREATE.<name>`)
/// of the site's buffer stream: file storage, limits retention, discard old,
/// `max_age` = retention in nanoseconds.
pub fn buffer_stream_config(input: &BufferStreamInput) -> Result<serde_json::Value, ConfigError> {
    let prefix = buffer_subject_prefix(&input.tenant_slug, &input.site_slug)?;
    if input.retention < Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            "retention",
            &format!("{:?}", input.retention),
            "must be at least one second (0 would mean keep forever)",
        ));
    }
    let max_age = nanos("retention", input.retention)?;
    let duplicate_window = nanos("retention", DUPLICATE_WINDOW.min(input.retention))?;
    let max_bytes = match input.max_bytes {
        None => -1,
        Some(0) => {
            return Err(ConfigError::invalid(
                "max bytes",
                "0",
                "must be positive or unset",
            ));
        }
        Some(n) => i64::try_from(n)
            .map_err(|_| ConfigError::invalid("max bytes", &n.to_string(), "too large"))?,
    };
    if !matches!(input.replicas, 1 | 3) {
        return Err(ConfigError::invalid(
            "replicas",
            &input.replicas.to_string(),
            "must be 1 (one leaf server) or 3 (a leaf cluster)",
        ));
    }
    Ok(json!({
        "name": BUFFER_STREAM_NAME,
        "description": format!(
            "Store-and-forward buffer of edge site {} of tenant {}; sourced by the hub.",
            input.site_slug, input.tenant_slug
        ),
        "subjects": [format!("{prefix}.>")],
        "retention": "limits",
        "storage": "file",
        "discard": "old",
        "max_age": max_age,
        "max_bytes": max_bytes,
        "max_msgs": -1,
        "max_msg_size": -1,
        "max_consumers": -1,
        "num_replicas": input.replicas,
        "duplicate_window": duplicate_window,
    }))
}

/// The `StreamSource` (JSON) a hub stream in the tenant's account uses to source
/// this site's buffer: the leaf's stream reached through its domain's API prefix.
///
/// The prefix is spelled out as `external.api` rather than given as a `domain`
/// field, which nats-server 2.15's strict JetStream API rejects in sources.
/// The leaf delivers to the site's own `external.deliver` prefix
/// ([`super::buffer_deliver_prefix`]), the only delivery subjects its link
/// may publish ([`super::site_link_permissions`]).
pub fn buffer_stream_source(
    tenant_slug: &str,
    site_slug: &str,
) -> Result<serde_json::Value, ConfigError> {
    let domain = JetStreamDomain::for_site(tenant_slug, site_slug)?;
    let deliver = super::link::buffer_deliver_prefix(tenant_slug, site_slug)?;
    Ok(json!({
        "name": BUFFER_STREAM_NAME,
        "external": { "api": format!("$JS.{domain}.API"), "deliver": deliver },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_buffer() {
        let cfg = buffer_stream_config(&BufferStreamInput::new("acme", "nyc")).unwrap();
        assert_eq!(cfg["name"], "EDGE_BUFFER");
        assert_eq!(cfg["subjects"][0], "edge.acme.nyc.>");
        assert_eq!(cfg["storage"], "file");
        assert_eq!(cfg["discard"], "old");
        assert_eq!(cfg["max_age"], 604_800_000_000_000i64);
        assert_eq!(cfg["max_bytes"], -1);
    }

    #[test]
    fn short_retention_caps_duplicate_window() {
        let mut input = BufferStreamInput::new("acme", "nyc");
        input.retention = Duration::from_secs(30);
        input.max_bytes = Some(1 << 30);
        let cfg = buffer_stream_config(&input).unwrap();
        assert_eq!(cfg["max_age"], 30_000_000_000i64);
        assert_eq!(cfg["duplicate_window"], 30_000_000_000i64);
        assert_eq!(cfg["max_bytes"], 1i64 << 30);
    }

    #[test]
    fn invalid_inputs() {
        let mut input = BufferStreamInput::new("acme", "nyc");
        input.retention = Duration::ZERO;
        assert!(buffer_stream_config(&input).is_err());
        input = BufferStreamInput::new("acme", "nyc.>");
        assert!(buffer_stream_config(&input).is_err());
        input = BufferStreamInput::new("acme", "nyc");
        input.max_bytes = Some(0);
        assert!(buffer_stream_config(&input).is_err());
        input = BufferStreamInput::new("acme", "nyc").with_replicas(2);
        assert!(buffer_stream_config(&input).is_err());
    }

    #[test]
    fn a_cluster_buffer_has_three_replicas() {
        let input = BufferStreamInput::new("acme", "nyc").with_replicas(3);
        assert_eq!(buffer_stream_config(&input).unwrap()["num_replicas"], 3);
    }

    #[test]
    fn source_uses_the_site_domain() {
        let src = buffer_stream_source("acme", "nyc").unwrap();
        assert_eq!(src["external"]["api"], "$JS.sr-acme-nyc.API");
        assert!(src.get("domain").is_none());
    }
}
