//! Enrollment: an operator creates a signed, single-use (by default) token
//! for a site; an edge box redeems it with certificate signing requests and a
//! NATS user public key, and gets back certificates and a user JWT for keys
//! that never left it. The same host redeeming again resumes; another host
//! is refused as a conflict. Every step is recorded in the token's history.
//!
//! Creating a token grants what downloading the site bundle grants (the
//! site's identities), so it needs [`Action::DownloadBundle`].
//!
//! A token of scope `site` or `agent` also registers how the platform
//! reaches the agent it enrolls (seed 004, "the platform knows agent
//! endpoint from onboarding registration"): created with an
//! `agent_endpoint`, redeeming it puts the site's agent in gateway-initiated
//! mode at that endpoint (the gateway polls it; the box's agent listens);
//! without one, the agent dials out. The endpoint passes the operator's
//! address rule (`domain::agent_poll::PollRules`) when the token is created and again when it
//! is redeemed.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serviceradar_domain::agent_poll::PollTarget;
use serviceradar_domain::enrollment::{
    DEFAULT_TTL, Enrolled, EnrolledAgent, EnrolledCollector, EnrolledLeaf, EnrollmentScope,
    EnrollmentStatus, RedeemRequest, check_ttl, check_uses,
};
use serviceradar_domain::state::PackageEvent;
use serviceradar_domain::validate::{FieldError, FieldErrors};
use serviceradar_domain::{Action, Actor, EdgeSiteId, Secret, TenantId, TenantScope};
use serviceradar_natsconf::{BufferStreamInput, buffer_stream_config};
use serviceradar_pki::token::{self, EnrollmentClaims, TokenError};
use serviceradar_pki::{
    CertificateRequest, IssueOptions, RequestProfile, SiteRef, TenantRef, issue_for_request,
};
use serviceradar_store::{
    EnrollmentEvent, EnrollmentTokenRecord, NewEnrollmentToken, Page, Redemption, RenewalOutcome,
    StoreError, now_ms,
};
use sha2::{Digest, Sha256};

use crate::error::finish;
use crate::params::parse_id_filter;
use crate::{Control, ControlError, PageParams};

/// How long a redemption waits for its site's provisioning job before
/// answering "try again".
const PROVISIONING_WAIT: Duration = Duration::from_secs(10);

/// Lifetime of certificates issued through enrollment, by default.
pub const DEFAULT_CERT_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

/// What enrollment needs to know about this control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentSettings {
    /// The URL edge boxes reach this control plane at (written into tokens).
    pub public_url: String,
    /// Lifetime of certificates issued through enrollment.
    pub cert_validity: Duration,
}

impl Default for EnrollmentSettings {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8080".into(),
            cert_validity: DEFAULT_CERT_VALIDITY,
        }
    }
}

/// Why a redemption was refused. Each has a stable code for scripts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    /// Not a token at all.
    #[error(
        "this is not an enrollment token (expected sr1.<claims>.<signature>); copy it again in full"
    )]
    Malformed,
    /// The signature does not verify.
    #[error(
        "the token's signature does not verify: it was altered, or was issued by another control plane"
    )]
    BadSignature,
    /// Signed by us but not on record (deleted with its site or tenant).
    #[error("this token is not known (its site may have been deleted); ask for a new token")]
    Unknown,
    /// Past its expiry.
    #[error("this token expired; ask your operator for a new one")]
    Expired,
    /// Revoked by an operator.
    #[error("this token was revoked; ask your operator for a new one")]
    Revoked,
    /// The token does not allow what was asked.
    #[error("this token is for {granted:?}, not {wanted:?}")]
    WrongScope {
        /// The token's scope.
        granted: String,
        /// What was asked.
        wanted: String,
    },
    /// A multi-use token whose uses are spent.
    #[error("every use of this token is spent; ask for a new token")]
    UsedUp,
    /// A single-use token another host redeemed.
    #[error(
        "this token was already redeemed by another host; if this machine replaces it, revoke the old enrollment and create a new token (a reinstall on the same host resumes instead)"
    )]
    HostConflict,
}

impl TokenRefusal {
    /// Stable code (`token_expired`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed => "token_malformed",
            Self::BadSignature => "token_bad_signature",
            Self::Unknown => "token_unknown",
            Self::Expired => "token_expired",
            Self::Revoked => "token_revoked",
            Self::WrongScope { .. } => "token_wrong_scope",
            Self::UsedUp => "token_used_up",
            Self::HostConflict => "token_host_conflict",
        }
    }
}

/// A new enrollment token.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentToken {
    /// `site` (leaf + agent, the default), `agent` or `collector:<type>`.
    pub scope: Option<String>,
    /// Lifetime: `10m` to `90d` (`m`, `h`, `d`); default `24h`.
    pub expires_in: Option<String>,
    /// How many hosts may redeem it, 1–100 (default 1).
    pub uses: Option<u32>,
    /// Gateway-initiated mode (scopes `site` and `agent`): `host:port` where
    /// the platform's gateway reaches the agent this token enrolls (IPv6 in
    /// brackets). A public address, unless the operator allows the range
    /// (`serve --agent-endpoint-allow-cidr`). Omitted: the agent dials out.
    pub agent_endpoint: Option<String>,
    /// Seconds between polls with `agent_endpoint` (within the operator's
    /// bounds, 5–3600 by default; default 30).
    pub poll_interval_secs: Option<i64>,
}

/// Filters for listing tokens.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct EnrollmentTokenQuery {
    /// Only tokens of this site.
    pub site_id: Option<String>,
}

/// A token as listed: its state, never its text.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollmentTokenView {
    /// Id (the token's `jti`).
    pub id: String,
    /// Its site.
    pub site_id: String,
    /// `site`, `agent` or `collector:<type>`.
    pub scope: String,
    /// `issued`, `redeemed`, `expired` or `revoked`.
    pub status: &'static str,
    /// Hosts that redeemed it.
    pub uses: u32,
    /// Hosts that may.
    pub max_uses: u32,
    /// Creator (user id).
    pub created_by: Option<String>,
    /// Creation (Unix ms).
    pub created_at: i64,
    /// Expiry (Unix ms).
    pub expires_at: i64,
    /// Revocation (Unix ms).
    pub revoked_at: Option<i64>,
    /// `dial_out`, or `gateway_initiated` (the agent it enrolls is polled at
    /// `agent_endpoint`).
    pub agent_mode: &'static str,
    /// Where the gateway reaches the agent (gateway-initiated mode).
    pub agent_endpoint: Option<String>,
    /// Seconds between polls (gateway-initiated mode).
    pub poll_interval_secs: Option<i64>,
}

impl EnrollmentTokenView {
    fn of(record: EnrollmentTokenRecord, now: i64) -> Self {
        Self {
            status: EnrollmentStatus::of(
                record.revoked_at.is_some(),
                record.expires_at,
                record.uses,
                record.max_uses,
                now,
            )
            .as_str(),
            id: record.id.to_string(),
            site_id: record.edge_site_id.to_string(),
            scope: record.scope,
            uses: record.uses,
            max_uses: record.max_uses,
            created_by: record.created_by,
            created_at: record.created_at,
            expires_at: record.expires_at,
            revoked_at: record.revoked_at,
            agent_mode: if record.agent_endpoint.is_some() {
                "gateway_initiated"
            } else {
                "dial_out"
            },
            agent_endpoint: record.agent_endpoint,
            poll_interval_secs: record.poll_interval_secs,
        }
    }
}

/// A created token: shown once.
#[derive(Debug)]
pub struct CreatedEnrollmentToken {
    /// Its state.
    pub token: EnrollmentTokenView,
    /// The token text.
    pub secret: Secret,
    /// The command to run at the edge (it holds the token).
    pub command: Secret,
}

/// One event of a token's history.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollmentEventView {
    /// `created`, `redeemed`, `resumed`, `refused`, `conflict`, `resolved`
    /// (a conflict an operator resolved), `revoked`.
    pub kind: String,
    /// The user who acted (none for the edge).
    pub actor: Option<String>,
    /// Where a redemption came from.
    pub remote_addr: Option<String>,
    /// What happened.
    pub detail: Option<String>,
    /// When (Unix ms).
    pub at: i64,
}

impl From<EnrollmentEvent> for EnrollmentEventView {
    fn from(e: EnrollmentEvent) -> Self {
        Self {
            kind: e.kind,
            actor: e.actor,
            remote_addr: e.remote_addr,
            detail: e.detail,
            at: e.at,
        }
    }
}

/// The SHA-256 (hex) of a token's text: what is stored.
fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

/// Parses `10m`, `24h`, `7d` into a token lifetime within its bounds.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    check_ttl(serviceradar_domain::duration::parse(text)?)
}

fn is_nats_user_key(key: &str) -> bool {
    key.len() == 56
        && key.starts_with('U')
        && key
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
}

impl Control {
    /// Creates an enrollment token for a site; the text is returned once.
    pub async fn create_enrollment_token(
        &self,
        actor: &Actor,
        site: EdgeSiteId,
        input: &CreateEnrollmentToken,
    ) -> Result<CreatedEnrollmentToken, ControlError> {
        let scoped = self.scoped(actor, Action::DownloadBundle)?;
        let mut errors = FieldErrors::default();
        let scope = errors.check(
            "scope",
            input
                .scope
                .as_deref()
                .unwrap_or("site")
                .parse::<EnrollmentScope>()
                .map_err(|m| FieldError::new("scope", m)),
        );
        let ttl = errors.check(
            "expires_in",
            match input.expires_in.as_deref() {
                Some(text) => parse_ttl(text),
                None => Ok(DEFAULT_TTL),
            }
            .map_err(|m| FieldError::new("expires_in", m)),
        );
        let uses = errors.check(
            "uses",
            check_uses(input.uses.unwrap_or(1)).map_err(|m| FieldError::new("uses", m)),
        );
        let agent_poll = match (input.agent_endpoint.as_deref(), input.poll_interval_secs) {
            (None, None) => None,
            (None, Some(_)) => {
                errors.0.push(FieldError::new(
                    "poll_interval_secs",
                    "is for gateway-initiated mode: give agent_endpoint too",
                ));
                None
            }
            (Some(_), _) if matches!(scope, Some(EnrollmentScope::Collector(_))) => {
                errors.0.push(FieldError::new(
                    "agent_endpoint",
                    "is for tokens that enroll an agent (scope site or agent)",
                ));
                None
            }
            (Some(endpoint), interval) => {
                match PollTarget::parse("agent_endpoint", endpoint, interval, self.poll_rules()) {
                    Ok(target) => Some(target),
                    Err(e) => {
                        errors.0.extend(e.0);
                        None
                    }
                }
            }
        };
        let (scope, (ttl, uses)) = finish(errors, scope.zip(ttl.zip(uses)))?;
        // 404 for another tenant's site, before anything is signed.
        scoped.site(site).await?;
        let key = self
            .pki()
            .enrollment_key(self.store())
            .await
            .map_err(|e| ControlError::internal("enrollment_key", format!("{e:#}")))?;
        let root = self
            .pki()
            .root_ca(self.store())
            .await
            .map_err(|e| ControlError::internal("root_ca", format!("{e:#}")))?;
        let expires_at =
            now_ms().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let claims = EnrollmentClaims {
            url: self.settings().enrollment.public_url.clone(),
            ca_sha256: hex::encode(Sha256::digest(root.cert_der())),
            tenant: actor.tenant_id.as_uuid(),
            site: site.as_uuid(),
            scope: scope.as_text(),
            exp: expires_at / 1000,
            jti: uuid::Uuid::now_v7(),
        };
        let text = token::sign(&claims, &key.pkcs8)
            .map_err(|e| ControlError::internal("enrollment_sign", e))?;
        let record = scoped
            .create_enrollment_token(&NewEnrollmentToken {
                id: claims.jti,
                edge_site_id: site,
                scope: claims.scope.clone(),
                token_hash: token_hash(&text),
                max_uses: uses,
                created_by: actor.user_id.to_string(),
                expires_at: claims.exp * 1000,
                onboarding_package: !matches!(scope, EnrollmentScope::Collector(_)),
                agent_poll: agent_poll
                    .as_ref()
                    .map(|t| (t.endpoint.to_string(), i64::from(t.interval.secs()))),
            })
            .await?;
        tracing::info!(site_id = %site, token_id = %claims.jti, scope = %claims.scope,
            agent_endpoint = ?agent_poll.as_ref().map(|t| t.endpoint.to_string()),
            "enrollment token created");
        let command = match scope {
            EnrollmentScope::Collector(kind) => {
                format!("serviceradar-cli collector add {kind} --token '{text}'")
            }
            _ => format!("sudo serviceradar-cli site init --token '{text}'"),
        };
        Ok(CreatedEnrollmentToken {
            token: EnrollmentTokenView::of(record, now_ms()),
            secret: Secret::new(text),
            command: Secret::new(command),
        })
    }

    /// A page of the tenant's enrollment tokens (optionally of one site).
    pub async fn list_enrollment_tokens(
        &self,
        actor: &Actor,
        query: &EnrollmentTokenQuery,
        page: &PageParams,
    ) -> Result<Page<EnrollmentTokenView>, ControlError> {
        let (scoped, page, site) = self.listing(actor, Action::ReadSites, page, |errors| {
            parse_id_filter::<EdgeSiteId>("site_id", query.site_id.as_deref(), "a site id", errors)
        })?;
        let now = now_ms();
        Ok(scoped
            .list_enrollment_tokens(site, &page)
            .await?
            .map(|r| EnrollmentTokenView::of(r, now)))
    }

    /// One token with its history.
    pub async fn enrollment_token(
        &self,
        actor: &Actor,
        id: uuid::Uuid,
    ) -> Result<(EnrollmentTokenView, Vec<EnrollmentEventView>), ControlError> {
        let scoped = self.scoped(actor, Action::ReadSites)?;
        let record = scoped.enrollment_token(id).await?;
        let events = scoped.enrollment_events(id).await?;
        Ok((
            EnrollmentTokenView::of(record, now_ms()),
            events.into_iter().map(Into::into).collect(),
        ))
    }

    /// Revokes a token (idempotent).
    pub async fn revoke_enrollment_token(
        &self,
        actor: &Actor,
        id: uuid::Uuid,
    ) -> Result<EnrollmentTokenView, ControlError> {
        let scoped = self.scoped(actor, Action::DownloadBundle)?;
        let record = scoped
            .revoke_enrollment_token(id, &actor.user_id.to_string())
            .await?;
        tracing::info!(token_id = %id, "enrollment token revoked");
        Ok(EnrollmentTokenView::of(record, now_ms()))
    }

    /// Redeems a token: no session, the token is the credential.
    pub async fn redeem_enrollment_token(
        &self,
        input: &RedeemRequest,
        remote_addr: Option<std::net::IpAddr>,
    ) -> Result<Enrolled, ControlError> {
        let remote = remote_addr.map(|a| a.to_string());
        let key = self
            .pki()
            .enrollment_key(self.store())
            .await
            .map_err(|e| ControlError::internal("enrollment_key", format!("{e:#}")))?;
        let claims = token::verify(&input.token, &key.public).map_err(|e| match e {
            TokenError::BadSignature => refused(TokenRefusal::BadSignature),
            _ => refused(TokenRefusal::Malformed),
        })?;
        let tenant_id = TenantId(claims.tenant);
        let site_id = EdgeSiteId(claims.site);
        let scoped = self.store().scoped(TenantScope::for_system_task(tenant_id));
        let record = match scoped.enrollment_token(claims.jti).await {
            Ok(record) => record,
            Err(StoreError::NotFound) => return Err(refused(TokenRefusal::Unknown)),
            Err(e) => return Err(e.into()),
        };
        let span = tracing::info_span!("enroll", tenant_id = %tenant_id, site_id = %site_id,
            token_id = %claims.jti);
        let _enter = span.enter();
        // Signed by us, so the hash matches unless the row was replaced;
        // checked anyway (the row is the authority on the token).
        if record.token_hash != token_hash(&input.token) || record.edge_site_id != site_id {
            return Err(refused(TokenRefusal::Unknown));
        }
        let refuse = |why: TokenRefusal| async {
            if let Err(e) = scoped
                .record_enrollment_refusal(claims.jti, remote.as_deref(), &why.to_string())
                .await
            {
                tracing::warn!(error = %e, "recording an enrollment refusal failed");
            }
            tracing::info!(code = why.code(), "enrollment refused");
            refused(why)
        };
        let now = now_ms();
        match EnrollmentStatus::of(record.revoked_at.is_some(), record.expires_at, 0, 1, now) {
            EnrollmentStatus::Revoked => return Err(refuse(TokenRefusal::Revoked).await),
            EnrollmentStatus::Expired => return Err(refuse(TokenRefusal::Expired).await),
            _ => {}
        }
        let granted: EnrollmentScope = record
            .scope
            .parse()
            .map_err(|e| ControlError::internal("enrollment_scope", e))?;
        let wanted_text = input.scope.as_deref().unwrap_or("site");
        let wanted = match wanted_text.parse::<EnrollmentScope>() {
            Ok(wanted) => wanted,
            Err(m) => return Err(ControlError::field("scope", m)),
        };
        if !granted.allows(&wanted) {
            return Err(refuse(TokenRefusal::WrongScope {
                granted: granted.as_text(),
                wanted: wanted.as_text(),
            })
            .await);
        }
        // The request: public material only.
        let mut errors = FieldErrors::default();
        let fingerprint = input.host_fingerprint.trim();
        if !(16..=128).contains(&fingerprint.len())
            || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit())
        {
            errors.0.push(FieldError::new(
                "host_fingerprint",
                "must be 16-128 hex characters",
            ));
        }
        let hostname = input.hostname.trim();
        if hostname.is_empty() || hostname.len() > 253 || hostname.chars().any(char::is_control) {
            errors.0.push(FieldError::new(
                "hostname",
                "must be 1-253 printable characters",
            ));
        }
        for (field, value) in [
            ("leaf_client_csr", &input.leaf_client_csr),
            ("leaf_server_csr", &input.leaf_server_csr),
            ("agent_csr", &input.agent_csr),
            ("collector_csr", &input.collector_csr),
            ("nats_user_public_key", &input.nats_user_public_key),
        ] {
            if value
                .as_deref()
                .is_some_and(|v| v.contains("PRIVATE KEY") || v.trim_start().starts_with("SU"))
            {
                errors.0.push(FieldError::new(
                    field,
                    "holds a private key or seed: send only the request or public key; keys stay on the edge",
                ));
            }
        }
        let csr =
            |field: &'static str, value: &Option<String>, errors: &mut FieldErrors| match value
                .as_deref()
            {
                None => {
                    errors
                        .0
                        .push(FieldError::new(field, "is required for this scope"));
                    None
                }
                Some(pem) => errors.check(
                    field,
                    CertificateRequest::from_pem(pem)
                        .map_err(|e| FieldError::new(field, e.to_string())),
                ),
            };
        let user_key = |errors: &mut FieldErrors| match input.nats_user_public_key.as_deref() {
            Some(key) if is_nats_user_key(key) => Some(key.to_owned()),
            Some(_) => {
                errors.0.push(FieldError::new(
                    "nats_user_public_key",
                    "must be a NATS user public key (U + 55 base32 characters)",
                ));
                None
            }
            None => {
                errors.0.push(FieldError::new(
                    "nats_user_public_key",
                    "is required for this scope",
                ));
                None
            }
        };
        let collector = match wanted {
            EnrollmentScope::Collector(kind) => Some((
                kind,
                csr("collector_csr", &input.collector_csr, &mut errors),
                user_key(&mut errors),
            )),
            _ => None,
        };
        let agent_csr = if collector.is_none() {
            csr("agent_csr", &input.agent_csr, &mut errors)
        } else {
            None
        };
        let leaf = if wanted == EnrollmentScope::Site {
            let client = csr("leaf_client_csr", &input.leaf_client_csr, &mut errors);
            let server = csr("leaf_server_csr", &input.leaf_server_csr, &mut errors);
            Some((client, server, user_key(&mut errors)))
        } else {
            None
        };
        // Gateway-initiated mode: the endpoint registered with the token,
        // checked again under the operator's current rule before a use is
        // counted (the rule may have narrowed since the token was made).
        let agent_poll = match (&record.agent_endpoint, agent_csr.is_some()) {
            (Some(endpoint), true) => {
                match PollTarget::parse(
                    "agent_endpoint",
                    endpoint,
                    record.poll_interval_secs,
                    self.poll_rules(),
                ) {
                    Ok(target) => Some(target),
                    Err(e) => {
                        for mut error in e.0 {
                            error.message = format!(
                                "the token's {} is no longer allowed: {}; ask for a new token",
                                error.field, error.message
                            );
                            errors.0.push(error);
                        }
                        None
                    }
                }
            }
            _ => None,
        };
        errors.into_result()?;
        // The site must be provisioned (its agent id exists) before a use is counted.
        let site = scoped.site(site_id).await?;
        let leaf_row = scoped.leaf_for_site(site_id).await?;
        // A box enrolled right after its site was created finds the
        // provisioning job running: wait for it a little before answering
        // 503 (which the CLI retries).
        let deadline = std::time::Instant::now() + PROVISIONING_WAIT;
        let agent = loop {
            if let Some(agent) = scoped.agent_for_site(site_id).await? {
                break agent;
            }
            if std::time::Instant::now() >= deadline {
                return Err(ControlError::Unavailable(
                    "the site is still being provisioned; try again in a few seconds".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let resumed = match scoped
            .redeem_enrollment_token(claims.jti, fingerprint, hostname, remote.as_deref())
            .await?
        {
            Redemption::Redeemed => false,
            Redemption::Resumed => true,
            Redemption::Spent => {
                let why = if record.max_uses == 1 {
                    TokenRefusal::HostConflict
                } else {
                    TokenRefusal::UsedUp
                };
                tracing::warn!(code = why.code(), hostname, "enrollment refused");
                return Err(refused(why));
            }
        };
        let tenant = self.store().tenant(tenant_id).await?;
        let ca = self
            .pki()
            .tenant_ca(self.store(), &tenant)
            .await
            .map_err(|e| ControlError::internal("tenant_ca", format!("{e:#}")))?;
        let root = self
            .pki()
            .root_ca(self.store())
            .await
            .map_err(|e| ControlError::internal("root_ca", format!("{e:#}")))?;
        let tenant_ref = TenantRef::of(&tenant);
        let site_ref = SiteRef::of(&site);
        let opts = IssueOptions {
            validity: ::time::Duration::try_from(self.settings().enrollment.cert_validity)
                .unwrap_or(::time::Duration::days(7)),
            ..self.pki().issue_options()
        };
        let issue = |profile, request: &CertificateRequest| {
            issue_for_request(&ca, tenant_ref, site_ref, profile, request, &opts)
                .map_err(|e| ControlError::internal("enrollment_issue", e))
        };
        let tenant_ca_pem = ca.cert_pem().to_owned();
        let with_ca = |cert: &str| format!("{cert}{tenant_ca_pem}");
        let provisioning = &self.settings().provisioning;
        let mut expires = ::time::OffsetDateTime::now_utc() + opts.validity;
        let agent_part = match &agent_csr {
            Some(request) => {
                let cert = issue(RequestProfile::Agent { agent_id: agent.id }, request)?;
                expires = expires.min(cert.not_after);
                scoped
                    .record_agent_renewal(
                        agent.id,
                        RenewalOutcome::Enrolled {
                            expires_at: serviceradar_identity::to_ms(cert.not_after),
                        },
                    )
                    .await?;
                // The registration decides how the platform reaches the
                // agent: polled at the token's endpoint, or dialling out.
                match &agent_poll {
                    Some(target) => {
                        scoped
                            .set_agent_poll(site_id, &target.endpoint, target.interval)
                            .await?;
                        tracing::info!(endpoint = %target.endpoint,
                            "agent registered in gateway-initiated mode");
                    }
                    None => {
                        if scoped.remove_agent_poll(site_id).await? {
                            tracing::info!("agent registered in dial-out mode (was polled)");
                        }
                    }
                }
                Some(EnrolledAgent {
                    agent_id: agent.id.to_string(),
                    cert_pem: with_ca(&cert.cert_pem),
                    gateway_url: provisioning.gateway_url.clone(),
                    endpoint: agent_poll.as_ref().map(|t| t.endpoint.to_string()),
                    poll_interval_secs: agent_poll.as_ref().map(|t| t.interval.secs()),
                })
            }
            None => None,
        };
        let collector_part = match collector {
            Some((kind, Some(request), Some(user))) => {
                let package = self
                    .enrolled_package(&scoped, &site, kind, hostname)
                    .await?;
                let cert = issue(
                    RequestProfile::Collector {
                        package_id: package.as_uuid(),
                    },
                    &request,
                )?;
                expires = expires.min(cert.not_after);
                let user_jwt = self
                    .pki()
                    .collector_user_jwt(
                        self.store(),
                        &tenant,
                        &format!("collector-{package}"),
                        &user,
                    )
                    .await
                    .map_err(|e| ControlError::internal("enrollment_jwt", format!("{e:#}")))?;
                scoped.add_package_user_key(package, &user).await?;
                Some(EnrolledCollector {
                    package_id: package.to_string(),
                    collector_type: kind.to_string(),
                    cert_pem: with_ca(&cert.cert_pem),
                    user_jwt,
                    nats_url: site.nats_leaf_url.to_string(),
                    subject_prefix: format!(
                        "edge.{}.{}.{}",
                        tenant.slug,
                        site.slug,
                        kind.subject_family()
                    ),
                })
            }
            Some(_) => return Err(ControlError::internal("enrollment", "collector fields")),
            None => None,
        };
        let leaf = match leaf {
            Some((Some(client), Some(server), Some(user))) => {
                let hosts = [site.nats_leaf_url.host().to_bare()];
                let client = issue(RequestProfile::LeafClient, &client)?;
                let server = issue(RequestProfile::LeafServer { hosts: &hosts }, &server)?;
                expires = expires.min(client.not_after).min(server.not_after);
                let user_jwt = self
                    .pki()
                    .leaf_user_jwt(
                        self.store(),
                        &tenant,
                        site.id,
                        &format!("leaf-{}", site.slug),
                        &user,
                    )
                    .await
                    .map_err(|e| ControlError::internal("enrollment_jwt", format!("{e:#}")))?;
                let stream = buffer_stream_config(&BufferStreamInput::new(
                    tenant.slug.as_str(),
                    site.slug.as_str(),
                ))
                .map_err(|e| ControlError::internal("enrollment_stream", e))?;
                Some(EnrolledLeaf {
                    client_cert_pem: with_ca(&client.cert_pem),
                    server_cert_pem: with_ca(&server.cert_pem),
                    user_jwt,
                    hub_url: leaf_row.upstream_url.clone(),
                    client_listen: leaf_row.local_listen.to_string(),
                    monitoring_listen: provisioning.leaf_monitoring_listen.clone(),
                    edge_buffer_stream: serde_json::to_value(&stream)
                        .map_err(|e| ControlError::internal("enrollment_stream", e))?,
                })
            }
            Some(_) => return Err(ControlError::internal("enrollment", "leaf fields")),
            None => None,
        };
        tracing::info!(resumed, hostname, "enrollment redeemed");
        Ok(Enrolled {
            resumed,
            scope: wanted.as_text(),
            tenant_id: tenant.id.to_string(),
            tenant_slug: tenant.slug.to_string(),
            site_id: site.id.to_string(),
            site_slug: site.slug.to_string(),
            site_name: site.name.to_string(),
            root_ca_pem: root.cert_pem().to_owned(),
            tenant_ca_pem: tenant_ca_pem.clone(),
            expires_at: serviceradar_identity::to_ms(expires),
            leaf,
            agent: agent_part,
            collector: collector_part,
        })
    }

    /// The package of a collector enrolled on `hostname`: found again when
    /// the same host enrolls the same type again (no duplicate), else
    /// created; moved to `installed` (the box that redeems is the one that
    /// installs).
    async fn enrolled_package(
        &self,
        scoped: &serviceradar_store::Scoped<'_>,
        site: &serviceradar_domain::resources::EdgeSite,
        kind: serviceradar_domain::resources::CollectorType,
        hostname: &str,
    ) -> Result<serviceradar_domain::PackageId, ControlError> {
        let short: String = hostname.chars().take(40).collect();
        let name = serviceradar_domain::validate::DisplayName::parse(&format!("{kind} on {short}"))
            .map_err(|e| ControlError::field("hostname", e.message))?;
        let existing = scoped
            .list_packages(
                &serviceradar_store::PackageFilter {
                    status: None,
                    collector_type: Some(kind),
                    edge_site_id: Some(site.id),
                    name_contains: Some(name.to_string()),
                },
                &serviceradar_store::PageRequest::first(),
            )
            .await?
            .items
            .into_iter()
            .find(|p| p.package.name == name);
        let package = match existing {
            Some(found) => found,
            None => {
                scoped
                    .create_package(&serviceradar_store::NewPackage {
                        name,
                        collector_type: kind,
                        edge_site_id: Some(site.id),
                    })
                    .await?
            }
        };
        let id = package.package.id;
        let mut status = package.package.status;
        for event in [PackageEvent::Download, PackageEvent::Install] {
            if let Ok(next) = status.apply(event) {
                scoped.transition_package(id, event).await?;
                status = next;
            }
        }
        Ok(id)
    }
}

fn refused(why: TokenRefusal) -> ControlError {
    ControlError::TokenRefused(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_parse_with_units_and_stay_in_bounds() {
        assert_eq!(parse_ttl("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_ttl("10m"), Ok(Duration::from_secs(600)));
        assert!(parse_ttl("9m").is_err());
        assert!(parse_ttl("91d").is_err());
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("").is_err());
        assert!(parse_ttl("h").is_err());
    }

    #[test]
    fn only_user_public_keys_pass_as_nats_keys() {
        let user = format!("U{}", "A".repeat(55));
        assert!(is_nats_user_key(&user));
        assert!(!is_nats_user_key(&format!("S{}", "A".repeat(55))));
        assert!(!is_nats_user_key("UABC"));
    }
}
