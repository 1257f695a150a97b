//! A site's 3-node leaf cluster as rendered by this crate, against the real
//! `nats-server`: each node's config passes `nats-server -t`, the three nodes
//! form their routes over mutual TLS (seen through `/routez`), JetStream
//! runs clustered under the site's domain, and a server whose certificate
//! comes from another tenant's CA cannot join the routes. Nor can one whose
//! certificate the *same* tenant CA issued (another site's leaf node, a
//! collector): the routes pin the three node certificates.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Ca, Identities, http_json, poll, subdir, user_creds, write, write_pair};
use serviceradar_natsconf::leaf::LeafClusterInput;
use serviceradar_natsconf::{LeafConfigInput, TlsFiles, render_leaf_config};
use serviceradar_testkit::{NatsServer, check_nats_config, free_port};

#[derive(Clone, Copy)]
struct Node {
    client: u16,
    route: u16,
    monitor: u16,
}

/// The route pin of a key: SHA-256 of its SubjectPublicKeyInfo, lowercase
/// hex (what nats-server's `pinned_certs` compares).
fn pin(key_pem: &str) -> String {
    use rcgen::PublicKeyData;
    use sha2::Digest;
    let key = rcgen::KeyPair::from_pem(key_pem).expect("key");
    hex::encode(sha2::Sha256::digest(key.subject_public_key_info()))
}

/// A node's server certificate: (cert + chain, key) issued by `ca`.
fn node_cert(ca: &Ca, site: &str, i: usize) -> (String, String) {
    ca.issue(
        &format!("nats-{i}.{site}.acme.serviceradar"),
        &["127.0.0.1"],
    )
}

/// Node `i`'s config input, presenting `cert` on its routes and admitting
/// the certificates `pins` names.
#[allow(clippy::too_many_arguments)]
fn node_input(
    dir: &Path,
    tenant: &Ca,
    cert: &(String, String),
    pins: &[String],
    tenant_ca: &str,
    root_ca: &str,
    creds: &str,
    nodes: &[Node],
    i: usize,
) -> LeafConfigInput {
    let mut input =
        LeafConfigInput::new("acme", "plant", &format!("tls://127.0.0.1:{}", free_port()));
    let server = write_pair(dir, &format!("node-{i}"), cert);
    let client = write_pair(
        dir,
        &format!("client-{i}"),
        &tenant.issue("leaf.plant.acme.serviceradar", &[]),
    );
    input.client_listen = format!("127.0.0.1:{}", nodes[i].client);
    input.monitoring_listen = Some(format!("127.0.0.1:{}", nodes[i].monitor));
    input.client_tls = TlsFiles::new(&server.0, &server.1, tenant_ca);
    input.remote_tls = TlsFiles::new(&client.0, &client.1, root_ca);
    input.credentials_file = creds.to_owned();
    input.jetstream_store_dir = subdir(dir, &format!("js-{i}"));
    input.cluster = Some(LeafClusterInput {
        node: i,
        listen: format!("127.0.0.1:{}", nodes[i].route),
        routes: nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.route))
            .collect(),
        tls: TlsFiles::new(&server.0, &server.1, tenant_ca),
        pinned_certs: pins.to_vec(),
    });
    input
}

/// A site's three nodes: their ports, certificates and pins.
struct Site {
    nodes: Vec<Node>,
    certs: Vec<(String, String)>,
    pins: Vec<String>,
}

impl Site {
    fn new(tenant: &Ca) -> Self {
        let nodes: Vec<Node> = (0..3)
            .map(|_| Node {
                client: free_port(),
                route: free_port(),
                monitor: free_port(),
            })
            .collect();
        let certs: Vec<_> = (0..3).map(|i| node_cert(tenant, "plant", i)).collect();
        let pins = certs.iter().map(|c| pin(&c.1)).collect();
        Self { nodes, certs, pins }
    }
}

fn start(dir: &Path, i: usize, text: &str, monitor: u16) -> NatsServer {
    let path = dir.join(format!("node-{i}.conf"));
    std::fs::write(&path, text).unwrap();
    if let Err(err) = check_nats_config(&path) {
        panic!("nats-server -t rejected node {i}: {err}\n{text}");
    }
    NatsServer::start_file(dir, &format!("node-{i}"), &path, monitor).expect("node starts")
}

/// How many other servers this node holds routes to (nats-server pools
/// several connections per peer: counted by the peer's server id).
fn routes(monitor: u16) -> Option<usize> {
    let routez = http_json(monitor, "/routez")?;
    let peers: std::collections::BTreeSet<&str> = routez["routes"]
        .as_array()?
        .iter()
        .filter_map(|r| r["remote_id"].as_str())
        .collect();
    Some(peers.len())
}

#[test]
fn three_nodes_form_their_routes_over_mutual_tls_and_a_foreign_node_cannot_join() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let root = Ca::root("test root");
    let tenant = root.intermediate("tenant acme");
    let ids = Identities::new();
    let tenant_ca = write(dir, "tenant-ca.pem", &tenant.cert_pem);
    let root_ca = write(dir, "root-ca.pem", &root.cert_pem);
    let creds = user_creds(dir, &ids.tenant, "leaf").1;
    let site = Site::new(&tenant);
    let nodes = &site.nodes;
    let inputs: Vec<LeafConfigInput> = (0..3)
        .map(|i| {
            node_input(
                dir,
                &tenant,
                &site.certs[i],
                &site.pins,
                &tenant_ca,
                &root_ca,
                &creds,
                nodes,
                i,
            )
        })
        .collect();
    let texts: Vec<String> = inputs
        .iter()
        .map(|i| render_leaf_config(i).unwrap())
        .collect();
    assert!(texts[1].contains("server_name: \"leaf-acme-plant.n1\"\n"));
    assert!(texts[1].contains("cluster {\n  name: \"sr-acme-plant\"\n"));
    assert!(texts[1].contains("verify: true"));

    // The first two nodes: a route between them, and a JetStream cluster.
    let _a = start(dir, 0, &texts[0], nodes[0].monitor);
    let mut b = start(dir, 1, &texts[1], nodes[1].monitor);
    let two = poll(Duration::from_secs(20), || {
        (routes(nodes[0].monitor)? >= 1 && routes(nodes[1].monitor)? >= 1).then_some(())
    });
    assert!(two.is_some(), "no route between nodes 0 and 1\n{}", b.log());

    // A server with the same config shape but a certificate from another
    // tenant's CA is refused by TLS on both sides: no route to it.
    let other = root.intermediate("tenant other");
    let intruder_dir = tmp.path().join("intruder");
    std::fs::create_dir_all(&intruder_dir).unwrap();
    let mut intruder = node_input(
        &intruder_dir,
        &other,
        &node_cert(&other, "plant", 2),
        &site.pins,
        &tenant_ca,
        &root_ca,
        &creds,
        nodes,
        2,
    );
    intruder.jetstream_store_dir = subdir(&intruder_dir, "js");
    let mut bad = start(
        &intruder_dir,
        2,
        &render_leaf_config(&intruder).unwrap(),
        nodes[2].monitor,
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(routes(nodes[2].monitor), Some(0), "{}", bad.log());
    assert_eq!(routes(nodes[0].monitor), Some(1));
    assert_eq!(routes(nodes[1].monitor), Some(1));
    bad.kill();

    // The genuine third node joins: every node routes to the two others.
    let _c = start(dir, 2, &texts[2], nodes[2].monitor);
    let all = poll(Duration::from_secs(30), || {
        nodes
            .iter()
            .all(|n| routes(n.monitor) == Some(2))
            .then_some(())
    });
    assert!(all.is_some(), "routes did not form\n{}", b.log());
    // JetStream is clustered under the site's domain, with a meta leader
    // that knows all three peers (a leader can be elected by two before the
    // third has joined: waiting for the size, not asserting it at once,
    // keeps this from failing under load).
    let leader = poll(Duration::from_secs(30), || {
        let jsz = http_json(nodes[0].monitor, "/jsz")?;
        (!jsz["meta_cluster"]["leader"].as_str()?.is_empty()
            && jsz["meta_cluster"]["cluster_size"] == 3)
            .then_some(jsz)
    });
    let jsz = leader.expect("a JetStream meta leader of a 3-peer cluster");
    assert_eq!(jsz["config"]["domain"], "sr-acme-plant");
    assert_eq!(jsz["meta_cluster"]["cluster_size"], 3);
    b.kill();
}

/// The hole this closes: a site's leaf-cluster routes trusted every
/// certificate of the tenant CA, which also issues the tenant's collectors'
/// and its other sites' leaves' certificates, so any of them could join a
/// site's routes (and read what the cluster replicates). Each intruder is a
/// real `nats-server` dialing the three nodes' route ports with a
/// certificate of the same tenant CA: every node refuses it for its pin,
/// and the three nodes keep their routes to each other.
#[test]
fn another_certificate_of_the_tenant_cannot_join_a_sites_leaf_cluster_routes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let root = Ca::root("test root");
    let tenant = root.intermediate("tenant acme");
    let ids = Identities::new();
    let tenant_ca = write(dir, "tenant-ca.pem", &tenant.cert_pem);
    let root_ca = write(dir, "root-ca.pem", &root.cert_pem);
    let creds = user_creds(dir, &ids.tenant, "leaf").1;
    let site = Site::new(&tenant);
    let mut running = Vec::new();
    for i in 0..3 {
        let input = node_input(
            dir,
            &tenant,
            &site.certs[i],
            &site.pins,
            &tenant_ca,
            &root_ca,
            &creds,
            &site.nodes,
            i,
        );
        let text = render_leaf_config(&input).unwrap();
        assert!(text.contains("pinned_certs = ["), "{text}");
        running.push(start(dir, i, &text, site.nodes[i].monitor));
    }
    let logs = |servers: &[NatsServer]| {
        servers
            .iter()
            .enumerate()
            .map(|(i, s)| format!("--- node {i}\n{}", s.log()))
            .collect::<String>()
    };
    let formed = poll(Duration::from_secs(30), || {
        site.nodes
            .iter()
            .all(|n| routes(n.monitor) == Some(2))
            .then_some(())
    });
    assert!(formed.is_some(), "routes did not form\n{}", logs(&running));
    assert!(
        running.iter().all(|s| !s.log().contains("not pinned")),
        "the nodes' own certificates are pinned\n{}",
        logs(&running)
    );

    let intruders = [
        ("another site's leaf node", node_cert(&tenant, "mill", 0)),
        (
            "a collector",
            tenant.issue("collector-7f3e.acme.serviceradar", &[]),
        ),
    ];
    for (n, (who, cert)) in intruders.iter().enumerate() {
        let intruder_dir = dir.join(format!("intruder-{n}"));
        std::fs::create_dir_all(&intruder_dir).unwrap();
        // Its config dials the three nodes' route ports from a port of its
        // own, and would admit them (their pins and its own): only the
        // nodes' side decides.
        let mut nodes = site.nodes.clone();
        nodes.push(Node {
            client: free_port(),
            route: free_port(),
            monitor: free_port(),
        });
        let mut pins = site.pins.clone();
        pins.push(pin(&cert.1));
        let mut input = node_input(
            &intruder_dir,
            &tenant,
            cert,
            &pins,
            &tenant_ca,
            &root_ca,
            &creds,
            &nodes,
            3,
        );
        input.jetstream_store_dir = subdir(&intruder_dir, "js");
        let before: Vec<usize> = running
            .iter()
            .map(|s| s.log().matches("not pinned").count())
            .collect();
        let mut bad = start(
            &intruder_dir,
            3,
            &render_leaf_config(&input).unwrap(),
            nodes[3].monitor,
        );
        // Every node refuses it for its pin (nats-server logs the route
        // handshake error), so the attempt was made and failed on the pin.
        let refused = poll(Duration::from_secs(20), || {
            running
                .iter()
                .zip(&before)
                .all(|(s, b)| s.log().matches("certificate not pinned").count() > *b)
                .then_some(())
        });
        assert!(
            refused.is_some(),
            "{who}: not refused for its pin by every node\n{}--- intruder\n{}",
            logs(&running),
            bad.log()
        );
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(routes(nodes[3].monitor), Some(0), "{who}\n{}", bad.log());
        for (i, node) in site.nodes.iter().enumerate() {
            assert_eq!(
                routes(node.monitor),
                Some(2),
                "{who}: node {i} routes to its two peers only\n{}",
                logs(&running)
            );
        }
        bad.kill();
    }
}
