//! Talking to the hub: connecting as the tenant's ingest user or as a user of
//! the system account (credentials minted by this process, which holds the
//! account keys; they expire, live in memory only, and come with the time
//! the caller should reconnect with new ones), and JetStream API requests
//! with a reply timeout.
//!
//! It exists so that the pipeline, the site buffers and the account pushes
//! share one way of reaching the hub.

use std::time::Duration;

use serviceradar_domain::resources::Tenant;
use serviceradar_identity::Pki;
use serviceradar_store::Store;

use crate::error::{BoxError, IngestError, upstream};
use crate::settings::IngestSettings;

/// Reply timeout of JetStream API requests to a site's leaf (through the hub).
pub(crate) const LEAF_API_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the hub may take over the platform's requests whose work grows
/// with the tenants: the platform stream's create or update (a source per
/// tenant) and the push of the platform ingest account's JWT (an import per
/// tenant). At 1,000 tenants on a 2-core machine each took nats-server over
/// [`LEAF_API_TIMEOUT`] in benchmark runs (the stream update in 8 of 8 runs,
/// about 4 s; the JWT push in 2 of 7 in session 27), so the first start at
/// that size logged its set-up as failed and did it again.
pub(crate) const PLATFORM_API_TIMEOUT: Duration = Duration::from_secs(30);

/// A connection to the hub as a user minted for it, and when to replace it
/// with one of a new user (before the user expires and the hub drops it).
pub(crate) struct HubConnection {
    pub(crate) client: async_nats::Client,
    pub(crate) renew_at: tokio::time::Instant,
}

/// Connects to the hub as the tenant's ingest user.
pub(crate) async fn connect(
    store: &Store,
    pki: &Pki,
    settings: &IngestSettings,
    tenant: &Tenant,
) -> Result<HubConnection, IngestError> {
    let lifetime = settings.hub.service_users;
    let name = format!("serviceradar-ingest-{}", tenant.slug);
    let creds = pki
        .user_creds(store, tenant, &name, lifetime.expires_at())
        .await
        .map_err(upstream("minting the tenant's ingest user"))?;
    let as_whom = "connecting to the hub as the tenant's ingest user";
    connect_as(settings, creds.as_str(), &name, as_whom).await
}

/// Connects to the hub as a user of the platform ingest account (`name`:
/// what the connection is for, as the hub shows it).
pub(crate) async fn platform_client(
    store: &Store,
    pki: &Pki,
    settings: &IngestSettings,
    name: &str,
) -> Result<HubConnection, IngestError> {
    let lifetime = settings.hub.service_users;
    let creds = pki
        .platform_ingest_user_creds(store, name, lifetime.expires_at())
        .await
        .map_err(upstream("minting a platform ingest user"))?;
    let as_whom = "connecting to the hub as a platform ingest user";
    connect_as(settings, creds.as_str(), name, as_whom).await
}

/// Connects to the hub as a user of the system account.
pub(crate) async fn system_client(
    store: &Store,
    pki: &Pki,
    settings: &IngestSettings,
) -> Result<HubConnection, IngestError> {
    let lifetime = settings.hub.service_users;
    let name = "serviceradar-core-accounts";
    let creds = pki
        .system_user_creds(store, name, lifetime.expires_at())
        .await
        .map_err(upstream("minting a system account user"))?;
    let as_whom = "connecting to the hub as a system account user";
    connect_as(settings, creds.as_str(), name, as_whom).await
}

/// Connects to the hub with `creds` (just minted), named `name` on the hub;
/// `as_whom` is the error's context.
async fn connect_as(
    settings: &IngestSettings,
    creds: &str,
    name: &str,
    as_whom: &'static str,
) -> Result<HubConnection, IngestError> {
    let renew_at = tokio::time::Instant::from_std(settings.hub.service_users.renew_at());
    let client = settings
        .hub
        .connect(creds, name)
        .await
        .map_err(upstream(as_whom))?;
    Ok(HubConnection { client, renew_at })
}

/// Sends a JetStream API request (`body` as JSON) and parses the JSON reply,
/// waiting at most [`LEAF_API_TIMEOUT`].
pub(crate) async fn js_request(
    client: &async_nats::Client,
    subject: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, IngestError> {
    js_request_within(client, subject, body, LEAF_API_TIMEOUT).await
}

/// [`js_request`], waiting at most `timeout` for the reply: for requests
/// whose work grows with the platform, such as giving the platform stream a
/// source per tenant.
pub(crate) async fn js_request_within(
    client: &async_nats::Client,
    subject: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<serde_json::Value, IngestError> {
    let payload =
        serde_json::to_vec(body).map_err(request_failed(subject, "encoding the request"))?;
    let reply = tokio::time::timeout(timeout, client.request(subject.to_owned(), payload.into()))
        .await
        .map_err(request_failed(subject, "no reply"))?
        .map_err(request_failed(subject, "request failed"))?;
    serde_json::from_slice(&reply.payload).map_err(request_failed(subject, "decoding the reply"))
}

/// `STREAM.INFO` of `stream` in the connection's account: the stream's
/// info, or the API's error reply (a JSON object with `error`).
pub(crate) async fn stream_info(
    client: &async_nats::Client,
    stream: &str,
) -> Result<serde_json::Value, IngestError> {
    js_request(
        client,
        &format!("$JS.API.STREAM.INFO.{stream}"),
        &serde_json::json!({}),
    )
    .await
}

/// A `map_err` adapter: [`IngestError::Request`] for `subject` at `step`.
fn request_failed<E: Into<BoxError>>(
    subject: &str,
    step: &'static str,
) -> impl FnOnce(E) -> IngestError {
    move |e| IngestError::Request {
        subject: subject.to_owned(),
        step,
        source: e.into(),
    }
}
