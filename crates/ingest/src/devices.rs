//! The device registry's copy on the hub: a JetStream KV bucket per tenant
//! (`SR_DEVICES`, key `{site_id}.{device_id}`), kept equal to the database.
//!
//! Why it exists: a site leaf's device authorization must answer while the
//! WAN is down, so the registry has to reach the edge through NATS itself.
//! The tenant's pipeline (which holds a connection as a user of the
//! tenant's account) writes the bucket on the hub; each site's
//! authorization service copies its site's keys into the leaf's own
//! JetStream (see `serviceradar-agent`'s `device_auth`). Syncs run at
//! every site reconciliation and at once when this replica registers,
//! revokes or certifies a device ([`DeviceChanges`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use serviceradar_domain::resources::Tenant;
use serviceradar_domain::{TenantId, TenantScope};
use serviceradar_natsconf::leaf::{
    DEVICE_REGISTRY_BUCKET, DeviceRegistryEntry, device_registry_key,
};
use serviceradar_store::Device;
use serviceradar_store::Store;

use crate::error::IngestError;

/// Where the control plane announces a change of a tenant's devices, so its
/// pipeline syncs the registry at once. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DeviceChanges(tokio::sync::broadcast::Sender<TenantId>);

impl Default for DeviceChanges {
    fn default() -> Self {
        Self(tokio::sync::broadcast::channel(1024).0)
    }
}

impl DeviceChanges {
    /// A receiver of every change from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<TenantId> {
        self.0.subscribe()
    }

    /// Announces that `tenant`'s devices changed (a no-op without listeners).
    pub fn announce(&self, tenant: TenantId) {
        let _ = self.0.send(tenant);
    }
}

/// The registry entry of `device`.
pub fn registry_entry(device: &Device) -> DeviceRegistryEntry {
    DeviceRegistryEntry {
        device_id: device.id.as_uuid(),
        tenant_id: device.tenant_id.as_uuid(),
        site_id: device.edge_site_id.as_uuid(),
        status: device.status.as_str().to_owned(),
        cert_serial: device.cert_serial.clone(),
        cert_not_after: device.cert_not_after,
        max_payload: device.limits.max_payload,
        max_subscriptions: device.limits.max_subscriptions,
        data_rate: device.limits.data_rate,
    }
}

fn nats<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl FnOnce(E) -> IngestError {
    move |e| IngestError::Registry(what, Box::new(e))
}

/// Makes the tenant's `SR_DEVICES` bucket on the hub equal to the database:
/// puts every device whose entry differs, deletes keys of devices that are
/// gone (their site was deleted). Returns how many keys it changed.
pub async fn sync_device_registry(
    store: &Store,
    client: &async_nats::Client,
    tenant: &Tenant,
    replicas: usize,
) -> Result<usize, IngestError> {
    let devices = store
        .scoped(TenantScope::for_system_task(tenant.id))
        .all_devices()
        .await
        .map_err(|e| IngestError::Store("listing the tenant's devices", e))?;
    let js = async_nats::jetstream::new(client.clone());
    let kv = match js.get_key_value(DEVICE_REGISTRY_BUCKET).await {
        Ok(kv) => kv,
        Err(_) => js
            .create_key_value(async_nats::jetstream::kv::Config {
                bucket: DEVICE_REGISTRY_BUCKET.to_owned(),
                description: "Devices registered at this tenant's edge sites, for their leaves"
                    .to_owned(),
                history: 1,
                storage: async_nats::jetstream::stream::StorageType::File,
                num_replicas: replicas.max(1),
                ..Default::default()
            })
            .await
            .map_err(nats("creating the device registry bucket"))?,
    };
    let mut changed = 0;
    let mut wanted = HashSet::with_capacity(devices.len());
    for device in &devices {
        let key = device_registry_key(device.edge_site_id.as_uuid(), device.id.as_uuid());
        let value = serde_json::to_vec(&registry_entry(device))
            .map_err(|e| IngestError::Registry("encoding a registry entry", Box::new(e)))?;
        let current = kv
            .get(&key)
            .await
            .map_err(nats("reading a registry entry"))?;
        if current.as_deref() != Some(value.as_slice()) {
            kv.put(&key, value.into())
                .await
                .map_err(nats("writing a registry entry"))?;
            changed += 1;
        }
        wanted.insert(key);
    }
    // Listing the keys costs the hub an ordered consumer, on every sweep of
    // every tenant. When nothing was written and the bucket held exactly one
    // message per wanted key when opened (each of them read back above), it
    // holds no other key: skip it.
    let held = kv.status().await.map(|status| status.values()).ok();
    let mut stale = Vec::new();
    if changed > 0 || held != u64::try_from(wanted.len()).ok() {
        let mut keys = kv.keys().await.map_err(nats("listing registry keys"))?;
        while let Some(key) = keys.next().await {
            let key = key.map_err(nats("listing registry keys"))?;
            if !wanted.contains(&key) {
                stale.push(key);
            }
        }
    }
    for key in stale {
        kv.delete(&key)
            .await
            .map_err(nats("deleting a registry entry"))?;
        changed += 1;
    }
    if changed > 0 {
        tracing::info!(
            changed,
            devices = devices.len(),
            "device registry synced to the hub"
        );
    }
    Ok(changed)
}

/// The site slug of each of a tenant's devices, for the writers: a
/// device's data must come from the site it is registered at. Loaded from
/// the database, and again when a batch names a device it does not know
/// there (once per batch at most). Cheap to clone (shared by the writers).
#[derive(Debug, Clone, Default)]
pub(crate) struct DeviceSites(Arc<tokio::sync::RwLock<HashMap<uuid::Uuid, String>>>);

impl DeviceSites {
    /// Why `device`'s data that arrived from `site` is not its data, if it
    /// is not: the device is not registered (at that site) in the tenant.
    /// `reloaded` says whether this batch already reloaded the map.
    pub(crate) async fn refusal(
        &self,
        store: &Store,
        tenant: &Tenant,
        device: uuid::Uuid,
        site: &str,
        reloaded: &mut bool,
    ) -> Result<Option<String>, IngestError> {
        let registered_at = |sites: &HashMap<uuid::Uuid, String>| sites.get(&device).cloned();
        let mut at = registered_at(&*self.0.read().await);
        if at.as_deref() != Some(site) && !*reloaded {
            let fresh = store
                .scoped(TenantScope::for_system_task(tenant.id))
                .device_site_slugs()
                .await
                .map_err(|e| IngestError::Store("listing the tenant's devices", e))?;
            at = registered_at(&fresh);
            *self.0.write().await = fresh;
            *reloaded = true;
        }
        Ok(match at {
            Some(at) if at == site => None,
            Some(_) => Some(format!(
                "device {device} is registered at another site than {site}"
            )),
            None => Some(format!("device {device} is not registered in this tenant")),
        })
    }
}
