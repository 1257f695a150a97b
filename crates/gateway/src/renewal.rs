//! `RenewCertificates`: an enrolled box renews its certificates over its
//! agent's mTLS identity, before they expire.
//!
//! The box generates new keys and sends CSRs only (keys never leave it, as
//! at enrollment). The gateway issues from the tenant CA for the identity in
//! the *verified client certificate* — never for anything the request names
//! — and only when:
//! * the agent is not revoked and its site exists (read now, not from the
//!   identity cache: a revocation stops renewal at once);
//! * the site was enrolled with a token (bundle-installed agents renew by
//!   downloading the bundle again);
//! * the renewing host's fingerprint is one that redeemed a token of the
//!   site — another one is a cloned machine: refused and recorded as a
//!   `conflict` in the token's history.
//!
//! A listening agent (gateway-initiated mode) asks in its poll answer
//! instead; the poller calls [`GatewayService::renew_for`] with the identity
//! it verified when it dialled the agent, so both modes pass the same checks.
//!
//! Every outcome is written on the agent row (the site page shows when it
//! last renewed, or why a renewal was refused) and, for an enrolled host,
//! in its token's history.

use serviceradar_domain::TenantScope;
use serviceradar_pki::{
    CertificateRequest, IssueOptions, RequestProfile, SiteRef, TenantRef, issue_for_request,
};
use serviceradar_proto::v1::{RenewRequest, RenewResponse};
use serviceradar_store::{RenewalOutcome, Scoped};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::identity::{AgentIdentity, lookup, revoked};
use crate::service::{GatewayService, internal_status};

impl GatewayService {
    /// Handles `RenewCertificates`.
    pub(crate) async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
        let certs = request.peer_certs();
        let (id, revoked_at) = lookup(
            self.store(),
            self.pki().trust_domain(),
            certs.as_ref().map(|c| c.as_slice()),
        )
        .await?;
        let remote = request.remote_addr().map(|a| a.ip().to_string());
        let span = tracing::info_span!("gateway", rpc = "RenewCertificates",
            tenant_id = %id.tenant_id, site_id = %id.site_id, agent_id = %id.agent_id);
        self.renew_for(
            "RenewCertificates",
            &id,
            revoked_at,
            remote.as_deref(),
            &request.into_inner(),
        )
        .instrument(span)
        .await
        .map(Response::new)
    }

    /// Renews the certificates of the agent `id` (taken from its verified
    /// certificate by the caller, revoked at `revoked_at` as read now) for
    /// `req`, with every check of the module doc. Used by
    /// `RenewCertificates` and by the poller (gateway-initiated mode, where
    /// the agent asks in its poll answer). `remote` is the agent's address,
    /// for the token's history.
    pub(crate) async fn renew_for(
        &self,
        rpc: &str,
        id: &AgentIdentity,
        revoked_at: Option<i64>,
        remote: Option<&str>,
        req: &RenewRequest,
    ) -> Result<RenewResponse, Status> {
        let scoped = self
            .store()
            .scoped(TenantScope::for_system_task(id.tenant_id));
        if let Some(at) = revoked_at {
            let why = format!(
                "the agent was revoked at {}; enroll the box again with a new token",
                utc(at)
            );
            refuse(&scoped, id, &why).await;
            return Err(revoked());
        }
        self.check_claim(rpc, id, req.claim.as_ref()).await?;
        let csr = |field: &str, pem: &str| {
            CertificateRequest::from_pem(pem)
                .map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
        };
        let agent_csr = csr("agent_csr", &req.agent_csr)?;
        let leaf_csrs = match (req.leaf_client_csr.as_str(), req.leaf_server_csr.as_str()) {
            ("", "") => None,
            (client, server) => Some((
                csr("leaf_client_csr", client)?,
                csr("leaf_server_csr", server)?,
            )),
        };
        let fingerprint = req.host_fingerprint.trim().to_ascii_lowercase();
        let hosts = scoped
            .enrolled_hosts(id.site_id)
            .await
            .map_err(|e| internal_status("reading the enrolled hosts", &e))?;
        let Some(newest) = hosts.first() else {
            let why = "this agent was installed from a site bundle, not enrolled with a \
                       token: renew by downloading the bundle again, or enroll the box with \
                       `serviceradar-cli site init`";
            refuse(&scoped, id, why).await;
            return Err(Status::failed_precondition(why));
        };
        let Some(host) = hosts.iter().find(|h| h.host_fingerprint == fingerprint) else {
            let why = "renewal from a host that did not enroll this site (a cloned \
                       machine?): refused; give the clone its own machine id and enroll \
                       it with a new token";
            let detail = format!(
                "renewal refused: host fingerprint {} is not the enrolled host's (a cloned machine?)",
                fingerprint.get(..16).unwrap_or(&fingerprint)
            );
            let hostname = req.hostname.chars().take(253).collect::<String>();
            if let Err(e) = scoped
                .record_enrollment_event(
                    newest.token_id,
                    "conflict",
                    remote,
                    Some(hostname.as_str()).filter(|h| !h.is_empty()),
                    &detail,
                )
                .await
            {
                tracing::warn!(error = %e, "recording a renewal conflict failed");
            }
            refuse(&scoped, id, why).await;
            tracing::warn!(fingerprint = %detail, "renewal from another host refused");
            return Err(Status::failed_precondition(why));
        };
        let renewed = self
            .issue(&scoped, id, &agent_csr, leaf_csrs.as_ref())
            .await?;
        scoped
            .record_agent_renewal(
                id.agent_id,
                RenewalOutcome::Renewed {
                    expires_at: renewed.expires_at_ms,
                },
            )
            .await
            .map_err(|e| internal_status("recording the renewal", &e))?;
        let detail = format!(
            "certificates renewed for host {} until {}",
            host.hostname.as_deref().unwrap_or("?"),
            utc(renewed.expires_at_ms)
        );
        if let Err(e) = scoped
            .record_enrollment_event(
                host.token_id,
                "renewed",
                remote,
                host.hostname.as_deref(),
                &detail,
            )
            .await
        {
            tracing::warn!(error = %e, "recording a renewal event failed");
        }
        tracing::info!(
            expires_at = renewed.expires_at_ms,
            leaf = leaf_csrs.is_some(),
            "certificates renewed"
        );
        Ok(renewed)
    }

    /// Issues the new certificates for `id` from the tenant CA.
    async fn issue(
        &self,
        scoped: &Scoped<'_>,
        id: &AgentIdentity,
        agent_csr: &CertificateRequest,
        leaf: Option<&(CertificateRequest, CertificateRequest)>,
    ) -> Result<RenewResponse, Status> {
        let tenant = self
            .store()
            .tenant(id.tenant_id)
            .await
            .map_err(|e| internal_status("tenant lookup", &e))?;
        let site = scoped
            .site(id.site_id)
            .await
            .map_err(|e| internal_status("site lookup", &e))?;
        let ca = self
            .pki()
            .tenant_ca(self.store(), &tenant)
            .await
            .map_err(|e| internal_status("loading the tenant CA", &format!("{e:#}")))?;
        let opts = IssueOptions {
            validity: ::time::Duration::try_from(self.settings().edge_cert_validity)
                .unwrap_or(::time::Duration::days(7)),
            ..self.pki().issue_options()
        };
        let tenant_ref = TenantRef::of(&tenant);
        let site_ref = SiteRef::of(&site);
        let issue = |profile, request: &CertificateRequest| {
            issue_for_request(&ca, tenant_ref, site_ref, profile, request, &opts)
                .map_err(|e| internal_status("issuing a renewed certificate", &e))
        };
        let with_ca = |cert: &str| format!("{cert}{}", ca.cert_pem());
        let agent = issue(
            RequestProfile::Agent {
                agent_id: id.agent_id,
            },
            agent_csr,
        )?;
        let mut expires = agent.not_after;
        let mut response = RenewResponse {
            agent_cert_pem: with_ca(&agent.cert_pem),
            ..RenewResponse::default()
        };
        if let Some((client, server)) = leaf {
            let hosts = [site.nats_leaf_url.host().to_bare()];
            let client = issue(RequestProfile::LeafClient, client)?;
            let server = issue(RequestProfile::LeafServer { hosts: &hosts }, server)?;
            expires = expires.min(client.not_after).min(server.not_after);
            response.leaf_client_cert_pem = with_ca(&client.cert_pem);
            response.leaf_server_cert_pem = with_ca(&server.cert_pem);
        }
        response.expires_at_ms = serviceradar_identity::to_ms(expires);
        Ok(response)
    }
}

/// Writes a refusal on the agent row (the site page shows it).
async fn refuse(scoped: &Scoped<'_>, id: &AgentIdentity, why: &str) {
    tracing::warn!(reason = why, "certificate renewal refused");
    if let Err(e) = scoped
        .record_agent_renewal(id.agent_id, RenewalOutcome::Refused(why))
        .await
    {
        tracing::warn!(error = %e, "recording a renewal refusal failed");
    }
}

/// A Unix-ms instant as RFC 3339 UTC (second precision).
fn utc(ms: i64) -> String {
    ::time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .ok()
        .and_then(|t| {
            t.format(&::time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}
