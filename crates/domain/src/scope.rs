//! The tenant scope every tenant-scoped query requires.
//!
//! Store methods that touch tenant data take a [`TenantScope`] argument, so a
//! query without a tenant filter cannot be written by accident: there is no
//! other way to reach those tables. A scope comes from an authenticated
//! [`Actor`](crate::Actor) or, for background work the system does on a
//! tenant's behalf (jobs, sweepers), from [`TenantScope::for_system_task`],
//! whose name makes that use visible in review.

use crate::ids::TenantId;

/// Proof that the caller acts inside one tenant. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantScope {
    tenant_id: TenantId,
}

impl TenantScope {
    /// A scope for work the system performs for `tenant_id` (jobs, sweepers,
    /// ingestion), not on behalf of a signed-in user.
    pub fn for_system_task(tenant_id: TenantId) -> Self {
        Self { tenant_id }
    }

    pub(crate) fn for_actor(tenant_id: TenantId) -> Self {
        Self { tenant_id }
    }

    /// The tenant this scope is bound to.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }
}
