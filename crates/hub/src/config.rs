//! The hub side: `nats-hub.conf` for the operator's hub `nats-server`, with the
//! hub's server certificate (issued by the platform root), the root CA, and the
//! operator, system, leaf authorization and tenant account JWTs preloaded
//! (`serviceradar-core admin hub-config --out DIR`).
//!
//! A hub cluster ([`write_hub_cluster_config`], `admin hub-config
//! --cluster-node HOST` three times) is the same config once per node under
//! `DIR/node-{i}`: each node has its own server name and certificate (its
//! host among the SANs), routes to every node over mutual TLS with the
//! nodes' certificates pinned, and the same operator, accounts and resolver.

use std::path::{Path, PathBuf};

use serviceradar_natsconf::{
    HubClusterInput, HubConfigInput, TlsFiles, config_checksum, render_hub_config,
};
use serviceradar_pki::{issue_platform_server, issue_platform_server_for_key};
use serviceradar_store::Store;

use serviceradar_identity::{Pki, write_secret_file};

use crate::HubError;
use crate::error::{identity, io_error, store as store_error};

/// File names written by [`write_hub_config`].
pub mod names {
    /// The hub config.
    pub const CONFIG: &str = "nats-hub.conf";
    /// Hub server certificate followed by the root.
    pub const SERVER_CERT: &str = "hub-server.pem";
    /// Hub server key (0600).
    pub const SERVER_KEY: &str = "hub-server-key.pem";
    /// Platform root CA (what leaf client certificates must chain to).
    pub const ROOT_CA: &str = "root-ca.pem";
}

/// Default client port of the hub. Not 4222: that is a site leaf's default
/// client port, and a hub and a leaf may share a machine.
pub const DEFAULT_CLIENT_PORT: u16 = 4322;
/// Default leafnode port of the hub (what sites dial).
pub const DEFAULT_LEAFNODE_PORT: u16 = 7422;
/// Default monitoring port of the hub. Not 8222: that is a site leaf's.
pub const DEFAULT_MONITORING_PORT: u16 = 8322;
/// Default route port of a hub cluster's nodes. Not 6222: that is a site
/// leaf cluster's.
pub const DEFAULT_CLUSTER_PORT: u16 = 6322;

/// A hub cluster: the nodes' hosts, in node order, and their route port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubClusterOptions {
    /// The cluster's name (also the nodes' server names' stem).
    pub name: String,
    /// Each node's DNS name or IP (routes dial it; a SAN of its
    /// certificate). Nodes on one host get consecutive ports (every
    /// listener's and the route port, `+ i` for the host's i-th node).
    pub nodes: Vec<String>,
    /// Route listener port.
    pub route_port: u16,
    /// The host the route listeners bind (`0.0.0.0` by default; an
    /// embedded cluster on one machine binds loopback).
    pub route_listen_host: String,
    /// How often the nodes' account resolvers compare their directories.
    pub resolver_interval: String,
    /// Nodes given a new key before this render (a key that may have
    /// leaked, [`Pki::rotate_hub_node_key`]); empty keeps every kept key.
    pub rotate_node_keys: Vec<usize>,
}

impl HubClusterOptions {
    /// Three or more nodes at `nodes`, the default route port and interval.
    pub fn new(nodes: Vec<String>) -> Self {
        Self {
            name: "sr-hub".into(),
            nodes,
            route_port: DEFAULT_CLUSTER_PORT,
            route_listen_host: "0.0.0.0".into(),
            resolver_interval: serviceradar_natsconf::hub::RESOLVER_INTERVAL.into(),
            rotate_node_keys: Vec::new(),
        }
    }

    /// How far node `i`'s ports are shifted: the number of earlier nodes on
    /// the same host.
    pub fn port_offset(&self, i: usize) -> u16 {
        let host = &self.nodes[i];
        let same = self.nodes[..i].iter().filter(|h| *h == host).count();
        u16::try_from(same).unwrap_or(u16::MAX)
    }
}

/// Listeners, hosts and directories of the hub.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// `server_name`.
    pub server_name: String,
    /// DNS names / IPs leaves dial (SANs of the hub server certificate).
    pub hosts: Vec<String>,
    /// Client listener `host:port`.
    pub client_listen: String,
    /// Leafnode listener `host:port`.
    pub leafnode_listen: String,
    /// Monitoring listener `host:port` (`None` disables it).
    pub monitoring_listen: Option<String>,
    /// JetStream store directory (default `<out>/jetstream`).
    pub jetstream_store_dir: Option<String>,
    /// Account resolver directory (default `<out>/accounts`).
    pub resolver_dir: Option<String>,
}

impl Default for HubOptions {
    fn default() -> Self {
        Self {
            server_name: "sr-hub".into(),
            hosts: vec!["localhost".into(), "127.0.0.1".into()],
            client_listen: format!("0.0.0.0:{DEFAULT_CLIENT_PORT}"),
            leafnode_listen: format!("0.0.0.0:{DEFAULT_LEAFNODE_PORT}"),
            monitoring_listen: Some(format!("127.0.0.1:{DEFAULT_MONITORING_PORT}")),
            jetstream_store_dir: None,
            resolver_dir: None,
        }
    }
}

/// What [`write_hub_config`] wrote.
#[derive(Debug, Clone)]
pub struct HubFiles {
    /// Path of `nats-hub.conf`.
    pub config_path: PathBuf,
    /// Checksum of the config.
    pub config_checksum: String,
    /// Number of tenant accounts preloaded.
    pub tenant_accounts: usize,
}

/// Renders the hub config into `out` (created if missing). Every tenant gets
/// its NATS account (created now if it had none) preloaded.
pub async fn write_hub_config(
    store: &Store,
    pki: &Pki,
    opts: &HubOptions,
    out: &Path,
) -> Result<HubFiles, HubError> {
    let shared = Shared::load(store, pki).await?;
    let out = prepare_dir(out)?;
    let server = issue_platform_server(&shared.root, "hub", &opts.hosts, &pki.issue_options())
        .map_err(HubError::IssueCertificate)?;
    write_node(&shared, opts, &server, &out, None, None)
}

/// Renders a hub cluster's configs into `out/node-{i}` (one per node of
/// `cluster`, each with its own certificate: the node's host and `opts.hosts`
/// as SANs). Listeners are `opts`' with the node's port offset (see
/// [`HubClusterOptions::port_offset`]); the server names are
/// `{opts.server_name}-{i}`; the JetStream and resolver directories default
/// to each node's own. The routes pin every node's key, which the platform
/// keeps per cluster name and node ([`Pki::hub_node_key`]): every render
/// (on any machine, at any time) pins the same keys, so nodes rendered
/// apart still admit each other. `only_node` writes that node's directory
/// alone (a Kubernetes pod renders its own). `cluster.rotate_node_keys`
/// first replaces those nodes' kept keys: their certificates and every
/// node's pins of them change, so every node needs the new config.
pub async fn write_hub_cluster_config(
    store: &Store,
    pki: &Pki,
    opts: &HubOptions,
    cluster: &HubClusterOptions,
    out: &Path,
    only_node: Option<usize>,
) -> Result<Vec<HubFiles>, HubError> {
    if cluster.nodes.len() < 3 {
        return Err(HubError::Cluster(format!(
            "{} nodes given, at least three are needed (JetStream keeps a quorum)",
            cluster.nodes.len()
        )));
    }
    if let Some(n) = only_node
        .into_iter()
        .chain(cluster.rotate_node_keys.iter().copied())
        .find(|n| *n >= cluster.nodes.len())
    {
        return Err(HubError::Cluster(format!(
            "node {n} asked for, the cluster has {} (counted from 0)",
            cluster.nodes.len()
        )));
    }
    let shared = Shared::load(store, pki).await?;
    for &node in &cluster.rotate_node_keys {
        pki.rotate_hub_node_key(store, &cluster.name, node)
            .await
            .map_err(identity("rotating a hub cluster node's key"))?;
    }
    let out = prepare_dir(out)?;
    let mut certs = Vec::with_capacity(cluster.nodes.len());
    let mut pins = Vec::with_capacity(cluster.nodes.len());
    for (i, node) in cluster.nodes.iter().enumerate() {
        let mut hosts = vec![node.clone()];
        hosts.extend(opts.hosts.iter().filter(|h| *h != node).cloned());
        // The node's kept key: its pin is the same in every render.
        let key = pki
            .hub_node_key(store, &cluster.name, i)
            .await
            .map_err(identity("loading a hub cluster node's key"))?;
        let cert =
            issue_platform_server_for_key(&shared.root, "hub", &hosts, &pki.issue_options(), &key)
                .map_err(HubError::IssueCertificate)?;
        pins.push(serviceradar_pki::spki_sha256(&cert.cert_pem).map_err(HubError::PinCertificate)?);
        certs.push(cert);
    }
    let routes: Vec<String> = (0..cluster.nodes.len())
        .map(|i| {
            let port = cluster.route_port.saturating_add(cluster.port_offset(i));
            format!("nats://{}:{port}", url_host(&cluster.nodes[i]))
        })
        .collect();
    let mut written = Vec::with_capacity(cluster.nodes.len());
    for (i, cert) in certs.iter().enumerate() {
        if only_node.is_some_and(|n| n != i) {
            continue;
        }
        let offset = cluster.port_offset(i);
        let shift = |listen: &str| shift_port(listen, offset);
        let node_opts = HubOptions {
            server_name: format!("{}-{i}", opts.server_name),
            hosts: opts.hosts.clone(),
            client_listen: shift(&opts.client_listen)?,
            leafnode_listen: shift(&opts.leafnode_listen)?,
            monitoring_listen: opts.monitoring_listen.as_deref().map(shift).transpose()?,
            jetstream_store_dir: opts.jetstream_store_dir.clone(),
            resolver_dir: opts.resolver_dir.clone(),
        };
        let dir = prepare_dir(&out.join(format!("node-{i}")))?;
        let route_listen = shift(&format!(
            "{}:{}",
            cluster.route_listen_host, cluster.route_port
        ))?;
        let cluster_input = |tls: TlsFiles| HubClusterInput {
            name: cluster.name.clone(),
            node: i,
            listen: route_listen.clone(),
            routes: routes.clone(),
            tls,
            pinned_certs: pins.clone(),
        };
        written.push(write_node(
            &shared,
            &node_opts,
            cert,
            &dir,
            Some(&cluster_input),
            Some(&cluster.resolver_interval),
        )?);
    }
    Ok(written)
}

/// A host as it appears in a URL (IPv6 in brackets).
fn url_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// `host:port` with the port moved up by `offset`.
pub(crate) fn shift_port(listen: &str, offset: u16) -> Result<String, HubError> {
    let bad = || HubError::Cluster(format!("{listen:?} is not host:port"));
    let (host, port) = listen.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let port = port.checked_add(offset).ok_or_else(bad)?;
    Ok(format!("{host}:{port}"))
}

/// What every node's config shares: the root, the operator and the accounts.
struct Shared {
    root: serviceradar_pki::CertificateAuthority,
    operator_jwt: String,
    system_account: String,
    accounts: Vec<String>,
    tenant_accounts: usize,
}

impl Shared {
    async fn load(store: &Store, pki: &Pki) -> Result<Self, HubError> {
        let root = pki
            .root_ca(store)
            .await
            .map_err(identity("loading the platform root CA"))?;
        let (operator, sys) = pki
            .operator(store)
            .await
            .map_err(identity("loading the NATS operator"))?;
        for tenant in store
            .list_tenants()
            .await
            .map_err(store_error("listing tenants"))?
        {
            pki.tenant_account(store, &tenant)
                .await
                .map_err(identity("loading a tenant's NATS account"))?;
        }
        let tenant_jwts = store
            .all_tenant_account_jwts()
            .await
            .map_err(store_error("reading the tenant account JWTs"))?
            .into_iter()
            .map(|account| account.jwt)
            .collect::<Vec<_>>();
        let mut accounts = vec![
            pki.system_account_jwt(store)
                .await
                .map_err(identity("signing the system account JWT"))?,
            pki.leaf_auth_account_jwt(store)
                .await
                .map_err(identity("signing the leaf authorization account JWT"))?,
        ];
        let tenant_accounts = tenant_jwts.len();
        accounts.extend(tenant_jwts);
        let operator_jwt = operator.operator_jwt().map_err(|source| HubError::Jwt {
            what: "signing the operator JWT",
            source,
        })?;
        Ok(Self {
            root,
            operator_jwt,
            system_account: sys.public_key(),
            accounts,
            tenant_accounts,
        })
    }
}

fn utf8(p: &Path) -> Result<String, HubError> {
    p.to_str()
        .map(str::to_owned)
        .ok_or_else(|| HubError::NonUtf8Path { path: p.to_owned() })
}

/// Creates `dir` and returns its canonical path.
fn prepare_dir(dir: &Path) -> Result<PathBuf, HubError> {
    std::fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
    dir.canonicalize().map_err(io_error("resolving", dir))
}

/// Writes one server's certificate, key, root and config into `out`.
fn write_node(
    shared: &Shared,
    opts: &HubOptions,
    server: &serviceradar_pki::IssuedCertificate,
    out: &Path,
    cluster: Option<&dyn Fn(TlsFiles) -> HubClusterInput>,
    resolver_interval: Option<&str>,
) -> Result<HubFiles, HubError> {
    let dir = utf8(out)?;
    let cert_path = out.join(names::SERVER_CERT);
    let key_path = out.join(names::SERVER_KEY);
    let root_path = out.join(names::ROOT_CA);
    std::fs::write(&cert_path, server.full_chain_pem()).map_err(io_error("writing", &cert_path))?;
    write_secret_file(&key_path, server.key_pem.as_bytes())
        .map_err(identity("writing the hub server key"))?;
    std::fs::write(&root_path, shared.root.cert_pem()).map_err(io_error("writing", &root_path))?;

    let tls = TlsFiles::new(&utf8(&cert_path)?, &utf8(&key_path)?, &utf8(&root_path)?);
    let mut input = HubConfigInput::new(
        &shared.operator_jwt,
        &shared.system_account,
        shared.accounts.clone(),
        tls.clone(),
    );
    input.server_name = opts.server_name.clone();
    input.client_listen = opts.client_listen.clone();
    input.leafnode_listen = opts.leafnode_listen.clone();
    input.monitoring_listen = opts.monitoring_listen.clone();
    input.jetstream_store_dir = opts
        .jetstream_store_dir
        .clone()
        .unwrap_or_else(|| format!("{dir}/jetstream"));
    input.resolver_dir = opts
        .resolver_dir
        .clone()
        .unwrap_or_else(|| format!("{dir}/accounts"));
    if let Some(interval) = resolver_interval {
        input.resolver_interval = interval.to_owned();
    }
    input.cluster = cluster.map(|c| c(tls));
    for dir in [&input.jetstream_store_dir, &input.resolver_dir] {
        std::fs::create_dir_all(dir).map_err(io_error("creating", Path::new(dir)))?;
    }
    let config = render_hub_config(&input).map_err(HubError::RenderConfig)?;
    let config_path = out.join(names::CONFIG);
    std::fs::write(&config_path, &config).map_err(io_error("writing", &config_path))?;
    Ok(HubFiles {
        config_path,
        config_checksum: config_checksum(&config),
        tenant_accounts: shared.tenant_accounts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_on_one_host_get_consecutive_ports() {
        let c = HubClusterOptions::new(vec![
            "127.0.0.1".into(),
            "127.0.0.1".into(),
            "hub-2.example".into(),
            "127.0.0.1".into(),
        ]);
        let offsets: Vec<u16> = (0..4).map(|i| c.port_offset(i)).collect();
        assert_eq!(offsets, [0, 1, 0, 2]);
        assert_eq!(shift_port("0.0.0.0:7422", 2).unwrap(), "0.0.0.0:7424");
        assert_eq!(shift_port("[::1]:7422", 1).unwrap(), "[::1]:7423");
        assert!(shift_port("0.0.0.0:65535", 1).is_err());
        assert!(shift_port("nonsense", 1).is_err());
        assert_eq!(url_host("::1"), "[::1]");
        assert_eq!(url_host("hub.example"), "hub.example");
    }
}
