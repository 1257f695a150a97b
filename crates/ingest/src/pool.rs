//! Platform mode's tenant connections: a few hub connections as users of
//! tenants' accounts, opened on demand and kept for reuse, never more than
//! [`IngestSettings::tenant_connections`] at once.
//!
//! It exists because some per-tenant work still needs the tenant's own
//! account (creating its `INGEST` and `DEAD_LETTERS` streams and its source
//! consumer, its sites' buffers, its device registry, dead letters), while
//! platform mode must not hold one connection per tenant.

use std::collections::HashMap;
use std::sync::Arc;

use serviceradar_domain::ids::TenantId;
use serviceradar_domain::resources::Tenant;
use serviceradar_identity::Pki;
use serviceradar_store::Store;

use crate::error::IngestError;
use crate::hub::{HubConnection, connect};
use crate::settings::IngestSettings;

/// Open tenant connections (least recently used first out), and the tenants
/// platform mode knows. Cheap to clone (shared).
#[derive(Clone)]
pub(crate) struct TenantClients {
    store: Store,
    pki: Arc<Pki>,
    settings: Arc<IngestSettings>,
    open: Arc<tokio::sync::Mutex<Open>>,
    /// Bounds the connections in use at once (each use holds a permit).
    permits: Arc<tokio::sync::Semaphore>,
    tenants: Arc<std::sync::RwLock<HashMap<TenantId, Tenant>>>,
}

#[derive(Default)]
struct Open {
    clients: HashMap<TenantId, HubConnection>,
    /// Tenants in order of last use, oldest first.
    order: Vec<TenantId>,
}

/// A tenant connection in use (the permit is released when dropped).
pub(crate) struct InUse {
    pub(crate) client: async_nats::Client,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl TenantClients {
    pub(crate) fn new(store: Store, pki: Arc<Pki>, settings: Arc<IngestSettings>) -> Self {
        let max = settings.tenant_connections.max(1);
        Self {
            store,
            pki,
            settings,
            open: Arc::default(),
            permits: Arc::new(tokio::sync::Semaphore::new(max)),
            tenants: Arc::default(),
        }
    }

    /// Replaces the tenants known (the supervisor's last listing).
    pub(crate) fn set_tenants(&self, tenants: &[Tenant]) {
        if let Ok(mut known) = self.tenants.write() {
            *known = tenants.iter().map(|t| (t.id, t.clone())).collect();
        }
    }

    /// The tenant with `id`, if known.
    pub(crate) fn tenant(&self, id: TenantId) -> Option<Tenant> {
        self.tenants.read().ok()?.get(&id).cloned()
    }

    /// Every tenant known.
    pub(crate) fn tenants(&self) -> Vec<Tenant> {
        self.tenants
            .read()
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }

    /// A connection as a user of `tenant`'s account: an open one, or a new
    /// one (closing the least recently used beyond the bound). Waits while
    /// the bound's worth of connections are in use.
    pub(crate) async fn client(&self, tenant: &Tenant) -> Result<InUse, IngestError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| IngestError::TaskStopped("the tenant connection pool"))?;
        let max = self.settings.tenant_connections.max(1);
        let mut open = self.open.lock().await;
        let now = tokio::time::Instant::now();
        let reusable = open
            .clients
            .get(&tenant.id)
            .filter(|c| c.renew_at > now)
            .map(|c| c.client.clone());
        let client = match reusable {
            Some(client) => client,
            None => {
                let connection = connect(&self.store, &self.pki, &self.settings, tenant).await?;
                let client = connection.client.clone();
                open.clients.insert(tenant.id, connection);
                client
            }
        };
        open.order.retain(|t| *t != tenant.id);
        open.order.push(tenant.id);
        while open.order.len() > max {
            let oldest = open.order.remove(0);
            // Dropping the last handle closes the connection.
            open.clients.remove(&oldest);
        }
        Ok(InUse {
            client,
            _permit: permit,
        })
    }
}
