//! What a site's leaf may send to the hub, and receive from it, over its
//! leafnode link.
//!
//! Why: the hub's leaf authorization callout admits a site's leaf into its
//! tenant's account with a user JWT. A user of that account without
//! permissions may do anything any user of the account can: call the hub's
//! JetStream API (delete or purge the tenant's `INGEST` stream, read it
//! through a consumer of its own), publish into another site's subjects, or
//! receive the replies of the control plane's pull requests, which carry
//! every site's telemetry. An edge box is outside the operator's control; a
//! compromised one must only be able to affect its own site. So the session
//! JWT carries these permissions, which nats-server enforces on the hub side
//! of the link (and hands to the leaf, which enforces them too):
//!
//! * **publish** (leaf -> hub): the tenant's telemetry subjects (what a
//!   collector may publish straight to the hub), this site's own `edge.`
//!   subjects, this site's buffer deliveries to the hub stream that sources
//!   them ([`buffer_deliver_prefix`]), the replies to the hub's requests
//!   (`_INBOX.>`, and `$JSC.R.>` for the source consumer's creation: nats-server
//!   names those replies `$JSC.R.<uid>` unless its `js_api_reply_v2` feature
//!   flag is on), and reading the device registry bucket in the hub's domain;
//! * **subscribe** (hub -> leaf): this site's JetStream API (the hub's
//!   requests to its leaf: the control plane creates the buffer, the hub's
//!   stream creates its source consumer), flow control of the buffer's
//!   source consumer, this site's own `edge.` subjects (commands to its
//!   devices) and replies to requests made at this site with the site's own
//!   inbox prefix ([`site_inbox_prefix`]), never the account-wide `_INBOX.>`.
//!
//! Which subjects sourcing across a leafnode link uses (deliver prefix,
//! `$JSC.R`, `$JS.FC` in both its v1 and v2 forms) is from nats-server 2.15's
//! documentation of leafnode permissions for JetStream sources, checked
//! against a real hub and leaf by the store-and-forward tests.

use uuid::Uuid;

use super::buffer::BUFFER_STREAM_NAME;
use super::device_auth::DEVICE_REGISTRY_BUCKET;
use crate::jwt::Permission;
use crate::syntax::{ConfigError, JetStreamDomain, validate_slug};

/// The telemetry families a site may publish straight to the hub.
const TELEMETRY_FAMILIES: [&str; 3] = ["events", "metrics", "logs"];

/// The subject prefix a site's buffer stream delivers to the hub stream
/// that sources it: `sr.deliver.{tenant}.{site}` (nats-server appends
/// `.S.<id>`). Per site, so a leaf may publish its own deliveries and no
/// other site's.
pub fn buffer_deliver_prefix(tenant_slug: &str, site_slug: &str) -> Result<String, ConfigError> {
    validate_slug("tenant slug", tenant_slug)?;
    validate_slug("site slug", site_slug)?;
    Ok(format!("sr.deliver.{tenant_slug}.{site_slug}"))
}

/// The inbox prefix of NATS clients at a site whose requests are answered
/// by the hub (the device registry's reads): `_INBOX.{site_id}`. The hub
/// forwards to a leaf only replies under its own site's prefix.
pub fn site_inbox_prefix(site_id: Uuid) -> String {
    format!("_INBOX.{site_id}")
}

/// What a site's leaf may send and receive over its link to the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkPermissions {
    /// Subjects the leaf may send to the hub.
    pub publish: Permission,
    /// Subjects the hub sends to the leaf.
    pub subscribe: Permission,
}

/// The permissions of the leaf of site `site_slug` (id `site_id`) of tenant
/// `tenant_slug`, with the hub's JetStream in domain `hub_domain`.
pub fn site_link_permissions(
    tenant_slug: &str,
    site_slug: &str,
    site_id: Uuid,
    hub_domain: &str,
) -> Result<LinkPermissions, ConfigError> {
    let site_domain = JetStreamDomain::for_site(tenant_slug, site_slug)?;
    let hub_domain = JetStreamDomain::new(hub_domain)?;
    let deliver = buffer_deliver_prefix(tenant_slug, site_slug)?;
    let own = format!("edge.{tenant_slug}.{site_slug}.>");
    let hub_api = format!("$JS.{hub_domain}.API");
    let kv = format!("KV_{DEVICE_REGISTRY_BUCKET}");
    let mut publish: Vec<String> = TELEMETRY_FAMILIES
        .iter()
        .map(|family| format!("{family}.{tenant_slug}.>"))
        .collect();
    publish.extend([
        own.clone(),
        format!("{deliver}.>"),
        "_INBOX.>".to_owned(),
        "$JSC.R.>".to_owned(),
        format!("{hub_api}.STREAM.INFO.{kv}"),
        format!("{hub_api}.STREAM.MSG.GET.{kv}"),
        format!("{hub_api}.DIRECT.GET.{kv}"),
        format!("{hub_api}.DIRECT.GET.{kv}.>"),
        format!("{hub_api}.CONSUMER.CREATE.{kv}"),
        format!("{hub_api}.CONSUMER.CREATE.{kv}.>"),
        format!("{hub_api}.CONSUMER.INFO.{kv}.*"),
        format!("{hub_api}.CONSUMER.DELETE.{kv}.*"),
        format!("$JS.FC.{kv}.>"),
        format!("$JS.FC.*.*.{kv}.>"),
    ]);
    let subscribe = vec![
        format!("$JS.{site_domain}.API.>"),
        format!("$JS.FC.{BUFFER_STREAM_NAME}.>"),
        format!("$JS.FC.*.*.{BUFFER_STREAM_NAME}.>"),
        own,
        format!("{}.>", site_inbox_prefix(site_id)),
    ];
    Ok(LinkPermissions {
        publish: Permission {
            allow: publish,
            deny: Vec::new(),
        },
        subscribe: Permission {
            allow: subscribe,
            deny: Vec::new(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms() -> LinkPermissions {
        site_link_permissions("acme", "nyc", Uuid::nil(), "hub").unwrap()
    }

    #[test]
    fn a_leaf_may_not_call_the_hubs_jetstream_api_beyond_the_registry() {
        let p = perms();
        assert!(
            !p.publish
                .allow
                .iter()
                .any(|s| s == "$JS.hub.API.>" || s.contains("INGEST") || s == ">"),
            "{:?}",
            p.publish.allow
        );
        assert!(
            p.publish
                .allow
                .iter()
                .filter(|s| s.starts_with("$JS.hub.API."))
                .all(|s| s.contains(".KV_SR_DEVICES"))
        );
    }

    #[test]
    fn a_leaf_publishes_only_its_own_site_subjects_and_deliveries() {
        let p = perms();
        assert!(p.publish.allow.contains(&"edge.acme.nyc.>".to_owned()));
        assert!(
            p.publish
                .allow
                .contains(&"sr.deliver.acme.nyc.>".to_owned())
        );
        assert!(!p.publish.allow.iter().any(|s| s.starts_with("edge.acme.*")
            || s == "edge.acme.>"
            || s.starts_with("sr.deliver.acme.*")));
    }

    #[test]
    fn the_hub_sends_a_leaf_only_its_own_site_traffic() {
        let p = perms();
        assert_eq!(
            p.subscribe.allow,
            vec![
                "$JS.sr-acme-nyc.API.>".to_owned(),
                "$JS.FC.EDGE_BUFFER.>".to_owned(),
                "$JS.FC.*.*.EDGE_BUFFER.>".to_owned(),
                "edge.acme.nyc.>".to_owned(),
                "_INBOX.00000000-0000-0000-0000-000000000000.>".to_owned(),
            ]
        );
    }

    #[test]
    fn bad_slugs_are_refused() {
        assert!(site_link_permissions("ac me", "nyc", Uuid::nil(), "hub").is_err());
        assert!(site_link_permissions("acme", "n.y", Uuid::nil(), "hub").is_err());
        assert!(buffer_deliver_prefix("acme", "*").is_err());
    }
}
