//! The site's copy of the device registry, and the open device sessions.
//!
//! Why: the authorization service must answer while the hub is unreachable
//! and must not answer from nothing. The copy is a KV bucket in the leaf's
//! own JetStream ([`LOCAL_BUCKET`], key = device id, plus the marker
//! [`SYNCED_KEY`] once a full copy was taken), held in memory for the
//! callout. `Registry::replicate` keeps it equal to this site's keys of
//! the tenant's `SR_DEVICES` bucket on the hub (reached through the
//! leafnode link in the hub's JetStream domain): a live watch plus a full
//! re-read every few seconds, so a change made while the link was down
//! arrives within seconds of its return, whatever state the watch was left
//! in. A device that becomes revoked or disappears has its open connections
//! closed (`$SYS.REQ.SERVER.{server}.KICK` as the leaf's system user).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures::StreamExt;
use serviceradar_natsconf::leaf::{DEVICE_REGISTRY_BUCKET, DeviceRegistryEntry, kick_request};
use uuid::Uuid;

use super::{DeviceAuthError, Refusal, nats};

/// The copy's bucket in the leaf's JetStream.
pub const LOCAL_BUCKET: &str = "SR_DEVICE_REGISTRY";
/// Key present once a full copy from the hub was taken.
pub const SYNCED_KEY: &str = "synced";

/// A connection: the id of the server holding it and its client id there.
type Connection = (String, u64);

/// Open device connections: each admitted connection -> its device and
/// when it was admitted. An entry is removed when nats-server reports the
/// connection closed (`Sessions::forget`, from the leaf's disconnect
/// events), when its device is kicked, or, should an event be lost (the
/// service's system connection was down), once it is older than the
/// longest session (`Sessions::prune`): the map holds the open
/// connections, not every connection ever admitted.
#[derive(Debug, Clone, Default)]
pub struct Sessions(Arc<Mutex<HashMap<Connection, (Uuid, Instant)>>>);

impl Sessions {
    pub(crate) fn record(&self, device: Uuid, server: &str, cid: u64) {
        if let Ok(mut map) = self.0.lock() {
            map.insert((server.to_owned(), cid), (device, Instant::now()));
        }
    }

    /// Connection `cid` of `server` closed.
    pub(crate) fn forget(&self, server: &str, cid: u64) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(&(server.to_owned(), cid));
        }
    }

    /// Drops entries admitted more than `age` ago (their session has ended).
    pub(crate) fn prune(&self, age: Duration) {
        if let Ok(mut map) = self.0.lock() {
            map.retain(|_, (_, at)| at.elapsed() <= age);
        }
    }

    /// How many device connections are open.
    pub fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether no device connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take(&self, device: Uuid) -> Vec<Connection> {
        let Ok(mut map) = self.0.lock() else {
            return Vec::new();
        };
        let connections: Vec<Connection> = map
            .iter()
            .filter(|(_, (d, _))| *d == device)
            .map(|(c, _)| c.clone())
            .collect();
        for c in &connections {
            map.remove(c);
        }
        connections
    }
}

#[derive(Debug, Default)]
struct State {
    synced: bool,
    devices: HashMap<Uuid, DeviceRegistryEntry>,
}

struct Inner {
    site: Uuid,
    local: kv::Store,
    state: RwLock<State>,
    sessions: Sessions,
    system: async_nats::Client,
}

/// The site's registry copy. Cheap to clone.
#[derive(Clone)]
pub struct Registry(Arc<Inner>);

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("site", &self.0.site)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Opens (creating if missing) the local bucket and loads it.
    pub(crate) async fn open(
        client: &async_nats::Client,
        site: Uuid,
        sessions: Sessions,
        system: async_nats::Client,
    ) -> Result<Self, DeviceAuthError> {
        let js = async_nats::jetstream::new(client.clone());
        let local = match js.get_key_value(LOCAL_BUCKET).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: LOCAL_BUCKET.to_owned(),
                    description: "This site's copy of its device registry".to_owned(),
                    history: 1,
                    storage: async_nats::jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(nats("creating the local device registry bucket"))?,
        };
        let mut state = State::default();
        let mut keys = local
            .keys()
            .await
            .map_err(nats("listing the local device registry"))?;
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            names.push(key.map_err(nats("listing the local device registry"))?);
        }
        for key in names {
            if key == SYNCED_KEY {
                state.synced = true;
                continue;
            }
            let Some(value) = local
                .get(&key)
                .await
                .map_err(nats("reading the local device registry"))?
            else {
                continue;
            };
            match serde_json::from_slice::<DeviceRegistryEntry>(&value) {
                Ok(entry) => {
                    state.devices.insert(entry.device_id, entry);
                }
                Err(e) => {
                    tracing::warn!(key, error = %e, "unreadable local registry entry skipped")
                }
            }
        }
        if state.synced {
            tracing::info!(
                devices = state.devices.len(),
                "local device registry copy loaded"
            );
        } else {
            tracing::warn!(
                "no local copy of the device registry yet: every device is refused until the hub is reached"
            );
        }
        Ok(Self(Arc::new(Inner {
            site,
            local,
            state: RwLock::new(state),
            sessions,
            system,
        })))
    }

    /// The entry of `device`, or why there is none.
    pub fn lookup(&self, device: Uuid) -> Result<DeviceRegistryEntry, Refusal> {
        let state = self.0.state.read().map_err(|_| Refusal::Internal)?;
        if !state.synced {
            return Err(Refusal::NoRegistry);
        }
        state
            .devices
            .get(&device)
            .cloned()
            .ok_or(Refusal::Unknown(device))
    }

    /// Whether a full copy was ever taken.
    pub fn is_synced(&self) -> bool {
        self.0.state.read().map(|s| s.synced).unwrap_or(false)
    }

    /// Keeps the copy in sync with the hub's bucket, forever: each round
    /// watches this site's keys, re-reads them all, then applies the watch
    /// and re-reads every `interval`; any failure (the link is down) ends
    /// the round and the next starts a second later.
    pub(crate) async fn replicate(&self, hub: async_nats::jetstream::Context, interval: Duration) {
        let mut failing = false;
        loop {
            match self.round(&hub, interval).await {
                Ok(()) => {}
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %crate::device_auth::report(&e),
                            "device registry: the hub's copy is unreachable; answering from the local copy");
                    }
                    failing = true;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            if failing && self.round_probe(&hub).await {
                failing = false;
            }
        }
    }

    async fn round_probe(&self, hub: &async_nats::jetstream::Context) -> bool {
        tokio::time::timeout(
            Duration::from_secs(2),
            hub.get_key_value(DEVICE_REGISTRY_BUCKET),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }

    async fn round(
        &self,
        hub: &async_nats::jetstream::Context,
        interval: Duration,
    ) -> Result<(), DeviceAuthError> {
        let bucket = tokio::time::timeout(
            Duration::from_secs(2),
            hub.get_key_value(DEVICE_REGISTRY_BUCKET),
        )
        .await
        .map_err(nats("opening the hub's device registry"))?
        .map_err(nats("opening the hub's device registry"))?;
        let prefix = format!("{}.", self.0.site);
        let mut watch = bucket
            .watch(format!("{prefix}>"))
            .await
            .map_err(nats("watching the hub's device registry"))?;
        self.snapshot(&bucket, &prefix).await?;
        let mut resync = tokio::time::interval(interval);
        resync.tick().await;
        loop {
            tokio::select! {
                entry = watch.next() => {
                    let entry = entry
                        .ok_or(DeviceAuthError::Ended("the watch of the hub's device registry"))?
                        .map_err(nats("watching the hub's device registry"))?;
                    let Some(device) = device_of(&entry.key, &prefix) else { continue };
                    let value = match entry.operation {
                        kv::Operation::Put => parse(&entry.value),
                        kv::Operation::Delete | kv::Operation::Purge => None,
                    };
                    self.apply(device, value).await?;
                }
                _ = resync.tick() => {
                    tokio::time::timeout(interval.max(Duration::from_secs(2)), self.snapshot(&bucket, &prefix))
                        .await
                        .map_err(nats("re-reading the hub's device registry"))??;
                }
            }
        }
    }

    /// Reads every key of this site from the hub and makes the copy equal.
    async fn snapshot(&self, bucket: &kv::Store, prefix: &str) -> Result<(), DeviceAuthError> {
        let mut keys = bucket
            .keys()
            .await
            .map_err(nats("listing the hub's device registry"))?;
        let mut found = HashMap::new();
        let mut names = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(nats("listing the hub's device registry"))?;
            if key.starts_with(prefix) {
                names.push(key);
            }
        }
        for key in names {
            let Some(device) = device_of(&key, prefix) else {
                continue;
            };
            if let Some(entry) = bucket
                .get(&key)
                .await
                .map_err(nats("reading the hub's device registry"))?
                .as_deref()
                .and_then(parse)
            {
                found.insert(device, entry);
            }
        }
        let known: Vec<Uuid> = self
            .0
            .state
            .read()
            .map(|s| s.devices.keys().copied().collect())
            .unwrap_or_default();
        for device in known {
            if !found.contains_key(&device) {
                self.apply(device, None).await?;
            }
        }
        for (device, entry) in found {
            self.apply(device, Some(entry)).await?;
        }
        if !self.is_synced() {
            self.0
                .local
                .put(SYNCED_KEY, "1".into())
                .await
                .map_err(nats("marking the local registry synced"))?;
            if let Ok(mut state) = self.0.state.write() {
                state.synced = true;
            }
            tracing::info!("device registry copied from the hub");
        }
        Ok(())
    }

    /// Makes `device`'s entry `entry` (none: removed) locally; closes its
    /// connections when it can no longer connect.
    async fn apply(
        &self,
        device: Uuid,
        entry: Option<DeviceRegistryEntry>,
    ) -> Result<(), DeviceAuthError> {
        let entry = entry.filter(|e| e.site_id == self.0.site && e.device_id == device);
        let old = self
            .0
            .state
            .read()
            .ok()
            .and_then(|s| s.devices.get(&device).cloned());
        if old == entry {
            return Ok(());
        }
        let key = device.to_string();
        match &entry {
            Some(e) => {
                let value = serde_json::to_vec(e)
                    .map_err(|e| DeviceAuthError::Nats("encoding a registry entry", Box::new(e)))?;
                self.0
                    .local
                    .put(&key, value.into())
                    .await
                    .map_err(nats("writing the local device registry"))?;
            }
            None => {
                self.0
                    .local
                    .delete(&key)
                    .await
                    .map_err(nats("deleting from the local device registry"))?;
            }
        }
        let usable = entry.as_ref().is_some_and(DeviceRegistryEntry::is_active);
        if let Ok(mut state) = self.0.state.write() {
            match entry {
                Some(e) => state.devices.insert(device, e),
                None => state.devices.remove(&device),
            };
        }
        tracing::info!(device_id = %device, usable, "device registry entry changed");
        if !usable {
            self.kick(device).await;
        }
        Ok(())
    }

    /// Closes `device`'s open connections.
    async fn kick(&self, device: Uuid) {
        for (server, cid) in self.0.sessions.take(device) {
            let body = kick_request(cid).to_string();
            match tokio::time::timeout(
                Duration::from_secs(2),
                self.0
                    .system
                    .request(format!("$SYS.REQ.SERVER.{server}.KICK"), body.into()),
            )
            .await
            {
                Ok(Ok(_)) => {
                    tracing::info!(device_id = %device, client = cid, "closed a device's connection")
                }
                Ok(Err(e)) => {
                    tracing::warn!(device_id = %device, client = cid, error = %e, "closing a device's connection failed")
                }
                Err(_) => {
                    tracing::warn!(device_id = %device, client = cid, "closing a device's connection timed out")
                }
            }
        }
    }
}

fn device_of(key: &str, prefix: &str) -> Option<Uuid> {
    Uuid::parse_str(key.strip_prefix(prefix)?).ok()
}

fn parse(value: &[u8]) -> Option<DeviceRegistryEntry> {
    serde_json::from_slice(value).ok()
}
