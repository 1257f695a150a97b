//! Device authorization at the site leaf: the auth callout service that runs
//! at the edge beside the leaf.
//!
//! Why it exists: the leaf accepts every certificate its tenant CA issued,
//! so on its own it cannot tell a device from a collector. With
//! `device_auth` on, the leaf's config (`include "device-auth.conf"`, see
//! [`keys`]) hands every client connection to this service, which:
//!
//! 1. takes the certificate chain nats-server verified against the tenant
//!    CA, checks that its issuer is *this* tenant's CA (the file the leaf
//!    trusts) and that the end-entity certificate names this tenant
//!    ([`serviceradar_pki::PeerIdentity::from_der_with_issuer`]; the
//!    verdict is remembered per chain, so a device that reconnects is not
//!    parsed again) and is unexpired;
//! 2. admits a collector certificate with the rights every verified client
//!    had before (the leaf's global account);
//! 3. admits a device certificate only if the local copy of the device
//!    registry ([`registry`]) has the device, registered at this site, not
//!    revoked, and then only as a user allowed to publish
//!    `device.<id>.metrics.>`, `device.<id>.status`, `_INBOX.>` and to
//!    subscribe `device.<id>.cmd`, `_INBOX.>`, with the device's payload,
//!    subscription and data limits;
//! 4. refuses everything else, logging the reason with the tenant, site and
//!    device.
//!
//! The registry copy lives in the leaf's own JetStream, so the service
//! answers while the hub is unreachable; with no copy at all (never
//! synced) every device is refused. When a device is revoked (or removed)
//! the service closes its open connections with `$SYS.REQ.SERVER.{id}.KICK`
//! as the leaf's system user.

pub mod keys;
pub mod registry;

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use serviceradar_natsconf::jwt::{AUTH_CALLOUT_SUBJECT, AuthorizationRequest, JwtError, NKey};
use serviceradar_natsconf::leaf::{
    DeviceUserLimits, collector_user_claims, device_data_prefix, device_user_claims,
};
use serviceradar_pki::{IdentityKind, PeerIdentity};
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use registry::{Registry, Sessions};

/// How long an admitted device or collector session lasts at most (it also
/// ends with the certificate); then the client reconnects and is checked
/// again.
pub const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(3600);

/// nats-server's event for every closed client connection, in each account.
const DISCONNECT_EVENTS: &str = "$SYS.ACCOUNT.*.DISCONNECT";

/// The part of a disconnect event the service reads: which connection of
/// which server closed.
#[derive(Debug, serde::Deserialize)]
struct DisconnectEvent {
    server: EventServer,
    client: EventClient,
}

#[derive(Debug, serde::Deserialize)]
struct EventServer {
    id: String,
}

#[derive(Debug, serde::Deserialize)]
struct EventClient {
    id: u64,
}

/// What can stop the service from starting or running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceAuthError {
    /// A file could not be read or written; `.0` says which.
    #[error("{0}")]
    Io(&'static str, #[source] std::io::Error),
    /// `device-auth.seeds` does not hold three seeds of the right kinds.
    #[error(
        "device-auth.seeds is not three nkey seeds (issuer account, service user, system user)"
    )]
    BadSeeds,
    /// The include could not be rendered.
    #[error("rendering device-auth.conf")]
    Config(#[source] serviceradar_natsconf::ConfigError),
    /// A certificate file could not be read as expected; `.0` says which.
    #[error("{0}")]
    Certificate(&'static str),
    /// Something that should run forever ended; `.0` says what.
    #[error("{0} ended")]
    Ended(&'static str),
    /// Talking to the leaf failed; `.0` says at what.
    #[error("{0}")]
    Nats(
        &'static str,
        #[source] Box<dyn std::error::Error + Send + Sync>,
    ),
}

/// `error` with its causes, `: `-separated, for one log line.
pub(crate) fn report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub(crate) fn nats<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl FnOnce(E) -> DeviceAuthError {
    move |e| DeviceAuthError::Nats(what, Box::new(e))
}

/// Where the leaf is and who this site is.
#[derive(Debug, Clone)]
pub struct DeviceAuthSettings {
    /// The leaf's client URL (`tls://127.0.0.1:4222`).
    pub leaf_url: String,
    /// Directory of `nats-leaf.conf`, `device-auth.conf` and the seeds.
    pub nats_dir: PathBuf,
    /// A client certificate chain of this tenant for TLS to the leaf (the
    /// agent's) and its key.
    pub client_cert: PathBuf,
    /// Key of `client_cert`.
    pub client_key: PathBuf,
    /// The tenant CA (what the leaf trusts; also the issuer every admitted
    /// certificate must have).
    pub tenant_ca: PathBuf,
    /// This site's tenant.
    pub tenant_id: Uuid,
    /// This site.
    pub site_id: Uuid,
    /// This site's slug (device certificates name it in their common name).
    pub site_slug: String,
    /// SPIFFE trust domain of certificates.
    pub trust_domain: String,
    /// The hub's JetStream domain (where the registry's bucket is).
    pub hub_domain: String,
    /// Longest admitted session.
    pub session_lifetime: Duration,
    /// How often the whole site registry is re-read from the hub (besides
    /// the live watch).
    pub resync_interval: Duration,
}

impl DeviceAuthSettings {
    /// Settings with the defaults (trust domain `serviceradar.io`, hub
    /// domain `hub`, 1-h sessions, resync every 5 s).
    pub fn new(
        leaf_url: impl Into<String>,
        nats_dir: impl Into<PathBuf>,
        tenant_id: Uuid,
        site_id: Uuid,
        site_slug: &str,
    ) -> Self {
        let nats_dir = nats_dir.into();
        Self {
            leaf_url: leaf_url.into(),
            client_cert: nats_dir.join("certs/agent.pem"),
            client_key: nats_dir.join("certs/agent-key.pem"),
            tenant_ca: nats_dir.join("certs/tenant-ca.pem"),
            nats_dir,
            tenant_id,
            site_id,
            site_slug: site_slug.to_owned(),
            trust_domain: serviceradar_pki::DEFAULT_TRUST_DOMAIN.to_owned(),
            hub_domain: "hub".to_owned(),
            session_lifetime: DEFAULT_SESSION_LIFETIME,
            resync_interval: Duration::from_secs(5),
        }
    }
}

/// Why a connection was refused (logged, and sent to the leaf, which logs it
/// too).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// nats-server verified no client certificate.
    #[error("no verified client certificate")]
    NoCertificate,
    /// The chain's issuer is not this tenant's CA.
    #[error("certificate not issued by this site's tenant CA")]
    ForeignIssuer,
    /// The certificate is not one of ours.
    #[error("certificate rejected: {0}")]
    Certificate(String),
    /// The certificate names another tenant.
    #[error("certificate of another tenant")]
    OtherTenant,
    /// The certificate has expired.
    #[error("certificate expired")]
    Expired,
    /// A certificate kind that may not connect as a client here.
    #[error("a {0} certificate may not connect to the leaf as a client")]
    Kind(String),
    /// No local copy of the registry exists yet.
    #[error("no copy of the device registry at this site yet (never synced with the hub)")]
    NoRegistry,
    /// The device is not in the registry of this site.
    #[error("device {0} is not registered")]
    Unknown(Uuid),
    /// The device is registered at another site.
    #[error("device {0} is registered at another site")]
    OtherSite(Uuid),
    /// The device is revoked.
    #[error("device {0} is revoked")]
    Revoked(Uuid),
    /// Signing the answer failed.
    #[error("authorization failed internally")]
    Internal,
}

/// The state requests are decided with.
pub struct Authorizer {
    settings: DeviceAuthSettings,
    issuer: NKey,
    tenant_ca_der: Vec<u8>,
    registry: Registry,
    sessions: Sessions,
    verified: VerifiedChains,
}

/// Certificate chains this service has already parsed and verified, by
/// their PEM as nats-server sent them: a device that connects again (every
/// device of a site at once after a WAN outage or a leaf restart) is not
/// parsed and checked against the tenant CA again. Only the chain's
/// verdict is kept: the registry (revocation), the tenant, the site and
/// the expiry are checked on every request. Bounded: emptied when full.
struct VerifiedChains<T = PeerIdentity> {
    by_chain: std::sync::Mutex<std::collections::HashMap<ChainKey, T>>,
}

impl<T> Default for VerifiedChains<T> {
    fn default() -> Self {
        Self {
            by_chain: std::sync::Mutex::default(),
        }
    }
}

/// See [`chain_key`].
type ChainKey = [u8; 32];

/// The key of a chain: SHA-256 of the leaf's and the issuer's PEM.
fn chain_key(leaf_pem: &str, issuer_pem: &str) -> ChainKey {
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    // The leaf's length first, so no two different pairs hash the same bytes.
    digest.update(&(leaf_pem.len() as u64).to_be_bytes());
    digest.update(leaf_pem.as_bytes());
    digest.update(issuer_pem.as_bytes());
    let mut key = [0; 32];
    key.copy_from_slice(digest.finish().as_ref());
    key
}

impl<T: Clone> VerifiedChains<T> {
    /// Chains kept at most (a few hundred bytes each).
    const CAPACITY: usize = 4096;

    fn get(&self, key: &ChainKey) -> Option<T> {
        self.lock().get(key).cloned()
    }

    fn insert(&self, key: ChainKey, value: T) {
        let mut map = self.lock();
        if map.len() >= Self::CAPACITY {
            map.clear();
        }
        map.insert(key, value);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<ChainKey, T>> {
        // Nothing panics while holding it; a poisoned map is still whole.
        self.by_chain
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("tenant_id", &self.settings.tenant_id)
            .field("site_id", &self.settings.site_id)
            .field("issuer", &self.issuer.public_key())
            .finish_non_exhaustive()
    }
}

/// An admission: the user JWT, and the device it is for (none: collector).
#[derive(Debug)]
pub struct Admitted {
    /// User JWT for the connection's key.
    pub user_jwt: String,
    /// The device admitted, if it is one.
    pub device: Option<Uuid>,
}

impl Authorizer {
    fn new(
        settings: DeviceAuthSettings,
        issuer: NKey,
        registry: Registry,
        sessions: Sessions,
    ) -> Result<Self, DeviceAuthError> {
        let pem = std::fs::read_to_string(&settings.tenant_ca)
            .map_err(|e| DeviceAuthError::Io("reading the tenant CA", e))?;
        let chain = serviceradar_pki::inspect::pem_chain_to_der(&pem)
            .map_err(|_| DeviceAuthError::Certificate("the tenant CA file holds no certificate"))?;
        let tenant_ca_der = chain
            .first()
            .ok_or(DeviceAuthError::Certificate("the tenant CA file is empty"))?
            .to_vec();
        Ok(Self {
            settings,
            issuer,
            tenant_ca_der,
            registry,
            sessions,
            verified: VerifiedChains::default(),
        })
    }

    /// The identity of a chain nats-server verified, once it is known to be
    /// issued by this tenant's CA (checked here too, not only trusted from
    /// the leaf); remembered for the chain's next connect.
    fn peer_identity(&self, leaf_pem: &str, issuer_pem: &str) -> Result<PeerIdentity, Refusal> {
        let key = chain_key(leaf_pem, issuer_pem);
        if let Some(peer) = self.verified.get(&key) {
            return Ok(peer);
        }
        let der = |pem: &str| {
            serviceradar_pki::inspect::pem_to_der(pem)
                .map_err(|e| Refusal::Certificate(e.to_string()))
        };
        let (leaf, issuer) = (der(leaf_pem)?, der(issuer_pem)?);
        if issuer != self.tenant_ca_der {
            return Err(Refusal::ForeignIssuer);
        }
        let peer = PeerIdentity::from_der_with_issuer(&leaf, &issuer, &self.settings.trust_domain)
            .map_err(|e| Refusal::Certificate(e.to_string()))?;
        self.verified.insert(key, peer.clone());
        Ok(peer)
    }

    /// Decides one request (steps 1 to 4 of the module docs).
    pub fn decide(&self, request: &AuthorizationRequest) -> Result<Admitted, Refusal> {
        let (leaf, issuer) = request
            .verified_leaf_and_issuer()
            .ok_or(Refusal::NoCertificate)?;
        let peer = self.peer_identity(leaf, issuer)?;
        if peer.tenant_id != self.settings.tenant_id {
            return Err(Refusal::OtherTenant);
        }
        let now = time::OffsetDateTime::now_utc();
        if peer.not_after <= now {
            return Err(Refusal::Expired);
        }
        let expires = (now
            + time::Duration::try_from(self.settings.session_lifetime)
                .unwrap_or(time::Duration::HOUR))
        .min(peer.not_after)
        .unix_timestamp();
        match peer.kind {
            IdentityKind::Collector | IdentityKind::Agent => {
                // This site's own agent (it creates the buffer stream on
                // the leaf) has the rights of a collector; another site's
                // agent has no business here.
                if peer.kind == IdentityKind::Agent && peer.scope != self.settings.site_slug {
                    return Err(Refusal::Kind("another site's agent".to_owned()));
                }
                let jwt = collector_user_claims(
                    &request.user_nkey,
                    &format!("{}-{}", peer.kind, peer.id),
                    expires,
                )
                .sign(&self.issuer)
                .map_err(internal)?;
                Ok(Admitted {
                    user_jwt: jwt,
                    device: None,
                })
            }
            IdentityKind::Device => {
                if peer.scope != self.settings.site_slug {
                    return Err(Refusal::OtherSite(peer.id));
                }
                let entry = self.registry.lookup(peer.id)?;
                if entry.site_id != self.settings.site_id
                    || entry.tenant_id != self.settings.tenant_id
                {
                    return Err(Refusal::OtherSite(peer.id));
                }
                if !entry.is_active() {
                    return Err(Refusal::Revoked(peer.id));
                }
                let limits = DeviceUserLimits {
                    max_payload: entry.max_payload,
                    max_subscriptions: entry.max_subscriptions,
                    data: entry.data_rate,
                };
                // The subjects the leaf maps this device's data to
                // (`nats-leaf.conf`'s mappings, from the same slugs).
                let prefix = device_data_prefix(&peer.tenant_slug, &self.settings.site_slug)
                    .map_err(|e| Refusal::Certificate(e.to_string()))?;
                let jwt = device_user_claims(&request.user_nkey, peer.id, &prefix, limits, expires)
                    .sign(&self.issuer)
                    .map_err(internal)?;
                Ok(Admitted {
                    user_jwt: jwt,
                    device: Some(peer.id),
                })
            }
            other => Err(Refusal::Kind(other.to_string())),
        }
    }

    /// Decides and signs the response to one raw request (`None` when the
    /// request itself does not verify: nats-server did not send it).
    pub fn respond(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let token = std::str::from_utf8(payload).ok()?;
        let request = match AuthorizationRequest::decode(token) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "device authorization: unreadable request ignored");
                return None;
            }
        };
        let outcome = self.decide(&request);
        let response = match &outcome {
            Ok(admitted) => {
                if let Some(device) = admitted.device {
                    // Recorded before answering, so a revocation that
                    // races the admission still finds the connection.
                    self.sessions
                        .record(device, &request.server_id, request.client_id);
                    tracing::info!(device_id = %device, client = request.client_id,
                        host = %request.client_host, "device admitted");
                } else {
                    tracing::debug!(client = request.client_id, "collector admitted");
                }
                serviceradar_natsconf::jwt::authorization_response(
                    &self.issuer,
                    &request,
                    Ok(admitted.user_jwt.as_str()),
                )
            }
            Err(refusal) => {
                tracing::warn!(reason = %refusal, client = request.client_id,
                    host = %request.client_host, "device authorization refused a connection");
                serviceradar_natsconf::jwt::authorization_response(
                    &self.issuer,
                    &request,
                    Err(refusal.to_string().as_str()),
                )
            }
        };
        match response {
            Ok(jwt) => Some(jwt.into_bytes()),
            Err(e) => {
                tracing::error!(error = %e, "device authorization: signing the response failed");
                None
            }
        }
    }
}

fn internal(e: JwtError) -> Refusal {
    tracing::error!(error = %e, "device authorization: signing a user failed");
    Refusal::Internal
}

/// The running service; dropping it stops it.
#[derive(Debug)]
pub struct DeviceAuthService {
    tasks: JoinSet<()>,
    registry: Registry,
    sessions: Sessions,
}

impl DeviceAuthService {
    /// The local registry copy (tests look at it).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The device connections the service knows open (tests look at it).
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Stops every task.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

async fn connect(
    settings: &DeviceAuthSettings,
    user: &NKey,
    name: &str,
) -> Result<async_nats::Client, DeviceAuthError> {
    let seed = user.seed().map_err(|_| DeviceAuthError::BadSeeds)?;
    async_nats::ConnectOptions::with_nkey(seed.to_string())
        .require_tls(true)
        .add_root_certificates(settings.tenant_ca.clone())
        .add_client_certificate(settings.client_cert.clone(), settings.client_key.clone())
        .name(name)
        // The hub answers the registry's reads only under this site's own
        // inbox prefix (the leaf's link permissions).
        .custom_inbox_prefix(serviceradar_natsconf::leaf::site_inbox_prefix(
            settings.site_id,
        ))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(settings.leaf_url.as_str())
        .await
        .map_err(nats("connecting to the leaf"))
}

/// Runs the service for as long as the agent runs: started when the agent
/// starts (the leaf's config includes `device-auth.conf`), restarted 5 s
/// after a failure to start. Until it answers, the leaf admits no client:
/// the leaf fails closed.
pub async fn serve(settings: DeviceAuthSettings) {
    loop {
        match start(settings.clone()).await {
            Ok(service) => {
                // Runs until the agent stops (dropping the service stops it).
                let _service = service;
                std::future::pending::<()>().await;
            }
            Err(e) => {
                tracing::error!(error = %report(&e), tenant_id = %settings.tenant_id,
                    site_id = %settings.site_id,
                    "the device authorization service did not start; the leaf admits no client until it does (retry in 5 s)");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// Starts the service: loads the keys from `settings.nats_dir` (written by
/// [`keys::init`] before the leaf started), connects to the leaf as the
/// service and system users, loads the local registry copy, answers
/// authorization requests and keeps the copy in sync with the hub.
pub async fn start(settings: DeviceAuthSettings) -> Result<DeviceAuthService, DeviceAuthError> {
    let span = tracing::info_span!("device_auth", tenant_id = %settings.tenant_id,
        site_id = %settings.site_id);
    async move {
        let keys = keys::load(&settings.nats_dir)?;
        let client = connect(&settings, &keys.service, "serviceradar-device-auth").await?;
        let system = connect(&settings, &keys.system, "serviceradar-device-auth-sys").await?;
        let sessions = Sessions::default();
        let registry =
            Registry::open(&client, settings.site_id, sessions.clone(), system.clone()).await?;
        let authorizer = Authorizer::new(
            settings.clone(),
            keys.issuer,
            registry.clone(),
            sessions.clone(),
        )?;
        let mut requests = client
            .subscribe(AUTH_CALLOUT_SUBJECT)
            .await
            .map_err(nats("subscribing to authorization requests"))?;
        client
            .flush()
            .await
            .map_err(nats("flushing the subscription"))?;
        let mut gone = system
            .subscribe(DISCONNECT_EVENTS)
            .await
            .map_err(nats("subscribing to disconnect events"))?;
        system
            .flush()
            .await
            .map_err(nats("flushing the subscription"))?;
        let mut tasks = JoinSet::new();
        let span = tracing::Span::current();
        {
            let client = client.clone();
            tasks.spawn(
                async move {
                    // Each request is decided and signed right here, on the
                    // agent's one runtime thread: about 0.2 ms of CPU (one
                    // verification, two signatures; a chain seen before is
                    // not parsed again). Handing it to other threads cost more
                    // than the work in thread wake-ups, and the leaf and
                    // its clients need the other cores (BENCHMARKS.md,
                    // issue 16).
                    while let Some(message) = requests.next().await {
                        let Some(reply) = message.reply else { continue };
                        let Some(response) = authorizer.respond(&message.payload) else {
                            continue;
                        };
                        if let Err(e) = client.publish(reply, response.into()).await {
                            tracing::warn!(error = %e, "sending an authorization response failed");
                        }
                    }
                    tracing::warn!("the subscription to authorization requests ended");
                }
                .instrument(span.clone()),
            );
        }
        {
            let sessions = sessions.clone();
            // A session ends with its user's expiry at the latest.
            let longest = settings.session_lifetime + Duration::from_secs(60);
            tasks.spawn(
                async move {
                    let mut prune = tokio::time::interval(Duration::from_secs(60));
                    loop {
                        tokio::select! {
                            event = gone.next() => {
                                let Some(event) = event else { break };
                                if let Ok(event) = serde_json::from_slice::<DisconnectEvent>(&event.payload) {
                                    sessions.forget(&event.server.id, event.client.id);
                                }
                            }
                            _ = prune.tick() => sessions.prune(longest),
                        }
                    }
                    tracing::warn!("the subscription to disconnect events ended");
                }
                .instrument(span.clone()),
            );
        }
        {
            let registry = registry.clone();
            let hub = async_nats::jetstream::with_domain(client.clone(), &settings.hub_domain);
            let interval = settings.resync_interval;
            tasks.spawn(
                async move { registry.replicate(hub, interval).await }.instrument(span.clone()),
            );
        }
        tracing::info!("device authorization service ready");
        Ok(DeviceAuthService {
            tasks,
            registry,
            sessions,
        })
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    type Chains = VerifiedChains<u32>;

    #[test]
    fn a_chain_is_remembered_only_for_the_same_leaf_and_issuer() {
        let chains = Chains::default();
        let key = chain_key("LEAF", "CA");
        chains.insert(key, 1);
        assert_eq!(chains.get(&key), Some(1));
        // Another issuer, or the same bytes split differently, is another chain.
        assert_eq!(chains.get(&chain_key("LEAF", "CA2")), None);
        assert_eq!(chains.get(&chain_key("LEAFC", "A")), None);
        assert_eq!(chains.get(&chain_key("LEA", "FCA")), None);
    }

    #[test]
    fn the_verified_chains_never_outgrow_their_capacity() {
        let chains = Chains::default();
        for n in 0..Chains::CAPACITY + 10 {
            chains.insert(chain_key(&n.to_string(), "CA"), 1);
            assert!(chains.lock().len() <= Chains::CAPACITY);
        }
        let last = chain_key(&(Chains::CAPACITY + 9).to_string(), "CA");
        assert_eq!(chains.get(&last), Some(1));
    }
}
