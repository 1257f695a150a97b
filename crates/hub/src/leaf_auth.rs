//! Leaf authorization: the hub's auth callout service for edge leaves.
//!
//! Why this exists: nats-server verifies that a leaf's client certificate
//! chains to the platform root, but it is the user JWT in the leaf's creds
//! that picks the NATS account. A leaf presenting *tenant B's* certificate
//! with *tenant A's* creds would land in A's account. So leaf creds are users
//! of a separate account (`LEAVES`, [`Pki::leaf_auth`]) whose JWT enables
//! external authorization: the hub sends every leaf connection there to this
//! service (`$SYS.REQ.USER.AUTH`, queue group [`QUEUE_GROUP`], so several
//! control-plane replicas share the work) with the certificate chain it
//! verified. The service admits the connection into its tenant's account only
//! when:
//!
//! 1. it is a leafnode connection;
//! 2. the presented user JWT is a leaf user signed by the `LEAVES` account,
//!    and the connection signed the server's nonce with that user's key;
//! 3. the verified chain's end-entity certificate is a *leaf* certificate
//!    whose SPIFFE id names the same tenant and site as the JWT's tags, and
//!    its issuer is that tenant's stored intermediate CA;
//! 4. the site still exists.
//!
//! The answer is a user JWT of the tenant's account for the key the server
//! chose for this connection, limited to leafnode connections and expiring
//! after [`LeafAuthSettings::session_lifetime`] (or with the certificate, if
//! sooner), when the leaf reconnects and is checked again. The key is recorded
//! ([`serviceradar_store::Scoped::record_leaf_session`]) so deleting the site
//! revokes it, which disconnects the live session. Refusals are answered with
//! the reason (the hub logs it), logged here with the tenant and site, and
//! counted in `serviceradar_leaf_auth_total{outcome}`. A failure of the
//! store or the PKI while deciding is logged with its causes and answered as
//! [`Refusal::Unavailable`]; failures of the service itself (connecting,
//! subscribing, pushing) are [`HubError`]s, logged before it reconnects.
//!
//! On start (and each reconnect) the service pushes the `LEAVES` account JWT
//! to the hub as the system account, so a hub whose config predates it learns
//! it without a restart.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serviceradar_domain::{EdgeSiteId, TenantId, TenantScope};
use serviceradar_natsconf::jwt::{
    AUTH_CALLOUT_SUBJECT, AuthorizationRequest, NKey, authorization_response, claim_type,
    decode_claims, verify_signed_nonce,
};
use serviceradar_pki::{IdentityKind, PeerIdentity};
use serviceradar_store::{Store, StoreError};

use crate::client::HubEndpoint;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;
use uuid::Uuid;

use serviceradar_identity::{LEAF_SITE_TAG, LEAF_TENANT_TAG, Pki};

use crate::HubError;
use crate::error::{WithCauses, identity, nats};

/// Queue group of the service's subscription.
pub const QUEUE_GROUP: &str = "serviceradar-leaf-auth";
/// How long an admitted leaf session lasts before the leaf must reconnect
/// (and be checked again), by default.
pub const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// `client_info.kind` of leafnode connections in authorization requests.
const LEAFNODE_KIND: &str = "Leafnode";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A leaf the service admitted into its tenant's account (its leafnode
/// connection completes right after).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafAdmitted {
    /// The leaf's tenant.
    pub tenant_id: TenantId,
    /// The leaf's site.
    pub site_id: EdgeSiteId,
}

/// Where the service announces admitted leaves. Ingestion listens, to set up
/// a joining site's buffer within seconds instead of at its next periodic
/// sync. Cheap to clone; announcing with nobody listening is a no-op.
#[derive(Debug, Clone)]
pub struct Admissions(tokio::sync::broadcast::Sender<LeafAdmitted>);

impl Default for Admissions {
    fn default() -> Self {
        Self(tokio::sync::broadcast::channel(1024).0)
    }
}

impl Admissions {
    /// A receiver of every admission from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<LeafAdmitted> {
        self.0.subscribe()
    }

    fn announce(&self, admitted: LeafAdmitted) {
        let _ = self.0.send(admitted);
    }
}

/// Where the hub is and how to reach it.
#[derive(Debug, Clone)]
pub struct LeafAuthSettings {
    /// The hub, and the lifetime of the service's own NATS users.
    pub hub: HubEndpoint,
    /// Lifetime of an admitted leaf session.
    pub session_lifetime: Duration,
    /// Where admitted leaves are announced.
    pub admissions: Admissions,
}

impl LeafAuthSettings {
    /// Settings for the hub at `hub_url` with defaults.
    pub fn new(hub_url: impl Into<String>) -> Self {
        Self::for_hub(HubEndpoint::new(hub_url))
    }

    /// Settings for the hub `hub` with defaults.
    pub fn for_hub(hub: HubEndpoint) -> Self {
        Self {
            hub,
            session_lifetime: DEFAULT_SESSION_LIFETIME,
            admissions: Admissions::default(),
        }
    }
}

/// Why a leaf connection was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// Only leafnode connections authenticate in the leaf account.
    #[error("only leafnode connections may use leaf credentials (got {0:?})")]
    NotALeafnode(String),
    /// The creds are not a leaf user of the leaf account, or the connection
    /// does not hold their key.
    #[error("invalid leaf credentials: {0}")]
    Credentials(&'static str),
    /// No certificate chain verified by the hub.
    #[error("a verified client certificate is required")]
    NoCertificate,
    /// The certificate is not a leaf certificate of this trust domain.
    #[error("client certificate rejected: {0}")]
    Certificate(String),
    /// The certificate names another tenant or site than the creds.
    #[error("the certificate's tenant or site does not match the credentials")]
    Mismatch,
    /// The certificate's issuer is not the tenant's intermediate CA.
    #[error("the certificate was not issued by the tenant's CA")]
    ForeignIssuer,
    /// The tenant or site does not exist (any more).
    #[error("unknown or deleted edge site")]
    UnknownSite,
    /// The store or the PKI failed; the leaf retries.
    #[error("authorization temporarily unavailable")]
    Unavailable,
}

impl Refusal {
    fn outcome(&self) -> &'static str {
        match self {
            Self::NotALeafnode(_) => "not_leafnode",
            Self::Credentials(_) => "bad_credentials",
            Self::NoCertificate => "no_certificate",
            Self::Certificate(_) => "bad_certificate",
            Self::Mismatch => "mismatch",
            Self::ForeignIssuer => "foreign_issuer",
            Self::UnknownSite => "unknown_site",
            Self::Unavailable => "unavailable",
        }
    }
}

/// An admitted leaf session.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Tenant of the leaf.
    pub tenant_id: TenantId,
    /// Site of the leaf.
    pub site_id: EdgeSiteId,
    /// User JWT of the tenant's account for the connection's key.
    pub user_jwt: String,
}

/// What a leaf's creds claim: its user key and the tenant and site in its tags.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LeafClaims {
    user: String,
    name: String,
    tenant: Uuid,
    site: Uuid,
}

/// Checks the presented creds (step 2): a non-bearer, unexpired user JWT
/// issued by `leaf_account`, tagged with tenant and site, whose key signed
/// the server's nonce.
fn check_creds(request: &AuthorizationRequest, leaf_account: &str) -> Result<LeafClaims, Refusal> {
    let claims =
        decode_claims(&request.user_jwt).map_err(|_| Refusal::Credentials("unreadable JWT"))?;
    if claim_type(&claims) != Some("user") || claims["iss"].as_str() != Some(leaf_account) {
        return Err(Refusal::Credentials("not issued by the leaf account"));
    }
    if claims["nats"]["bearer_token"].as_bool() == Some(true) {
        return Err(Refusal::Credentials("bearer tokens are not accepted"));
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if claims["exp"].as_i64().is_some_and(|exp| exp < now) {
        return Err(Refusal::Credentials("expired"));
    }
    let user = claims["sub"].as_str().unwrap_or_default();
    if !verify_signed_nonce(user, &request.nonce, &request.signed_nonce) {
        return Err(Refusal::Credentials("the nonce signature does not verify"));
    }
    let tag = |prefix: &str| uuid_tag(&claims, prefix);
    let (Some(tenant), Some(site)) = (tag(LEAF_TENANT_TAG), tag(LEAF_SITE_TAG)) else {
        return Err(Refusal::Credentials("no tenant and site tags"));
    };
    Ok(LeafClaims {
        user: user.to_owned(),
        name: claims["name"].as_str().unwrap_or("leaf").to_owned(),
        tenant,
        site,
    })
}

/// The id in the first of a user JWT's tags (`claims`) that starts with
/// `prefix` (the leaf's tenant or site tag), if it is a UUID.
fn uuid_tag(claims: &serde_json::Value, prefix: &str) -> Option<Uuid> {
    claims["nats"]["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str()?.strip_prefix(prefix))
        .next()
        .and_then(|id| Uuid::parse_str(id).ok())
}

/// The tenant and site a request's user JWT names, if the leaf account
/// issued it (its signature on the nonce is not required: this only decides
/// where a refusal is recorded).
fn claimed_site(
    request: &AuthorizationRequest,
    leaf_account: &str,
) -> Option<(TenantId, EdgeSiteId)> {
    let claims = decode_claims(&request.user_jwt).ok()?;
    if claims["iss"].as_str() != Some(leaf_account) {
        return None;
    }
    let tag = |prefix: &str| uuid_tag(&claims, prefix);
    Some((
        TenantId(tag(LEAF_TENANT_TAG)?),
        EdgeSiteId(tag(LEAF_SITE_TAG)?),
    ))
}

/// Checks the certificate chain (step 3, without the store): the first
/// verified chain's end-entity certificate is a leaf certificate of
/// `trust_domain` issued by the next certificate, naming `claims`' tenant and
/// site. Returns the identity and the issuer's DER.
fn check_certificate(
    request: &AuthorizationRequest,
    trust_domain: &str,
    claims: &LeafClaims,
) -> Result<(PeerIdentity, Vec<u8>), Refusal> {
    let (leaf, issuer) = request
        .verified_leaf_and_issuer()
        .ok_or(Refusal::NoCertificate)?;
    let der = |pem: &str| {
        serviceradar_pki::inspect::pem_to_der(pem).map_err(|e| Refusal::Certificate(e.to_string()))
    };
    let (leaf, issuer) = (der(leaf)?, der(issuer)?);
    let peer = PeerIdentity::from_der_with_issuer(&leaf, &issuer, trust_domain)
        .map_err(|e| Refusal::Certificate(e.to_string()))?;
    if peer.kind != IdentityKind::Leaf {
        let kind = peer.kind.to_string();
        return Err(Refusal::Certificate(format!(
            "{} {kind} certificate is not a leaf certificate",
            if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
                "an"
            } else {
                "a"
            }
        )));
    }
    if peer.tenant_id != claims.tenant || peer.id != claims.site {
        return Err(Refusal::Mismatch);
    }
    Ok((peer, issuer))
}

/// The authorization service's state.
pub struct LeafAuthorizer {
    store: Store,
    pki: Arc<Pki>,
    account: NKey,
    session_lifetime: Duration,
    admissions: Option<Admissions>,
}

/// Logs `e` (with its causes) as the failure of `what` and refuses the leaf
/// as [`Refusal::Unavailable`] (it retries).
fn unavailable<E>(what: &'static str) -> impl FnOnce(E) -> Refusal
where
    E: std::error::Error + 'static,
{
    move |e| {
        tracing::error!(
            error = %WithCauses(&e),
            "leaf authorization: {what} failed"
        );
        Refusal::Unavailable
    }
}

fn site_lookup(e: StoreError) -> Refusal {
    match e {
        StoreError::NotFound => Refusal::UnknownSite,
        other => unavailable("site lookup")(other),
    }
}

impl LeafAuthorizer {
    /// An authorizer signing responses with the leaf account's key.
    pub async fn new(
        store: Store,
        pki: Arc<Pki>,
        session_lifetime: Duration,
    ) -> Result<Self, HubError> {
        let (account, _) = pki
            .leaf_auth(&store)
            .await
            .map_err(identity("loading the leaf authorization account key"))?;
        Ok(Self {
            store,
            pki,
            account,
            session_lifetime,
            admissions: None,
        })
    }

    /// Announces each admitted leaf on `admissions`.
    pub fn announcing(mut self, admissions: Admissions) -> Self {
        self.admissions = Some(admissions);
        self
    }

    /// Decides one request (steps 1 to 4 of the module docs) and, when
    /// admitted, records the session.
    pub async fn authorize(&self, request: &AuthorizationRequest) -> Result<Grant, Refusal> {
        if request.client_kind != LEAFNODE_KIND {
            return Err(Refusal::NotALeafnode(request.client_kind.clone()));
        }
        let claims = check_creds(request, &self.account.public_key())?;
        let (peer, issuer_der) = check_certificate(request, self.pki.trust_domain(), &claims)?;
        let tenant_id = TenantId(claims.tenant);
        let site_id = EdgeSiteId(claims.site);
        let tenant = self.store.tenant(tenant_id).await.map_err(site_lookup)?;
        let scoped = self.store.scoped(TenantScope::for_system_task(tenant_id));
        let ca = scoped
            .tenant_ca()
            .await
            .map_err(unavailable("tenant CA lookup"))?
            .ok_or(Refusal::UnknownSite)?;
        let ca_der = serviceradar_pki::inspect::pem_to_der(&ca.cert_pem)
            .map_err(unavailable("reading the tenant CA"))?;
        if ca_der != issuer_der {
            return Err(Refusal::ForeignIssuer);
        }
        let site = scoped.site(site_id).await.map_err(site_lookup)?;
        // What this site's leaf may exchange with the hub: its own site's
        // subjects and buffer, never the tenant's other sites or the hub's
        // JetStream API (a compromised edge box affects its own site only).
        let link = serviceradar_natsconf::leaf::site_link_permissions(
            tenant.slug.as_str(),
            site.slug.as_str(),
            site_id.0,
            serviceradar_natsconf::hub::DEFAULT_HUB_DOMAIN,
        )
        .map_err(unavailable("the site's link permissions"))?;

        let now = time::OffsetDateTime::now_utc();
        let expires = (now + self.session_lifetime).min(peer.not_after);
        let user_jwt = self
            .pki
            .leaf_session_jwt(
                &self.store,
                &tenant,
                &request.user_nkey,
                &claims.name,
                &link,
                expires.unix_timestamp(),
            )
            .await
            .map_err(unavailable("signing the session"))?;
        let now_ms = serviceradar_identity::to_ms(now);
        let lifetime_ms = i64::try_from(self.session_lifetime.as_millis()).unwrap_or(i64::MAX);
        scoped
            .record_leaf_session(
                site_id,
                &request.user_nkey,
                now_ms,
                now_ms.saturating_sub(lifetime_ms),
            )
            .await
            .map_err(unavailable("recording the session"))?;
        // Checked again after recording: a site deleted in between either
        // sees this session when it revokes, or is seen missing here.
        scoped.site(site_id).await.map_err(site_lookup)?;
        // What the UI shows while waiting is about a leaf that now joined.
        if let Err(e) = scoped.forget_leaf_refusal(site_id).await {
            tracing::debug!(error = %e, "forgetting the site's last leaf refusal failed");
        }
        if let Some(admissions) = &self.admissions {
            admissions.announce(LeafAdmitted { tenant_id, site_id });
        }
        Ok(Grant {
            tenant_id,
            site_id,
            user_jwt,
        })
    }

    /// Records `refusal` as the last refusal of the site the request's
    /// credentials name, when they are the platform's own leaf credentials
    /// (issued by the leaf account, tagged with tenant and site), so the
    /// tenant's setup page can say why its leaf cannot join. Forged or
    /// foreign credentials name no site anyone should be told about, and a
    /// refusal because this service was unavailable is not the leaf's fault.
    async fn note_refusal(&self, request: &AuthorizationRequest, refusal: &Refusal) {
        if matches!(refusal, Refusal::Unavailable) {
            return;
        }
        let Some((tenant, site)) = claimed_site(request, &self.account.public_key()) else {
            return;
        };
        let now_ms = serviceradar_identity::to_ms(time::OffsetDateTime::now_utc());
        let scoped = self.store.scoped(TenantScope::for_system_task(tenant));
        if let Err(e) = scoped
            .record_leaf_refusal(site, &refusal.to_string(), now_ms)
            .await
        {
            tracing::debug!(error = %e, "recording the leaf refusal failed");
        }
    }

    /// The signed response to a raw request payload, or `None` when the
    /// payload is not a valid request (the server then times out the
    /// connection).
    pub async fn respond(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let token = std::str::from_utf8(payload).ok()?;
        let request = match AuthorizationRequest::decode(token) {
            Ok(request) => request,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an invalid authorization request");
                metrics::counter!("serviceradar_leaf_auth_total", "outcome" => "invalid_request")
                    .increment(1);
                return None;
            }
        };
        let span = tracing::info_span!("leaf_auth", host = %request.client_host,
            leaf = %request.client_name, tenant_id = tracing::field::Empty,
            site_id = tracing::field::Empty);
        async {
            let outcome = self.authorize(&request).await;
            let response = match &outcome {
                Ok(grant) => {
                    let span = tracing::Span::current();
                    span.record("tenant_id", tracing::field::display(grant.tenant_id));
                    span.record("site_id", tracing::field::display(grant.site_id));
                    tracing::info!("leaf admitted to its tenant's account");
                    metrics::counter!("serviceradar_leaf_auth_total", "outcome" => "admitted")
                        .increment(1);
                    authorization_response(&self.account, &request, Ok(&grant.user_jwt))
                }
                Err(refusal) => {
                    tracing::warn!(reason = %refusal, "leaf refused");
                    self.note_refusal(&request, refusal).await;
                    metrics::counter!("serviceradar_leaf_auth_total", "outcome" => refusal.outcome())
                        .increment(1);
                    authorization_response(&self.account, &request, Err(&refusal.to_string()))
                }
            };
            match response {
                Ok(token) => Some(token.into_bytes()),
                Err(e) => {
                    tracing::error!(error = %e, "signing the authorization response failed");
                    None
                }
            }
        }
        .instrument(span)
        .await
    }
}

/// Runs the service until `stop` turns true, reconnecting with backoff.
pub fn spawn(
    store: Store,
    pki: Arc<Pki>,
    settings: LeafAuthSettings,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let span = tracing::info_span!("leaf_auth_service", hub = %settings.hub.url);
    tokio::spawn(run(store, pki, settings, None, stop).instrument(span))
}

/// A running service that stops when dropped (tests, benchmarks).
pub struct LeafAuthService {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Drop for LeafAuthService {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

/// Connects to the hub and subscribes (so leaves are answered from when this
/// returns), then serves in the background like [`spawn`].
pub async fn start(
    store: Store,
    pki: Arc<Pki>,
    settings: LeafAuthSettings,
) -> Result<LeafAuthService, HubError> {
    let session = Session::open(&store, &pki, &settings).await?;
    let (stop, stop_rx) = watch::channel(false);
    let span = tracing::info_span!("leaf_auth_service", hub = %settings.hub.url);
    let task = tokio::spawn(run(store, pki, settings, Some(session), stop_rx).instrument(span));
    Ok(LeafAuthService { stop, task })
}

async fn run(
    store: Store,
    pki: Arc<Pki>,
    settings: LeafAuthSettings,
    mut session: Option<Session>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let result = match session.take() {
            Some(open) => open.serve(&mut stop).await,
            None => match Session::open(&store, &pki, &settings).await {
                Ok(open) => {
                    backoff = Duration::from_millis(250);
                    open.serve(&mut stop).await
                }
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(Served::Stopped) => return,
            // Its user is due for renewal: the new session subscribes before
            // the old one lets go, so no leaf finds nobody answering.
            Ok(Served::Renew(old)) => match Session::open(&store, &pki, &settings).await {
                Ok(new) => {
                    tracing::info!("leaf authorization service renewed its NATS user");
                    drop(old);
                    session = Some(new);
                    continue;
                }
                Err(e) => tracing::warn!(
                    error = format!("{e:#}"),
                    "renewing the leaf authorization service's NATS user failed; retrying"
                ),
            },
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "leaf authorization service interrupted; retrying"
            ),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// A connection of the service to the hub, subscribed to requests.
struct Session {
    client: async_nats::Client,
    requests: async_nats::Subscriber,
    authorizer: Arc<LeafAuthorizer>,
    /// When its NATS user is due for renewal (before it expires).
    renew_at: tokio::time::Instant,
}

/// How a session's serving ended.
enum Served {
    /// `stop` turned true.
    Stopped,
    /// Its NATS user is due for renewal; it still answers until dropped.
    Renew(Box<Session>),
}

impl Session {
    async fn open(
        store: &Store,
        pki: &Arc<Pki>,
        settings: &LeafAuthSettings,
    ) -> Result<Self, HubError> {
        push_leaf_account(store, pki, settings).await?;
        let authorizer = Arc::new(
            LeafAuthorizer::new(store.clone(), pki.clone(), settings.session_lifetime)
                .await?
                .announcing(settings.admissions.clone()),
        );
        let lifetime = settings.hub.service_users;
        let creds = pki
            .leaf_auth_service_creds(store, lifetime.expires_at())
            .await
            .map_err(identity("minting the leaf authorization service's creds"))?;
        let renew_at = tokio::time::Instant::from_std(lifetime.renew_at());
        let client = settings
            .hub
            .connect(creds.as_str(), "serviceradar-leaf-auth")
            .await?;
        let requests = client
            .queue_subscribe(AUTH_CALLOUT_SUBJECT, QUEUE_GROUP.into())
            .await
            .map_err(nats("subscribing to authorization requests"))?;
        client
            .flush()
            .await
            .map_err(nats("flushing the subscription to authorization requests"))?;
        tracing::info!("leaf authorization service ready");
        Ok(Self {
            client,
            requests,
            authorizer,
            renew_at,
        })
    }

    /// Answers requests until `stop`, until its user is due for renewal, or
    /// until the connection fails.
    async fn serve(mut self, stop: &mut watch::Receiver<bool>) -> Result<Served, HubError> {
        loop {
            tokio::select! {
                message = self.requests.next() => {
                    let message = message.ok_or(HubError::SubscriptionClosed {
                        what: "subscription to authorization requests",
                    })?;
                    let Some(reply) = message.reply else { continue };
                    let (authorizer, client) = (self.authorizer.clone(), self.client.clone());
                    tokio::spawn(async move {
                        if let Some(response) = authorizer.respond(&message.payload).await
                            && let Err(e) = client.publish(reply, response.into()).await
                        {
                            tracing::warn!(error = %e, "sending an authorization response failed");
                        }
                    }.in_current_span());
                }
                _ = stop.wait_for(|s| *s) => return Ok(Served::Stopped),
                _ = tokio::time::sleep_until(self.renew_at) => return Ok(Served::Renew(Box::new(self))),
            }
        }
    }
}

/// Pushes the leaf account's JWT to the hub (`$SYS.REQ.CLAIMS.UPDATE`).
async fn push_leaf_account(
    store: &Store,
    pki: &Pki,
    settings: &LeafAuthSettings,
) -> Result<(), HubError> {
    let jwt = pki
        .leaf_auth_account_jwt(store)
        .await
        .map_err(identity("signing the leaf authorization account JWT"))?;
    let creds = pki
        .system_user_creds(
            store,
            "serviceradar-leaf-auth-push",
            settings.hub.service_users.expires_at(),
        )
        .await
        .map_err(identity(
            "minting the system user that pushes the leaf account",
        ))?;
    let system = settings
        .hub
        .connect(creds.as_str(), "serviceradar-leaf-auth-push")
        .await?;
    // Its errors name the account (`LEAVES`).
    crate::client::push_account_jwt(&system, &jwt, REQUEST_TIMEOUT).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serviceradar_natsconf::jwt::{KeyKind, UserClaims};

    fn request(kind: &str, user_jwt: &str, nonce: &str, sig: &str) -> AuthorizationRequest {
        AuthorizationRequest {
            account: String::new(),
            server_id: NKey::generate(KeyKind::Server).public_key(),
            server_name: "hub".into(),
            user_nkey: NKey::generate(KeyKind::User).public_key(),
            client_kind: kind.into(),
            client_host: "127.0.0.1".into(),
            client_id: 1,
            nonce: nonce.into(),
            user_jwt: user_jwt.into(),
            signed_nonce: sig.into(),
            client_name: "leaf".into(),
            tls: None,
        }
    }

    fn signed(user: &NKey, nonce: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(user.sign(nonce.as_bytes()).unwrap())
    }

    fn leaf_jwt(account: &NKey, user: &NKey, tenant: Uuid, site: Uuid) -> String {
        let mut claims = UserClaims::new(&user.public_key(), "leaf-plant");
        claims.tags = vec![
            format!("{LEAF_TENANT_TAG}{tenant}"),
            format!("{LEAF_SITE_TAG}{site}"),
        ];
        claims.sign(account).unwrap()
    }

    #[test]
    fn creds_must_be_a_tagged_leaf_user_of_the_leaf_account_holding_its_key() {
        let leaves = NKey::generate(KeyKind::Account);
        let other = NKey::generate(KeyKind::Account);
        let user = NKey::generate(KeyKind::User);
        let (tenant, site) = (Uuid::new_v4(), Uuid::new_v4());
        let jwt = leaf_jwt(&leaves, &user, tenant, site);
        let good = request("Leafnode", &jwt, "n1", &signed(&user, "n1"));
        let claims = check_creds(&good, &leaves.public_key()).unwrap();
        assert_eq!((claims.tenant, claims.site), (tenant, site));
        assert_eq!(claims.user, user.public_key());

        // A tenant account's user (the cross-account attempt).
        let foreign = leaf_jwt(&other, &user, tenant, site);
        let r = request("Leafnode", &foreign, "n1", &signed(&user, "n1"));
        assert!(matches!(
            check_creds(&r, &leaves.public_key()),
            Err(Refusal::Credentials(_))
        ));
        // Someone else's signature of the nonce (a stolen JWT without its seed).
        let thief = NKey::generate(KeyKind::User);
        let r = request("Leafnode", &jwt, "n1", &signed(&thief, "n1"));
        assert!(check_creds(&r, &leaves.public_key()).is_err());
        // A replayed signature of another nonce.
        let r = request("Leafnode", &jwt, "n2", &signed(&user, "n1"));
        assert!(check_creds(&r, &leaves.public_key()).is_err());
        // No tags.
        let untagged = UserClaims::new(&user.public_key(), "leaf")
            .sign(&leaves)
            .unwrap();
        let r = request("Leafnode", &untagged, "n1", &signed(&user, "n1"));
        assert_eq!(
            check_creds(&r, &leaves.public_key()),
            Err(Refusal::Credentials("no tenant and site tags"))
        );
        // Bearer JWTs are refused for being bearer tokens, whatever their
        // nonce signature: a stolen bearer JWT presented with a valid-looking
        // signature (the thief's own key), and one signed by the user's real
        // key, each otherwise a perfect leaf JWT (tagged, unexpired).
        let mut bearer = UserClaims::new(&user.public_key(), "leaf-plant");
        bearer.tags = vec![
            format!("{LEAF_TENANT_TAG}{tenant}"),
            format!("{LEAF_SITE_TAG}{site}"),
        ];
        bearer.bearer_token = true;
        let bearer = bearer.sign(&leaves).unwrap();
        for sig in [signed(&thief, "n1"), signed(&user, "n1")] {
            let r = request("Leafnode", &bearer, "n1", &sig);
            assert_eq!(
                check_creds(&r, &leaves.public_key()),
                Err(Refusal::Credentials("bearer tokens are not accepted"))
            );
        }
        // Expired JWTs.
        let mut expired = UserClaims::new(&user.public_key(), "leaf");
        expired.expires = Some(1);
        let r = request(
            "Leafnode",
            &expired.sign(&leaves).unwrap(),
            "n1",
            &signed(&user, "n1"),
        );
        assert_eq!(
            check_creds(&r, &leaves.public_key()),
            Err(Refusal::Credentials("expired"))
        );
    }

    /// A request whose verified chain is `cert`'s (end entity, then its CA).
    fn with_chain(cert: &serviceradar_pki::IssuedCertificate) -> AuthorizationRequest {
        let mut r = request("Leafnode", "", "", "");
        let mut chain = vec![cert.cert_pem.clone()];
        chain.extend(
            serviceradar_pki::inspect::pem_chain_to_der(&cert.chain_pem)
                .unwrap()
                .iter()
                .map(|der| serviceradar_pki::inspect::der_to_pem(der)),
        );
        r.tls = Some(serviceradar_natsconf::jwt::ClientTls {
            version: "1.3".into(),
            verified_chains: vec![chain],
            certs: vec![],
        });
        r
    }

    #[test]
    fn the_certificate_must_be_a_leaf_certificate_of_the_claimed_tenant_and_site() {
        use serviceradar_pki::{CertificateAuthority, IssueOptions, SiteRef, TenantRef};
        let td = serviceradar_pki::DEFAULT_TRUST_DOMAIN;
        let validity = time::Duration::days(30);
        let root = CertificateAuthority::generate_root("root", validity).unwrap();
        let tenant_ca = |id: Uuid, slug: &str| {
            CertificateAuthority::generate_tenant_intermediate(&root, id, slug, td, validity)
                .unwrap()
                .with_issuer_chain(root.cert_pem())
                .unwrap()
        };
        let (acme, beta) = (Uuid::new_v4(), Uuid::new_v4());
        let (acme_ca, beta_ca) = (tenant_ca(acme, "acme"), tenant_ca(beta, "beta"));
        let opts = IssueOptions::default();
        let (plant, lab) = (Uuid::new_v4(), Uuid::new_v4());
        let acme_leaf = serviceradar_pki::issue_leaf_client(
            &acme_ca,
            TenantRef {
                id: acme,
                slug: "acme",
            },
            SiteRef {
                id: plant,
                slug: "plant",
            },
            &opts,
        )
        .unwrap();
        let beta_leaf = serviceradar_pki::issue_leaf_client(
            &beta_ca,
            TenantRef {
                id: beta,
                slug: "beta",
            },
            SiteRef {
                id: lab,
                slug: "lab",
            },
            &opts,
        )
        .unwrap();
        let acme_agent = serviceradar_pki::issue_agent(
            &acme_ca,
            TenantRef {
                id: acme,
                slug: "acme",
            },
            SiteRef {
                id: plant,
                slug: "plant",
            },
            plant,
            &opts,
        )
        .unwrap();
        let claims = |tenant, site| LeafClaims {
            user: String::new(),
            name: "leaf".into(),
            tenant,
            site,
        };

        let (peer, issuer) =
            check_certificate(&with_chain(&acme_leaf), td, &claims(acme, plant)).unwrap();
        assert_eq!((peer.tenant_id, peer.id), (acme, plant));
        assert_eq!(issuer, acme_ca.cert_der().to_vec());
        // Beta's certificate, acme's creds: the case the callout exists for.
        assert_eq!(
            check_certificate(&with_chain(&beta_leaf), td, &claims(acme, plant)).unwrap_err(),
            Refusal::Mismatch
        );
        // The right tenant but another site.
        assert_eq!(
            check_certificate(&with_chain(&acme_leaf), td, &claims(acme, lab)).unwrap_err(),
            Refusal::Mismatch
        );
        // An agent certificate of the same tenant and site is not a leaf's.
        assert!(matches!(
            check_certificate(&with_chain(&acme_agent), td, &claims(acme, plant)),
            Err(Refusal::Certificate(_))
        ));
        // Acme's leaf certificate presented as if beta's CA had issued it.
        let mut forged = with_chain(&acme_leaf);
        forged.tls.as_mut().unwrap().verified_chains[0][1] = beta_ca.cert_pem().to_owned();
        assert!(matches!(
            check_certificate(&forged, td, &claims(acme, plant)),
            Err(Refusal::Certificate(_))
        ));
        // Another trust domain.
        assert!(matches!(
            check_certificate(
                &with_chain(&acme_leaf),
                "other.example",
                &claims(acme, plant)
            ),
            Err(Refusal::Certificate(_))
        ));
    }

    #[test]
    fn a_connection_without_a_verified_chain_is_refused() {
        let claims = LeafClaims {
            user: String::new(),
            name: "leaf".into(),
            tenant: Uuid::new_v4(),
            site: Uuid::new_v4(),
        };
        let mut r = request("Leafnode", "", "", "");
        assert_eq!(
            check_certificate(&r, "serviceradar.io", &claims).unwrap_err(),
            Refusal::NoCertificate
        );
        // Peer certificates the server did not verify do not count.
        r.tls = Some(serviceradar_natsconf::jwt::ClientTls {
            version: "1.3".into(),
            verified_chains: vec![],
            certs: vec!["-----BEGIN CERTIFICATE-----".into()],
        });
        assert_eq!(
            check_certificate(&r, "serviceradar.io", &claims).unwrap_err(),
            Refusal::NoCertificate
        );
    }
}
