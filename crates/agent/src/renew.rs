//! Certificate renewal of a box enrolled with `serviceradar-cli site init`.
//!
//! Enrolled certificates are short-lived (7 days by default). The agent
//! renews them over its own mTLS identity at about 2/3 of their lifetime,
//! with jitter so that boxes enrolled together do not renew together:
//! 1. new keys are generated here and only CSRs are sent
//!    (`RenewCertificates` in dial-out mode; in gateway-initiated mode the
//!    CSRs go in the answer to the gateway's poll, [`crate::listen`]);
//! 2. the certificates that come back are checked (they parse, they are
//!    valid now, each matches the key it was requested for);
//! 3. every new file is written to a temp file beside its target first and
//!    then renamed over it (a crash leaves the old set or, at worst, some
//!    files renamed — each key with its own certificate, never half a file);
//! 4. the local leaf is told to reload (`SIGHUP` to the pid in its pid file),
//!    so its next connection to the hub uses the new client certificate
//!    while the current one stays up;
//! 5. the agent reconnects to the gateway with its new certificate (a
//!    listening agent serves its next TLS handshake with it).
//!
//! The lifetime is measured from when the current certificate was written
//! (its file's modification time), not from its `notBefore`, which the CA
//! backdates by a few minutes for clock skew.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serviceradar_proto::v1::{IdentityClaim, RenewRequest, RenewResponse};

use crate::transport::Transport;

/// What renewal needs to know: the files it replaces and who this host is.
#[derive(Debug, Clone)]
pub struct RenewalSetup {
    /// SHA-256 (hex) of this host's machine id, as sent at enrollment.
    pub host_fingerprint: String,
    /// The agent's certificate (followed by the tenant CA) and key.
    pub agent: KeyPairFiles,
    /// The leaf's files, when this box runs the site's leaf.
    pub leaf: Option<LeafFiles>,
}

/// A certificate file and its key file.
#[derive(Debug, Clone)]
pub struct KeyPairFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM, 0600).
    pub key: PathBuf,
}

/// The local leaf's certificates and how to make it reload them.
#[derive(Debug, Clone)]
pub struct LeafFiles {
    /// Client certificate for the hub link.
    pub client: KeyPairFiles,
    /// Server certificate for local collectors.
    pub server: KeyPairFiles,
    /// `nats-server`'s pid file (`pid_file` in `nats-leaf.conf`).
    pub pid_file: Option<PathBuf>,
}

/// When the certificate in `cert` should be renewed: 2/3 of the way from
/// when it was written to its `notAfter`, less up to 1/15 of that span of
/// jitter (so between 60% and 67%).
pub fn due(cert: &Path) -> anyhow::Result<SystemTime> {
    let pem =
        std::fs::read_to_string(cert).with_context(|| format!("reading {}", cert.display()))?;
    let not_after = serviceradar_pki::chain_not_after(&pem)
        .with_context(|| format!("reading the expiry of {}", cert.display()))?;
    let not_after_ms = not_after.unix_timestamp() * 1000;
    let written_ms = std::fs::metadata(cert)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| SystemTime::now())
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .min(not_after_ms);
    let span = u64::try_from(not_after_ms - written_ms).unwrap_or(0);
    let jitter = Duration::from_millis(span / 15).mul_f64(rand::random::<f64>());
    let point =
        u64::try_from(serviceradar_pki::renewal_point(written_ms, not_after_ms)).unwrap_or(0);
    Ok(SystemTime::UNIX_EPOCH + Duration::from_millis(point) - jitter)
}

/// When to try again after a failed renewal: a tenth of the time left on
/// the certificate, from 10 seconds to 10 minutes.
pub fn retry_after(cert: &Path) -> Duration {
    let left = std::fs::read_to_string(cert)
        .ok()
        .and_then(|pem| serviceradar_pki::chain_not_after(&pem).ok())
        .map(|t| (t - ::time::OffsetDateTime::now_utc()).whole_seconds())
        .unwrap_or(0);
    Duration::from_secs(u64::try_from(left / 10).unwrap_or(0).clamp(10, 600))
}

/// A Unix-ms instant as RFC 3339 UTC, for log lines.
pub fn utc(ms: i64) -> String {
    ::time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .ok()
        .and_then(|t| {
            t.format(&::time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// New keys made on this box and the request carrying their CSRs, kept
/// until the gateway answers (a listening agent repeats the same request at
/// every poll until it does). No `Debug`: it holds private keys.
pub struct Prepared {
    /// What goes to the gateway (CSRs only).
    pub request: RenewRequest,
    agent_key: zeroize::Zeroizing<String>,
    leaf_keys: Option<(zeroize::Zeroizing<String>, zeroize::Zeroizing<String>)>,
}

/// Step 1: new keys and their CSRs for the certificates of `setup`.
pub fn prepare(setup: &RenewalSetup, claim: &IdentityClaim) -> Result<Prepared, RenewError> {
    let (agent_key, agent_csr) = new_request("agent")?;
    let leaf = match &setup.leaf {
        Some(_) => Some((new_request("leaf")?, new_request("leaf-server")?)),
        None => None,
    };
    let request = RenewRequest {
        claim: Some(claim.clone()),
        host_fingerprint: setup.host_fingerprint.clone(),
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default(),
        agent_csr,
        leaf_client_csr: leaf
            .as_ref()
            .map(|((_, c), _)| c.clone())
            .unwrap_or_default(),
        leaf_server_csr: leaf
            .as_ref()
            .map(|(_, (_, c))| c.clone())
            .unwrap_or_default(),
    };
    Ok(Prepared {
        request,
        agent_key,
        leaf_keys: leaf.map(|((client, _), (server, _))| (client, server)),
    })
}

/// Steps 2–4 with the gateway's answer: the certificates checked, the
/// files replaced, the leaf told to reload. Returns when the earliest new
/// certificate expires (Unix ms).
pub fn apply(
    setup: &RenewalSetup,
    prepared: Prepared,
    response: &RenewResponse,
) -> Result<i64, RenewError> {
    let mut files = vec![(
        &setup.agent,
        prepared.agent_key,
        response.agent_cert_pem.clone(),
    )];
    if let (Some(leaf), Some((client_key, server_key))) = (&setup.leaf, prepared.leaf_keys) {
        files.push((
            &leaf.client,
            client_key,
            response.leaf_client_cert_pem.clone(),
        ));
        files.push((
            &leaf.server,
            server_key,
            response.leaf_server_cert_pem.clone(),
        ));
    }
    check(response, &files)?;
    replace(&files).map_err(RenewError::Local)?;
    if let Some(leaf) = &setup.leaf {
        reload_leaf(leaf).map_err(RenewError::Local)?;
    }
    Ok(response.expires_at_ms)
}

/// One renewal over `RenewCertificates` (dial-out mode): [`prepare`], the
/// call, [`apply`].
pub async fn renew<T: Transport>(
    transport: &mut T,
    setup: &RenewalSetup,
    claim: &IdentityClaim,
) -> Result<i64, RenewError> {
    let prepared = prepare(setup, claim)?;
    let response = transport
        .renew(prepared.request.clone())
        .await
        .map_err(RenewError::Refused)?;
    apply(setup, prepared, &response)
}

/// Why a renewal did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    /// The gateway refused or could not be reached.
    #[error("the gateway refused the renewal: {}", .0.message())]
    Refused(tonic::Status),
    /// Something on this box failed (keys, files, the leaf's reload).
    #[error("{0:#}")]
    Local(anyhow::Error),
}

fn new_request(name: &str) -> Result<(zeroize::Zeroizing<String>, String), RenewError> {
    serviceradar_pki::new_key_and_request(name)
        .map_err(|e| RenewError::Local(anyhow::anyhow!("generating a {name} key: {e}")))
}

/// Each certificate parses, is valid now and is for the key it was
/// requested with.
fn check(
    response: &RenewResponse,
    files: &[(&KeyPairFiles, zeroize::Zeroizing<String>, String)],
) -> Result<(), RenewError> {
    let now = ::time::OffsetDateTime::now_utc();
    if response.expires_at_ms <= now.unix_timestamp() * 1000 {
        return Err(RenewError::Local(anyhow::anyhow!(
            "the gateway sent certificates that are already expired"
        )));
    }
    for (what, key, cert) in files {
        serviceradar_pki::check_key_matches(cert, key).map_err(|e| {
            RenewError::Local(anyhow::anyhow!(
                "the certificate sent for {} does not fit its new key: {e}",
                what.cert.display()
            ))
        })?;
    }
    Ok(())
}

/// Writes every new file beside its target, then renames them all.
fn replace(files: &[(&KeyPairFiles, zeroize::Zeroizing<String>, String)]) -> anyhow::Result<()> {
    let mut staged = Vec::new();
    for (paths, key, cert) in files {
        staged.push((stage(&paths.key, key.as_bytes(), 0o600)?, paths.key.clone()));
        staged.push((
            stage(&paths.cert, cert.as_bytes(), 0o644)?,
            paths.cert.clone(),
        ));
    }
    for (temp, target) in staged {
        std::fs::rename(&temp, &target)
            .with_context(|| format!("replacing {}", target.display()))?;
    }
    Ok(())
}

/// Writes `bytes` to a temp file beside `path` with exactly `mode`, synced.
fn stage(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<PathBuf> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.renew", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temp)
        .with_context(|| format!("creating {}", temp.display()))?;
    // The mode at creation is masked by the umask; set it exactly.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", temp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", temp.display()))?;
    Ok(temp)
}

/// `SIGHUP` to the leaf (nats-server reloads its config and certificates).
fn reload_leaf(leaf: &LeafFiles) -> anyhow::Result<()> {
    let Some(pid_file) = &leaf.pid_file else {
        tracing::warn!(
            "no leaf pid file configured: reload the leaf yourself \
            (systemctl reload serviceradar-nats-leaf) so it uses the renewed certificates"
        );
        return Ok(());
    };
    let pid = std::fs::read_to_string(pid_file)
        .with_context(|| format!("reading the leaf's pid file {}", pid_file.display()))?;
    let pid = pid.trim();
    anyhow::ensure!(
        !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()),
        "{} does not hold a pid",
        pid_file.display()
    );
    let signalled = pid
        .parse::<i32>()
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .map(|pid| rustix::process::kill_process(pid, rustix::process::Signal::HUP));
    match signalled {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => {
            anyhow::bail!("telling the leaf (pid {pid}) to reload failed: {e} (is it running?)")
        }
        None => anyhow::bail!("{} does not hold a pid", pid_file.display()),
    }
}
