//! `serviceradar-core admin hub-config`: its flags and what it does, beside
//! the config it renders (the binary flattens [`HubConfigArgs`] into the
//! command and only opens the store and the keyring).

use std::fmt::Write as _;
use std::path::PathBuf;

use serviceradar_identity::Pki;
use serviceradar_store::Store;

use crate::HubError;
use crate::config::{
    DEFAULT_CLUSTER_PORT, HubClusterOptions, HubOptions, names, write_hub_cluster_config,
    write_hub_config,
};

/// Where the hub's files go, what it listens on, and (for a cluster) its
/// nodes.
#[derive(Debug, Clone, clap::Args)]
pub struct HubConfigArgs {
    /// Output directory (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// DNS name or IP leaves dial; repeat for several (SANs of the hub certificate).
    #[arg(long = "host", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
    pub hosts: Vec<String>,
    /// Client listener (not 4222, a site leaf's default client port).
    #[arg(long, default_value = "0.0.0.0:4322")]
    pub client_listen: String,
    /// Leafnode listener (what `SERVICERADAR_HUB_LEAFNODE_URL` points at).
    #[arg(long, default_value = "0.0.0.0:7422")]
    pub leafnode_listen: String,
    /// Monitoring listener (empty disables it; unauthenticated, keep it
    /// local; not 8222, a site leaf's default monitoring port).
    #[arg(long, default_value = "127.0.0.1:8322")]
    pub monitoring_listen: String,
    /// JetStream store directory (default OUT/jetstream).
    #[arg(long)]
    pub jetstream_dir: Option<String>,
    /// Account resolver directory (default OUT/accounts).
    #[arg(long)]
    pub resolver_dir: Option<String>,
    /// Render a hub cluster instead of one server: a node's DNS name or
    /// IP, repeated once per node (3 or more), in node order. Writes
    /// OUT/node-{i}/ per node; nodes on one host get consecutive ports.
    #[arg(long = "cluster-node", value_delimiter = ',')]
    pub cluster_nodes: Vec<String>,
    /// A hub cluster's route port (mutual TLS between the nodes; not
    /// 6222, a site leaf cluster's).
    #[arg(long, default_value_t = DEFAULT_CLUSTER_PORT)]
    pub cluster_port: u16,
    /// How often a hub cluster's nodes compare their account directories
    /// (`30s`, `2m`); pushes reach every live node at once regardless.
    #[arg(long, default_value = "2m")]
    pub resolver_interval: String,
    /// Of a hub cluster, write node N's directory only (a Kubernetes
    /// pod renders its own; the pins are the same in every render).
    #[arg(long)]
    pub only_node: Option<usize>,
    /// Of a hub cluster, give node N a new key before rendering (repeat or
    /// comma-separate; N counted from 0): for a node key that may have
    /// leaked. Its certificate and every node's pin of it change, so
    /// install the new config on every node, one node at a time (the two
    /// others keep their routes and the quorum while one restarts). Run it
    /// once: later renders, `--only-node` ones too, use the new key.
    #[arg(long = "rotate-node-key", value_delimiter = ',')]
    pub rotate_node_keys: Vec<usize>,
}

impl HubConfigArgs {
    /// Writes the hub's (or each cluster node's) config, certificate, key
    /// and root CA, and returns what to tell the operator: the files and
    /// the command that starts each server.
    ///
    /// # Errors
    /// What rendering or writing the files fails with.
    pub async fn write(&self, store: &Store, pki: &Pki) -> Result<String, HubError> {
        let opts = HubOptions {
            server_name: "sr-hub".into(),
            hosts: self.hosts.clone(),
            client_listen: self.client_listen.clone(),
            leafnode_listen: self.leafnode_listen.clone(),
            monitoring_listen: Some(self.monitoring_listen.clone()).filter(|m| !m.is_empty()),
            jetstream_store_dir: self.jetstream_dir.clone(),
            resolver_dir: self.resolver_dir.clone(),
        };
        let mut report = String::new();
        if self.cluster_nodes.is_empty() && !self.rotate_node_keys.is_empty() {
            return Err(HubError::Cluster(
                "--rotate-node-key is for a hub cluster: give its nodes with --cluster-node".into(),
            ));
        }
        if self.cluster_nodes.is_empty() {
            let written = write_hub_config(store, pki, &opts, &self.out).await?;
            let _ = writeln!(
                report,
                "wrote {} ({}, {} tenant accounts) with {}, {} and {}\nrun: nats-server -c {}",
                written.config_path.display(),
                written.config_checksum,
                written.tenant_accounts,
                names::SERVER_CERT,
                names::SERVER_KEY,
                names::ROOT_CA,
                written.config_path.display()
            );
            return Ok(report);
        }
        let cluster = HubClusterOptions {
            route_port: self.cluster_port,
            resolver_interval: self.resolver_interval.clone(),
            rotate_node_keys: self.rotate_node_keys.clone(),
            ..HubClusterOptions::new(self.cluster_nodes.clone())
        };
        let nodes =
            write_hub_cluster_config(store, pki, &opts, &cluster, &self.out, self.only_node)
                .await?;
        let numbers: Vec<usize> = self
            .only_node
            .map_or_else(|| (0..nodes.len()).collect(), |n| vec![n]);
        for (i, written) in numbers.into_iter().zip(&nodes) {
            let _ = writeln!(
                report,
                "node {i}: wrote {} ({}, {} tenant accounts)\nrun: nats-server -c {}",
                written.config_path.display(),
                written.config_checksum,
                written.tenant_accounts,
                written.config_path.display()
            );
        }
        for node in &self.rotate_node_keys {
            let _ = writeln!(
                report,
                "node {node}: new key; every node's config pins it now: install the new config \
                 on every node, one node at a time"
            );
        }
        Ok(report)
    }
}
