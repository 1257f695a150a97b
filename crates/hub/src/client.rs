//! Connections of the control plane to the hub `nats-server`, and the one
//! system request they share (pushing an account JWT).
//!
//! Ingestion (one user per tenant account, plus a system-account user that
//! pushes tenant accounts) and the leaf authorization service (its own user,
//! plus a system user that pushes the `LEAVES` account) all connect the same
//! way: a freshly minted `.creds` file written 0600 under the service's creds
//! directory, the hub URL, and a CA when the hub speaks TLS.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use serviceradar_identity::write_secret_file;

/// How long a connection attempt to the hub may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `hub_url` as the user of `creds`, written to `creds_dir/file`
/// first; `ca_file` is required for a `tls://` hub. `name` is the connection
/// name the hub shows.
pub async fn connect_with_creds(
    hub_url: &str,
    ca_file: Option<&Path>,
    creds_dir: &Path,
    file: &str,
    creds: &str,
    name: &str,
) -> anyhow::Result<async_nats::Client> {
    std::fs::create_dir_all(creds_dir)
        .with_context(|| format!("creating {}", creds_dir.display()))?;
    let path = creds_dir.join(file);
    write_secret_file(&path, creds.as_bytes())?;
    let mut options = async_nats::ConnectOptions::with_credentials_file(&path)
        .await
        .with_context(|| format!("reading {}", path.display()))?
        .name(name)
        .connection_timeout(CONNECT_TIMEOUT);
    if let Some(ca) = ca_file {
        options = options
            .require_tls(true)
            .add_root_certificates(ca.to_path_buf());
    }
    options
        .connect(hub_url)
        .await
        .with_context(|| format!("connecting to the hub at {hub_url} as {name}"))
}

/// Pushes an account JWT to the hub's account resolver
/// (`$SYS.REQ.CLAIMS.UPDATE`; `system` must be a system-account user) and
/// checks the hub accepted it, waiting at most `timeout` for the reply.
pub async fn push_account_jwt(
    system: &async_nats::Client,
    jwt: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let reply = tokio::time::timeout(
        timeout,
        system.request("$SYS.REQ.CLAIMS.UPDATE", jwt.to_owned().into()),
    )
    .await
    .context("no reply to the account push")?
    .context("pushing an account JWT")?;
    let reply: serde_json::Value = serde_json::from_slice(&reply.payload)?;
    anyhow::ensure!(
        reply["data"]["code"] == 200,
        "the hub refused the account JWT: {reply}"
    );
    Ok(())
}
