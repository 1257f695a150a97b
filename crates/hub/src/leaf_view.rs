//! The hub's own view of a site's leaf link, for the site page and the API:
//! which hub server holds it, the leaf's remote address, RTT, and messages
//! and bytes each way. Every hub server answers `$SYS.REQ.SERVER.PING.LEAFZ`
//! (so it works on a hub cluster, not by scraping one server's monitoring
//! port). It asks over the system-account connection of the leaf
//! connection follower ([`crate::leaf_events`]), which registers it here;
//! without one (no hub followed) there is no view.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;

use crate::HubError;
use crate::error::nats;

/// Longest wait for the servers' answers.
const WAIT: Duration = Duration::from_millis(500);
/// After an answer, how long to wait for more servers'.
const QUIET: Duration = Duration::from_millis(100);

/// One leaf connection as a hub server sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeafLinkView {
    /// The hub server holding the connection (its name).
    pub hub_server: String,
    /// The leaf's address as the hub sees it (`ip:port`).
    pub remote: String,
    /// Round-trip time the hub measured (`1.2ms`).
    pub rtt: String,
    /// Messages from the leaf to the hub.
    pub in_msgs: u64,
    /// Messages from the hub to the leaf.
    pub out_msgs: u64,
    /// Bytes from the leaf.
    pub in_bytes: u64,
    /// Bytes to the leaf.
    pub out_bytes: u64,
}

/// The follower's connection, shared with whoever shows the hub's view.
/// Cheap to clone.
#[derive(Clone, Default)]
pub struct HubView {
    client: Arc<Mutex<Option<async_nats::Client>>>,
}

impl std::fmt::Debug for HubView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubView").finish_non_exhaustive()
    }
}

impl HubView {
    /// A view with no connection yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The follower's current system-account connection, held until the
    /// returned guard is dropped (the session's end), so the view never
    /// keeps a connection open after its follower stopped.
    pub(crate) fn register(&self, client: async_nats::Client) -> Registration {
        if let Ok(mut slot) = self.client.lock() {
            *slot = Some(client);
        }
        Registration(self.clone())
    }

    /// The connections of the leaf named `server_name` in `account`, from
    /// every hub server that answered; `Ok(None)` when this control plane
    /// follows no hub (or has not connected to it yet).
    pub async fn leaf_links(
        &self,
        account: &str,
        server_name: &str,
    ) -> Result<Option<Vec<LeafLinkView>>, HubError> {
        let Some(client) = self.client.lock().ok().and_then(|c| c.clone()) else {
            return Ok(None);
        };
        let inbox = client.new_inbox();
        let mut replies = client
            .subscribe(inbox.clone())
            .await
            .map_err(nats("subscribing to leaf list replies"))?;
        let filter = serde_json::json!({ "account": account }).to_string();
        client
            .publish_with_reply("$SYS.REQ.SERVER.PING.LEAFZ", inbox, filter.into())
            .await
            .map_err(nats("requesting the hub's leaf list"))?;
        let mut links = Vec::new();
        let mut deadline = tokio::time::Instant::now() + WAIT;
        while let Ok(Some(reply)) = tokio::time::timeout_at(deadline, replies.next()).await {
            deadline = deadline.min(tokio::time::Instant::now() + QUIET);
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&reply.payload) else {
                continue;
            };
            links.extend(matching(&v, account, server_name));
        }
        links.sort_by(|a, b| a.hub_server.cmp(&b.hub_server));
        Ok(Some(links))
    }
}

/// Clears the view's connection when the session that registered it ends.
pub(crate) struct Registration(HubView);

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut slot) = self.0.client.lock() {
            *slot = None;
        }
    }
}

/// The leaf connections in one server's LEAFZ answer that are `server_name`
/// in `account`.
fn matching(answer: &serde_json::Value, account: &str, server_name: &str) -> Vec<LeafLinkView> {
    let hub_server = answer["server"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    answer["data"]["leafs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| {
            l["account"] == account
                && l["name"]
                    .as_str()
                    .map(serviceradar_domain::leaf_cluster::site_leaf_name)
                    == Some(server_name)
        })
        .map(|l| LeafLinkView {
            hub_server: hub_server.clone(),
            remote: format!(
                "{}:{}",
                l["ip"].as_str().unwrap_or("?"),
                l["port"].as_u64().unwrap_or(0)
            ),
            rtt: l["rtt"].as_str().unwrap_or_default().to_owned(),
            in_msgs: l["in_msgs"].as_u64().unwrap_or(0),
            out_msgs: l["out_msgs"].as_u64().unwrap_or(0),
            in_bytes: l["in_bytes"].as_u64().unwrap_or(0),
            out_bytes: l["out_bytes"].as_u64().unwrap_or(0),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_leaf_of_the_account_is_shown() {
        let answer = serde_json::json!({
            "server": {"name": "hub-1", "id": "N1"},
            "data": {"leafs": [
                {"name": "leaf-acme-lab", "account": "AACME", "ip": "10.0.0.5", "port": 51234,
                 "rtt": "1.2ms", "in_msgs": 7, "out_msgs": 3, "in_bytes": 700, "out_bytes": 300},
                {"name": "leaf-acme-other", "account": "AACME", "ip": "10.0.0.6", "port": 1},
                {"name": "leaf-acme-lab", "account": "AOTHER", "ip": "10.0.0.7", "port": 2}
            ]}
        });
        let links = matching(&answer, "AACME", "leaf-acme-lab");
        assert_eq!(
            links,
            vec![LeafLinkView {
                hub_server: "hub-1".into(),
                remote: "10.0.0.5:51234".into(),
                rtt: "1.2ms".into(),
                in_msgs: 7,
                out_msgs: 3,
                in_bytes: 700,
                out_bytes: 300,
            }]
        );
    }
}
