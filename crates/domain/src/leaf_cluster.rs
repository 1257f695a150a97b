//! A site's NATS leaf as one server or as a 3-node cluster.
//!
//! Why this module exists: a site that must survive the loss of one machine
//! runs its leaf as three `nats-server`s joined by routes (NATS's own
//! clustering), each with its own hub link, with the site's buffer stream
//! replicated on all three. What varies between such clusters (how many
//! nodes, where collectors reach each node, the route port) arrives in API
//! requests and ends up in NATS configs, shell scripts and Kubernetes
//! manifests, so it is parsed here once, at the boundary.
//!
//! A node is named by its client URL (`tls://10.0.1.50:4222`): its host goes
//! into the node's server certificate and its route URL, its port is the
//! node's client listener, and collectors get all three URLs.

use serde::{Deserialize, Serialize};

use crate::validate::{FieldError, Host, NatsUrl, Slug};

/// Nodes of a clustered leaf. NATS JetStream needs an odd number of servers
/// for its quorum; three keep a quorum with one node down.
pub const CLUSTER_NODES: usize = 3;

/// Default route (cluster) port of every node.
pub const DEFAULT_CLUSTER_PORT: u16 = 6222;

/// How many `nats-server`s run a site's leaf: 1 (the default) or 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(try_from = "u8", into = "u8")]
pub enum LeafNodes {
    /// One server.
    #[default]
    One,
    /// A cluster of [`CLUSTER_NODES`] servers.
    Three,
}

impl LeafNodes {
    /// Parses the API's `leaf_nodes` (1 or 3).
    pub fn parse(n: i64) -> Result<Self, FieldError> {
        match n {
            1 => Ok(Self::One),
            3 => Ok(Self::Three),
            _ => Err(FieldError::new(
                "leaf_nodes",
                "must be 1 (one leaf server) or 3 (a leaf cluster)",
            )),
        }
    }

    /// The number of servers.
    pub fn count(self) -> usize {
        match self {
            Self::One => 1,
            Self::Three => CLUSTER_NODES,
        }
    }
}

impl TryFrom<u8> for LeafNodes {
    type Error = String;
    fn try_from(n: u8) -> Result<Self, String> {
        Self::parse(i64::from(n)).map_err(|e| e.message)
    }
}

impl From<LeafNodes> for u8 {
    fn from(n: LeafNodes) -> u8 {
        match n {
            LeafNodes::One => 1,
            LeafNodes::Three => 3,
        }
    }
}

/// The layout of a clustered leaf: where each node is reached and its route
/// port. Only built by [`LeafCluster::parse`] / [`LeafCluster::default_for`],
/// so every value holds the rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawCluster")]
pub struct LeafCluster {
    nodes: Vec<NatsUrl>,
    cluster_port: u16,
}

/// The stored shape, checked again by [`LeafCluster::parse`] when read.
#[derive(Deserialize)]
struct RawCluster {
    nodes: Vec<String>,
    cluster_port: i64,
}

impl TryFrom<RawCluster> for LeafCluster {
    type Error = String;
    fn try_from(raw: RawCluster) -> Result<Self, String> {
        Self::parse(&raw.nodes, Some(raw.cluster_port)).map_err(|e| e.to_string())
    }
}

impl LeafCluster {
    /// Parses the API's `leaf_node_urls` and `leaf_cluster_port`: exactly
    /// [`CLUSTER_NODES`] distinct `nats://`/`tls://` URLs of routable hosts
    /// (not `0.0.0.0`), and a route port (default [`DEFAULT_CLUSTER_PORT`])
    /// that no node uses as its client port on the same host.
    pub fn parse(urls: &[String], cluster_port: Option<i64>) -> Result<Self, FieldError> {
        let field = "leaf_node_urls";
        if urls.len() != CLUSTER_NODES {
            return Err(FieldError::new(
                field,
                format!("a leaf cluster has exactly {CLUSTER_NODES} nodes"),
            ));
        }
        let mut nodes = Vec::with_capacity(CLUSTER_NODES);
        for raw in urls {
            let url = NatsUrl::parse(raw).map_err(|e| FieldError::new(field, e.message))?;
            if matches!(url.host(), Host::Ip(ip) if ip.is_unspecified()) {
                return Err(FieldError::new(
                    field,
                    "a node URL names where collectors reach the node, not 0.0.0.0 or ::",
                ));
            }
            if nodes.contains(&url) {
                return Err(FieldError::new(field, "the node URLs must be distinct"));
            }
            nodes.push(url);
        }
        let port = match cluster_port {
            None => DEFAULT_CLUSTER_PORT,
            Some(p) => match u16::try_from(p) {
                Ok(p) if p > 0 => p,
                _ => {
                    return Err(FieldError::new(
                        "leaf_cluster_port",
                        "must be a port number from 1 to 65535",
                    ));
                }
            },
        };
        let cluster = Self {
            nodes,
            cluster_port: port,
        };
        for i in 0..CLUSTER_NODES {
            let route = cluster.route_port(i);
            if cluster
                .nodes
                .iter()
                .any(|n| n.host() == cluster.nodes[i].host() && n.port() == route)
            {
                return Err(FieldError::new(
                    "leaf_cluster_port",
                    "a node's route port collides with a client port on the same host",
                ));
            }
        }
        Ok(cluster)
    }

    /// The layout a StatefulSet gives (`sr-leaf-{site}-{i}.sr-leaf-{site}`,
    /// names its headless service resolves), with `client_port` on every
    /// node: what a clustered site gets when the request names no URLs.
    pub fn default_for(site: &Slug, scheme_tls: bool, client_port: u16) -> Self {
        let service = kubernetes_name(site);
        let scheme = if scheme_tls { "tls" } else { "nats" };
        let nodes = (0..CLUSTER_NODES)
            .filter_map(|i| {
                NatsUrl::parse(&format!("{scheme}://{service}-{i}.{service}:{client_port}")).ok()
            })
            .collect();
        Self {
            nodes,
            cluster_port: DEFAULT_CLUSTER_PORT,
        }
    }

    /// Each node's client URL, in node order.
    pub fn nodes(&self) -> &[NatsUrl] {
        &self.nodes
    }

    /// The route port configured for the cluster.
    pub fn cluster_port(&self) -> u16 {
        self.cluster_port
    }

    /// How many nodes before `node` share its host: nodes on one machine
    /// (a test, a lab) get consecutive route and monitoring ports.
    pub fn same_host_offset(&self, node: usize) -> u16 {
        let Some(me) = self.nodes.get(node) else {
            return 0;
        };
        let before = self.nodes[..node]
            .iter()
            .filter(|n| n.host() == me.host())
            .count();
        u16::try_from(before).unwrap_or(0)
    }

    /// The route port of `node`: the cluster port, plus its
    /// [`same_host_offset`](Self::same_host_offset).
    pub fn route_port(&self, node: usize) -> u16 {
        self.cluster_port
            .saturating_add(self.same_host_offset(node))
    }
}

/// The Kubernetes name of a site's leaf cluster (StatefulSet, headless
/// service): `sr-leaf-{site}`, cut to the 52 characters a StatefulSet name
/// may have (its pods' `controller-revision-hash` label adds 11).
pub fn kubernetes_name(site: &Slug) -> String {
    let mut name = format!("sr-leaf-{}", site.as_str());
    name.truncate(52);
    name.trim_end_matches('-').to_owned()
}

/// The site leaf's name of a leaf server's `server_name`: a cluster node's
/// name (`leaf-{tenant}-{site}.n{i}`) without its node suffix; any other
/// name as it is. A `.` cannot occur in a slug, so the suffix is never part
/// of a site's name.
pub fn site_leaf_name(server_name: &str) -> &str {
    match server_name.rsplit_once(".n") {
        Some((base, node)) if !node.is_empty() && node.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => server_name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn node_counts() {
        assert_eq!(LeafNodes::parse(1).unwrap(), LeafNodes::One);
        assert_eq!(LeafNodes::parse(3).unwrap().count(), 3);
        for bad in [0, 2, 4, -1, 300] {
            assert_eq!(LeafNodes::parse(bad).unwrap_err().field, "leaf_nodes");
        }
    }

    #[test]
    fn a_cluster_on_three_hosts_uses_the_same_ports() {
        let c = LeafCluster::parse(
            &urls(&["tls://a:4222", "tls://b:4222", "tls://10.0.0.3:4222"]),
            None,
        )
        .unwrap();
        assert_eq!(
            (0..3).map(|i| c.route_port(i)).collect::<Vec<_>>(),
            [6222; 3]
        );
    }

    #[test]
    fn nodes_on_one_host_get_consecutive_route_ports() {
        let c = LeafCluster::parse(
            &urls(&[
                "tls://127.0.0.1:4301",
                "tls://127.0.0.1:4302",
                "tls://127.0.0.1:4303",
            ]),
            Some(7000),
        )
        .unwrap();
        assert_eq!(
            (0..3).map(|i| c.route_port(i)).collect::<Vec<_>>(),
            [7000, 7001, 7002]
        );
    }

    #[test]
    fn bad_layouts_are_refused() {
        let cases: [(&[&str], Option<i64>); 7] = [
            (&["tls://a:4222", "tls://b:4222"], None),
            (&["tls://a:4222", "tls://a:4222", "tls://b:4222"], None),
            (
                &["tls://0.0.0.0:4222", "tls://a:4222", "tls://b:4222"],
                None,
            ),
            (&["tls://a:4222", "tls://b:4222", "http://c:4222"], None),
            (&["tls://a:4222", "tls://b:4222", "tls://c';x:4222"], None),
            (
                &["tls://a:4222", "tls://b:4222", "tls://c:4222"],
                Some(70000),
            ),
            (&["tls://a:6222", "tls://b:4222", "tls://c:4222"], None),
        ];
        for (list, port) in cases {
            assert!(
                LeafCluster::parse(&urls(list), port).is_err(),
                "{list:?} {port:?} accepted"
            );
        }
    }

    #[test]
    fn node_names_map_to_their_site() {
        assert_eq!(site_leaf_name("leaf-acme-plant.n2"), "leaf-acme-plant");
        assert_eq!(site_leaf_name("leaf-acme-plant-n2"), "leaf-acme-plant-n2");
        assert_eq!(site_leaf_name("leaf-acme-plant"), "leaf-acme-plant");
        assert_eq!(site_leaf_name("leaf-acme-plant.nx"), "leaf-acme-plant.nx");
    }

    #[test]
    fn the_default_layout_names_statefulset_pods() {
        let c = LeafCluster::default_for(&Slug::parse("plant").unwrap(), true, 4222);
        assert_eq!(
            c.nodes()[2].to_string(),
            "tls://sr-leaf-plant-2.sr-leaf-plant:4222"
        );
        assert_eq!(c.cluster_port(), 6222);
    }
}
