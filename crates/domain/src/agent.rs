//! Who an edge agent is, as the platform verified it from its certificate.
//!
//! Both the agent gateway (which derives it from the TLS peer) and site health
//! (which records the contact) use this type; it lives here so neither imports
//! the other.

use crate::ids::{EdgeSiteId, TenantId};

/// A verified agent: tenant, site and agent id come from its certificate and
/// the stored agent row, never from what the agent claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentIdentity {
    /// Tenant.
    pub tenant_id: TenantId,
    /// Site.
    pub site_id: EdgeSiteId,
    /// Agent.
    pub agent_id: uuid::Uuid,
    /// Certificate CN (for logs and the audit).
    pub common_name: String,
}
