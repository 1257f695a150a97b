//! The site's store-and-forward buffer, created on the local leaf's own
//! JetStream as soon as the leaf runs (issue 11, finding 13).
//!
//! Before, the buffer stream was created only through the hub, once the leaf
//! had joined it: a collector publishing at a site whose WAN was down (or in
//! the seconds after the leaf started) found no stream, and a plain publish
//! was lost without an error. The agent starts with the leaf, so it creates
//! the stream from the bundle's `streams/edge-buffer.json` over the leaf's
//! client port, with its own certificate (issued by the tenant CA, which the
//! leaf requires of every client), retrying until the leaf answers. The hub
//! later finds the stream there and sources it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

/// Where the leaf is and what to create on it.
#[derive(Debug, Clone)]
pub struct BufferSetup {
    /// The leaf's client URL (`tls://127.0.0.1:4222`).
    pub leaf_url: String,
    /// CA file the leaf's server certificate chains to (the bundle's
    /// `ca-chain.pem`).
    pub ca: PathBuf,
    /// The agent's certificate chain and key (the leaf verifies clients
    /// against the tenant CA).
    pub cert: PathBuf,
    /// Key of `cert`.
    pub key: PathBuf,
    /// The stream definition (`$JS.API.STREAM.CREATE` request body).
    pub stream_json: PathBuf,
}

/// JetStream's "stream name already in use" error code.
const STREAM_NAME_IN_USE: u64 = 10058;

/// Creates the buffer stream on the leaf, retrying (1 s, up to 10 s apart)
/// until the leaf answers; returns once the stream exists. A definition
/// that cannot be read is an error at once.
pub async fn ensure_edge_buffer(setup: &BufferSetup) -> anyhow::Result<()> {
    let body = std::fs::read(&setup.stream_json)
        .with_context(|| format!("reading {}", setup.stream_json.display()))?;
    let definition: serde_json::Value = serde_json::from_slice(&body)
        .with_context(|| format!("parsing {}", setup.stream_json.display()))?;
    let name = definition["name"]
        .as_str()
        .with_context(|| format!("{} names no stream", setup.stream_json.display()))?
        .to_owned();
    let mut delay = Duration::from_secs(1);
    loop {
        match create(setup, &name, &body).await {
            Ok(created) => {
                if created {
                    tracing::info!(stream = %name, leaf = %setup.leaf_url,
                        "created the site's buffer stream on the leaf");
                } else {
                    tracing::info!(stream = %name, leaf = %setup.leaf_url,
                        "the site's buffer stream is on the leaf");
                }
                return Ok(());
            }
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), retry_in = ?delay,
                    leaf = %setup.leaf_url, "leaf not ready for the buffer stream");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// One attempt: `Ok(true)` created, `Ok(false)` already there.
async fn create(setup: &BufferSetup, name: &str, body: &[u8]) -> anyhow::Result<bool> {
    let client = async_nats::ConnectOptions::new()
        .name("serviceradar-agent")
        .require_tls(true)
        .add_root_certificates(setup.ca.clone())
        .add_client_certificate(setup.cert.clone(), setup.key.clone())
        .connection_timeout(Duration::from_secs(3))
        .retry_on_initial_connect()
        .max_reconnects(Some(0))
        .connect(&setup.leaf_url)
        .await
        .context("connecting to the leaf")?;
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        client.request(
            format!("$JS.API.STREAM.CREATE.{name}"),
            body.to_vec().into(),
        ),
    )
    .await
    .context("the leaf's JetStream did not answer")?
    .context("asking the leaf's JetStream")?;
    let answer: serde_json::Value =
        serde_json::from_slice(&reply.payload).context("the leaf's answer is not JSON")?;
    match answer.get("error") {
        None => Ok(true),
        Some(e) if e["err_code"].as_u64() == Some(STREAM_NAME_IN_USE) => Ok(false),
        Some(e) => anyhow::bail!("the leaf refused the buffer stream: {e}"),
    }
}
