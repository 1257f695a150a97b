//! The state dir's layout and how files get there: every write is a temp
//! file plus rename (a crash leaves the old file or the new one, never half
//! of one), private keys and creds 0600, the rest 0644.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::exit::{Context, Outcome};

/// Paths under the state dir.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The state dir.
    pub root: PathBuf,
}

impl Layout {
    /// The layout under `root`.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }
    /// `identity.json`: who this box is.
    pub fn identity(&self) -> PathBuf {
        self.root.join("identity.json")
    }
    /// The leaf's directory (`nats/`).
    pub fn nats_dir(&self) -> PathBuf {
        self.root.join("nats")
    }
    /// Certificates and keys (`nats/certs/`).
    pub fn certs_dir(&self) -> PathBuf {
        self.nats_dir().join("certs")
    }
    /// A file in the certs dir.
    pub fn cert(&self, name: &str) -> PathBuf {
        self.certs_dir().join(name)
    }
    /// `nats/nats-leaf.conf`.
    pub fn leaf_conf(&self) -> PathBuf {
        self.nats_dir().join("nats-leaf.conf")
    }
    /// `nats/nats-leaf.pid`: written by nats-server; the agent signals it to
    /// reload renewed certificates.
    pub fn leaf_pid(&self) -> PathBuf {
        self.nats_dir().join("nats-leaf.pid")
    }
    /// `nats/leaf.creds`.
    pub fn creds(&self) -> PathBuf {
        self.nats_dir().join("leaf.creds")
    }
    /// `nats/jetstream/`.
    pub fn jetstream_dir(&self) -> PathBuf {
        self.nats_dir().join("jetstream")
    }
    /// `nats/streams/edge-buffer.json`.
    pub fn edge_buffer(&self) -> PathBuf {
        self.nats_dir().join("streams").join("edge-buffer.json")
    }
    /// `agent.toml`.
    pub fn agent_toml(&self) -> PathBuf {
        self.root.join("agent.toml")
    }
    /// `agent-status.json`: the agent's last gateway contact and renewal.
    pub fn agent_status(&self) -> PathBuf {
        self.root.join("agent-status.json")
    }
    /// Where `--foreground` runs keep their logs (`log/`).
    pub fn log(&self, name: &str) -> PathBuf {
        self.root.join("log").join(name)
    }
}

/// Who this box is, as `site init` recorded it (no secrets).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    /// The control plane this box enrolled with.
    pub control_url: String,
    /// Tenant id and slug.
    pub tenant_id: String,
    /// Tenant slug.
    pub tenant_slug: String,
    /// Site id.
    pub site_id: String,
    /// Site slug.
    pub site_slug: String,
    /// Site name.
    pub site_name: String,
    /// What was enrolled (`site`, `agent`).
    pub scope: String,
    /// The agent's id.
    pub agent_id: Option<String>,
    /// The agent gateway URL.
    pub gateway_url: Option<String>,
    /// Gateway-initiated mode: where the platform's gateway reaches this
    /// box's agent (registered with the token); the agent listens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_endpoint: Option<String>,
    /// The hub's leafnode URL.
    pub hub_url: Option<String>,
    /// The leaf's client listener.
    pub client_listen: Option<String>,
    /// The leaf's monitoring listener.
    pub monitoring_listen: Option<String>,
    /// This host's fingerprint as sent.
    pub host_fingerprint: String,
    /// When the certificates expire (Unix ms).
    pub expires_at: i64,
    /// When enrolled (Unix ms).
    pub enrolled_at: i64,
    /// True when the control plane recognised this host (a reinstall).
    pub resumed: bool,
}

impl Identity {
    /// Reads the identity, or says to run `site init`.
    pub fn load(layout: &Layout) -> Outcome<Self> {
        let path = layout.identity();
        let text = std::fs::read_to_string(&path).map_err(|e| {
            crate::exit::Failure::failed(format!(
                "{}: {e}; run `serviceradar-cli site init --token …` first{}",
                path.display(),
                if layout.root == Path::new("/etc/serviceradar") {
                    ""
                } else {
                    " (with the same --state-dir)"
                }
            ))
        })?;
        serde_json::from_str(&text).or_fail(|| format!("reading {}", path.display()))
    }

    /// Writes the identity (atomically).
    pub fn save(&self, layout: &Layout) -> Outcome {
        let text = serde_json::to_string_pretty(self).or_fail(|| "encoding identity".into())?;
        write_public(&layout.identity(), &format!("{text}\n"))
    }
}

/// `path` made absolute against the current directory (rendered configs
/// and units need absolute paths).
pub fn absolute(path: &Path) -> Outcome<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .or_fail(|| "reading the current directory".into())
    }
}

/// Writes `bytes` to `path` atomically with `mode` (creating parents).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Outcome {
    let dir = path
        .parent()
        .ok_or_else(|| crate::exit::Failure::failed(format!("{} has no parent", path.display())))?;
    std::fs::create_dir_all(dir).or_fail(|| format!("creating {}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temp)
        .or_fail(|| format!("creating {}", temp.display()))?;
    // `mode` at creation is masked by the umask; set it exactly.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .or_fail(|| format!("setting the mode of {}", temp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .or_fail(|| format!("writing {}", temp.display()))?;
    std::fs::rename(&temp, path).or_fail(|| format!("replacing {}", path.display()))
}

/// Public file (0644).
pub fn write_public(path: &Path, text: &str) -> Outcome {
    write_atomic(path, text.as_bytes(), 0o644)
}

/// Private file (0600): keys, creds.
pub fn write_private(path: &Path, text: &str) -> Outcome {
    write_atomic(path, text.as_bytes(), 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_0600_whatever_the_umask_and_replace_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/key.pem");
        write_private(&path, "one").unwrap();
        write_private(&path, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temp file left behind.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }
}
