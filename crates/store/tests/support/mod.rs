//! Set-up shared by the store's integration tests.

#![allow(dead_code)]

use serviceradar_domain::resources::{EdgeSite, NatsLeafServer, Tenant};
use serviceradar_domain::validate::{DisplayName, ListenAddr, NatsUrl, Slug};
use serviceradar_domain::{EdgeSiteId, LeafServerId, TenantScope};
use serviceradar_store::health::AgentCert;
use serviceradar_store::{LeafProvisioning, NewSite, ProvisionedFrom, Scoped, Store, now_ms};

/// A new tenant named and slugged `slug`.
pub async fn tenant(store: &Store, slug: &str) -> Tenant {
    store
        .create_tenant(
            &Slug::parse(slug).expect("slug"),
            &DisplayName::parse(slug).expect("name"),
        )
        .await
        .expect("tenant")
}

/// Stores placeholder provisioning material for `leaf` (status
/// `provisioned`), its certificates expiring at `cert_expires_at`.
pub async fn provision_leaf(scoped: &Scoped<'_>, leaf: LeafServerId, cert_expires_at: i64) {
    scoped
        .store_leaf_provisioning(
            leaf,
            &LeafProvisioning {
                leaf_cert_pem: "c".into(),
                leaf_key_sealed: vec![1],
                server_cert_pem: "s".into(),
                server_key_sealed: vec![2],
                ca_chain_pem: "ca".into(),
                creds_sealed: vec![3],
                cert_expires_at,
                config_checksum: "sha256:x".into(),
                node_certs: Vec::new(),
            },
            &ProvisionedFrom::default(),
        )
        .await
        .expect("provisioned");
}

/// A new site named and slugged `slug`, with its pending leaf server.
pub async fn new_site(scoped: &Scoped<'_>, slug: &str) -> (EdgeSite, NatsLeafServer) {
    scoped
        .create_site(
            &NewSite {
                name: DisplayName::parse(slug).expect("name"),
                slug: Slug::parse(slug).expect("slug"),
                nats_leaf_url: NatsUrl::parse("nats://10.0.0.1:4222").expect("url"),
                upstream_url: "tls://hub:7422".into(),
                local_listen: ListenAddr::parse("0.0.0.0:4222").expect("listen"),
            },
            None,
        )
        .await
        .expect("site")
}

/// A site with an agent; returns both ids.
pub async fn site_with_agent(
    store: &Store,
    scope: TenantScope,
    slug: &str,
) -> (EdgeSiteId, uuid::Uuid) {
    let scoped = store.scoped(scope);
    let (site, _leaf) = new_site(&scoped, slug).await;
    let agent = uuid::Uuid::now_v7();
    scoped
        .store_agent_cert(
            site.id,
            &AgentCert {
                agent_id: agent,
                cert_pem: "cert".into(),
                key_sealed: vec![7; 8],
                cert_serial: "01".into(),
                cert_expires_at: now_ms() + 1_000_000,
            },
        )
        .await
        .expect("agent");
    (site.id, agent)
}
