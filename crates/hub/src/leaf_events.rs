//! Leaf connectivity from the hub's own view: the hub's connect and
//! disconnect advisories, without an agent.
//!
//! nats-server (2.15) publishes, for every connection of an account,
//! `$SYS.ACCOUNT.<account>.CONNECT` (`io.nats.server.advisory.v1.client_connect`)
//! and `$SYS.ACCOUNT.<account>.DISCONNECT` (`..client_disconnect`) to the
//! system account; a leaf's has `client.kind = "Leafnode"`, the tenant
//! account in `client.acc`, and the tags of the user the leaf authorization
//! callout issued it (`sr-tenant:{id}`, `sr-site:{id}`). No
//! `$SYS.ACCOUNT.*.LEAFNODE.CONNECT` is sent for leaves joining a hub.
//!
//! [`spawn`] subscribes as a system-account user and turns them into
//! [`LeafLink`]s: up while the hub holds at least one leaf connection of the
//! site (connections are counted, so a reconnect whose new connection is
//! announced before the old one's disconnect stays up), down when the last
//! one closes. The tenant in the tags must own the account the connection
//! is in, otherwise the advisory is ignored. Whoever receives the links
//! applies them (the server passes them to `health`).
//!
//! Advisories are missed while the control plane or the hub is down (a leaf
//! that left meanwhile would stay `connected`), so each session starts with,
//! and repeats every [`RECONCILE_INTERVAL`], a reconciliation against the
//! hub's leaf list (`$SYS.REQ.SERVER.PING.LEAFZ`, every server's answer):
//! a leaf the store has `connected` that no server holds goes down, one it has
//! `provisioned`/`disconnected` that a server holds goes up. Leafz names a leaf
//! by its server name, `leaf-{tenant slug}-{site slug}` in its tenant's account
//! (a cluster node's, `...{site slug}.n{i}`, counts for its site).
//!
//! The number of sites with a live leaf connection is the gauge
//! [`LEAVES_CONNECTED`], updated on every advisory and reconciliation.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serviceradar_domain::{EdgeSiteId, TenantId, TenantScope};
use serviceradar_identity::{LEAF_SITE_TAG, LEAF_TENANT_TAG, Pki};
use serviceradar_store::Store;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;
use uuid::Uuid;

use crate::HubError;
use crate::client::HubEndpoint;
use crate::error::{identity, nats};

/// Subjects of the hub's connect and disconnect advisories.
pub const CONNECT_SUBJECT: &str = "$SYS.ACCOUNT.*.CONNECT";
/// See [`CONNECT_SUBJECT`].
pub const DISCONNECT_SUBJECT: &str = "$SYS.ACCOUNT.*.DISCONNECT";

/// The gauge of sites whose leaf the hub holds a connection of, as this
/// replica sees it (every replica follows the same hub: they agree).
pub const LEAVES_CONNECTED: &str = "serviceradar_hub_leaves_connected";

/// How often the leaf statuses are reconciled with the hub's leaf list.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(30);
/// How long to collect the servers' answers to a leaf list request.
const LEAFZ_WAIT: Duration = Duration::from_millis(500);

/// A site's leaf joined (`up`) or left the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafLink {
    /// Tenant.
    pub tenant_id: TenantId,
    /// Site.
    pub site_id: EdgeSiteId,
    /// Whether the hub holds a leaf connection of the site now.
    pub up: bool,
}

/// One leaf connection seen in an advisory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Advisory {
    connected: bool,
    /// `server id` + client id: unique per connection.
    connection: String,
    account: String,
    tenant: Uuid,
    site: Uuid,
}

/// Reads a connect/disconnect advisory; `None` for anything that is not a
/// leaf connection with tenant and site tags.
fn parse(payload: &[u8]) -> Option<Advisory> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let connected = match v["type"].as_str()? {
        "io.nats.server.advisory.v1.client_connect" => true,
        "io.nats.server.advisory.v1.client_disconnect" => false,
        _ => return None,
    };
    let client = &v["client"];
    if client["kind"].as_str()? != "Leafnode" {
        return None;
    }
    let tag = |prefix: &str| {
        client["tags"]
            .as_array()?
            .iter()
            .filter_map(|t| t.as_str()?.strip_prefix(prefix))
            .find_map(|id| Uuid::parse_str(id).ok())
    };
    Some(Advisory {
        connected,
        connection: format!(
            "{}/{}",
            v["server"]["id"].as_str().unwrap_or_default(),
            client["id"].as_u64()?
        ),
        account: client["acc"].as_str()?.to_owned(),
        tenant: tag(LEAF_TENANT_TAG)?,
        site: tag(LEAF_SITE_TAG)?,
    })
}

/// Live leaf connections per site, from the advisories seen.
#[derive(Debug, Default)]
struct Connections {
    by_site: HashMap<(Uuid, Uuid), HashSet<String>>,
}

impl Connections {
    /// Records an advisory; returns whether the site is up now.
    fn record(&mut self, advisory: &Advisory) -> bool {
        let key = (advisory.tenant, advisory.site);
        let live = self.by_site.entry(key).or_default();
        if advisory.connected {
            live.insert(advisory.connection.clone());
        } else {
            live.remove(&advisory.connection);
        }
        let up = !live.is_empty();
        if !up {
            self.by_site.remove(&key);
        }
        up
    }

    /// Sets [`LEAVES_CONNECTED`] to the sites with a live leaf connection.
    fn publish(&self) {
        metrics::gauge!(LEAVES_CONNECTED).set(self.by_site.len() as f64);
    }
}

/// Follows the hub's leaf connections until `stop` turns true, reconnecting
/// with backoff, and sends each change to `links`; each session's
/// connection is registered in `view` (the hub's view of a leaf's link).
pub fn spawn(
    store: Store,
    pki: Arc<Pki>,
    hub: HubEndpoint,
    links: mpsc::UnboundedSender<LeafLink>,
    view: crate::leaf_view::HubView,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let span = tracing::info_span!("leaf_events", hub = %hub.url);
    let task = async move {
        let mut backoff = Duration::from_millis(250);
        loop {
            match follow(&store, &pki, &hub, &links, &view, &mut stop, &mut backoff).await {
                Ok(Ended::Stopped) => return,
                Ok(Ended::Renew) => {
                    tracing::info!("renewing the NATS user that follows leaf connections");
                    continue;
                }
                Err(e) => tracing::warn!(
                    error = format!("{e:#}"),
                    retry_in = ?backoff,
                    "following the hub's leaf connections was interrupted; retrying"
                ),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    };
    tokio::spawn(task.instrument(span))
}

/// Why a session ended without an error.
enum Ended {
    /// `stop` turned true.
    Stopped,
    /// Its NATS user is due for renewal: start a new session.
    Renew,
}

/// One session: subscribe, then apply advisories until `stop`, until its
/// user is due for renewal, or an error.
async fn follow(
    store: &Store,
    pki: &Pki,
    hub: &HubEndpoint,
    links: &mpsc::UnboundedSender<LeafLink>,
    view: &crate::leaf_view::HubView,
    stop: &mut watch::Receiver<bool>,
    backoff: &mut Duration,
) -> Result<Ended, HubError> {
    let creds = pki
        .system_user_creds(
            store,
            "serviceradar-leaf-events",
            hub.service_users.expires_at(),
        )
        .await
        .map_err(identity(
            "minting the system user that follows leaf connections",
        ))?;
    let renew_at = tokio::time::Instant::from_std(hub.service_users.renew_at());
    let client = hub
        .connect(creds.as_str(), "serviceradar-leaf-events")
        .await?;
    let mut connects = client
        .subscribe(CONNECT_SUBJECT)
        .await
        .map_err(nats("subscribing to connect advisories"))?;
    let mut disconnects = client
        .subscribe(DISCONNECT_SUBJECT)
        .await
        .map_err(nats("subscribing to disconnect advisories"))?;
    client
        .flush()
        .await
        .map_err(nats("flushing the advisory subscriptions"))?;
    *backoff = Duration::from_millis(250);
    let _registered = view.register(client.clone());
    tracing::info!("following the hub's leaf connections");
    let mut connections = Connections::default();
    let mut accounts: HashMap<Uuid, String> = HashMap::new();
    let mut reconcile = tokio::time::interval(RECONCILE_INTERVAL);
    loop {
        let message = tokio::select! {
            m = connects.next() => Some(m),
            m = disconnects.next() => Some(m),
            _ = reconcile.tick() => None,
            _ = tokio::time::sleep_until(renew_at) => return Ok(Ended::Renew),
            _ = stop.wait_for(|s| *s) => return Ok(Ended::Stopped),
        };
        let Some(message) = message else {
            connections = reconcile_with_hub(store, &client, links).await?;
            connections.publish();
            continue;
        };
        let message = message.ok_or(HubError::SubscriptionClosed {
            what: "subscription to connect and disconnect advisories",
        })?;
        let Some(advisory) = parse(&message.payload) else {
            continue;
        };
        if !tenant_owns(store, &mut accounts, advisory.tenant, &advisory.account).await {
            tracing::warn!(
                tenant_id = %advisory.tenant,
                account = %advisory.account,
                "a leaf advisory's tenant tag does not match its account; ignored"
            );
            continue;
        }
        let up = connections.record(&advisory);
        connections.publish();
        let _ = links.send(LeafLink {
            tenant_id: TenantId(advisory.tenant),
            site_id: EdgeSiteId(advisory.site),
            up,
        });
    }
}

/// The hub's leaf connections: (account, server name) -> connection keys.
async fn leafz(
    client: &async_nats::Client,
) -> Result<HashMap<(String, String), HashSet<String>>, HubError> {
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(nats("subscribing to leaf list replies"))?;
    client
        .publish_with_reply("$SYS.REQ.SERVER.PING.LEAFZ", inbox, "{}".into())
        .await
        .map_err(nats("requesting the hub's leaf list"))?;
    let mut leaves: HashMap<(String, String), HashSet<String>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + LEAFZ_WAIT;
    while let Ok(Some(reply)) = tokio::time::timeout_at(deadline, replies.next()).await {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&reply.payload) else {
            continue;
        };
        let server = v["server"]["id"].as_str().unwrap_or_default();
        for leaf in v["data"]["leafs"].as_array().into_iter().flatten() {
            let (Some(account), Some(name), Some(id)) = (
                leaf["account"].as_str(),
                leaf["name"].as_str(),
                leaf["id"].as_u64(),
            ) else {
                continue;
            };
            // The nodes of a leaf cluster count for their site.
            let name = serviceradar_domain::leaf_cluster::site_leaf_name(name);
            leaves
                .entry((account.to_owned(), name.to_owned()))
                .or_default()
                .insert(format!("{server}/{id}"));
        }
    }
    Ok(leaves)
}

/// Brings every leaf's status in line with the hub's leaf list; returns the
/// live connections per site it found.
async fn reconcile_with_hub(
    store: &Store,
    client: &async_nats::Client,
    links: &mpsc::UnboundedSender<LeafLink>,
) -> Result<Connections, HubError> {
    use serviceradar_domain::state::LeafStatus;
    use serviceradar_store::{Cursor, LeafFilter, PageRequest};
    let held = leafz(client).await?;
    let mut connections = Connections::default();
    let tenants = store
        .list_tenants()
        .await
        .map_err(crate::error::store("listing tenants"))?;
    for tenant in tenants {
        let scoped = store.scoped(TenantScope::for_system_task(tenant.id));
        let Some(account) = scoped
            .nats_account()
            .await
            .map_err(crate::error::store("reading a tenant's NATS account"))?
        else {
            continue;
        };
        let mut page = PageRequest {
            limit: PageRequest::MAX_LIMIT,
            after: None,
        };
        loop {
            let leaves = scoped
                .list_leaf_servers(&LeafFilter::default(), &page)
                .await
                .map_err(crate::error::store("listing leaf servers"))?;
            for leaf in &leaves.items {
                if !matches!(
                    leaf.status,
                    LeafStatus::Provisioned | LeafStatus::Connected | LeafStatus::Disconnected
                ) {
                    continue;
                }
                let site = match scoped.site(leaf.edge_site_id).await {
                    Ok(site) => site,
                    Err(serviceradar_store::StoreError::NotFound) => continue,
                    Err(e) => return Err(crate::error::store("reading a site")(e)),
                };
                let name = format!("leaf-{}-{}", tenant.slug, site.slug);
                let live = held.get(&(account.account_public_key.clone(), name));
                let up = live.is_some_and(|l| !l.is_empty());
                if let Some(live) = live {
                    connections
                        .by_site
                        .insert((tenant.id.0, site.id.0), live.clone());
                }
                if up != (leaf.status == LeafStatus::Connected) {
                    let _ = links.send(LeafLink {
                        tenant_id: tenant.id,
                        site_id: site.id,
                        up,
                    });
                }
            }
            match leaves.next_cursor.as_deref().and_then(Cursor::decode) {
                Some(next) => page.after = Some(next),
                None => break,
            }
        }
    }
    Ok(connections)
}

/// Whether `account` is the NATS account of `tenant` (cached).
async fn tenant_owns(
    store: &Store,
    cache: &mut HashMap<Uuid, String>,
    tenant: Uuid,
    account: &str,
) -> bool {
    if let Some(known) = cache.get(&tenant) {
        return known == account;
    }
    let stored = store
        .scoped(TenantScope::for_system_task(TenantId(tenant)))
        .nats_account()
        .await;
    match stored {
        Ok(Some(row)) => {
            let owns = row.account_public_key == account;
            cache.insert(tenant, row.account_public_key);
            owns
        }
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(error = %e, tenant_id = %tenant, "reading a tenant's NATS account failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advisory(kind: &str, event: &str, id: u64) -> Vec<u8> {
        serde_json::json!({
            "type": format!("io.nats.server.advisory.v1.client_{event}"),
            "server": {"id": "NSERVER"},
            "client": {
                "id": id, "acc": "ATENANT", "kind": kind,
                "tags": [
                    "sr-tenant:01a223f9-098e-7451-b290-3a68ca0c9e8b",
                    "sr-site:01a223f9-1cdb-7748-a8cf-523a35d8fbfb"
                ]
            }
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn only_leaf_connections_with_tags_count() {
        let a = parse(&advisory("Leafnode", "connect", 20)).expect("a leaf");
        assert!(a.connected);
        assert_eq!(a.account, "ATENANT");
        assert_eq!(a.connection, "NSERVER/20");
        assert!(
            !parse(&advisory("Leafnode", "disconnect", 20))
                .expect("leaf")
                .connected
        );
        assert!(parse(&advisory("Client", "connect", 20)).is_none());
        assert!(parse(b"not json").is_none());
        let mut untagged: serde_json::Value =
            serde_json::from_slice(&advisory("Leafnode", "connect", 1)).expect("json");
        untagged["client"]["tags"] = serde_json::json!(["sr-tenant:nope"]);
        assert!(parse(untagged.to_string().as_bytes()).is_none());
    }

    /// A reconnect whose new connection is announced before the old one's
    /// disconnect must not leave the site marked down.
    #[test]
    fn a_late_disconnect_of_a_replaced_connection_keeps_the_leaf_up() {
        let mut live = Connections::default();
        let old = parse(&advisory("Leafnode", "connect", 1)).expect("leaf");
        let new = parse(&advisory("Leafnode", "connect", 2)).expect("leaf");
        let old_gone = parse(&advisory("Leafnode", "disconnect", 1)).expect("leaf");
        let new_gone = parse(&advisory("Leafnode", "disconnect", 2)).expect("leaf");
        assert!(live.record(&old));
        assert!(live.record(&new));
        assert!(live.record(&old_gone));
        assert!(!live.record(&new_gone));
    }
}
