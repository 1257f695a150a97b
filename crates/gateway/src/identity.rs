//! Who is calling: the agent identity from the verified client certificate.
//!
//! TLS already verified the chain to the platform root. Here the end-entity
//! certificate must be an *agent* certificate (SPIFFE kind `agent`), signed by
//! the presented tenant intermediate of the same tenant and trust domain
//! ([`PeerIdentity::from_der_with_issuer`]), and name a stored, unrevoked agent
//! of that tenant whose site slug equals the CN's. Lookups are cached briefly
//! by certificate fingerprint.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serviceradar_domain::{TenantId, TenantScope};
use serviceradar_pki::{IdentityKind, PeerIdentity};
use serviceradar_store::{Store, StoreError};
use sha2::{Digest, Sha256};
use tonic::Status;

pub use serviceradar_domain::AgentIdentity;

const CACHE_TTL: Duration = Duration::from_secs(60);
const CACHE_MAX: usize = 100_000;

/// Resolves certificates to agents, with a short cache.
#[derive(Default)]
pub struct IdentityResolver {
    cache: Mutex<HashMap<[u8; 32], (AgentIdentity, Instant)>>,
}

impl IdentityResolver {
    /// The identity of the peer whose chain (end-entity first) is `certs`;
    /// a revoked agent is refused.
    pub async fn resolve(
        &self,
        store: &Store,
        trust_domain: &str,
        certs: Option<&[tonic::transport::CertificateDer<'static>]>,
    ) -> Result<AgentIdentity, Status> {
        let certs =
            certs.ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let key: [u8; 32] = Sha256::digest(leaf.as_ref()).into();
        if let Some((id, at)) = self.cache.lock().expect("cache lock").get(&key).cloned()
            && at.elapsed() < CACHE_TTL
        {
            return Ok(id);
        }
        let (id, revoked_at) = lookup(store, trust_domain, Some(certs)).await?;
        if revoked_at.is_some() {
            return Err(revoked());
        }
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
        }
        cache.insert(key, (id.clone(), Instant::now()));
        Ok(id)
    }
}

/// The answer to a revoked agent.
pub fn revoked() -> Status {
    Status::permission_denied("the agent was revoked")
}

/// The identity in a client's verified chain (end-entity first, then its
/// tenant CA): any kind, checked against the issuing tenant CA of the same
/// tenant and trust domain. TLS already verified the chain to the root.
pub fn verified_peer(
    trust_domain: &str,
    certs: Option<&[tonic::transport::CertificateDer<'static>]>,
) -> Result<PeerIdentity, Status> {
    let certs = certs.ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let issuer = certs.get(1).ok_or_else(|| {
        Status::unauthenticated("the client must present its tenant CA after its certificate")
    })?;
    PeerIdentity::from_der_with_issuer(leaf.as_ref(), issuer.as_ref(), trust_domain)
        .map_err(|e| Status::unauthenticated(format!("client certificate rejected: {e}")))
}

/// The identity of the peer and when its agent was revoked, read from the
/// store now (no cache): renewal must see a revocation at once.
pub async fn lookup(
    store: &Store,
    trust_domain: &str,
    certs: Option<&[tonic::transport::CertificateDer<'static>]>,
) -> Result<(AgentIdentity, Option<i64>), Status> {
    let peer = verified_peer(trust_domain, certs)?;
    if peer.kind != IdentityKind::Agent {
        return Err(Status::permission_denied("not an agent certificate"));
    }
    let tenant_id = TenantId(peer.tenant_id);
    let scoped = store.scoped(TenantScope::for_system_task(tenant_id));
    let agent = match scoped.agent(peer.id).await {
        Ok(agent) => agent,
        // A certificate of this tenant's CA naming an agent that does
        // not exist: the agent's site was deleted (agents go with it).
        Err(StoreError::NotFound) => return Err(crate::service::agent_gone(&peer.common_name)),
        Err(e) => return Err(crate::service::internal_status("agent lookup", &e)),
    };
    let site = match scoped.site(agent.edge_site_id).await {
        Ok(site) => site,
        Err(StoreError::NotFound) => return Err(crate::service::agent_gone(&peer.common_name)),
        Err(e) => return Err(crate::service::internal_status("site lookup", &e)),
    };
    let tenant = store
        .tenant(tenant_id)
        .await
        .map_err(|e| crate::service::internal_status("tenant lookup", &e))?;
    if site.slug.as_str() != peer.scope || tenant.slug.as_str() != peer.tenant_slug {
        return Err(Status::permission_denied(
            "the certificate's common name does not match the agent's site",
        ));
    }
    Ok((
        AgentIdentity {
            tenant_id,
            site_id: agent.edge_site_id,
            agent_id: agent.id,
            common_name: peer.common_name,
        },
        agent.revoked_at,
    ))
}
