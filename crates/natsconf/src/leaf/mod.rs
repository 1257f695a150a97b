//! `nats-leaf.conf` for one edge site, and the leaf's store-and-forward stream.
//!
//! Why this module exists: the leaf is the only NATS server a customer runs. It
//! accepts collectors on the site's network, buffers their data in its own
//! JetStream while the WAN is down, and dials *out* to the hub's leafnode port. Its
//! config is generated from a [`LeafConfigInput`], checksummed, and shipped in the
//! site bundle.
//!
//! # Decisions
//!
//! **Client authentication: `verify: true`, not `verify_and_map`.** The listener
//! for local clients requires a client certificate that chains to the *tenant* CA
//! (`client_tls.ca_file` must be the tenant's CA, never the platform root, or any
//! tenant's certificates would be accepted). `verify_and_map` (used by the seed
//! template) additionally maps each certificate's subject or SAN to a user listed in
//! an `authorization { users = [...] }` block of this same file. That does not fit
//! this product: every collector added to a site would need its identity written
//! into the leaf config, i.e. a re-render, a new checksum (drift) and a reload at the
//! edge; `verify_and_map` only means something together with such a list. All
//! verified clients therefore share the leaf's global account, which the remote's
//! credentials bind to the tenant's account on the hub; isolation between tenants is
//! enforced there (one account per tenant). Per-device permissions at the edge
//! belong to the auth callout (seed 002), not to this file.
//!
//! **JetStream domain unique per site** (`sr-{tenant_slug}-{site_slug}`, see
//! [`JetStreamDomain::for_site`]). The hub reaches a leaf's JetStream as
//! `$JS.<domain>.API.>` inside the tenant's account, for example to source the
//! leaf's buffer stream. With a shared domain such as `edge`, as soon as a tenant
//! has two sites both leaves advertise the same domain into the same hub account:
//! `$JS.edge.API` becomes ambiguous (requests reach whichever leaf answers first,
//! or both) and the hub cannot address one leaf's JetStream.
//!
//! **Monitoring on localhost by default.** The HTTP monitoring port has no
//! authentication; it is bound to `127.0.0.1:8222` unless the input says otherwise.
//!
//! **A 3-node cluster is three configs** ([`LeafClusterInput`]): each node
//! has its own `server_name` (`leaf-{tenant}-{site}.n{i}`: a `.` cannot occur
//! in a slug, so the hub side tells a node of site `a` from a site named
//! `a-n1`), its own server certificate, a `cluster` block whose routes name
//! every node over mutual TLS (the node certificates, issued by the tenant
//! CA, serve as both ends of a route, and are *pinned*: the tenant CA also
//! issues every collector's, agent's and other site's certificate, and a
//! route peer is admitted only with one of the three nodes' public keys),
//! and its own leafnode remote to the hub,
//! so the site stays linked while any node lives. All nodes share the site's
//! JetStream domain: they form one JetStream cluster, in which the buffer
//! stream is replicated on three servers.
//!
//! **Everything rendered is validated and quoted** (see [`crate::syntax`]).

mod buffer;
mod device_auth;
mod link;

pub use buffer::{
    BUFFER_STREAM_NAME, BufferStreamInput, DEFAULT_BUFFER_RETENTION, buffer_stream_config,
    buffer_stream_source, buffer_subject_prefix,
};
pub use device_auth::{
    DEVICE_ACCOUNT, DEVICE_AUTH_INCLUDE, DEVICE_REGISTRY_BUCKET, DEVICE_SYSTEM_ACCOUNT,
    DEVICE_TOKEN, DeviceAuthKeys, DeviceRegistryEntry, DeviceUserLimits, collector_user_claims,
    device_data_prefix, device_publish_subjects, device_registry_key, device_subject_mappings,
    device_subscribe_subjects, device_user_claims, kick_request, render_device_auth_conf,
};
pub use link::{LinkPermissions, buffer_deliver_prefix, site_inbox_prefix, site_link_permissions};

use serviceradar_domain::validate::Host;

use crate::syntax::{
    ConfWriter, ConfigError, JetStreamDomain, cluster_routes, hub_url, hub_url as hub_url_rule,
    listen_addr, validate_path, validate_server_name, validate_slug,
};
use crate::tls::TlsFiles;

/// Directory of the leaf's config, certificates and credentials on the edge box.
pub const DEFAULT_NATS_DIR: &str = "/etc/serviceradar/nats";
/// JetStream store directory of the leaf on the edge box.
pub const DEFAULT_LEAF_STORE_DIR: &str = "/var/lib/serviceradar/nats/jetstream";
/// Default client listener of the leaf.
pub const DEFAULT_CLIENT_LISTEN: &str = "0.0.0.0:4222";
/// Default (localhost-only) monitoring listener.
pub const DEFAULT_MONITORING_LISTEN: &str = "127.0.0.1:8222";
/// Default cap of the leaf's JetStream file storage: 10 GiB.
pub const DEFAULT_MAX_FILE_STORE: u64 = 10 * 1024 * 1024 * 1024;

/// Everything that varies between the leaf configs of two sites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafConfigInput {
    /// The tenant's slug (`[a-z0-9-]`).
    pub tenant_slug: String,
    /// The site's slug, unique within the tenant.
    pub site_slug: String,
    /// `server_name`; `None` means `leaf-{tenant_slug}-{site_slug}`.
    pub server_name: Option<String>,
    /// Client listener `host:port` (the site's `local_listen`).
    pub client_listen: String,
    /// Server certificate of the leaf (issued by the tenant CA) and the tenant CA
    /// that client certificates must chain to.
    pub client_tls: TlsFiles,
    /// Monitoring listener `host:port`, `None` to disable monitoring.
    pub monitoring_listen: Option<String>,
    /// JetStream store directory.
    pub jetstream_store_dir: String,
    /// JetStream domain; `None` means [`JetStreamDomain::for_site`].
    pub jetstream_domain: Option<String>,
    /// Cap of JetStream file storage in bytes.
    pub max_file_store: u64,
    /// Cap of JetStream memory storage in bytes; `None` leaves the server default.
    pub max_memory_store: Option<u64>,
    /// The hub's leafnode URL, `tls://host:7422`.
    pub hub_url: String,
    /// The leafnode URLs of the hub cluster's other nodes: the remote lists
    /// them all (`urls`) and nats-server dials another when one fails.
    pub extra_hub_urls: Vec<String>,
    /// Path of the leaf user's `.creds` file (tenant account).
    pub credentials_file: String,
    /// Client certificate chain of the leaf (tenant CA) for the hub link, and the
    /// CA the hub's server certificate must chain to (the platform root).
    pub remote_tls: TlsFiles,
    /// Where nats-server writes its pid (`pid_file`), so the edge agent can
    /// tell it to reload renewed certificates; `None` writes none.
    pub pid_file: Option<String>,
    /// The node's place in a leaf cluster; `None` for a single leaf server.
    pub cluster: Option<LeafClusterInput>,
    /// Hand every client connection to the edge's device authorization
    /// service (auth callout, see `device_auth`):
    /// renders `include "device-auth.conf"`, which the edge writes.
    pub device_auth: bool,
}

/// One node's view of its leaf cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafClusterInput {
    /// This node's index (0-based); its server name is
    /// `{effective_server_name}.n{node}`.
    pub node: usize,
    /// The route listener, `host:port`.
    pub listen: String,
    /// Every node's route URL (`tls://host:port`), this node's included
    /// (nats-server ignores a route to itself).
    pub routes: Vec<String>,
    /// The node's certificate and key, and the tenant CA the other nodes'
    /// certificates must chain to (verified: mutual TLS).
    pub tls: TlsFiles,
    /// SHA-256 (lowercase hex) of each node's certificate public key, one
    /// per route: the only certificates the route listener and the routes
    /// it dials accept. The tenant CA also issues the certificates of the
    /// tenant's collectors, agents and other sites' leaves; without the pins
    /// any of them would pass the route handshake.
    pub pinned_certs: Vec<String>,
}

impl LeafConfigInput {
    /// An input with the default paths under [`DEFAULT_NATS_DIR`] and
    /// [`DEFAULT_LEAF_STORE_DIR`], listeners and limits.
    pub fn new(tenant_slug: &str, site_slug: &str, hub_url: &str) -> Self {
        let certs = format!("{DEFAULT_NATS_DIR}/certs");
        Self {
            tenant_slug: tenant_slug.to_owned(),
            site_slug: site_slug.to_owned(),
            server_name: None,
            client_listen: DEFAULT_CLIENT_LISTEN.to_owned(),
            client_tls: TlsFiles::new(
                &format!("{certs}/leaf-server.pem"),
                &format!("{certs}/leaf-server-key.pem"),
                &format!("{certs}/tenant-ca.pem"),
            ),
            monitoring_listen: Some(DEFAULT_MONITORING_LISTEN.to_owned()),
            jetstream_store_dir: DEFAULT_LEAF_STORE_DIR.to_owned(),
            jetstream_domain: None,
            max_file_store: DEFAULT_MAX_FILE_STORE,
            max_memory_store: None,
            hub_url: hub_url.to_owned(),
            extra_hub_urls: Vec::new(),
            credentials_file: format!("{DEFAULT_NATS_DIR}/leaf.creds"),
            remote_tls: TlsFiles::new(
                &format!("{certs}/leaf-client.pem"),
                &format!("{certs}/leaf-client-key.pem"),
                &format!("{certs}/root-ca.pem"),
            ),
            pid_file: None,
            cluster: None,
            device_auth: false,
        }
    }

    /// The server name this input renders: a cluster node's carries its
    /// index (`.n{i}`), since the servers of a cluster need distinct names.
    pub fn effective_server_name(&self) -> String {
        let base = self
            .server_name
            .clone()
            .unwrap_or_else(|| format!("leaf-{}-{}", self.tenant_slug, self.site_slug));
        match &self.cluster {
            Some(cluster) => format!("{base}.n{}", cluster.node),
            None => base,
        }
    }

    /// The JetStream domain this input renders.
    pub fn effective_domain(&self) -> Result<JetStreamDomain, ConfigError> {
        match &self.jetstream_domain {
            Some(domain) => JetStreamDomain::new(domain),
            None => JetStreamDomain::for_site(&self.tenant_slug, &self.site_slug),
        }
    }
}

pub(crate) fn is_loopback(host: &Host) -> bool {
    match host {
        Host::Ip(ip) => ip.is_loopback(),
        Host::Dns(name) => name == "localhost",
    }
}

pub(crate) fn is_unspecified(host: &Host) -> bool {
    matches!(host, Host::Ip(ip) if ip.is_unspecified())
}

/// Renders `nats-leaf.conf`. Every input is validated first; nothing is rendered
/// from an input that fails.
pub fn render_leaf_config(input: &LeafConfigInput) -> Result<String, ConfigError> {
    validate_slug("tenant slug", &input.tenant_slug)?;
    validate_slug("site slug", &input.site_slug)?;
    let server_name = input.effective_server_name();
    validate_server_name("server name", &server_name)?;
    let client = listen_addr("client listen", &input.client_listen)?;
    input.client_tls.validate("client tls path")?;
    let monitoring = input
        .monitoring_listen
        .as_deref()
        .map(|m| listen_addr("monitoring listen", m))
        .transpose()?;
    validate_path("jetstream store dir", &input.jetstream_store_dir)?;
    let domain = input.effective_domain()?;
    let hub_url = hub_url("hub url", &input.hub_url)?;
    let extra_hub_urls = input
        .extra_hub_urls
        .iter()
        .map(|u| hub_url_rule("hub url", u))
        .collect::<Result<Vec<_>, _>>()?;
    validate_path("credentials file", &input.credentials_file)?;
    input.remote_tls.validate("remote tls path")?;
    if let Some(pid_file) = &input.pid_file {
        validate_path("pid file", pid_file)?;
    }
    let cluster = match &input.cluster {
        Some(cluster) => Some(validate_cluster(cluster, &client, monitoring.as_ref())?),
        None => None,
    };
    if input.max_file_store == 0 {
        return Err(ConfigError::invalid(
            "max file store",
            "0",
            "the buffer needs file storage",
        ));
    }
    if let Some(monitoring) = &monitoring
        && monitoring.port() == client.port()
        && (monitoring.host() == client.host() || is_unspecified(client.host()))
    {
        return Err(ConfigError::Inconsistent(
            "monitoring and client listeners use the same port".into(),
        ));
    }

    let mut w = ConfWriter::new();
    w.comment(&format!(
        "nats-leaf.conf for edge site \"{}\" of tenant \"{}\".\n\
         Generated by ServiceRadar Edge; do not edit by hand: the control plane keeps a\n\
         checksum of this file and reports any change as drift.",
        input.site_slug, input.tenant_slug
    ));
    w.blank();
    w.string("server_name", &server_name);
    if let Some(pid_file) = &input.pid_file {
        w.comment("The edge agent signals this pid to reload renewed certificates.");
        w.string("pid_file", pid_file);
    }
    w.blank();
    if input.device_auth {
        w.comment(
            "Device authorization: every client connection (collectors and devices) is\n\
             decided by the authorization service beside this leaf (auth callout). Its keys\n\
             were generated at the edge and are declared in the included file; without the\n\
             service no client gets in.",
        );
        w.include(DEVICE_AUTH_INCLUDE);
        w.blank();
        w.comment(
            "A device publishes device.<id>.metrics.> and device.<id>.status; the leaf maps\n\
             them into this site's buffer (edge.<tenant>.<site>.device.<id>...), so they are\n\
             kept through WAN outages and carry the site, and no other site stores them.",
        );
        w.open("mappings");
        for (from, to) in device_subject_mappings(&input.tenant_slug, &input.site_slug)? {
            w.raw_key_string(&crate::syntax::quote(&from), &to);
        }
        w.close();
        w.blank();
    }
    w.comment(
        "Local clients (collectors at this site). Only clients presenting a certificate\n\
         issued by the tenant CA are accepted (verify: true). They all share this leaf's\n\
         account, which the hub link below binds to the tenant's account on the hub.",
    );
    w.string("host", &client.host().to_bare());
    w.int("port", client.port());
    input.client_tls.write(&mut w, true);
    w.blank();
    if let Some(monitoring) = &monitoring {
        if is_loopback(monitoring.host()) {
            w.comment("Monitoring has no authentication: it listens on localhost only.");
        } else {
            w.comment(
                "WARNING: monitoring has no authentication and this listener is reachable\n\
                 from the network. Fence it off.",
            );
        }
        w.string("http", &monitoring.to_string());
        w.blank();
    }
    if let Some((cluster_input, listen, routes)) = &cluster {
        write_cluster(&mut w, &domain, cluster_input, listen, routes);
    }
    w.comment(&format!(
        "JetStream buffers collector data while the hub is unreachable. The domain is\n\
         unique to this site: the hub addresses this leaf's JetStream as\n\
         $JS.{domain}.API inside the tenant's account. A domain shared by all sites\n\
         (such as \"edge\") breaks once a tenant has two sites: both leaves would\n\
         advertise the same domain to the hub account, $JS.edge.API would be ambiguous\n\
         and the hub could not address one leaf's JetStream."
    ));
    w.open("jetstream");
    w.string("store_dir", &input.jetstream_store_dir);
    w.string("domain", domain.as_str());
    w.int("max_file_store", input.max_file_store);
    if let Some(mem) = input.max_memory_store {
        w.int("max_memory_store", mem);
    }
    w.close();
    w.blank();
    w.comment(
        "Outbound link to the hub: mutual TLS (client certificate from the tenant CA, the\n\
         hub's certificate checked against the platform root) plus the leaf user's\n\
         credentials. The hub's leaf authorization admits this leaf into the tenant's\n\
         account only if the certificate names the same tenant and site as the credentials.",
    );
    w.open("leafnodes");
    w.open_list("remotes");
    w.open_anon();
    if extra_hub_urls.is_empty() {
        w.string("url", &hub_url.to_string());
    } else {
        w.open_list("urls");
        w.list_string(&hub_url.to_string());
        for url in &extra_hub_urls {
            w.list_string(&url.to_string());
        }
        w.close_list();
    }
    w.string("credentials", &input.credentials_file);
    input.remote_tls.write(&mut w, false);
    w.close();
    w.close_list();
    w.close();
    Ok(w.finish())
}

/// The route URLs of a cluster after validation.
type CheckedCluster<'a> = (
    &'a LeafClusterInput,
    serviceradar_domain::validate::ListenAddr,
    Vec<serviceradar_domain::validate::NatsUrl>,
);

fn validate_cluster<'a>(
    cluster: &'a LeafClusterInput,
    client: &serviceradar_domain::validate::ListenAddr,
    monitoring: Option<&serviceradar_domain::validate::ListenAddr>,
) -> Result<CheckedCluster<'a>, ConfigError> {
    let (listen, routes) = cluster_routes(
        &cluster.listen,
        &cluster.tls,
        &cluster.routes,
        &cluster.pinned_certs,
        cluster.node,
        2,
        "a leaf cluster needs routes to at least two nodes",
    )?;
    let clash = |other: &serviceradar_domain::validate::ListenAddr| {
        other.port() == listen.port()
            && (other.host() == listen.host()
                || is_unspecified(other.host())
                || is_unspecified(listen.host()))
    };
    if clash(client) || monitoring.is_some_and(clash) {
        return Err(ConfigError::Inconsistent(
            "the cluster listener shares a port with the client or monitoring listener".into(),
        ));
    }
    Ok((cluster, listen, routes))
}

fn write_cluster(
    w: &mut ConfWriter,
    domain: &JetStreamDomain,
    cluster: &LeafClusterInput,
    listen: &serviceradar_domain::validate::ListenAddr,
    routes: &[serviceradar_domain::validate::NatsUrl],
) {
    w.comment(&format!(
        "Node {} of this site's 3-node leaf cluster. Routes to every node use mutual\n\
         TLS: each node presents its own certificate (issued by the tenant CA) and\n\
         accepts only the nodes' certificates (pinned: the tenant's collectors, agents\n\
         and other sites' leaves hold certificates of the same CA). JetStream runs\n\
         clustered over these routes, so the buffer stream keeps 3 replicas.",
        cluster.node
    ));
    w.open("cluster");
    w.string("name", domain.as_str());
    w.string("listen", &listen.to_string());
    cluster.tls.write_pinned(w, &cluster.pinned_certs);
    w.open_list("routes");
    for route in routes {
        w.list_string(&route.to_string());
    }
    w.close_list();
    w.close();
    w.blank();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> LeafConfigInput {
        LeafConfigInput::new("acme", "nyc-office", "tls://hub.example.com:7422")
    }

    #[test]
    fn device_auth_maps_device_data_into_the_site_buffer() {
        let plain = render_leaf_config(&input()).unwrap();
        assert!(!plain.contains("mappings"), "{plain}");
        let mut with = input();
        with.device_auth = true;
        let text = render_leaf_config(&with).unwrap();
        assert!(text.contains("include \"device-auth.conf\""), "{text}");
        assert!(
            text.contains(
                "  \"device.*.metrics.>\": \"edge.acme.nyc-office.device.{{wildcard(1)}}.metrics.>\"\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "  \"device.*.status\": \"edge.acme.nyc-office.device.{{wildcard(1)}}.status\"\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn defaults_render() {
        let text = render_leaf_config(&input()).unwrap();
        assert!(text.contains("server_name: \"leaf-acme-nyc-office\"\n"));
        assert!(text.contains("domain: \"sr-acme-nyc-office\"\n"));
        assert!(text.contains("http: \"127.0.0.1:8222\"\n"));
        assert!(text.contains("verify: true\n"));
        assert!(text.contains("url: \"tls://hub.example.com:7422\"\n"));
        assert!(text.contains("credentials: \"/etc/serviceradar/nats/leaf.creds\"\n"));
        assert!(text.contains("store_dir: \"/var/lib/serviceradar/nats/jetstream\"\n"));
        assert!(!text.contains("verify_and_map"));
    }

    #[test]
    fn two_sites_of_one_tenant_get_different_domains() {
        let a = input().effective_domain().unwrap();
        let mut other = input();
        other.site_slug = "factory-3".into();
        assert_ne!(a, other.effective_domain().unwrap());
    }

    #[test]
    fn public_monitoring_is_flagged() {
        let mut i = input();
        i.monitoring_listen = Some("0.0.0.0:8222".into());
        assert!(render_leaf_config(&i).unwrap().contains("WARNING"));
        i.monitoring_listen = None;
        assert!(!render_leaf_config(&i).unwrap().contains("http:"));
    }

    #[test]
    fn conflicting_ports_are_rejected() {
        let mut i = input();
        i.monitoring_listen = Some("127.0.0.1:4222".into());
        assert!(matches!(
            render_leaf_config(&i),
            Err(ConfigError::Inconsistent(_))
        ));
    }

    fn clustered(node: usize) -> LeafConfigInput {
        let mut i = input();
        i.cluster = Some(LeafClusterInput {
            node,
            listen: "0.0.0.0:6222".into(),
            routes: (0..3).map(|n| format!("nats://10.0.2.1{n}:6222")).collect(),
            tls: i.client_tls.clone(),
            pinned_certs: (0..3).map(|n| format!("{n}").repeat(64)).collect(),
        });
        i
    }

    #[test]
    fn a_leaf_cluster_route_accepts_only_the_pinned_node_certificates() {
        let text = render_leaf_config(&clustered(1)).unwrap();
        let cluster = &text[text.find("cluster {").unwrap()..];
        let cluster = &cluster[..cluster.find("\n}\n").unwrap()];
        assert!(cluster.contains("verify: true"), "{cluster}");
        assert!(cluster.contains("pinned_certs = ["), "{cluster}");
        for n in 0..3 {
            assert!(cluster.contains(&format!("\"{}\"", format!("{n}").repeat(64))));
        }
        // Without a pin per node (or with something that is no pin), nothing
        // renders: a route listener trusting the whole tenant CA is the hole.
        let mut i = clustered(0);
        i.cluster.as_mut().unwrap().pinned_certs.clear();
        assert!(render_leaf_config(&i).is_err(), "no pins");
        let mut i = clustered(0);
        i.cluster.as_mut().unwrap().pinned_certs.pop();
        assert!(render_leaf_config(&i).is_err(), "a node without a pin");
        let mut i = clustered(0);
        i.cluster.as_mut().unwrap().pinned_certs[2] = "\"]\ninclude /etc/passwd".into();
        assert!(render_leaf_config(&i).is_err(), "a pin that is no hash");
        let mut i = clustered(0);
        i.cluster.as_mut().unwrap().pinned_certs[1] = "AB".repeat(32);
        assert!(render_leaf_config(&i).is_err(), "upper case");
    }

    #[test]
    fn bad_inputs_are_rejected() {
        type Mutation = fn(&mut LeafConfigInput);
        let cases: [(&str, Mutation); 10] = [
            ("tenant", |i| i.tenant_slug = "Acme".into()),
            ("site", |i| i.site_slug = "a\"b".into()),
            ("name", |i| i.server_name = Some("a b".into())),
            ("listen", |i| i.client_listen = "0.0.0.0".into()),
            ("url", |i| i.hub_url = "hub:7422".into()),
            ("creds", |i| i.credentials_file = "/x/${HOME}".into()),
            ("cert", |i| i.client_tls.cert_file = "/x\n}".into()),
            ("domain", |i| i.jetstream_domain = Some("a.b".into())),
            ("store", |i| i.max_file_store = 0),
            ("pid", |i| i.pid_file = Some("/x/\"}".into())),
        ];
        for (what, mutate) in cases {
            let mut i = input();
            mutate(&mut i);
            assert!(render_leaf_config(&i).is_err(), "{what} accepted");
        }
    }
}
