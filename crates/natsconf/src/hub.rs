//! `nats-hub.conf`: the SaaS-side NATS server that edge leaves dial into.
//!
//! Why this module exists: the hub is where tenant isolation is enforced, by
//! nats-server itself, with one NATS account per tenant in operator mode. This
//! module renders the hub's config from the operator JWT and the account JWTs, and
//! checks them before writing anything (signatures, types, that each account is
//! signed by this operator, that the system account is among them).
//!
//! # Decisions
//!
//! **Full account resolver, preloaded.** `resolver { type: full, dir, allow_delete:
//! true, interval: "2m" }` keeps account JWTs in a directory the hub owns. The system
//! and tenant accounts known at render time are listed in `resolver_preload`; at
//! startup the server stores each preload unless the directory already holds a
//! *newer* JWT for that account, so a restart does not undo later updates. Tenants
//! created later, and re-issued account JWTs (new limits, revoked users), are pushed
//! to the running hub by a system-account user publishing the JWT to
//! `$SYS.REQ.CLAIMS.UPDATE`: no restart, no config change. `interval` is how often
//! the servers of a hub cluster reconcile their directories; `allow_delete` lets the
//! operator remove a tenant's account (deleted JWTs are renamed, not erased).
//!
//! **Leafnode listener with mutual TLS** (`verify: true`, `ca_file` = the platform
//! root): a leaf must present a certificate chaining to the platform root (its
//! tenant CA is an intermediate under it) *and* authenticate with a user JWT. The
//! certificate keeps strangers off the port. On its own, nats-server lets the JWT
//! decide the account and does not compare it with the certificate; the control
//! plane closes that gap by minting leaf users in an account with external
//! authorization (auth callout, see `serviceradar-server`'s `leaf_auth`), which
//! admits a leaf into a tenant's account only when its verified certificate names
//! that tenant and site. This module renders whatever accounts it is given.
//!
//! **JetStream domain `hub`**, distinct from every leaf's (`sr-...`), so the leaves'
//! JetStreams stay separate from the hub's and each is addressable by domain.
//!
//! **Monitoring on localhost by default** (it has no authentication).
//!
//! **A hub cluster is one config per node** ([`HubClusterInput`]): each node
//! has its own server name and certificate, a `cluster` block whose routes
//! name every node, and the same operator, accounts and resolver. Routes use
//! mutual TLS with the node certificates, verified against the platform root
//! *and pinned* (`pinned_certs`: the SHA-256 of each node's public key): leaf
//! certificates chain to the same root, and without the pins a leaf's client
//! certificate would pass the route listener's handshake. JetStream runs
//! clustered over the routes (streams may then have 3 replicas), and the full
//! resolver sends every account JWT pushed to one node to the others.

use std::collections::BTreeSet;

use crate::jwt::{KeyKind, check_public_key, claim_type, decode_claims};
use crate::leaf::{is_loopback, is_unspecified};
use crate::syntax::{
    ConfWriter, ConfigError, JetStreamDomain, cluster_routes, listen_addr, validate_path,
    validate_server_name,
};
use crate::tls::TlsFiles;

/// JetStream domain of the hub.
pub const DEFAULT_HUB_DOMAIN: &str = "hub";
/// How often hub servers reconcile their account directories.
pub const RESOLVER_INTERVAL: &str = "2m";

/// The hub's settings, operator and accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfigInput {
    /// `server_name`.
    pub server_name: String,
    /// Client listener `host:port` (control plane, ingestion).
    pub client_listen: String,
    /// TLS for the client listener; `None` for a plain listener (only sensible on
    /// a private network or loopback).
    pub client_tls: Option<TlsFiles>,
    /// Monitoring listener `host:port`; `None` disables monitoring.
    pub monitoring_listen: Option<String>,
    /// JetStream store directory.
    pub jetstream_store_dir: String,
    /// JetStream domain, [`DEFAULT_HUB_DOMAIN`] by default.
    pub jetstream_domain: String,
    /// Cap of JetStream file storage in bytes; `None` is the server default.
    pub max_file_store: Option<u64>,
    /// Cap of JetStream memory storage in bytes; `None` is the server default.
    pub max_memory_store: Option<u64>,
    /// Leafnode listener `host:port`.
    pub leafnode_listen: String,
    /// Hub server certificate for leafnodes and the CA leaf certificates must chain
    /// to (the platform root).
    pub leafnode_tls: TlsFiles,
    /// The operator JWT (self-signed).
    pub operator_jwt: String,
    /// Public key of the system account.
    pub system_account: String,
    /// Directory of the full account resolver.
    pub resolver_dir: String,
    /// Account JWTs to preload: the system account's and the tenants'.
    pub account_jwts: Vec<String>,
    /// How often the full resolver compares its account directory with the
    /// other nodes' ([`RESOLVER_INTERVAL`] by default; only a cluster has others).
    pub resolver_interval: String,
    /// This server's place in a hub cluster; `None` for one hub server.
    pub cluster: Option<HubClusterInput>,
}

/// One node's view of its hub cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubClusterInput {
    /// The cluster's name (the same on every node).
    pub name: String,
    /// This node's index (0-based) among `routes`.
    pub node: usize,
    /// The route listener, `host:port`.
    pub listen: String,
    /// Every node's route URL (`nats://host:port`), this node's included
    /// (nats-server ignores a route to itself).
    pub routes: Vec<String>,
    /// The node's certificate and key, and the platform root the other nodes'
    /// certificates must chain to.
    pub tls: TlsFiles,
    /// SHA-256 (hex) of each node's certificate public key: the only
    /// certificates the route listener and the routes it dials accept.
    pub pinned_certs: Vec<String>,
}

impl HubConfigInput {
    /// An input with default listeners (`0.0.0.0:4222` clients, `0.0.0.0:7422`
    /// leafnodes, `127.0.0.1:8222` monitoring) and paths under
    /// `/etc/serviceradar/nats` and `/var/lib/serviceradar/nats`.
    pub fn new(
        operator_jwt: &str,
        system_account: &str,
        account_jwts: Vec<String>,
        leafnode_tls: TlsFiles,
    ) -> Self {
        Self {
            server_name: "sr-hub".to_owned(),
            client_listen: "0.0.0.0:4222".to_owned(),
            client_tls: None,
            monitoring_listen: Some("127.0.0.1:8222".to_owned()),
            jetstream_store_dir: "/var/lib/serviceradar/nats/hub-jetstream".to_owned(),
            jetstream_domain: DEFAULT_HUB_DOMAIN.to_owned(),
            max_file_store: None,
            max_memory_store: None,
            leafnode_listen: "0.0.0.0:7422".to_owned(),
            leafnode_tls,
            operator_jwt: operator_jwt.to_owned(),
            system_account: system_account.to_owned(),
            resolver_dir: "/var/lib/serviceradar/nats/accounts".to_owned(),
            account_jwts,
            resolver_interval: RESOLVER_INTERVAL.to_owned(),
            cluster: None,
        }
    }
}

/// A checked account JWT: subject and token.
struct Preload<'a> {
    account: String,
    jwt: &'a str,
}

fn check_accounts<'a>(input: &'a HubConfigInput) -> Result<Vec<Preload<'a>>, ConfigError> {
    let operator = decode_claims(&input.operator_jwt).map_err(|source| ConfigError::Jwt {
        field: "operator jwt",
        source,
    })?;
    let operator_key = operator["sub"].as_str().unwrap_or_default();
    if claim_type(&operator) != Some("operator") || operator["iss"] != operator["sub"] {
        return Err(ConfigError::Inconsistent(
            "the operator JWT must be a self-signed operator claim".into(),
        ));
    }
    check_public_key("system account", &input.system_account, KeyKind::Account).map_err(
        |source| ConfigError::Jwt {
            field: "system account",
            source,
        },
    )?;
    if let Some(named) = operator["nats"]["system_account"].as_str()
        && named != input.system_account
    {
        return Err(ConfigError::Inconsistent(
            "the operator JWT names a different system account".into(),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut preloads = Vec::with_capacity(input.account_jwts.len());
    for jwt in &input.account_jwts {
        let claims = decode_claims(jwt).map_err(|source| ConfigError::Jwt {
            field: "account jwt",
            source,
        })?;
        if claim_type(&claims) != Some("account") {
            return Err(ConfigError::Inconsistent(
                "a preloaded JWT is not an account claim".into(),
            ));
        }
        let account = claims["sub"].as_str().unwrap_or_default().to_owned();
        check_public_key("account jwt subject", &account, KeyKind::Account).map_err(|source| {
            ConfigError::Jwt {
                field: "account jwt",
                source,
            }
        })?;
        if claims["iss"].as_str() != Some(operator_key) {
            return Err(ConfigError::Inconsistent(format!(
                "account {account} is not signed by the operator"
            )));
        }
        if !seen.insert(account.clone()) {
            return Err(ConfigError::Inconsistent(format!(
                "account {account} is listed twice"
            )));
        }
        preloads.push(Preload { account, jwt });
    }
    if !seen.contains(&input.system_account) {
        return Err(ConfigError::Inconsistent(
            "the system account's JWT must be among the preloaded accounts".into(),
        ));
    }
    Ok(preloads)
}

/// Renders `nats-hub.conf`. Every input is validated first.
pub fn render_hub_config(input: &HubConfigInput) -> Result<String, ConfigError> {
    validate_server_name("server name", &input.server_name)?;
    let client = listen_addr("client listen", &input.client_listen)?;
    if let Some(tls) = &input.client_tls {
        tls.validate("client tls path")?;
    }
    let monitoring = input
        .monitoring_listen
        .as_deref()
        .map(|m| listen_addr("monitoring listen", m))
        .transpose()?;
    validate_path("jetstream store dir", &input.jetstream_store_dir)?;
    let domain = JetStreamDomain::new(&input.jetstream_domain)?;
    let leafnode = listen_addr("leafnode listen", &input.leafnode_listen)?;
    input.leafnode_tls.validate("leafnode tls path")?;
    validate_path("resolver dir", &input.resolver_dir)?;
    let preloads = check_accounts(input)?;
    check_interval(&input.resolver_interval)?;
    let cluster = input
        .cluster
        .as_ref()
        .map(|c| check_cluster(c).map(|(listen, routes)| (c, listen, routes)))
        .transpose()?;
    let mut ports = vec![("client", &client), ("leafnode", &leafnode)];
    if let Some(m) = &monitoring {
        ports.push(("monitoring", m));
    }
    if let Some((_, listen, _)) = &cluster {
        ports.push(("cluster", listen));
    }
    for (i, (a_name, a)) in ports.iter().enumerate() {
        for (b_name, b) in &ports[i + 1..] {
            let overlap =
                a.host() == b.host() || is_unspecified(a.host()) || is_unspecified(b.host());
            if a.port() == b.port() && overlap {
                return Err(ConfigError::Inconsistent(format!(
                    "{a_name} and {b_name} listeners use the same port"
                )));
            }
        }
    }

    let mut w = ConfWriter::new();
    w.comment(
        "nats-hub.conf, generated by ServiceRadar Edge. Do not edit by hand.\n\
         \n\
         Operator mode: one NATS account per tenant isolates tenants inside this server.",
    );
    w.blank();
    w.string("server_name", &input.server_name);
    w.blank();
    w.comment("Client connections (control plane, ingestion).");
    w.string("host", &client.host().to_bare());
    w.int("port", client.port());
    if let Some(tls) = &input.client_tls {
        tls.write(&mut w, false);
    }
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
    w.comment("JetStream in its own domain; every edge leaf has a domain of its own (sr-...).");
    w.open("jetstream");
    w.string("store_dir", &input.jetstream_store_dir);
    w.string("domain", domain.as_str());
    if let Some(file) = input.max_file_store {
        w.int("max_file_store", file);
    }
    if let Some(mem) = input.max_memory_store {
        w.int("max_memory_store", mem);
    }
    w.close();
    w.blank();
    w.comment(
        "Edge leaves dial in here: a client certificate chaining to the platform root\n\
         (verify: true) and a user JWT of the tenant's account are both required.",
    );
    w.open("leafnodes");
    w.string("host", &leafnode.host().to_bare());
    w.int("port", leafnode.port());
    // Leaves dial the URL in their bundle only: advertising this server's
    // other interface addresses made leaves try them and log TLS errors
    // (the hub certificate does not name them).
    w.bool("no_advertise", true);
    input.leafnode_tls.write(&mut w, true);
    w.close();
    w.blank();
    if let Some((cluster, listen, routes)) = &cluster {
        write_cluster(&mut w, cluster, listen, routes);
    }
    w.comment("Trusted operator and the system account.");
    w.string("operator", &input.operator_jwt);
    w.string("system_account", &input.system_account);
    w.blank();
    w.comment(
        "Full resolver: account JWTs live in `dir`. Accounts below are preloaded at\n\
         startup unless `dir` holds a newer JWT. New tenants and re-issued accounts\n\
         (limits, revoked users) are pushed at runtime by a system-account user on\n\
         $SYS.REQ.CLAIMS.UPDATE; no restart is needed.",
    );
    w.open("resolver");
    w.string("type", "full");
    w.string("dir", &input.resolver_dir);
    w.bool("allow_delete", true);
    w.string("interval", &input.resolver_interval);
    w.close();
    w.blank();
    w.open("resolver_preload");
    for preload in &preloads {
        // The key is a validated account public key (base32: A-Z, 2-7).
        w.raw_key_string(&preload.account, preload.jwt);
    }
    w.close();
    Ok(w.finish())
}

/// `interval` of the resolver: a Go duration of whole seconds or minutes
/// (`30s`, `2m`), at least one second.
fn check_interval(interval: &str) -> Result<(), ConfigError> {
    let number = interval
        .strip_suffix('s')
        .or_else(|| interval.strip_suffix('m'))
        .filter(|n| !n.is_empty() && n.len() <= 6 && n.bytes().all(|b| b.is_ascii_digit()));
    match number.map(str::parse::<u32>) {
        Some(Ok(n)) if n > 0 => Ok(()),
        _ => Err(ConfigError::invalid(
            "resolver interval",
            interval,
            "must be whole seconds or minutes, like 30s or 2m",
        )),
    }
}

type CheckedRoutes = (
    serviceradar_domain::validate::ListenAddr,
    Vec<serviceradar_domain::validate::NatsUrl>,
);

fn check_cluster(cluster: &HubClusterInput) -> Result<CheckedRoutes, ConfigError> {
    validate_server_name("cluster name", &cluster.name)?;
    cluster_routes(
        &cluster.listen,
        &cluster.tls,
        &cluster.routes,
        &cluster.pinned_certs,
        cluster.node,
        3,
        "a hub cluster needs at least three nodes (JetStream keeps a quorum)",
    )
}

fn write_cluster(
    w: &mut ConfWriter,
    cluster: &HubClusterInput,
    listen: &serviceradar_domain::validate::ListenAddr,
    routes: &[serviceradar_domain::validate::NatsUrl],
) {
    w.comment(&format!(
        "Node {} of a {}-node hub cluster. Routes use mutual TLS: each node presents\n\
         its own certificate (issued by the platform root) and accepts only the\n\
         nodes' certificates (pinned: leaf certificates chain to the same root).\n\
         JetStream runs clustered over these routes; the full resolver shares\n\
         account JWTs among the nodes.",
        cluster.node,
        cluster.routes.len()
    ));
    w.open("cluster");
    w.string("name", &cluster.name);
    w.string("listen", &listen.to_string());
    // Routes dial the configured URLs only (no gossiped addresses, which the
    // node certificates may not name).
    w.bool("no_advertise", true);
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
    use crate::jwt::{AccountClaims, NKey, Operator};

    struct Fixture {
        operator: Operator,
        sys: NKey,
        tenant: NKey,
    }

    fn fixture() -> Fixture {
        let sys = NKey::generate(KeyKind::Account);
        let operator = Operator::generate("sr")
            .unwrap()
            .with_system_account(&sys.public_key())
            .unwrap();
        Fixture {
            operator,
            sys,
            tenant: NKey::generate(KeyKind::Account),
        }
    }

    fn input(f: &Fixture) -> HubConfigInput {
        let accounts = vec![
            f.operator
                .sign_account(&AccountClaims::system(&f.sys.public_key()))
                .unwrap(),
            f.operator
                .sign_account(&AccountClaims::tenant(&f.tenant.public_key(), "acme"))
                .unwrap(),
        ];
        HubConfigInput::new(
            &f.operator.operator_jwt().unwrap(),
            &f.sys.public_key(),
            accounts,
            TlsFiles::new("/c/hub.pem", "/c/hub-key.pem", "/c/root.pem"),
        )
    }

    #[test]
    fn renders_operator_mode_with_full_resolver() {
        let f = fixture();
        let text = render_hub_config(&input(&f)).unwrap();
        assert!(text.contains("type: \"full\""));
        assert!(text.contains("allow_delete: true"));
        assert!(text.contains("interval: \"2m\""));
        assert!(text.contains(&format!("system_account: \"{}\"", f.sys.public_key())));
        assert!(text.contains(&format!("  {}: \"eyJ", f.tenant.public_key())));
        assert!(text.contains("domain: \"hub\""));
        assert!(text.contains("http: \"127.0.0.1:8222\""));
        assert!(text.contains("verify: true"));
    }

    #[test]
    fn foreign_accounts_are_rejected() {
        let f = fixture();
        let mut i = input(&f);
        let other = Operator::generate("other").unwrap();
        i.account_jwts.push(
            other
                .sign_account(&AccountClaims::tenant(
                    &NKey::generate(KeyKind::Account).public_key(),
                    "evil",
                ))
                .unwrap(),
        );
        assert!(matches!(
            render_hub_config(&i),
            Err(ConfigError::Inconsistent(_))
        ));
    }

    #[test]
    fn system_account_must_be_preloaded_and_match() {
        let f = fixture();
        let mut i = input(&f);
        i.account_jwts.remove(0);
        assert!(render_hub_config(&i).is_err());
        let mut i = input(&f);
        i.system_account = f.tenant.public_key();
        assert!(render_hub_config(&i).is_err());
    }

    #[test]
    fn duplicate_accounts_and_bad_jwts_are_rejected() {
        let f = fixture();
        let mut i = input(&f);
        let dup = i.account_jwts[1].clone();
        i.account_jwts.push(dup);
        assert!(render_hub_config(&i).is_err());
        let mut i = input(&f);
        i.operator_jwt = "eyJ\"\ninclude /etc/passwd".into();
        assert!(render_hub_config(&i).is_err());
        let mut i = input(&f);
        i.account_jwts[1].push('x');
        assert!(render_hub_config(&i).is_err());
    }

    fn cluster(node: usize) -> HubClusterInput {
        HubClusterInput {
            name: "sr-hub".into(),
            node,
            listen: format!("0.0.0.0:{}", 6222),
            routes: (0..3)
                .map(|i| format!("nats://hub-{i}.example:6222"))
                .collect(),
            tls: TlsFiles::new("/c/hub.pem", "/c/hub-key.pem", "/c/root.pem"),
            pinned_certs: (0..3).map(|i| format!("{i}").repeat(64)).collect(),
        }
    }

    #[test]
    fn a_cluster_node_routes_to_every_node_with_pinned_certificates() {
        let f = fixture();
        let mut i = input(&f);
        i.server_name = "sr-hub-1".into();
        i.cluster = Some(cluster(1));
        let text = render_hub_config(&i).unwrap();
        assert!(text.contains("cluster {"));
        assert!(text.contains("name: \"sr-hub\""));
        assert!(text.contains("listen: \"0.0.0.0:6222\""));
        for n in 0..3 {
            assert!(text.contains(&format!("\"nats://hub-{n}.example:6222\"")));
            assert!(text.contains(&format!("\"{}\"", format!("{n}").repeat(64))));
        }
        assert!(text.contains("pinned_certs"));
        let verifying = text.lines().filter(|l| l.trim() == "verify: true").count();
        assert_eq!(verifying, 2, "routes and leafnodes verify their peers");
        // The one-server config has no cluster.
        assert!(!render_hub_config(&input(&f)).unwrap().contains("cluster {"));
    }

    #[test]
    fn a_cluster_must_have_three_nodes_pins_for_each_and_its_own_port() {
        let f = fixture();
        let mut i = input(&f);
        let mut c = cluster(0);
        c.routes.truncate(2);
        c.pinned_certs.truncate(2);
        i.cluster = Some(c);
        assert!(render_hub_config(&i).is_err(), "two nodes");
        let mut c = cluster(0);
        c.pinned_certs.pop();
        i.cluster = Some(c);
        assert!(render_hub_config(&i).is_err(), "a node without a pin");
        let mut c = cluster(0);
        c.pinned_certs[0] = "\"\ninclude /etc/passwd".into();
        i.cluster = Some(c);
        assert!(render_hub_config(&i).is_err(), "a pin that is no hash");
        let mut c = cluster(3);
        c.node = 3;
        i.cluster = Some(c);
        assert!(render_hub_config(&i).is_err(), "a node index out of range");
        let mut c = cluster(0);
        c.listen = "0.0.0.0:7422".into();
        i.cluster = Some(c);
        assert!(render_hub_config(&i).is_err(), "route port = leafnode port");
        let mut c = cluster(0);
        c.routes[2] = "nats://hub-2.example".into();
        i.cluster = Some(c);
        assert!(render_hub_config(&i).is_err(), "a route without a port");
    }

    #[test]
    fn the_resolver_interval_is_checked() {
        let f = fixture();
        let mut i = input(&f);
        for good in ["30s", "2m", "1s"] {
            i.resolver_interval = good.into();
            assert!(
                render_hub_config(&i)
                    .unwrap()
                    .contains(&format!("interval: \"{good}\""))
            );
        }
        for bad in ["", "0s", "2h", "m", "1.5s", "2m\"\n"] {
            i.resolver_interval = bad.into();
            assert!(render_hub_config(&i).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn port_clashes_are_rejected() {
        let f = fixture();
        let mut i = input(&f);
        i.leafnode_listen = "0.0.0.0:4222".into();
        assert!(render_hub_config(&i).is_err());
    }
}
