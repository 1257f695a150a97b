//! What the agent tells the box it runs on: when it last reached the
//! gateway and when it last renewed its certificates, in a small JSON file
//! (`status_file` in `agent.toml`, written by `serviceradar-cli agent
//! setup`), so `serviceradar-cli status` can show them without a credential.
//! Written atomically (temp file + rename); a failure to write is logged,
//! never fatal.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Last successful call to the gateway (Unix ms).
    pub last_contact_ms: Option<i64>,
    /// Last successful certificate renewal (Unix ms).
    pub last_renewal_ms: Option<i64>,
    /// The last renewal failure, if the latest attempt failed.
    pub renewal_error: Option<String>,
}

/// Keeps the status and writes it when it changes enough to matter.
#[derive(Debug)]
pub struct StatusFile {
    path: PathBuf,
    status: AgentStatus,
    written_contact_ms: i64,
}

/// Contact is rewritten at most this often (ms).
const CONTACT_EVERY_MS: i64 = 5_000;

impl StatusFile {
    /// A status file at `path`.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            status: AgentStatus::default(),
            written_contact_ms: 0,
        }
    }

    /// A successful gateway call now.
    pub fn contact(&mut self) {
        let now = crate::now_ms();
        self.status.last_contact_ms = Some(now);
        if now - self.written_contact_ms >= CONTACT_EVERY_MS {
            self.write();
        }
    }

    /// A renewal's outcome.
    pub fn renewal(&mut self, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                self.status.last_renewal_ms = Some(crate::now_ms());
                self.status.renewal_error = None;
            }
            Err(e) => self.status.renewal_error = Some(e),
        }
        self.write();
    }

    fn write(&mut self) {
        let Ok(text) = serde_json::to_vec_pretty(&self.status) else {
            return;
        };
        let dir = self.path.parent().unwrap_or_else(|| Path::new("."));
        let temp = dir.join(format!(".agent-status.{}.tmp", std::process::id()));
        match std::fs::write(&temp, text).and_then(|()| std::fs::rename(&temp, &self.path)) {
            Ok(()) => self.written_contact_ms = self.status.last_contact_ms.unwrap_or(0),
            Err(e) => tracing::debug!(error = %e, path = %self.path.display(),
                "writing the agent status file failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_and_renewal_are_written_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent-status.json");
        let mut file = StatusFile::new(&path);
        file.contact();
        file.renewal(Err("refused".into()));
        let read: AgentStatus =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("file")).expect("json");
        assert!(read.last_contact_ms.is_some());
        assert_eq!(read.renewal_error.as_deref(), Some("refused"));
        file.renewal(Ok(()));
        let read: AgentStatus =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("file")).expect("json");
        assert!(read.last_renewal_ms.is_some() && read.renewal_error.is_none());
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
    }
}
