//! The files a 3-node leaf cluster adds to a site bundle.
//!
//! Why this module exists: a clustered site runs one `nats-server` per node,
//! each with its own config and server certificate, while everything else
//! (client certificate and credentials for the hub link, CAs, buffer stream)
//! is shared. Every node's config references the *same* install paths as a
//! single leaf's (`certs/leaf-server.pem`, ...), so the per-node files are
//! shipped under `nodes/node-{i}/` and put in place by whoever starts the
//! node: `setup.sh --node N` (systemd, one node per machine, or `--prefix`
//! for a lab on one machine), `nodes/node-{i}/docker-compose.yml`, or the
//! StatefulSet's init container, which picks its node by pod ordinal.
//!
//! The Kubernetes variant (`kubernetes/leaf-cluster.yaml` plus a root
//! `kustomization.yaml` that turns the bundle's files into one Secret) is a
//! StatefulSet of 3 replicas with pod anti-affinity and a zone topology
//! spread, a PersistentVolumeClaim per pod for JetStream, a headless service
//! whose pod names the node certificates carry, a client service and a
//! PodDisruptionBudget that keeps two nodes (the JetStream quorum) up.

use std::fmt::Write as _;

use super::{SiteBundle, names};
use crate::validate;
use crate::{BundleError, SecretText};

/// One node of a clustered leaf.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    /// The node's rendered `nats-leaf.conf` (same install paths as a
    /// single leaf's).
    pub leaf_conf: String,
    /// The node's server certificate (chain up to the tenant CA): client
    /// listener and both ends of its routes.
    pub server_cert_pem: String,
    /// Its key.
    pub server_key_pem: SecretText,
    /// Where collectors reach the node (`tls://host:port`).
    pub url: String,
    /// The node's client port.
    pub client_port: u16,
    /// The node's route port.
    pub route_port: u16,
    /// The node's (localhost) monitoring port.
    pub monitoring_port: u16,
}

/// The cluster part of a [`SiteBundle`].
#[derive(Debug, Clone)]
pub struct SiteCluster {
    /// The nodes, in node order (3).
    pub nodes: Vec<ClusterNode>,
    /// The StatefulSet and headless service name (`sr-leaf-{site}`).
    pub kubernetes_name: String,
}

impl SiteCluster {
    pub(super) fn validate(&self) -> Result<(), BundleError> {
        if self.nodes.len() != 3 {
            return Err(BundleError::InvalidText {
                field: "cluster.nodes",
                reason: "a leaf cluster has exactly 3 nodes",
            });
        }
        validate::slug("cluster.kubernetes_name", &self.kubernetes_name)?;
        for node in &self.nodes {
            validate::file_text("cluster.nodes.leaf_conf", &node.leaf_conf)?;
            validate::pem(
                "cluster.nodes.server_cert_pem",
                &node.server_cert_pem,
                validate::PemKind::Certificate,
            )?;
            validate::pem(
                "cluster.nodes.server_key_pem",
                node.server_key_pem.expose(),
                validate::PemKind::PrivateKey,
            )?;
            validate::nats_url("cluster.nodes.url", &node.url)?;
            if node.client_port == 0 || node.route_port == 0 || node.monitoring_port == 0 {
                return Err(BundleError::InvalidPorts("ports must not be 0"));
            }
        }
        Ok(())
    }
}

/// `nodes/node-{i}/{file}`.
pub(super) fn node_path(node: usize, file: &str) -> String {
    format!("nodes/node-{node}/{file}")
}

/// `nodes/node-{i}/docker-compose.yml`: the node on this machine, host
/// networking, its own config and certificate mounted over the shared ones.
pub(super) fn docker_compose(bundle: &SiteBundle, node: usize, n: &ClusterNode) -> String {
    let p = &bundle.paths;
    format!(
        "# ServiceRadar Edge NATS leaf cluster (tenant {tenant}, site {site}): node {node}.\n\
         # Run on the machine of node {node} ({url}), from the bundle directory:\n\
         #   docker compose -f nodes/node-{node}/docker-compose.yml up -d\n\
         # Host networking: client port {client}, routes on {route} (mutual TLS),\n\
         # monitoring on 127.0.0.1:{mon}. Each node keeps its own link to the hub.\n\
         services:\n\
         \x20 nats-leaf:\n\
         \x20   image: {nats_image}\n\
         \x20   container_name: serviceradar-nats-leaf-{site}-{node}\n\
         \x20   command: [\"-c\", \"{conf}\"]\n\
         \x20   network_mode: host\n\
         \x20   restart: unless-stopped\n\
         \x20   volumes:\n\
         \x20     - \"./{conf_name}:{conf}:ro\"\n\
         \x20     - \"../../certs:{certs}:ro\"\n\
         \x20     - \"./{server_cert}:{certs}/{server_cert}:ro\"\n\
         \x20     - \"./{server_key}:{certs}/{server_key}:ro\"\n\
         \x20     - \"../../creds/{creds_name}:{creds}:ro\"\n\
         \x20     - \"jetstream:{jetstream}\"\n\
         volumes:\n\
         \x20 jetstream:\n\
         \x20   name: serviceradar-nats-leaf-{tenant}-{site}-{node}-jetstream\n",
        tenant = bundle.tenant_slug,
        site = bundle.site_slug,
        nats_image = super::NATS_IMAGE,
        url = n.url,
        client = n.client_port,
        route = n.route_port,
        mon = n.monitoring_port,
        conf = p.config_file(),
        conf_name = names::CONFIG_FILE,
        certs = p.certs_dir,
        server_cert = names::LEAF_SERVER_CERT,
        server_key = names::LEAF_SERVER_KEY,
        creds = p.creds_file(),
        creds_name = names::LEAF_CREDS,
        jetstream = p.jetstream_dir,
    )
}

/// The bundle files that go into the Kubernetes Secret, as
/// (secret key, bundle path).
fn secret_files(bundle: &SiteBundle, cluster: &SiteCluster) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for node in 0..cluster.nodes.len() {
        for file in [
            names::CONFIG_FILE,
            names::LEAF_SERVER_CERT,
            names::LEAF_SERVER_KEY,
        ] {
            files.push((format!("node-{node}-{file}"), node_path(node, file)));
        }
    }
    for file in [
        names::LEAF_CLIENT_CERT,
        names::LEAF_CLIENT_KEY,
        names::TENANT_CA,
        names::CA_CHAIN,
        names::ROOT_CA,
    ] {
        files.push((file.to_owned(), format!("certs/{file}")));
    }
    files.push((
        names::LEAF_CREDS.to_owned(),
        format!("creds/{}", names::LEAF_CREDS),
    ));
    let _ = bundle;
    files
}

/// The root `kustomization.yaml`: `kubectl apply -k .` from the unpacked
/// bundle creates the Secret from the bundle's files and the objects of
/// `kubernetes/leaf-cluster.yaml`.
pub(super) fn kustomization(bundle: &SiteBundle, cluster: &SiteCluster) -> String {
    let mut out = format!(
        "# ServiceRadar Edge NATS leaf cluster (tenant {tenant}, site {site}) on Kubernetes.\n\
         # From the unpacked bundle directory:\n\
         #   kubectl create namespace serviceradar-edge   # or another namespace\n\
         #   kubectl apply -n serviceradar-edge -k .\n\
         apiVersion: kustomize.config.k8s.io/v1beta1\n\
         kind: Kustomization\n\
         resources:\n\
         \x20 - kubernetes/leaf-cluster.yaml\n\
         secretGenerator:\n\
         \x20 - name: {name}-files\n\
         \x20   options:\n\
         \x20     disableNameSuffixHash: true\n\
         \x20   files:\n",
        tenant = bundle.tenant_slug,
        site = bundle.site_slug,
        name = cluster.kubernetes_name,
    );
    for (key, path) in secret_files(bundle, cluster) {
        let _ = writeln!(out, "      - {key}={path}");
    }
    out
}

/// `kubernetes/leaf-cluster.yaml`: headless and client services, the
/// StatefulSet and its PodDisruptionBudget.
pub(super) fn kubernetes(bundle: &SiteBundle, cluster: &SiteCluster) -> String {
    let p = &bundle.paths;
    let n0 = &cluster.nodes[0];
    let name = &cluster.kubernetes_name;
    let mut copies = String::new();
    for (key, _) in secret_files(bundle, cluster) {
        if key.starts_with("node-") {
            continue;
        }
        let dest = if key == names::LEAF_CREDS {
            p.creds_file()
        } else {
            p.cert_file(&key)
        };
        let _ = write!(copies, " && cp /bundle/{key} {dest}");
    }
    format!(
        "# ServiceRadar Edge NATS leaf cluster (tenant {tenant}, site {site}).\n\
         # Applied through ../kustomization.yaml, which creates the Secret {name}-files.\n\
         # Pod i runs node i: the init container copies node i's config and server\n\
         # certificate (whose SANs name {name}-i.{name}) into place.\n\
         apiVersion: v1\n\
         kind: Service\n\
         metadata:\n\
         \x20 name: {name}\n\
         \x20 labels:\n\
         \x20   app.kubernetes.io/name: {name}\n\
         \x20   app.kubernetes.io/part-of: serviceradar-edge\n\
         spec:\n\
         \x20 clusterIP: None\n\
         \x20 publishNotReadyAddresses: true\n\
         \x20 selector:\n\
         \x20   app.kubernetes.io/name: {name}\n\
         \x20 ports:\n\
         \x20   - name: client\n\
         \x20     port: {client}\n\
         \x20   - name: cluster\n\
         \x20     port: {route}\n\
         ---\n\
         apiVersion: v1\n\
         kind: Service\n\
         metadata:\n\
         \x20 name: {name}-client\n\
         \x20 labels:\n\
         \x20   app.kubernetes.io/name: {name}\n\
         spec:\n\
         \x20 selector:\n\
         \x20   app.kubernetes.io/name: {name}\n\
         \x20 ports:\n\
         \x20   - name: client\n\
         \x20     port: {client}\n\
         \x20     targetPort: client\n\
         ---\n\
         apiVersion: apps/v1\n\
         kind: StatefulSet\n\
         metadata:\n\
         \x20 name: {name}\n\
         \x20 labels:\n\
         \x20   app.kubernetes.io/name: {name}\n\
         \x20   app.kubernetes.io/part-of: serviceradar-edge\n\
         spec:\n\
         \x20 serviceName: {name}\n\
         \x20 replicas: 3\n\
         \x20 podManagementPolicy: Parallel\n\
         \x20 selector:\n\
         \x20   matchLabels:\n\
         \x20     app.kubernetes.io/name: {name}\n\
         \x20 template:\n\
         \x20   metadata:\n\
         \x20     labels:\n\
         \x20       app.kubernetes.io/name: {name}\n\
         \x20       app.kubernetes.io/part-of: serviceradar-edge\n\
         \x20   spec:\n\
         \x20     affinity:\n\
         \x20       podAntiAffinity:\n\
         \x20         requiredDuringSchedulingIgnoredDuringExecution:\n\
         \x20           - topologyKey: kubernetes.io/hostname\n\
         \x20             labelSelector:\n\
         \x20               matchLabels:\n\
         \x20                 app.kubernetes.io/name: {name}\n\
         \x20     topologySpreadConstraints:\n\
         \x20       - maxSkew: 1\n\
         \x20         topologyKey: topology.kubernetes.io/zone\n\
         \x20         whenUnsatisfiable: ScheduleAnyway\n\
         \x20         labelSelector:\n\
         \x20           matchLabels:\n\
         \x20             app.kubernetes.io/name: {name}\n\
         \x20     terminationGracePeriodSeconds: 60\n\
         \x20     initContainers:\n\
         \x20       - name: node-files\n\
         \x20         image: {nats_image}\n\
         \x20         command:\n\
         \x20           - sh\n\
         \x20           - -ec\n\
         \x20           - >-\n\
         \x20             n=${{HOSTNAME##*-}} && mkdir -p {certs}\n\
         \x20             && cp /bundle/node-$n-{conf_name} {conf}\n\
         \x20             && cp /bundle/node-$n-{server_cert} {certs}/{server_cert}\n\
         \x20             && cp /bundle/node-$n-{server_key} {certs}/{server_key}{copies}\n\
         \x20             && chmod 0600 {certs}/{server_key} {certs}/{client_key} {creds}\n\
         \x20         volumeMounts:\n\
         \x20           - name: bundle\n\
         \x20             mountPath: /bundle\n\
         \x20             readOnly: true\n\
         \x20           - name: config\n\
         \x20             mountPath: {config_dir}\n\
         \x20     containers:\n\
         \x20       - name: nats-leaf\n\
         \x20         image: {nats_image}\n\
         \x20         args: [\"-c\", \"{conf}\"]\n\
         \x20         ports:\n\
         \x20           - name: client\n\
         \x20             containerPort: {client}\n\
         \x20           - name: cluster\n\
         \x20             containerPort: {route}\n\
         \x20         resources:\n\
         \x20           requests:\n\
         \x20             cpu: 100m\n\
         \x20             memory: 256Mi\n\
         \x20         readinessProbe:\n\
         \x20           exec:\n\
         \x20             command: [\"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:{mon}/healthz?js-enabled-only=true\"]\n\
         \x20           periodSeconds: 10\n\
         \x20         livenessProbe:\n\
         \x20           exec:\n\
         \x20             command: [\"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:{mon}/healthz?js-enabled-only=true\"]\n\
         \x20           initialDelaySeconds: 30\n\
         \x20           periodSeconds: 30\n\
         \x20         volumeMounts:\n\
         \x20           - name: config\n\
         \x20             mountPath: {config_dir}\n\
         \x20             readOnly: true\n\
         \x20           - name: jetstream\n\
         \x20             mountPath: {jetstream}\n\
         \x20     volumes:\n\
         \x20       - name: bundle\n\
         \x20         secret:\n\
         \x20           secretName: {name}-files\n\
         \x20       - name: config\n\
         \x20         emptyDir:\n\
         \x20           medium: Memory\n\
         \x20 volumeClaimTemplates:\n\
         \x20   - metadata:\n\
         \x20       name: jetstream\n\
         \x20     spec:\n\
         \x20       accessModes: [\"ReadWriteOnce\"]\n\
         \x20       resources:\n\
         \x20         requests:\n\
         \x20           storage: 10Gi\n\
         ---\n\
         apiVersion: policy/v1\n\
         kind: PodDisruptionBudget\n\
         metadata:\n\
         \x20 name: {name}\n\
         spec:\n\
         \x20 minAvailable: 2\n\
         \x20 selector:\n\
         \x20   matchLabels:\n\
         \x20     app.kubernetes.io/name: {name}\n",
        tenant = bundle.tenant_slug,
        site = bundle.site_slug,
        nats_image = super::NATS_IMAGE,
        client = n0.client_port,
        route = n0.route_port,
        mon = n0.monitoring_port,
        conf = p.config_file(),
        conf_name = names::CONFIG_FILE,
        config_dir = p.config_dir,
        certs = p.certs_dir,
        server_cert = names::LEAF_SERVER_CERT,
        server_key = names::LEAF_SERVER_KEY,
        client_key = names::LEAF_CLIENT_KEY,
        creds = p.creds_file(),
        jetstream = p.jetstream_dir,
    )
}
