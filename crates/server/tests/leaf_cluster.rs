//! A site whose leaf is a 3-node cluster (issue 17), end to end on
//! loopback: the site is created with a cluster layout, provisioned by the
//! product's job code, its bundle built and each node installed with
//! `setup.sh --node N --prefix`; three real `nats-server`s run the nodes
//! against a real hub, with `serviceradar-core` answering the leaf
//! authorization callout and ingesting into the database.
//!
//! Asserted: the routes form (every node's `/routez` names the two others),
//! every node holds its own hub link (`/leafz`), the site's buffer is
//! replicated on three servers; then one node is SIGKILLed while a
//! collector publishes at 500 msg/s through all three node URLs: the site
//! stays linked throughout, every acknowledged message is stored exactly
//! once, and the node, started again, rejoins its routes and its hub link.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serviceradar_domain::TenantScope;
use serviceradar_domain::leaf_cluster::LeafCluster;
use serviceradar_domain::resources::Tenant;
use serviceradar_domain::state::LeafStatus;
use serviceradar_domain::telemetry::TelemetryKind;
use serviceradar_server::app::{Application, Settings};
use serviceradar_store::Store;
use serviceradar_testkit::{NatsServer, consecutive_free_ports, free_port, http_get};

mod support;

fn settings(dir: &std::path::Path, hub_client: u16, monitor_base: u16) -> Settings {
    let database_url = format!("sqlite://{}", dir.join("core.db").display());
    let mut settings =
        support::hub_platform_settings(dir, &database_url, hub_client, "leaf cluster password");
    if let Some(ingest) = settings.ingest.as_mut() {
        ingest.batch_size = 500;
    }
    settings.provisioning.leaf_monitoring_listen = Some(format!("127.0.0.1:{monitor_base}"));
    settings
}

async fn stored(store: &Store, tenant: &Tenant) -> i64 {
    let scoped = store.scoped(TenantScope::for_system_task(tenant.id));
    let mut total = 0;
    for kind in TelemetryKind::ALL {
        total += scoped.count_telemetry(kind).await.unwrap();
    }
    total
}

/// Other servers a node holds routes to (by server id: nats-server pools
/// several connections per peer).
fn route_peers(monitor: u16) -> usize {
    let Some(text) = http_get(monitor, "/routez") else {
        return 0;
    };
    let routez: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    routez["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["remote_id"].as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

/// Whether a node holds its leafnode connection to the hub.
fn hub_linked(monitor: u16) -> bool {
    http_get(monitor, "/leafz")
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["leafnodes"].as_u64().unwrap_or(0) >= 1)
}

async fn wait_for<F, Fut>(condition: F, what: &str, context: &dyn Fn() -> String)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes at `rate` messages per second with JetStream acknowledgements
/// until `stop`, retrying (same `Nats-Msg-Id`) what is not acknowledged;
/// returns how many were acknowledged.
fn publisher(
    js: async_nats::jetstream::Context,
    subject: &'static str,
    rate: u64,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            tick.tick().await;
            let payload = format!(r#"{{"message":"cluster {n}"}}"#);
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("cluster-{n}").as_str());
            let result = tokio::time::timeout(Duration::from_secs(5), async {
                js.publish_with_headers(subject, headers, payload.into())
                    .await?
                    .await
                    .map_err(async_nats::Error::from)
            })
            .await;
            if let Ok(Ok(_)) = result {
                n += 1;
                acked.store(n, Ordering::SeqCst);
            }
        }
        n
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_leaf_cluster_survives_a_sigkilled_node_under_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // The site, as the API creates it with leaf_nodes: 3.
    let (app, rolling) = RollingSite::new(dir).await;
    let (store, pki) = (rolling.store.clone(), rolling.pki.clone());
    let (acme, site, ports) = (rolling.acme.clone(), rolling.site.clone(), rolling.ports);
    let clients = rolling.clients.clone();
    let urls: Vec<String> = clients
        .iter()
        .map(|p| format!("tls://127.0.0.1:{p}"))
        .collect();
    let bundle = rolling.provision_and_bundle().await;
    let root = dir
        .join("bundle")
        .join(bundle.file_name.trim_end_matches(".tar.gz"));
    let mut configs = Vec::new();
    for node in 0..3 {
        let (config, _) = install_node(dir, "bundle", &bundle, node);
        // The routes admit the three node certificates only (pinned), which
        // the routes forming below proves are the right three.
        assert_eq!(
            support::pins_of(&config).len(),
            3,
            "node {node}'s routes pin 3 certificates"
        );
        configs.push(config);
    }

    let (hub, _files) = support::start_hub(dir, &store, &pki, ports).await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let start_node = |node: usize| rolling.start_node(&configs, node);
    let mut nodes: Vec<NatsServer> = (0..3).map(start_node).collect();
    let monitor = |node: usize| rolling.monitor(node);
    let logs = || node_logs(&configs);

    // Routes form among the three, and each node has its own hub link.
    wait_for(
        || async { (0..3).all(|n| route_peers(monitor(n)) == 2) },
        "every node routing to the two others",
        &logs,
    )
    .await;
    wait_for(
        || async { (0..3).all(|n| hub_linked(monitor(n))) },
        "every node's hub link",
        &logs,
    )
    .await;
    let hub_leafz: serde_json::Value =
        serde_json::from_str(&http_get(ports.monitor, "/leafz").unwrap()).unwrap();
    assert_eq!(hub_leafz["leafnodes"], 3, "the hub holds three links");

    // A collector with the three node URLs; the buffer stream has 3 replicas.
    let ca = pki.tenant_ca(&store, &acme).await.unwrap();
    let cert = serviceradar_pki::issue_collector(
        &ca,
        serviceradar_pki::TenantRef {
            id: acme.id.as_uuid(),
            slug: acme.slug.as_str(),
        },
        uuid::Uuid::now_v7(),
        &pki.issue_options(),
    )
    .unwrap();
    let (cert_path, key_path) = (dir.join("collector.pem"), dir.join("collector-key.pem"));
    std::fs::write(&cert_path, cert.full_chain_pem()).unwrap();
    std::fs::write(&key_path, cert.key_pem.as_bytes()).unwrap();
    let addrs: Vec<async_nats::ServerAddr> = urls.iter().map(|u| u.parse().unwrap()).collect();
    let collector = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(root.join("certs/ca-chain.pem"))
        .add_client_certificate(cert_path, key_path)
        .connection_timeout(Duration::from_secs(5))
        .retry_on_initial_connect()
        .connect(addrs)
        .await
        .expect("collector connects to the cluster");
    let js = async_nats::jetstream::new(collector.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    let replicas = loop {
        if let Ok(mut stream) = js.get_stream("EDGE_BUFFER").await
            && let Ok(info) = stream.info().await
        {
            break info.config.num_replicas;
        }
        assert!(Instant::now() < deadline, "no buffer\n{}", logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        replicas, 3,
        "the site's buffer is replicated on three nodes"
    );

    let leaf_state = || async {
        store
            .scoped(TenantScope::for_system_task(acme.id))
            .leaf_for_site(site.id)
            .await
            .map(|leaf| leaf.status)
            .ok()
    };
    wait_for(
        || async { leaf_state().await == Some(LeafStatus::Connected) },
        "the site connected",
        &logs,
    )
    .await;

    // Load at 500 msg/s, then SIGKILL the node the collector is on.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let load = publisher(
        js.clone(),
        "edge.acme.plant.events.load",
        500,
        stop.clone(),
        acked.clone(),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let port = collector.server_info().port;
    let victim = clients.iter().position(|p| *p == port).unwrap_or(0);
    let before = acked.load(Ordering::SeqCst);
    nodes[victim].kill();
    let killed = Instant::now();
    // The site stays linked while the node is down, and the load continues.
    while killed.elapsed() < Duration::from_secs(8) {
        assert_eq!(
            leaf_state().await,
            Some(LeafStatus::Connected),
            "the site went down with one node\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The load goes on through the other nodes: how soon depends on the
    // machine (the collector's reconnect, the buffer's new stream leader),
    // so wait for it rather than time it.
    let in_window = acked.load(Ordering::SeqCst) - before;
    while acked.load(Ordering::SeqCst) - before <= 1000
        && killed.elapsed() < Duration::from_secs(40)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let during = acked.load(Ordering::SeqCst) - before;
    serviceradar_testkit::report(&format!(
        "leaf cluster: {in_window} messages acknowledged in the 8 s after a node was killed"
    ));
    assert!(
        during > 1000,
        "only {during} messages acknowledged in the 40 s after the kill\n{}",
        logs()
    );
    for n in (0..3).filter(|n| *n != victim) {
        assert!(hub_linked(monitor(n)), "node {n} lost its hub link");
    }

    // The node comes back: it rejoins the routes and links to the hub again.
    nodes[victim] = start_node(victim);
    wait_for(
        || async { (0..3).all(|n| route_peers(monitor(n)) == 2) },
        "the restarted node rejoining the routes",
        &logs,
    )
    .await;
    wait_for(
        || async { hub_linked(monitor(victim)) },
        "the restarted node's hub link",
        &logs,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let sent = load.await.unwrap();

    // Every acknowledged message is stored once.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = stored(&store, &acme).await;
        assert!(
            got <= sent as i64,
            "{got} stored of {sent} sent: duplicates"
        );
        if got == sent as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {got} of {sent} stored\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = stored(&store, &acme).await;
    serviceradar_testkit::report(&format!(
        "leaf cluster: node {victim} SIGKILLed under 500 msg/s: sent {sent}, stored {got}, \
         {during} acknowledged in the 8 s after the kill"
    ));
    assert_eq!(got, sent as i64, "sent = stored, no duplicates");

    drop(hub);
    let _ = tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), running).await;
}

/// Unpacks `bundle` under `dir/unpack` and installs node `node` with
/// `setup.sh --node N --no-start --prefix dir/node-N` (over a previous
/// install, as an operator updating that node does). Returns the node's
/// installed config and its server certificate.
fn install_node(
    dir: &std::path::Path,
    unpack: &str,
    bundle: &serviceradar_provisioning::BuiltSiteBundle,
    node: usize,
) -> (std::path::PathBuf, String) {
    let into = dir.join(unpack);
    std::fs::create_dir_all(&into).unwrap();
    let archive = into.join(&bundle.file_name);
    std::fs::write(&archive, &bundle.bytes).unwrap();
    let tar = std::process::Command::new("tar")
        .arg("xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&into)
        .status()
        .unwrap();
    assert!(tar.success());
    let root = into.join(bundle.file_name.trim_end_matches(".tar.gz"));
    let prefix = dir.join(format!("node-{node}"));
    let out = std::process::Command::new("bash")
        .arg("setup.sh")
        .args(["--node", &node.to_string(), "--no-start", "--prefix"])
        .arg(&prefix)
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "setup.sh --node {node}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = prefix.join("etc/serviceradar/nats/nats-leaf.conf");
    // The node's certificate (the file has the tenant CA after it).
    let chain =
        std::fs::read_to_string(root.join(format!("nodes/node-{node}/leaf-server.pem"))).unwrap();
    const END: &str = "-----END CERTIFICATE-----";
    let cert = format!("{}{END}\n", chain.split(END).next().unwrap());
    (config, cert)
}

/// Issue 17's rolling update: a renewal (or regeneration) re-issues every
/// node's certificate; nodes are then updated one at a time, so for a while
/// one node runs the new bundle beside two on the old one. The routes pin
/// the nodes' public keys, so the nodes keep their keys across renewals and
/// the old configs still admit the updated node (and it them): the cluster
/// does not split.
/// A 3-node site on loopback for the rolling-update tests: the platform
/// (built, not serving: the tests run the provisioning job's work
/// themselves), the site as the API creates it with `leaf_nodes: 3`, and
/// its nodes' ports.
struct RollingSite {
    ports: support::HubPorts,
    settings: Settings,
    store: Store,
    pki: Arc<serviceradar_identity::Pki>,
    acme: Tenant,
    site: serviceradar_domain::resources::EdgeSite,
    leaf: serviceradar_domain::resources::NatsLeafServer,
    clients: Vec<u16>,
    monitor_base: u16,
}

impl RollingSite {
    async fn new(dir: &std::path::Path) -> (Application, Self) {
        let ports = support::HubPorts::free();
        let monitor_base = consecutive_free_ports(3);
        let route_base = consecutive_free_ports(3);
        let clients: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let settings = {
            let mut s = settings(dir, ports.client, monitor_base);
            s.provisioning.hub_leafnode_url = format!("tls://127.0.0.1:{}", ports.leaf);
            s
        };
        support::init();
        let app = Application::build(settings.clone()).await.unwrap();
        let (store, pki) = (app.store().clone(), app.pki().clone());
        let acme = store.tenant_by_slug("acme").await.unwrap();
        let urls: Vec<String> = clients
            .iter()
            .map(|p| format!("tls://127.0.0.1:{p}"))
            .collect();
        let cluster = LeafCluster::parse(&urls, Some(i64::from(route_base))).unwrap();
        let scoped = store.scoped(TenantScope::for_system_task(acme.id));
        let (site, leaf) = {
            use serviceradar_domain::validate::{DisplayName, ListenAddr, NatsUrl, Slug};
            scoped
                .create_site_with_cluster(
                    &serviceradar_store::NewSite {
                        name: DisplayName::parse("Plant").unwrap(),
                        slug: Slug::parse("plant").unwrap(),
                        nats_leaf_url: NatsUrl::parse(&urls[0]).unwrap(),
                        upstream_url: settings.provisioning.hub_leafnode_url.clone(),
                        local_listen: ListenAddr::parse(&format!("127.0.0.1:{}", clients[0]))
                            .unwrap(),
                    },
                    Some(&cluster),
                    None,
                )
                .await
                .unwrap()
        };
        let rolling = Self {
            ports,
            settings,
            store,
            pki,
            acme,
            site,
            leaf,
            clients,
            monitor_base,
        };
        (app, rolling)
    }

    /// The provisioning job's work (renewal and regenerate-config run the
    /// same), then the site bundle as the API serves it.
    async fn provision_and_bundle(&self) -> serviceradar_provisioning::BuiltSiteBundle {
        let scoped = self
            .store
            .scoped(TenantScope::for_system_task(self.acme.id));
        let leaf = scoped.leaf_server(self.leaf.id).await.unwrap();
        serviceradar_provisioning::provision_leaf(
            &self.store,
            &self.pki,
            &self.settings.provisioning,
            &self.acme,
            &self.site,
            &leaf,
        )
        .await
        .unwrap();
        serviceradar_provisioning::build_site_bundle(
            &self.store,
            &self.pki,
            &self.settings.provisioning,
            TenantScope::for_system_task(self.acme.id),
            self.site.id,
        )
        .await
        .map_err(|e| e.to_string())
        .unwrap()
    }

    fn start_node(&self, configs: &[std::path::PathBuf], node: usize) -> NatsServer {
        NatsServer::start_file(
            configs[node].parent().unwrap(),
            &format!("node-{node}"),
            &configs[node],
            self.clients[node],
        )
        .unwrap()
    }

    fn monitor(&self, node: usize) -> u16 {
        self.monitor_base + node as u16
    }
}

/// The logs of the nodes installed at `configs`.
fn node_logs(configs: &[std::path::PathBuf]) -> String {
    let mut text = String::new();
    for i in 0..configs.len() {
        text.push_str(&format!("--- node {i}\n{}\n", node_log(configs, i)));
    }
    text
}

/// The log of node `i` installed at `configs[i]`.
fn node_log(configs: &[std::path::PathBuf], i: usize) -> String {
    std::fs::read_to_string(configs[i].parent().unwrap().join(format!("node-{i}.log")))
        .unwrap_or_default()
}

/// Issue 17's rolling update: a renewal (or regeneration) re-issues every
/// node's certificate; nodes are then updated one at a time, so for a while
/// one node runs the new bundle beside two on the old one. The routes pin
/// the nodes' public keys, so the nodes keep their keys across renewals and
/// the old configs still admit the updated node (and it them): the cluster
/// does not split.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_keeps_a_rolling_leaf_cluster_routed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_app, rolling) = RollingSite::new(dir).await;
    let provision_and_bundle = || rolling.provision_and_bundle();
    let first = provision_and_bundle().await;
    let installed: Vec<(std::path::PathBuf, String)> = (0..3)
        .map(|node| install_node(dir, "first", &first, node))
        .collect();
    let configs: Vec<std::path::PathBuf> = installed.iter().map(|(c, _)| c.clone()).collect();
    let old_pins = support::pins_of(&configs[0]);
    assert_eq!(old_pins.len(), 3, "the routes pin the three nodes");

    let start_node = |node: usize| rolling.start_node(&configs, node);
    let mut nodes: Vec<NatsServer> = (0..3).map(start_node).collect();
    let monitor = |node: usize| rolling.monitor(node);
    let logs = || node_logs(&configs);
    wait_for(
        || async { (0..3).all(|n| route_peers(monitor(n)) == 2) },
        "every node routing to the two others",
        &logs,
    )
    .await;

    // Renewal: new certificates for every node (new serials).
    let renewed = provision_and_bundle().await;
    let updated = 1;
    nodes[updated].kill();
    let (config, new_cert) = install_node(dir, "renewed", &renewed, updated);
    assert_eq!(config, configs[updated]);

    // Node 1 restarts on the renewed bundle; nodes 0 and 2 still run the
    // old one (old certificates, old configs). The routes re-form among all
    // three, which the real nats-servers only allow if each side's
    // `pinned_certs` admits the other's certificate: the old pins the new
    // certificate of a kept key, the new pins the old certificates.
    nodes[updated] = start_node(updated);
    wait_for(
        || async { (0..3).all(|n| route_peers(monitor(n)) == 2) },
        "the renewed node routing with the two on the old bundle",
        &logs,
    )
    .await;
    assert_ne!(
        serviceradar_pki::fingerprint_sha256(&new_cert).unwrap(),
        serviceradar_pki::fingerprint_sha256(&installed[updated].1).unwrap(),
        "node {updated} got a new certificate"
    );
    assert_eq!(
        serviceradar_pki::spki_sha256(&new_cert).unwrap(),
        serviceradar_pki::spki_sha256(&installed[updated].1).unwrap(),
        "for the key it had"
    );
    assert_eq!(
        support::pins_of(&config),
        old_pins,
        "so the pins did not change"
    );
    assert_eq!(
        renewed.config_checksum, first.config_checksum,
        "and the configs render the same"
    );
    for (n, pin) in old_pins.iter().enumerate() {
        assert!(
            installed
                .iter()
                .any(|(_, cert)| serviceradar_pki::spki_sha256(cert).unwrap() == *pin),
            "pin {n} is one of the nodes' keys"
        );
    }
    let routez: serde_json::Value =
        serde_json::from_str(&http_get(monitor(0), "/routez").unwrap()).unwrap();
    let names: std::collections::BTreeSet<&str> = routez["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["remote_name"].as_str())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with(".n1")) && names.iter().any(|n| n.ends_with(".n2")),
        "node 0 routes to nodes 1 and 2: {names:?}"
    );
    drop(nodes);
}

/// A site's node key that may have leaked is rotated through the API
/// (`POST .../regenerate-config` with `rotate_node_keys: true`): every
/// node's certificate is issued for a new key and every pin changes. The
/// nodes are updated one at a time; the first updated one is shut out by
/// the two still on the old bundle (and shuts them out), the second joins
/// it, and two nodes route together at every step; once all three run the
/// new bundle they route again, and no node's old key is admitted. The
/// option is refused on a one-server site, naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_node_keys_shut_out_the_old_keys_while_the_nodes_update_one_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (app, rolling) = RollingSite::new(dir).await;
    let first = rolling.provision_and_bundle().await;
    let installed: Vec<(std::path::PathBuf, String)> = (0..3)
        .map(|node| install_node(dir, "first", &first, node))
        .collect();
    let configs: Vec<std::path::PathBuf> = installed.iter().map(|(c, _)| c.clone()).collect();
    let old_pins = support::pins_of(&configs[0]);
    let mut nodes: Vec<NatsServer> = (0..3).map(|n| rolling.start_node(&configs, n)).collect();
    let peers = |node: usize| route_peers(rolling.monitor(node));
    let logs = || node_logs(&configs);
    wait_for(
        || async { (0..3).all(|n| peers(n) == 2) },
        "every node routing to the two others",
        &logs,
    )
    .await;

    // The API, as an operator calls it.
    let api = support::TestApp::from_application(app, tempfile::tempdir().unwrap());
    let owner = api
        .token_for(
            "acme",
            "admin@example.com",
            &serviceradar_domain::policy::Scope::ALL,
        )
        .await;
    let one_server = api.create_site(&owner, "Depot", "depot").await;
    let path = |id: &str| format!("/api/v1/edge-sites/{id}/regenerate-config");
    let refused = api
        .post(
            &owner,
            &path(one_server["id"].as_str().unwrap()),
            serde_json::json!({"rotate_node_keys": true}),
        )
        .await;
    assert_eq!(
        refused.status,
        reqwest::StatusCode::BAD_REQUEST,
        "{}",
        refused.text
    );
    assert!(
        refused.text.contains("rotate_node_keys"),
        "{}",
        refused.text
    );
    let rotated = api
        .post(
            &owner,
            &path(&rolling.site.id.to_string()),
            serde_json::json!({"rotate_node_keys": true}),
        )
        .await;
    assert_eq!(
        rotated.status,
        reqwest::StatusCode::ACCEPTED,
        "{}",
        rotated.text
    );
    // The job's work (no job workers in this platform), then the bundle.
    let new = rolling.provision_and_bundle().await;
    assert_ne!(
        new.config_checksum, first.config_checksum,
        "the configs changed"
    );

    // One node at a time: 1, then 0, then 2.
    for (step, node) in [1, 0, 2].into_iter().enumerate() {
        nodes[node].kill();
        let (config, _) = install_node(dir, "rotated", &new, node);
        assert_eq!(config, configs[node]);
        nodes[node] = rolling.start_node(&configs, node);
        match step {
            // Node 1 alone on the new bundle: nodes 0 and 2 keep their route
            // (and the buffer's quorum); node 1 routes to neither.
            0 => {
                let log_of = |n: usize| node_log(&configs, n);
                wait_for(
                    || async {
                        log_of(1).contains("not pinned")
                            && (log_of(0).contains("not pinned")
                                || log_of(2).contains("not pinned"))
                    },
                    "the new and the old keys refusing each other for their pins",
                    &logs,
                )
                .await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                assert_eq!(
                    peers(1),
                    0,
                    "node 1 on the new keys routes to no old node\n{}",
                    logs()
                );
                assert_eq!(peers(0), 1, "nodes 0 and 2 keep their route\n{}", logs());
                assert_eq!(peers(2), 1, "nodes 0 and 2 keep their route\n{}", logs());
            }
            // Node 0 joins node 1 on the new keys; node 2 is alone.
            1 => {
                wait_for(
                    || async { peers(0) == 1 && peers(1) == 1 },
                    "nodes 0 and 1 routing on the new keys",
                    &logs,
                )
                .await;
            }
            _ => {
                wait_for(
                    || async { (0..3).all(|n| peers(n) == 2) },
                    "the three routing again on the new bundle",
                    &logs,
                )
                .await;
            }
        }
    }
    let new_pins = support::pins_of(&configs[0]);
    for node in 0..3 {
        assert_ne!(new_pins[node], old_pins[node], "node {node}'s pin changed");
        let old_key = serviceradar_pki::spki_sha256(&installed[node].1).unwrap();
        assert!(
            !new_pins.contains(&old_key),
            "node {node}'s old key is not pinned"
        );
    }
    drop(nodes);
}
