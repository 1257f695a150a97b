//! Talking to the hub: connecting as the tenant's ingest user or as a user of
//! the system account (credentials minted by this process, which holds the
//! account keys), and JetStream API requests with a reply timeout.
//!
//! It exists so that the pipeline, the site buffers and the account pushes
//! share one way of reaching the hub.

use std::time::Duration;

use anyhow::Context;
use serviceradar_domain::resources::Tenant;
use serviceradar_identity::Pki;
use serviceradar_store::Store;

use crate::settings::IngestSettings;

/// Reply timeout of JetStream API requests to a site's leaf (through the hub).
pub(crate) const LEAF_API_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects to the hub as the tenant's ingest user.
pub(crate) async fn connect(
    store: &Store,
    pki: &Pki,
    settings: &IngestSettings,
    tenant: &Tenant,
) -> anyhow::Result<async_nats::Client> {
    let creds = pki
        .user_creds(store, tenant, &format!("ingest-{}", tenant.slug))
        .await?;
    serviceradar_hub::client::connect_with_creds(
        &settings.hub_url,
        settings.hub_ca_file.as_deref(),
        &settings.creds_dir,
        &format!("ingest-{}.creds", tenant.id),
        creds.as_str(),
        &format!("serviceradar-ingest-{}", tenant.slug),
    )
    .await
}

/// Connects to the hub as a user of the system account.
pub(crate) async fn system_client(
    store: &Store,
    pki: &Pki,
    settings: &IngestSettings,
) -> anyhow::Result<async_nats::Client> {
    let creds = pki.system_user_creds(store, "serviceradar-core").await?;
    serviceradar_hub::client::connect_with_creds(
        &settings.hub_url,
        settings.hub_ca_file.as_deref(),
        &settings.creds_dir,
        "system.creds",
        creds.as_str(),
        "serviceradar-core-accounts",
    )
    .await
}

/// Sends a JetStream API request (`body` as JSON) and parses the JSON reply,
/// waiting at most [`LEAF_API_TIMEOUT`].
pub(crate) async fn js_request(
    client: &async_nats::Client,
    subject: &str,
    body: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let payload = serde_json::to_vec(body)?;
    let reply = tokio::time::timeout(
        LEAF_API_TIMEOUT,
        client.request(subject.to_owned(), payload.into()),
    )
    .await
    .with_context(|| format!("{subject}: no reply"))?
    .with_context(|| format!("{subject}: request failed"))?;
    Ok(serde_json::from_slice(&reply.payload)?)
}
