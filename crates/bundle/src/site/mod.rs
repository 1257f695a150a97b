//! The edge site bundle: everything an admin needs to run a site's NATS leaf.
//!
//! The control plane provisions a site (certificates, credentials, rendered
//! `nats-leaf.conf`); this module packs that into one tar.gz with an installer
//! (`setup.sh`), a systemd unit, a docker compose file, a foreground runner and a
//! README. It is pure: no network, no database, no clock. The same
//! [`SiteBundle`] always gives the same bytes.
//!
//! Layout (under `serviceradar-site-{tenant}-{site}/`):
//!
//! | path | mode |
//! | --- | --- |
//! | `README.md` | 0644 |
//! | `setup.sh` | 0755 |
//! | `run-foreground.sh` | 0755 |
//! | `nats-leaf.conf` | 0644 |
//! | `serviceradar-nats-leaf.service` | 0644 |
//! | `docker-compose.yml` | 0644 |
//! | `certs/leaf-client.pem`, `certs/leaf-server.pem` | 0644 |
//! | `certs/tenant-ca.pem`, `certs/ca-chain.pem`, `certs/root-ca.pem` | 0644 |
//! | `certs/leaf-client-key.pem`, `certs/leaf-server-key.pem` | 0600 |
//! | `certs/agent.pem` / `certs/agent-key.pem` (optional) | 0644 / 0600 |
//! | `agent.toml` (optional, with the agent certificate) | 0644 |
//! | `creds/leaf.creds` | 0600 |
//! | `streams/edge-buffer.json` (optional) | 0644 |
//!
//! A 3-node leaf cluster ([`SiteCluster`]) ships no top-level
//! `nats-leaf.conf` or `certs/leaf-server*.pem`; instead, per node,
//! `nodes/node-{i}/nats-leaf.conf`, `leaf-server.pem`, `leaf-server-key.pem`
//! (0600) and `docker-compose.yml`, plus `kustomization.yaml` and
//! `kubernetes/leaf-cluster.yaml`; `setup.sh --node N` installs node N.

mod cluster;
mod readme;
mod render;

pub use cluster::{ClusterNode, SiteCluster};

use std::collections::BTreeSet;

use uuid::Uuid;

use crate::archive::ArchiveBuilder;
use crate::validate::{self, PemKind};
use crate::{BundleError, SecretText};

/// The `nats-server` image the bundle's Docker Compose and Kubernetes
/// variants run: the official image of the release line the project tests
/// its leaves with (nats-server 2.15; the leaf's device authorization
/// callout needs 2.10 or later).
pub const NATS_IMAGE: &str = "nats:2.15-alpine";

/// File names inside the bundle and on the edge box.
///
/// The config renderer must reference the certificates and credentials by these
/// names below [`InstallPaths`] (they match the defaults of
/// `serviceradar-natsconf`'s `LeafConfigInput::new`); [`site_bundle`] refuses a
/// config that points at a file in the config or certs directory that the bundle
/// does not install.
pub mod names {
    /// The leaf's configuration file.
    pub const CONFIG_FILE: &str = "nats-leaf.conf";
    /// Client certificate the leaf presents to the hub (leafnode remote).
    pub const LEAF_CLIENT_CERT: &str = "leaf-client.pem";
    /// Key of [`LEAF_CLIENT_CERT`].
    pub const LEAF_CLIENT_KEY: &str = "leaf-client-key.pem";
    /// Server certificate the leaf presents to local collectors.
    pub const LEAF_SERVER_CERT: &str = "leaf-server.pem";
    /// Key of [`LEAF_SERVER_CERT`].
    pub const LEAF_SERVER_KEY: &str = "leaf-server-key.pem";
    /// The tenant intermediate CA alone: what local client certificates must
    /// chain to (the first block of [`CA_CHAIN`]).
    pub const TENANT_CA: &str = "tenant-ca.pem";
    /// Tenant intermediate CA followed by the root CA.
    pub const CA_CHAIN: &str = "ca-chain.pem";
    /// The platform root CA.
    pub const ROOT_CA: &str = "root-ca.pem";
    /// Optional edge agent certificate.
    pub const AGENT_CERT: &str = "agent.pem";
    /// Key of [`AGENT_CERT`].
    pub const AGENT_KEY: &str = "agent-key.pem";
    /// NATS credentials (user JWT + nkey seed) of the leafnode remote; shipped
    /// as `creds/leaf.creds`, installed into the config directory.
    pub const LEAF_CREDS: &str = "leaf.creds";
    /// Optional JetStream buffer stream definition.
    pub const EDGE_BUFFER_STREAM: &str = "edge-buffer.json";
    /// The systemd unit.
    pub const UNIT: &str = "serviceradar-nats-leaf.service";
    /// The edge agent's configuration (paths in it are relative to the
    /// bundle; `setup.sh` rewrites them to the installed certificates).
    pub const AGENT_CONFIG: &str = "agent.toml";
    /// The edge agent's systemd unit (in bundles that carry an agent).
    pub const AGENT_UNIT: &str = "serviceradar-agent.service";
    /// The edge agent's binary, which `setup.sh` installs when it is beside
    /// the script (or uses when it is on `PATH`).
    pub const AGENT_BIN: &str = "serviceradar-agent";
    /// The system user the unit runs as (created by `setup.sh` when missing).
    pub const SERVICE_USER: &str = "serviceradar-nats";
}

/// Where the leaf's files live on the edge box. All absolute, of the
/// characters `[A-Za-z0-9._/-]`.
///
/// The rendered `nats-leaf.conf` references files through these paths
/// (e.g. [`InstallPaths::cert_file`], [`InstallPaths::creds_file`]);
/// `setup.sh --prefix P` rewrites exactly these path prefixes to `P/...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallPaths {
    /// Directory of `nats-leaf.conf` and `leaf.creds` (default
    /// `/etc/serviceradar/nats`).
    pub config_dir: String,
    /// Certificates and keys (default `/etc/serviceradar/nats/certs`).
    pub certs_dir: String,
    /// JetStream store (default `/var/lib/serviceradar/nats/jetstream`).
    pub jetstream_dir: String,
}

impl Default for InstallPaths {
    fn default() -> Self {
        Self {
            config_dir: "/etc/serviceradar/nats".to_owned(),
            certs_dir: "/etc/serviceradar/nats/certs".to_owned(),
            jetstream_dir: "/var/lib/serviceradar/nats/jetstream".to_owned(),
        }
    }
}

impl InstallPaths {
    /// Absolute path of `nats-leaf.conf`.
    pub fn config_file(&self) -> String {
        format!("{}/{}", self.config_dir, names::CONFIG_FILE)
    }

    /// Absolute path of a file in the certs directory (use a [`names`] constant).
    pub fn cert_file(&self, name: &str) -> String {
        format!("{}/{name}", self.certs_dir)
    }

    /// Absolute path of the leaf's `.creds` file.
    pub fn creds_file(&self) -> String {
        format!("{}/{}", self.config_dir, names::LEAF_CREDS)
    }

    fn validate(&self) -> Result<(), BundleError> {
        let all = [
            ("config_dir", &self.config_dir),
            ("certs_dir", &self.certs_dir),
            ("jetstream_dir", &self.jetstream_dir),
        ];
        for (field, value) in all {
            validate::install_path(field, value)?;
        }
        for (i, (field, a)) in all.iter().enumerate() {
            if all[i + 1..].iter().any(|(_, b)| a == b) {
                return Err(BundleError::InvalidInstallPath {
                    field,
                    value: (*a).clone(),
                    reason: "the install directories must be distinct",
                });
            }
        }
        Ok(())
    }

    /// The path prefixes `setup.sh --prefix` rewrites, longest first.
    fn rewrite_order(&self) -> Vec<&str> {
        let mut paths: Vec<&str> = vec![&self.config_dir, &self.certs_dir, &self.jetstream_dir];
        paths.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        paths
    }
}

/// An edge agent's certificate and key, shipped with the site bundle.
#[derive(Debug, Clone)]
pub struct AgentPki {
    /// PEM certificate (`agent.{site}.{tenant}.serviceradar`).
    pub cert_pem: String,
    /// PEM private key.
    pub key_pem: SecretText,
    /// The agent's config file (`agent.toml`, installed beside
    /// `nats-leaf.conf`; certificate paths in it are relative to its directory).
    pub config_toml: Option<String>,
}

/// The site's certificates and keys (all PEM).
#[derive(Debug, Clone)]
pub struct SitePki {
    /// Leaf client certificate, presented to the hub on the leafnode link.
    pub leaf_client_cert_pem: String,
    /// Key of the leaf client certificate.
    pub leaf_client_key_pem: SecretText,
    /// Leaf server certificate, presented to local collectors.
    pub leaf_server_cert_pem: String,
    /// Key of the leaf server certificate.
    pub leaf_server_key_pem: SecretText,
    /// Tenant intermediate CA followed by the root CA. The first block (the
    /// tenant CA) is also shipped alone as `certs/tenant-ca.pem`.
    pub ca_chain_pem: String,
    /// The platform root CA.
    pub root_ca_pem: String,
    /// Optional edge agent certificate and key.
    pub agent: Option<AgentPki>,
}

/// Everything that goes into one edge site bundle.
#[derive(Debug, Clone)]
pub struct SiteBundle {
    /// Tenant slug (`[a-z0-9-]`).
    pub tenant_slug: String,
    /// Site slug (`[a-z0-9-]`).
    pub site_slug: String,
    /// Display name ("NYC Office"): arbitrary user text without control
    /// characters. Appears in README text and, single-quoted, in `setup.sh`.
    pub site_name: String,
    /// The site's id.
    pub site_id: Uuid,
    /// The rendered `nats-leaf.conf`, referencing files by their canonical
    /// absolute paths (see [`InstallPaths`] and [`names`]).
    pub leaf_conf: String,
    /// Canonical install paths on the edge box.
    pub paths: InstallPaths,
    /// Certificates and keys.
    pub pki: SitePki,
    /// The leaf's NATS `.creds` file.
    pub leaf_creds: SecretText,
    /// Hub leafnode URL the leaf dials (for the README), e.g. `tls://hub:7422`.
    pub hub_leafnode_url: String,
    /// URL collectors at the site use to reach this leaf, e.g. `nats://10.0.1.50:4222`.
    pub nats_leaf_url: String,
    /// Local client port of the leaf.
    pub client_port: u16,
    /// Monitoring (HTTP) port of the leaf, bound to localhost.
    pub monitoring_port: u16,
    /// Optional JetStream buffer stream definition (JSON), shipped as
    /// `streams/edge-buffer.json`.
    pub edge_buffer_stream_json: Option<String>,
    /// The nodes of a 3-node leaf cluster; `None` for one leaf server (then
    /// `leaf_conf` and the `pki` server certificate are the leaf's; with a
    /// cluster they are not shipped).
    pub cluster: Option<SiteCluster>,
}

impl SiteBundle {
    /// The bundle's top-level directory: `serviceradar-site-{tenant}-{site}`.
    pub fn root_dir(&self) -> String {
        format!("serviceradar-site-{}-{}", self.tenant_slug, self.site_slug)
    }

    /// A file name for the download: `{root_dir}.tar.gz`.
    pub fn file_name(&self) -> String {
        format!("{}.tar.gz", self.root_dir())
    }

    fn validate(&self) -> Result<(), BundleError> {
        validate::slug("tenant_slug", &self.tenant_slug)?;
        validate::slug("site_slug", &self.site_slug)?;
        validate::display_text("site_name", &self.site_name)?;
        validate::file_text("leaf_conf", &self.leaf_conf)?;
        self.paths.validate()?;
        let pki = &self.pki;
        validate::pem(
            "leaf_client_cert_pem",
            &pki.leaf_client_cert_pem,
            PemKind::Certificate,
        )?;
        validate::pem(
            "leaf_client_key_pem",
            pki.leaf_client_key_pem.expose(),
            PemKind::PrivateKey,
        )?;
        validate::pem(
            "leaf_server_cert_pem",
            &pki.leaf_server_cert_pem,
            PemKind::Certificate,
        )?;
        validate::pem(
            "leaf_server_key_pem",
            pki.leaf_server_key_pem.expose(),
            PemKind::PrivateKey,
        )?;
        validate::pem("ca_chain_pem", &pki.ca_chain_pem, PemKind::Certificate)?;
        validate::pem("root_ca_pem", &pki.root_ca_pem, PemKind::Certificate)?;
        if let Some(agent) = &pki.agent {
            validate::pem("agent.cert_pem", &agent.cert_pem, PemKind::Certificate)?;
            validate::pem("agent.key_pem", agent.key_pem.expose(), PemKind::PrivateKey)?;
        }
        validate::creds("leaf_creds", self.leaf_creds.expose())?;
        validate::nats_url("hub_leafnode_url", &self.hub_leafnode_url)?;
        validate::nats_url("nats_leaf_url", &self.nats_leaf_url)?;
        if self.client_port == 0 || self.monitoring_port == 0 {
            return Err(BundleError::InvalidPorts("ports must not be 0"));
        }
        if self.client_port == self.monitoring_port {
            return Err(BundleError::InvalidPorts(
                "client and monitoring ports must differ",
            ));
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        if let Some(json) = &self.edge_buffer_stream_json {
            validate::file_text("edge_buffer_stream_json", json)?;
            if serde_json::from_str::<serde_json::Value>(json).is_err() {
                return Err(BundleError::InvalidText {
                    field: "edge_buffer_stream_json",
                    reason: "not valid JSON",
                });
            }
        }
        Ok(())
    }
}

/// One file `setup.sh` installs from the bundle: bundle path, destination
/// directory kind (`config`, `certs`, `streams`), mode, owner (`service`/`root`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Installed {
    pub(crate) bundle_path: &'static str,
    pub(crate) dest: &'static str,
    pub(crate) mode: u32,
    pub(crate) owner: &'static str,
}

impl Installed {
    const fn new(
        bundle_path: &'static str,
        dest: &'static str,
        mode: u32,
        owner: &'static str,
    ) -> Self {
        Self {
            bundle_path,
            dest,
            mode,
            owner,
        }
    }

    /// The file's name on the edge box.
    fn file_name(&self) -> &'static str {
        self.bundle_path
            .rsplit('/')
            .next()
            .unwrap_or(self.bundle_path)
    }
}

/// The first PEM block of `chain` (the tenant CA of a tenant-then-root chain).
fn first_pem_block(chain: &str) -> Option<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let start = chain.find("-----BEGIN CERTIFICATE-----")?;
    let end = start + chain[start..].find(END)? + END.len();
    Some(format!("{}\n", &chain[start..end]))
}

/// The certificate, credential and stream files of `bundle`, in install order.
fn installed_files(bundle: &SiteBundle) -> Result<Vec<(Installed, String)>, BundleError> {
    let pki = &bundle.pki;
    let tenant_ca = first_pem_block(&pki.ca_chain_pem).ok_or(BundleError::InvalidPem {
        field: "ca_chain_pem",
        reason: "no complete CERTIFICATE block",
    })?;
    // A cluster node's own server certificate: `setup.sh --node N` puts
    // `NODE_MARK` = N (the archive holds one file per node instead).
    let (server_cert, server_key) = if bundle.cluster.is_some() {
        (
            "nodes/node-@NODE@/leaf-server.pem",
            "nodes/node-@NODE@/leaf-server-key.pem",
        )
    } else {
        ("certs/leaf-server.pem", "certs/leaf-server-key.pem")
    };
    let mut files = vec![
        (
            Installed::new("certs/leaf-client.pem", "certs", 0o644, "root"),
            pki.leaf_client_cert_pem.clone(),
        ),
        (
            Installed::new("certs/leaf-client-key.pem", "certs", 0o600, "service"),
            pki.leaf_client_key_pem.expose().to_owned(),
        ),
        (
            Installed::new(server_cert, "certs", 0o644, "root"),
            pki.leaf_server_cert_pem.clone(),
        ),
        (
            Installed::new(server_key, "certs", 0o600, "service"),
            pki.leaf_server_key_pem.expose().to_owned(),
        ),
        (
            Installed::new("certs/tenant-ca.pem", "certs", 0o644, "root"),
            tenant_ca,
        ),
        (
            Installed::new("certs/ca-chain.pem", "certs", 0o644, "root"),
            pki.ca_chain_pem.clone(),
        ),
        (
            Installed::new("certs/root-ca.pem", "certs", 0o644, "root"),
            pki.root_ca_pem.clone(),
        ),
    ];
    if let Some(agent) = &pki.agent {
        files.push((
            Installed::new("certs/agent.pem", "certs", 0o644, "root"),
            agent.cert_pem.clone(),
        ));
        files.push((
            Installed::new("certs/agent-key.pem", "certs", 0o600, "root"),
            agent.key_pem.expose().to_owned(),
        ));
        if let Some(config) = &agent.config_toml {
            files.push((
                Installed::new("agent.toml", "config", 0o644, "root"),
                config.clone(),
            ));
        }
    }
    files.push((
        Installed::new("creds/leaf.creds", "config", 0o600, "service"),
        bundle.leaf_creds.expose().to_owned(),
    ));
    if let Some(json) = &bundle.edge_buffer_stream_json {
        files.push((
            Installed::new("streams/edge-buffer.json", "streams", 0o644, "root"),
            json.clone(),
        ));
    }
    Ok(files)
}

/// Whether the bundle carries an edge agent with its configuration (then
/// `setup.sh` installs and starts the agent too).
pub(crate) fn has_agent_config(bundle: &SiteBundle) -> bool {
    bundle
        .pki
        .agent
        .as_ref()
        .is_some_and(|a| a.config_toml.is_some())
}

/// Whether the site's leaf config includes the device authorization
/// callout (`include "device-auth.conf"`, see `serviceradar-natsconf`'s
/// `leaf::device_auth`): `setup.sh` then makes its keys with the agent.
pub(crate) fn uses_device_auth(bundle: &SiteBundle) -> bool {
    let includes = |conf: &str| {
        conf.lines()
            .any(|line| line.trim() == "include \"device-auth.conf\"")
    };
    match &bundle.cluster {
        None => includes(&bundle.leaf_conf),
        Some(cluster) => cluster.nodes.iter().any(|n| includes(&n.leaf_conf)),
    }
}

/// Every file directly in the config or certs directory that `conf` mentions
/// must be one the bundle installs there (`nats-leaf.conf` itself included).
fn check_config_references(
    conf: &str,
    paths: &InstallPaths,
    files: &[(Installed, String)],
) -> Result<(), BundleError> {
    let mut installed = BTreeSet::new();
    installed.insert(paths.config_file());
    for (file, _) in files {
        let dir = match file.dest {
            "certs" => &paths.certs_dir,
            "config" => &paths.config_dir,
            _ => continue,
        };
        installed.insert(format!("{dir}/{}", file.file_name()));
    }
    for dir in [&paths.config_dir, &paths.certs_dir] {
        let needle = format!("{dir}/");
        for (at, _) in conf.match_indices(&needle) {
            let rest = &conf[at + needle.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
                .unwrap_or(rest.len());
            if rest[end..].starts_with('/') {
                // a path in a subdirectory (such as the certs directory): checked
                // on its own or not ours to check
                continue;
            }
            let path = format!("{needle}{}", &rest[..end]);
            if !installed.contains(&path) {
                return Err(BundleError::ConfigReferencesMissingFile { path });
            }
        }
    }
    Ok(())
}

/// Builds the site bundle (tar.gz bytes). Deterministic: the same input gives
/// byte-identical output.
///
/// # Errors
///
/// A [`BundleError`] naming the first input that fails validation, or
/// [`BundleError::ConfigReferencesMissingFile`] when `leaf_conf` points at a
/// certificate or credentials file the bundle does not contain.
pub fn site_bundle(bundle: &SiteBundle) -> Result<Vec<u8>, BundleError> {
    bundle.validate()?;
    let files = installed_files(bundle)?;
    let mut archive = ArchiveBuilder::new(&bundle.root_dir())?;
    match &bundle.cluster {
        None => {
            check_config_references(&bundle.leaf_conf, &bundle.paths, &files)?;
            archive.add_file(
                names::CONFIG_FILE,
                validate::with_newline(&bundle.leaf_conf),
                0o644,
            )?;
        }
        Some(cluster) => {
            for (i, node) in cluster.nodes.iter().enumerate() {
                check_config_references(&node.leaf_conf, &bundle.paths, &files)?;
                let node_files = [
                    (names::CONFIG_FILE, node.leaf_conf.as_str(), 0o644),
                    (
                        names::LEAF_SERVER_CERT,
                        node.server_cert_pem.as_str(),
                        0o644,
                    ),
                    (names::LEAF_SERVER_KEY, node.server_key_pem.expose(), 0o600),
                ];
                for (name, contents, mode) in node_files {
                    archive.add_file(
                        &cluster::node_path(i, name),
                        validate::with_newline(contents),
                        mode,
                    )?;
                }
                archive.add_file(
                    &cluster::node_path(i, "docker-compose.yml"),
                    cluster::docker_compose(bundle, i, node),
                    0o644,
                )?;
            }
            archive.add_file(
                "kustomization.yaml",
                cluster::kustomization(bundle, cluster),
                0o644,
            )?;
            archive.add_file(
                "kubernetes/leaf-cluster.yaml",
                cluster::kubernetes(bundle, cluster),
                0o644,
            )?;
        }
    }
    for (file, contents) in &files {
        if file.bundle_path.contains("@NODE@") {
            continue; // one per node, added above
        }
        archive.add_file(
            file.bundle_path,
            validate::with_newline(contents),
            file.mode,
        )?;
    }
    let installs: Vec<Installed> = files.iter().map(|(f, _)| *f).collect();
    archive.add_file("setup.sh", render::setup_sh(bundle, &installs)?, 0o755)?;
    archive.add_file("run-foreground.sh", render::run_foreground(bundle)?, 0o755)?;
    archive.add_file(names::UNIT, render::systemd_unit(bundle), 0o644)?;
    if has_agent_config(bundle) {
        archive.add_file(names::AGENT_UNIT, render::agent_unit(bundle), 0o644)?;
    }
    if bundle.cluster.is_none() {
        archive.add_file("docker-compose.yml", render::docker_compose(bundle), 0o644)?;
    }
    archive.add_file("README.md", readme::render(bundle), 0o644)?;
    archive.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n";
    const CREDS: &str = "-----BEGIN NATS USER JWT-----\neyJ\n------END NATS USER JWT------\n\n-----BEGIN USER NKEY SEED-----\nSUA\n------END USER NKEY SEED------\n";

    pub(crate) fn sample() -> SiteBundle {
        let paths = InstallPaths::default();
        let conf = format!(
            "server_name: nats-nyc\ntls {{ cert_file: \"{}\" }}\nleafnodes {{ remotes = [{{ credentials: \"{}\" }}] }}\njetstream {{ store_dir: \"{}\" }}\n",
            paths.cert_file(names::LEAF_SERVER_CERT),
            paths.creds_file(),
            paths.jetstream_dir
        );
        SiteBundle {
            tenant_slug: "acme".into(),
            site_slug: "nyc-office".into(),
            site_name: "NYC Office".into(),
            site_id: Uuid::nil(),
            leaf_conf: conf,
            paths,
            pki: SitePki {
                leaf_client_cert_pem: CERT.into(),
                leaf_client_key_pem: KEY.into(),
                leaf_server_cert_pem: CERT.into(),
                leaf_server_key_pem: KEY.into(),
                ca_chain_pem: format!("{CERT}{CERT}"),
                root_ca_pem: CERT.into(),
                agent: None,
            },
            leaf_creds: CREDS.into(),
            hub_leafnode_url: "tls://hub.example.com:7422".into(),
            nats_leaf_url: "nats://10.0.1.50:4222".into(),
            client_port: 4222,
            monitoring_port: 8222,
            edge_buffer_stream_json: None,
            cluster: None,
        }
    }

    #[test]
    fn builds_and_is_deterministic() {
        let a = site_bundle(&sample()).expect("bundle");
        let b = site_bundle(&sample()).expect("bundle");
        assert_eq!(a, b);
    }

    #[test]
    fn rejects_config_pointing_at_missing_files() {
        let mut b = sample();
        b.leaf_conf
            .push_str("x: \"/etc/serviceradar/nats/certs/nats-server.pem\"\n");
        match site_bundle(&b) {
            Err(BundleError::ConfigReferencesMissingFile { path }) => {
                assert_eq!(path, "/etc/serviceradar/nats/certs/nats-server.pem");
            }
            other => panic!("unexpected {other:?}"),
        }
        let mut b = sample();
        b.leaf_conf
            .push_str("y: \"/etc/serviceradar/nats/certs/agent.pem\"\n");
        assert!(site_bundle(&b).is_err(), "agent cert absent");
    }

    #[test]
    fn tenant_ca_is_the_first_chain_block() {
        let chain = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nBBB\n-----END CERTIFICATE-----\n";
        assert_eq!(
            first_pem_block(chain).as_deref(),
            Some("-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n")
        );
        assert_eq!(first_pem_block("-----BEGIN CERTIFICATE-----\nAAA\n"), None);
    }

    /// The paths `serviceradar-natsconf`'s `LeafConfigInput::new` renders by
    /// default are all files this bundle installs.
    #[test]
    fn natsconf_default_paths_are_installed() {
        let mut b = sample();
        b.leaf_conf = [
            "/etc/serviceradar/nats/certs/leaf-server.pem",
            "/etc/serviceradar/nats/certs/leaf-server-key.pem",
            "/etc/serviceradar/nats/certs/tenant-ca.pem",
            "/etc/serviceradar/nats/certs/leaf-client.pem",
            "/etc/serviceradar/nats/certs/leaf-client-key.pem",
            "/etc/serviceradar/nats/certs/root-ca.pem",
            "/etc/serviceradar/nats/leaf.creds",
            "/var/lib/serviceradar/nats/jetstream",
        ]
        .iter()
        .map(|p| format!("x: \"{p}\"\n"))
        .collect();
        assert!(site_bundle(&b).is_ok());
        b.leaf_conf
            .push_str("y: \"/etc/serviceradar/nats/other.creds\"\n");
        assert!(matches!(
            site_bundle(&b),
            Err(BundleError::ConfigReferencesMissingFile { .. })
        ));
    }

    #[test]
    fn rejects_bad_inputs() {
        let cases: Vec<fn(&mut SiteBundle)> = vec![
            |b| b.tenant_slug = "Acme".into(),
            |b| b.site_slug = "nyc'office".into(),
            |b| b.site_slug = "$(touch x)".into(),
            |b| b.site_name = "NYC\nrm -rf /".into(),
            |b| b.site_name = String::new(),
            |b| b.nats_leaf_url = "nats://$(id):4222".into(),
            |b| b.hub_leafnode_url = "https://x".into(),
            |b| b.paths.config_dir = "etc/x".into(),
            |b| b.paths.certs_dir = "/etc/x y".into(),
            |b| b.paths.jetstream_dir = b.paths.certs_dir.clone(),
            |b| {
                b.pki.ca_chain_pem =
                    "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----x".into()
            },
            |b| b.pki.leaf_client_key_pem = CERT.into(),
            |b| b.pki.root_ca_pem = KEY.into(),
            |b| b.leaf_creds = "nope".into(),
            |b| b.monitoring_port = b.client_port,
            |b| b.client_port = 0,
            |b| b.edge_buffer_stream_json = Some("{not json".into()),
            |b| b.leaf_conf = "a\u{1}b".into(),
        ];
        for (i, mutate) in cases.iter().enumerate() {
            let mut b = sample();
            mutate(&mut b);
            assert!(site_bundle(&b).is_err(), "case {i} accepted");
        }
    }

    #[test]
    fn rewrite_order_is_longest_first() {
        let p = InstallPaths::default();
        let order = p.rewrite_order();
        assert_eq!(order[0], "/var/lib/serviceradar/nats/jetstream");
        assert_eq!(order[2], "/etc/serviceradar/nats");
        assert_eq!(order.len(), 3);
    }

    #[test]
    fn debug_does_not_leak_keys() {
        let mut b = sample();
        b.pki.leaf_client_key_pem = SecretText::from(
            "-----BEGIN PRIVATE KEY-----\nSECRETSECRET\n-----END PRIVATE KEY-----\n",
        );
        assert!(!format!("{b:?}").contains("SECRETSECRET"));
    }
}
