//! Provisioning a site's NATS leaf server, and building its site bundle.
//!
//! The `provision_leaf` job (enqueued with every new site, and again by
//! `POST /api/v1/edge-sites/{id}/regenerate-config`) issues the leaf's client
//! and server certificates from the tenant's intermediate CA, mints the leaf's
//! NATS user in the tenant's account, renders `nats-leaf.conf`, seals the keys
//! and credentials and stores everything with the config checksum; the leaf
//! moves `pending -> provisioned`. A failed attempt records its reason on the
//! leaf (`last_error`) and is retried by the job queue. Every attempt is
//! complete on its own, so repeating one (after a crash) is harmless.
//!
//! Renewal is the same job: [`enqueue_renewals`] (run hourly by `serve`)
//! enqueues it for leaves whose certificates expire within 30 days, and the
//! job issues new certificates with the same identity.
//!
//! The rendered config is a pure function of stored, non-secret data (slugs,
//! upstream URL, listen address, monitoring listener, and for a 3-node
//! cluster the pins of its node certificates), so the bundle renders it
//! again and [`config_drift`] compares it with the stored checksum.
//!
//! A cluster's routes pin its node certificates (their public keys' SHA-256,
//! see [`node_pins`]): the tenant CA that issues them also issues every
//! collector's, agent's and other site's certificate, so chaining to it must
//! not be enough to join a site's routes. Each node keeps its key when the
//! job runs again (renewal, regeneration): its new certificate is issued for
//! the kept key (sealed with the node's certificate), so the pins do not
//! change and a node updated to the new bundle still routes with nodes on
//! the old one. A node added to the layout gets a new key; nodes dropped
//! from it lose theirs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Deserialize;
use serviceradar_bundle::{AgentPki, InstallPaths, SecretText, SiteBundle, SitePki};
use serviceradar_domain::resources::{EdgeSite, NatsLeafServer, Tenant};
use serviceradar_domain::{EdgeSiteId, LeafServerId, TenantId, TenantScope};
use serviceradar_natsconf::leaf::LeafClusterInput;
use serviceradar_natsconf::{
    BufferStreamInput, LeafConfigInput, buffer_stream_config, config_checksum, render_leaf_config,
};
use serviceradar_pki::{
    SiteRef, TenantRef, issue_agent, issue_leaf_client, issue_leaf_server,
    issue_leaf_server_for_key,
};
use serviceradar_store::health::AgentCert;
use serviceradar_store::jobs::{Job, NewJob};
use serviceradar_store::{LeafProvisioning, NodeCert, ProvisionedFrom, Store, StoreError};

pub mod bootstrap;
pub mod error;
pub mod tenants;

pub use error::ProvisioningError;

use serviceradar_identity::{Pki, aad, to_ms};
use serviceradar_jobs::{JobHandler, JobResult, Jobs, PROVISION_LEAF};
use tracing::Instrument;

/// What provisioning writes into every leaf config and bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisioningSettings {
    /// Hub leafnode URL given to new leaf servers (`tls://host:7422`).
    pub hub_leafnode_url: String,
    /// SaaS NATS URL for collectors without an edge site.
    pub saas_nats_url: String,
    /// The agent gateway URL written into each site bundle's agent config.
    pub gateway_url: String,
    /// Monitoring listener rendered into every `nats-leaf.conf` (`None` disables it).
    pub leaf_monitoring_listen: Option<String>,
    /// The leafnode URLs of a hub cluster's other nodes: every leaf's remote
    /// lists them after its own hub URL (empty for one hub server).
    pub extra_hub_leafnode_urls: Vec<String>,
    /// Render `nats-leaf.conf` with device authorization (the auth callout
    /// served at the edge by `serviceradar-agent`, whose keys the edge
    /// generates into the included `device-auth.conf`). Off by default.
    pub leaf_device_auth: bool,
}

impl Default for ProvisioningSettings {
    fn default() -> Self {
        Self {
            hub_leafnode_url: "tls://127.0.0.1:7422".into(),
            saas_nats_url: "tls://127.0.0.1:4222".into(),
            gateway_url: "https://localhost:50051".into(),
            leaf_monitoring_listen: Some("127.0.0.1:8222".into()),
            extra_hub_leafnode_urls: Vec::new(),
            leaf_device_auth: false,
        }
    }
}

/// Default leaf monitoring port when monitoring is disabled (the bundle's
/// scripts still need a port number).
const DEFAULT_MONITORING_PORT: u16 = 8222;

/// Registers the `provision_leaf` handler.
pub fn register(jobs: &mut Jobs, store: Store, pki: Arc<Pki>, settings: Arc<ProvisioningSettings>) {
    jobs.register(
        PROVISION_LEAF,
        Arc::new(ProvisionLeaf {
            store,
            pki,
            settings,
        }),
    );
}

/// A provisioning job for an existing leaf (regeneration). Shares the dedupe
/// key of the job `create_site` enqueues, so at most one is unfinished.
pub fn provisioning_job(leaf: &NatsLeafServer) -> NewJob {
    leaf_job(leaf.tenant_id, leaf.edge_site_id, leaf.id)
}

fn leaf_job(tenant: TenantId, site: EdgeSiteId, leaf: LeafServerId) -> NewJob {
    NewJob::new(
        PROVISION_LEAF,
        serde_json::json!({
            "tenant_id": tenant.to_string(),
            "edge_site_id": site.to_string(),
            "leaf_server_id": leaf.to_string(),
        }),
    )
    .dedupe(format!("{PROVISION_LEAF}:{leaf}"))
}

/// When the renewal sweep re-provisions a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenewalPolicy {
    /// Renew certificates expiring within this long (default 30 days).
    pub renew_before: std::time::Duration,
    /// Skip leaves re-provisioned less than this long ago (default 1 day): a
    /// renewal that could not move the expiry (the tenant CA expires first)
    /// is not repeated on every sweep.
    pub quiet: std::time::Duration,
}

impl Default for RenewalPolicy {
    fn default() -> Self {
        Self {
            renew_before: std::time::Duration::from_secs(30 * 24 * 3600),
            quiet: std::time::Duration::from_secs(24 * 3600),
        }
    }
}

/// How often `serve` runs the renewal sweep.
pub const RENEWAL_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);
/// Most leaves one sweep enqueues (the next sweep takes the rest).
const RENEWAL_BATCH: i64 = 1000;

/// The renewal sweep: enqueues a `provision_leaf` job (renewal is issuing
/// again with the same identity) for every leaf whose certificates expire
/// within `policy.renew_before`. The job's dedupe key keeps one unfinished job per
/// leaf, so replicas sweeping at once enqueue each renewal once. Returns the
/// number of jobs enqueued.
pub async fn enqueue_renewals(store: &Store, policy: RenewalPolicy) -> Result<usize, StoreError> {
    let now = serviceradar_store::now_ms();
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let due = store
        .leaves_expiring_before(
            now.saturating_add(ms(policy.renew_before)),
            now.saturating_sub(ms(policy.quiet)),
            RENEWAL_BATCH,
        )
        .await?;
    let mut enqueued = 0;
    for leaf in due {
        let job = leaf_job(leaf.tenant_id, leaf.edge_site_id, leaf.leaf_id);
        if store
            .enqueue_job(&job, Some(leaf.tenant_id))
            .await?
            .is_some()
        {
            tracing::info!(tenant_id = %leaf.tenant_id, site_id = %leaf.edge_site_id,
                leaf_id = %leaf.leaf_id, expires_at = leaf.cert_expires_at,
                "leaf certificates expire soon; renewal enqueued");
            enqueued += 1;
        }
    }
    Ok(enqueued)
}

/// Runs the renewal sweep ([`enqueue_renewals`] with the default policy) now
/// and then every [`RENEWAL_SWEEP_INTERVAL`] until `stop` flips.
pub async fn renew_every_interval(store: Store, stop: tokio::sync::watch::Receiver<bool>) {
    serviceradar_runtime::tasks::every(RENEWAL_SWEEP_INTERVAL, stop, || async {
        let span = tracing::info_span!("job", kind = "renewal_sweep");
        match enqueue_renewals(&store, RenewalPolicy::default())
            .instrument(span)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(enqueued = n, "certificate renewal sweep"),
            Err(e) => tracing::warn!(error = %e, "certificate renewal sweep failed"),
        }
    })
    .await;
}

/// The leaf config input of a site: default install paths, the leaf's
/// stored listen address and upstream, and the configured monitoring listener.
pub fn leaf_config_input(
    settings: &ProvisioningSettings,
    tenant: &Tenant,
    site: &EdgeSite,
    leaf: &NatsLeafServer,
) -> LeafConfigInput {
    let mut input =
        LeafConfigInput::new(tenant.slug.as_str(), site.slug.as_str(), &leaf.upstream_url);
    input.client_listen = leaf.local_listen.to_string();
    input.monitoring_listen = settings.leaf_monitoring_listen.clone();
    input.extra_hub_urls = settings
        .extra_hub_leafnode_urls
        .iter()
        .filter(|u| **u != leaf.upstream_url)
        .cloned()
        .collect();
    input.device_auth = settings.leaf_device_auth;
    input
}

/// The route pins of a cluster's node certificates, in node order: the
/// SHA-256 of each certificate's public key, as nats-server's
/// `pinned_certs` compares them.
pub fn node_pins(node_certs: &[NodeCert]) -> Result<Vec<String>, ProvisioningError> {
    node_certs
        .iter()
        .map(|cert| {
            serviceradar_pki::spki_sha256(&cert.cert_pem)
                .map_err(|_| ProvisioningError::Corrupt("a cluster node's certificate"))
        })
        .collect()
}

/// The config inputs of a site's leaf: one, or one per node of a 3-node
/// cluster. Every node's config references the same install paths (its own
/// server certificate is installed as `leaf-server.pem` where it runs);
/// nodes sharing a host get consecutive route and monitoring ports. A
/// cluster's routes admit only the certificates `node_pins` names (one per
/// node, [`node_pins`]); without them the configs do not render.
pub fn leaf_config_inputs(
    settings: &ProvisioningSettings,
    tenant: &Tenant,
    site: &EdgeSite,
    leaf: &NatsLeafServer,
    node_pins: &[String],
) -> Vec<LeafConfigInput> {
    let single = leaf_config_input(settings, tenant, site, leaf);
    let Some(cluster) = &leaf.cluster else {
        return vec![single];
    };
    let listen_host = leaf.local_listen.host().to_string();
    let routes: Vec<String> = cluster
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, node)| format!("nats://{}:{}", node.host(), cluster.route_port(i)))
        .collect();
    cluster
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let mut input = single.clone();
            input.client_listen = format!("{listen_host}:{}", node.port());
            input.monitoring_listen = settings.leaf_monitoring_listen.as_deref().map(|m| {
                match m
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                {
                    Some((host, port)) => {
                        format!(
                            "{host}:{}",
                            port.saturating_add(cluster.same_host_offset(i))
                        )
                    }
                    None => m.to_owned(),
                }
            });
            input.cluster = Some(LeafClusterInput {
                node: i,
                listen: format!("{listen_host}:{}", cluster.route_port(i)),
                routes: routes.clone(),
                tls: single.client_tls.clone(),
                pinned_certs: node_pins.to_vec(),
            });
            input
        })
        .collect()
}

/// Renders a site's `nats-leaf.conf`: one text, or one per cluster node
/// (whose routes pin `node_pins`, see [`leaf_config_inputs`]).
pub fn render_site_configs(
    settings: &ProvisioningSettings,
    tenant: &Tenant,
    site: &EdgeSite,
    leaf: &NatsLeafServer,
    node_pins: &[String],
) -> Result<Vec<String>, ProvisioningError> {
    leaf_config_inputs(settings, tenant, site, leaf, node_pins)
        .iter()
        .map(|input| {
            render_leaf_config(input).map_err(ProvisioningError::render("rendering nats-leaf.conf"))
        })
        .collect()
}

/// The checksum of a site's leaf config(s): of the one config, or of a
/// cluster's configs in node order.
pub fn site_config_checksum(configs: &[String]) -> String {
    config_checksum(&configs.concat())
}

/// Renders a site's `nats-leaf.conf` (of a cluster: node 0's).
pub fn render_site_config(
    settings: &ProvisioningSettings,
    tenant: &Tenant,
    site: &EdgeSite,
    leaf: &NatsLeafServer,
    node_pins: &[String],
) -> Result<String, ProvisioningError> {
    render_site_configs(settings, tenant, site, leaf, node_pins)?
        .into_iter()
        .next()
        .ok_or(ProvisioningError::Corrupt("no leaf config rendered"))
}

/// Stored vs. expected config checksum of a leaf.
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigDrift {
    /// Checksum stored by the last provisioning run (`None` while pending).
    pub stored_checksum: Option<String>,
    /// Checksum of the config as it renders now; `None` for a cluster whose
    /// node certificates are not issued yet (its layout changed and the
    /// provisioning job has not run since: the routes pin those
    /// certificates, so the config cannot render before it does).
    pub expected_checksum: Option<String>,
    /// True when a provisioned leaf's stored checksum differs from the expected one.
    pub drifted: bool,
}

/// Compares the stored checksum of `leaf` with the config as it renders now
/// (`node_pins`: of the cluster's stored node certificates, [`node_pins`]).
pub fn config_drift(
    settings: &ProvisioningSettings,
    tenant: &Tenant,
    site: &EdgeSite,
    leaf: &NatsLeafServer,
    node_pins: &[String],
) -> Result<ConfigDrift, ProvisioningError> {
    if leaf
        .cluster
        .as_ref()
        .is_some_and(|c| c.nodes().len() != node_pins.len())
    {
        // The layout changed since the node certificates were issued.
        return Ok(ConfigDrift {
            drifted: leaf.config_checksum.is_some(),
            stored_checksum: leaf.config_checksum.clone(),
            expected_checksum: None,
        });
    }
    let expected = site_config_checksum(&render_site_configs(
        settings, tenant, site, leaf, node_pins,
    )?);
    Ok(ConfigDrift {
        drifted: leaf
            .config_checksum
            .as_ref()
            .is_some_and(|stored| *stored != expected),
        stored_checksum: leaf.config_checksum.clone(),
        expected_checksum: Some(expected),
    })
}

/// Issues, mints, renders and stores everything a leaf needs.
pub async fn provision_leaf(
    store: &Store,
    pki: &Pki,
    settings: &ProvisioningSettings,
    tenant: &Tenant,
    site: &EdgeSite,
    leaf: &NatsLeafServer,
) -> Result<NatsLeafServer, ProvisioningError> {
    let scoped = store.scoped(TenantScope::for_system_task(tenant.id));
    let ca = pki
        .tenant_ca(store, tenant)
        .await
        .map_err(ProvisioningError::identity("loading the tenant CA"))?;
    let tenant_ref = TenantRef::of(tenant);
    let site_ref = SiteRef::of(site);
    let opts = pki.issue_options();
    let client = issue_leaf_client(&ca, tenant_ref, site_ref, &opts).map_err(
        ProvisioningError::certificate("issuing the leaf client certificate"),
    )?;
    let server = issue_leaf_server(
        &ca,
        tenant_ref,
        site_ref,
        [site.nats_leaf_url.host().to_bare()],
        &opts,
    )
    .map_err(ProvisioningError::certificate(
        "issuing the leaf server certificate",
    ))?;
    let previous = scoped.leaf_provisioning(leaf.id).await?;
    // Stored below only while the leaf still has this layout and these
    // node keys (a change during this run: retried on the leaf as it is).
    let from = ProvisionedFrom::of(leaf, previous.as_ref());
    // Each cluster node: its own server certificate, naming its own host
    // (and the site's URL host, which may front all three).
    let mut node_certs = Vec::new();
    let mut not_after = client.not_after.min(server.not_after);
    if let Some(cluster) = &leaf.cluster {
        for (i, node) in cluster.nodes().iter().enumerate() {
            let node_aad = aad::leaf(tenant.id, leaf.id, &format!("node-{i}-key"));
            let hosts = [node.host().to_bare(), site.nats_leaf_url.host().to_bare()];
            // Node i keeps its key across renewals and regenerations: the
            // routes pin the nodes' public keys, so configs rendered before
            // and after pin the same three and a rolling update stays routed.
            let kept = match previous.as_ref().and_then(|m| m.node_certs.get(i)) {
                Some(cert) => Some(pki.open(&cert.key_sealed, &node_aad).map_err(
                    ProvisioningError::identity("opening a cluster node's previous key"),
                )?),
                None => None,
            };
            let cert = match &kept {
                Some(key) => {
                    issue_leaf_server_for_key(&ca, tenant_ref, site_ref, hosts, &opts, key.as_str())
                }
                None => issue_leaf_server(&ca, tenant_ref, site_ref, hosts, &opts),
            }
            .map_err(ProvisioningError::certificate(
                "issuing a cluster node's server certificate",
            ))?;
            not_after = not_after.min(cert.not_after);
            node_certs.push(NodeCert {
                cert_pem: cert.cert_pem.clone(),
                key_sealed: pki.seal(&cert.key_pem, &node_aad),
            });
        }
    }
    // A cluster's routes pin the node certificates just issued.
    let confs = render_site_configs(settings, tenant, site, leaf, &node_pins(&node_certs)?)?;
    // Re-provisioning keeps the leaf's NATS user key (revoking it on deletion
    // then covers every generation of its creds).
    let previous = match previous {
        Some(material) => Some(
            pki.open(
                &material.creds_sealed,
                &aad::leaf(tenant.id, leaf.id, "creds"),
            )
            .map_err(ProvisioningError::identity(
                "opening the leaf's previous creds",
            ))?,
        ),
        None => None,
    };
    let creds = pki
        .leaf_creds(
            store,
            tenant,
            site.id,
            &format!("leaf-{}", site.slug),
            previous.as_ref().map(|c| c.as_str()),
        )
        .await
        .map_err(ProvisioningError::identity("minting the leaf's NATS user"))?;
    let result = LeafProvisioning {
        leaf_cert_pem: client.cert_pem.clone(),
        leaf_key_sealed: pki.seal(
            &client.key_pem,
            &aad::leaf(tenant.id, leaf.id, "client-key"),
        ),
        server_cert_pem: server.cert_pem.clone(),
        server_key_sealed: pki.seal(
            &server.key_pem,
            &aad::leaf(tenant.id, leaf.id, "server-key"),
        ),
        ca_chain_pem: client.chain_pem.clone(),
        creds_sealed: pki.seal(creds.as_str(), &aad::leaf(tenant.id, leaf.id, "creds")),
        cert_expires_at: to_ms(not_after),
        config_checksum: site_config_checksum(&confs),
        node_certs,
    };
    // The site's edge agent: keep its id across renewals.
    let agent_id = match scoped.agent_for_site(site.id).await? {
        Some(agent) => agent.id,
        None => uuid::Uuid::now_v7(),
    };
    let agent = issue_agent(&ca, tenant_ref, site_ref, agent_id, &opts).map_err(
        ProvisioningError::certificate("issuing the agent certificate"),
    )?;
    scoped
        .store_agent_cert(
            site.id,
            &AgentCert {
                agent_id,
                cert_pem: agent.cert_pem.clone(),
                key_sealed: pki.seal(&agent.key_pem, &aad::agent_key(tenant.id, agent_id)),
                cert_serial: agent.serial_hex.clone(),
                cert_expires_at: to_ms(agent.not_after),
            },
        )
        .await?;
    let stored = scoped
        .store_leaf_provisioning(leaf.id, &result, &from)
        .await?;
    tracing::info!(leaf_id = %leaf.id, site_id = %site.id, serial = %client.serial_hex,
        checksum = %result.config_checksum, "leaf server provisioned");
    Ok(stored)
}

/// What a tenant sees in `last_error` when provisioning failed: a stable code
/// and the reference under which the operator's log has the cause.
pub fn tenant_facing_error(reference: &str) -> String {
    format!(
        "provisioning_failed: the leaf server could not be provisioned and will be retried; \
         quote reference {reference} to your operator"
    )
}

/// The `provision_leaf` job handler.
struct ProvisionLeaf {
    store: Store,
    pki: Arc<Pki>,
    settings: Arc<ProvisioningSettings>,
}

#[derive(Deserialize)]
struct Payload {
    tenant_id: TenantId,
    edge_site_id: EdgeSiteId,
    leaf_server_id: LeafServerId,
}

impl ProvisionLeaf {
    async fn run_job(&self, job: &Job) -> JobResult {
        let payload: Payload = serde_json::from_value(job.payload.clone())
            .map_err(|e| format!("bad provision_leaf payload: {e}"))?;
        let tenant = match self.store.tenant(payload.tenant_id).await {
            Ok(tenant) => tenant,
            Err(StoreError::NotFound) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        let scoped = self
            .store
            .scoped(TenantScope::for_system_task(payload.tenant_id));
        let (site, leaf) = match (
            scoped.site(payload.edge_site_id).await,
            scoped.leaf_server(payload.leaf_server_id).await,
        ) {
            (Ok(site), Ok(leaf)) => (site, leaf),
            // The site was deleted meanwhile: nothing to provision.
            (Err(StoreError::NotFound), _) | (_, Err(StoreError::NotFound)) => return Ok(()),
            (Err(e), _) | (_, Err(e)) => return Err(e.to_string()),
        };
        match provision_leaf(
            &self.store,
            &self.pki,
            &self.settings,
            &tenant,
            &site,
            &leaf,
        )
        .await
        {
            Ok(_) => Ok(()),
            // The leaf's layout or node keys changed while this run issued
            // (its result was not stored): retried on the leaf as it is now,
            // without an error on the site.
            Err(ProvisioningError::Store(StoreError::Conflict(why))) => {
                tracing::info!(job_id = %job.id, leaf_id = %leaf.id, why = %why,
                    "provisioning again: the leaf changed during the run");
                Err(format!("provisioning again: {why}"))
            }
            Err(e) => {
                // The cause (paths, SQL, key ids) is for the operator's log;
                // the tenant sees a stable code and the job to quote.
                let message = format!("provisioning failed: {e:#}");
                tracing::error!(job_id = %job.id, leaf_id = %leaf.id, error = %message,
                    "provisioning a leaf failed");
                let public = tenant_facing_error(&job.id.to_string());
                if let Err(record) = scoped.record_leaf_error(leaf.id, &public).await {
                    tracing::warn!(error = %record, "recording the provisioning error failed");
                }
                Err(message)
            }
        }
    }
}

impl JobHandler for ProvisionLeaf {
    fn run<'a>(&'a self, job: &'a Job) -> Pin<Box<dyn Future<Output = JobResult> + Send + 'a>> {
        Box::pin(self.run_job(job))
    }
}

/// Why a site bundle cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SiteBundleError {
    /// The store failed or the site is not in the tenant.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The leaf has not been provisioned yet.
    #[error("the site's leaf server is still being provisioned; try again shortly{}",
        .0.as_deref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    Pending(Option<String>),
    /// Something else failed (details are logged, not returned).
    #[error(transparent)]
    Internal(#[from] ProvisioningError),
}

/// A built site bundle.
pub struct BuiltSiteBundle {
    /// Download file name.
    pub file_name: String,
    /// tar.gz bytes.
    pub bytes: Vec<u8>,
    /// Checksum of the `nats-leaf.conf` inside.
    pub config_checksum: String,
    /// Whether it differs from the stored checksum.
    pub drifted: bool,
}

fn first_pem_block(chain: &str) -> Option<&str> {
    const END: &str = "-----END CERTIFICATE-----";
    let start = chain.find("-----BEGIN CERTIFICATE-----")?;
    let end = start + chain[start..].find(END)? + END.len();
    Some(&chain[start..end])
}

/// The `agent.toml` shipped in the site bundle. Paths are relative to the
/// bundle (certificates in `certs/`, the buffer stream in `streams/`);
/// `setup.sh` rewrites them to where it installed those files.
pub fn agent_config_toml(
    settings: &ProvisioningSettings,
    tenant: &Tenant,
    site: &EdgeSite,
    agent_id: uuid::Uuid,
    leaf_port: u16,
) -> String {
    serviceradar_bundle::agent_config_toml(&serviceradar_bundle::AgentConfigInput {
        site_slug: site.slug.as_str(),
        tenant_slug: tenant.slug.as_str(),
        gateway_url: &settings.gateway_url,
        listen: None,
        cert: "certs/agent.pem",
        key: "certs/agent-key.pem",
        ca: "certs/root-ca.pem",
        leaf_url: &format!("tls://127.0.0.1:{leaf_port}"),
        leaf_ca: "certs/ca-chain.pem",
        edge_buffer: "streams/edge-buffer.json",
        tenant_id: &tenant.id.to_string(),
        site_id: &site.id.to_string(),
        agent_id: &agent_id.to_string(),
        renewal: None,
    })
}

/// Builds the site bundle of `site_id` from stored material (keys and
/// credentials are opened in memory only).
pub async fn build_site_bundle(
    store: &Store,
    pki: &Pki,
    settings: &ProvisioningSettings,
    scope: TenantScope,
    site_id: EdgeSiteId,
) -> Result<BuiltSiteBundle, SiteBundleError> {
    let scoped = store.scoped(scope);
    let site = scoped.site(site_id).await?;
    let leaf = scoped.leaf_for_site(site_id).await?;
    let tenant = store.tenant(site.tenant_id).await?;
    let Some(material) = scoped.leaf_provisioning(leaf.id).await? else {
        return Err(SiteBundleError::Pending(leaf.last_error.clone()));
    };
    if leaf
        .cluster
        .as_ref()
        .is_some_and(|layout| material.node_certs.len() != layout.nodes().len())
    {
        // Provisioned as one server; the cluster's job has not run yet.
        return Err(SiteBundleError::Pending(leaf.last_error.clone()));
    }
    let pins = node_pins(&material.node_certs)?;
    let confs = render_site_configs(settings, &tenant, &site, &leaf, &pins)?;
    let checksum = site_config_checksum(&confs);
    let drifted = checksum != material.config_checksum;
    if drifted {
        tracing::warn!(site_id = %site.id, stored = %material.config_checksum, current = %checksum,
            "leaf config drifted from the provisioned checksum; regenerate the config");
    }
    let open = |sealed: &[u8], what: &str, context: &'static str| {
        pki.open(sealed, &aad::leaf(tenant.id, leaf.id, what))
            .map_err(ProvisioningError::identity(context))
    };
    let client_key = open(
        &material.leaf_key_sealed,
        "client-key",
        "opening the leaf's sealed client-key",
    )?;
    let server_key = open(
        &material.server_key_sealed,
        "server-key",
        "opening the leaf's sealed server-key",
    )?;
    let creds = open(
        &material.creds_sealed,
        "creds",
        "opening the leaf's sealed creds",
    )?;
    let tenant_ca = first_pem_block(&material.ca_chain_pem).ok_or(ProvisioningError::Corrupt(
        "the stored CA chain has no certificate",
    ))?;
    let root = pki
        .root_ca(store)
        .await
        .map_err(ProvisioningError::identity("loading the root CA"))?;
    let agent = match scoped.agent_for_site(site.id).await? {
        Some(agent) => {
            let key = pki
                .open(
                    &scoped.agent_key_sealed(agent.id).await?,
                    &aad::agent_key(tenant.id, agent.id),
                )
                .map_err(ProvisioningError::identity(
                    "opening the agent's sealed key",
                ))?;
            Some(AgentPki {
                // The chain up to the tenant CA: the gateway trusts only the root.
                cert_pem: format!("{}{tenant_ca}\n", agent.cert_pem),
                key_pem: SecretText::new(key.as_str()),
                config_toml: Some(agent_config_toml(
                    settings,
                    &tenant,
                    &site,
                    agent.id,
                    leaf.local_listen.port(),
                )),
            })
        }
        None => None,
    };
    let monitoring_port = settings
        .leaf_monitoring_listen
        .as_deref()
        .and_then(|l| l.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or(DEFAULT_MONITORING_PORT);
    let stream = buffer_stream_config(
        &BufferStreamInput::new(tenant.slug.as_str(), site.slug.as_str())
            .with_replicas(if leaf.cluster.is_some() { 3 } else { 1 }),
    )
    .map_err(ProvisioningError::render("rendering the buffer stream"))?;
    let cluster = match &leaf.cluster {
        None => None,
        Some(layout) => {
            let inputs = leaf_config_inputs(settings, &tenant, &site, &leaf, &pins);
            let mut nodes = Vec::with_capacity(layout.nodes().len());
            for (i, ((url, cert), conf)) in layout
                .nodes()
                .iter()
                .zip(&material.node_certs)
                .zip(&confs)
                .enumerate()
            {
                let key = open(
                    &cert.key_sealed,
                    &format!("node-{i}-key"),
                    "opening a cluster node's sealed key",
                )?;
                let monitoring_port = inputs[i]
                    .monitoring_listen
                    .as_deref()
                    .and_then(|l| l.rsplit_once(':'))
                    .and_then(|(_, p)| p.parse().ok())
                    .unwrap_or(DEFAULT_MONITORING_PORT);
                nodes.push(serviceradar_bundle::ClusterNode {
                    leaf_conf: conf.clone(),
                    server_cert_pem: format!("{}{tenant_ca}\n", cert.cert_pem),
                    server_key_pem: SecretText::new(key.as_str()),
                    url: url.to_string(),
                    client_port: url.port(),
                    route_port: layout.route_port(i),
                    monitoring_port,
                });
            }
            Some(serviceradar_bundle::SiteCluster {
                nodes,
                kubernetes_name: serviceradar_domain::leaf_cluster::kubernetes_name(&site.slug),
            })
        }
    };
    let bundle = SiteBundle {
        tenant_slug: tenant.slug.to_string(),
        site_slug: site.slug.to_string(),
        site_name: site.name.to_string(),
        site_id: site.id.as_uuid(),
        leaf_conf: confs.first().cloned().unwrap_or_default(),
        paths: InstallPaths::default(),
        pki: SitePki {
            leaf_client_cert_pem: format!("{}{tenant_ca}\n", material.leaf_cert_pem),
            leaf_client_key_pem: SecretText::new(client_key.as_str()),
            leaf_server_cert_pem: format!("{}{tenant_ca}\n", material.server_cert_pem),
            leaf_server_key_pem: SecretText::new(server_key.as_str()),
            ca_chain_pem: material.ca_chain_pem.clone(),
            root_ca_pem: root.cert_pem().to_owned(),
            agent,
        },
        leaf_creds: SecretText::new(creds.as_str()),
        hub_leafnode_url: leaf.upstream_url.clone(),
        nats_leaf_url: site.nats_leaf_url.to_string(),
        client_port: leaf.local_listen.port(),
        monitoring_port,
        edge_buffer_stream_json: Some(
            serde_json::to_string_pretty(&stream)
                .map_err(ProvisioningError::render("encoding the buffer stream"))?,
        ),
        cluster,
    };
    let bytes = serviceradar_bundle::site_bundle(&bundle).map_err(ProvisioningError::from)?;
    Ok(BuiltSiteBundle {
        file_name: bundle.file_name(),
        bytes,
        config_checksum: checksum,
        drifted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_facing_provisioning_errors_carry_no_internal_detail() {
        let message = tenant_facing_error("0190a2b4-c0d0-7e8f-9a0b-1c2d3e4f5a6b");
        assert!(message.starts_with("provisioning_failed: "));
        assert!(message.contains("0190a2b4-c0d0-7e8f-9a0b-1c2d3e4f5a6b"));
        // Nothing but the code, a sentence and the reference.
        for leak in ["sqlite", "postgres", "/", "sealed", "key", "{", "error:"] {
            assert!(
                !message.to_lowercase().contains(leak),
                "{leak} in {message}"
            );
        }
    }
}
