//! A 3-node hub cluster (issue 17), end to end on loopback: the nodes'
//! configs written by the real `serviceradar-core admin hub-config
//! --cluster-node ...` binary (on the platform's database and key), three
//! real `nats-server`s routing to each other over mutual TLS, a site's leaf
//! from its bundle with every hub node in its remote, and the platform
//! (ingestion, the leaf authorization callout, leaf events) given every
//! node's client URL.
//!
//! Asserted: each node's config passes `nats-server -t`; the routes form; the
//! tenant's `INGEST` stream has 3 replicas; SIGKILLing the hub node the leaf
//! is linked to while a collector publishes at 500 msg/s makes the leaf
//! relink to another node into its tenant's account (the callout admitted it
//! again) and every acknowledged message is stored exactly once. A site
//! deleted while one node is down stays revoked on all three once that node
//! is back: its leaf links to no node, and the returned node's account
//! directory holds the revocation. A server presenting another certificate
//! of the platform root (a site leaf's, another hub's) on the route port is
//! refused by every node for its pin while the three keep their routes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serviceradar_domain::TenantScope;
use serviceradar_domain::resources::Tenant;
use serviceradar_domain::telemetry::TelemetryKind;
use serviceradar_hub::client::HubEndpoint;
use serviceradar_server::app::{Application, Settings};
use serviceradar_store::Store;
use serviceradar_testkit::{NatsServer, consecutive_free_ports, free_port, http_get, leafz};

mod support;

const NODES: usize = 3;

/// The loopback ports of a hub cluster: node `i` listens on `base + i`.
#[derive(Clone, Copy)]
struct ClusterPorts {
    client: u16,
    leaf: u16,
    monitor: u16,
    route: u16,
}

impl ClusterPorts {
    fn free() -> Self {
        Self {
            client: consecutive_free_ports(NODES as u16),
            leaf: consecutive_free_ports(NODES as u16),
            monitor: consecutive_free_ports(NODES as u16),
            route: consecutive_free_ports(NODES as u16),
        }
    }
    fn client(&self, i: usize) -> u16 {
        self.client + i as u16
    }
    fn leaf(&self, i: usize) -> u16 {
        self.leaf + i as u16
    }
    fn monitor(&self, i: usize) -> u16 {
        self.monitor + i as u16
    }
    fn client_urls(&self) -> String {
        (0..NODES)
            .map(|i| format!("nats://127.0.0.1:{}", self.client(i)))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A platform whose services get every hub node's client URL, and whose
/// leaves get every node's leafnode URL.
fn database_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("core.db").display())
}

fn settings(dir: &Path, ports: ClusterPorts) -> Settings {
    let mut settings = support::hub_platform_settings(
        dir,
        &database_url(dir),
        ports.client(0),
        "hub cluster password",
    );
    let hub = HubEndpoint::new(ports.client_urls());
    if let Some(ingest) = settings.ingest.as_mut() {
        ingest.hub = hub.clone();
        ingest.stream_replicas = 3;
        ingest.batch_size = 500;
    }
    if let Some(leaf_auth) = settings.leaf_auth.as_mut() {
        leaf_auth.hub = hub;
    }
    settings.provisioning.hub_leafnode_url = format!("tls://127.0.0.1:{}", ports.leaf(0));
    // Not the default 8222: other tests' leaves may run at the same time.
    settings.provisioning.leaf_monitoring_listen = Some(format!("127.0.0.1:{}", free_port()));
    settings.provisioning.extra_hub_leafnode_urls = (1..NODES)
        .map(|i| format!("tls://127.0.0.1:{}", ports.leaf(i)))
        .collect();
    settings
}

/// The three hub nodes, started from the configs the admin command's code
/// wrote (each first checked with `nats-server -t`).
struct Hub {
    configs: Vec<PathBuf>,
    nodes: Vec<Option<NatsServer>>,
    ports: ClusterPorts,
}

impl Hub {
    /// Runs `serviceradar-core admin hub-config --cluster-node 127.0.0.1`
    /// (three times) on the platform's database and dev master key in `dir`
    /// (see [`settings`]).
    async fn write(dir: &Path, ports: ClusterPorts) -> Self {
        Self::write_with(dir, ports, &[]).await.0
    }

    /// [`Hub::write`] with `extra` arguments; also returns what it printed.
    async fn write_with(dir: &Path, ports: ClusterPorts, extra: &[&str]) -> (Self, String) {
        let out = dir.join("hub");
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_serviceradar-core"));
        cmd.args(["admin", "hub-config", "--data-dir"])
            .arg(dir)
            .arg("--database-url")
            .arg(database_url(dir))
            .arg("--out")
            .arg(&out)
            .args([
                "--client-listen",
                &format!("127.0.0.1:{}", ports.client),
                "--leafnode-listen",
                &format!("127.0.0.1:{}", ports.leaf),
                "--monitoring-listen",
                &format!("127.0.0.1:{}", ports.monitor),
                "--cluster-port",
                &ports.route.to_string(),
                // The test waits for a returned node to catch up; 2 minutes
                // (the default) would only make it slower.
                "--resolver-interval",
                "5s",
            ])
            .env_remove("SERVICERADAR_DATABASE_URL")
            .env_remove("SERVICERADAR_MASTER_KEY")
            .env_remove("SERVICERADAR_MASTER_KEY_FILE");
        for _ in 0..NODES {
            cmd.args(["--cluster-node", "127.0.0.1"]);
        }
        cmd.args(extra);
        let output = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .expect("run serviceradar-core admin hub-config");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "admin hub-config --cluster-node: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let configs: Vec<PathBuf> = (0..NODES)
            .map(|i| out.join(format!("node-{i}")).join("nats-hub.conf"))
            .collect();
        for (i, config) in configs.iter().enumerate() {
            assert!(
                stdout.contains(&format!("node {i}: wrote {}", config.display())),
                "{stdout}"
            );
        }
        for config in &configs {
            serviceradar_testkit::check_nats_config(config).expect("nats-server -t");
        }
        let hub = Self {
            configs,
            nodes: (0..NODES).map(|_| None).collect(),
            ports,
        };
        (hub, stdout.into_owned())
    }

    /// [`Hub::write`], then the three nodes started and routing to each other.
    async fn running(dir: &Path, ports: ClusterPorts) -> Self {
        let mut hub = Self::write(dir, ports).await;
        for i in 0..NODES {
            hub.start(i);
        }
        hub.wait_all_routed("every hub node routing to the two others")
            .await;
        hub
    }

    /// Waits (60 s at most) for every node to route to every other.
    async fn wait_all_routed(&self, what: &str) {
        wait_for(
            || async { (0..NODES).all(|i| self.route_peers(i) == NODES - 1) },
            what,
            Duration::from_secs(60),
            &|| self.logs(),
        )
        .await;
    }

    fn start(&mut self, i: usize) {
        let dir = self.configs[i].parent().unwrap();
        self.nodes[i] = Some(
            NatsServer::start_file(
                dir,
                &format!("hub-{i}"),
                &self.configs[i],
                self.ports.client(i),
            )
            .expect("hub node starts"),
        );
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut node) = self.nodes[i].take() {
            node.kill();
        }
    }

    /// Node `i`'s log so far.
    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(
            self.configs[i]
                .parent()
                .unwrap()
                .join(format!("hub-{i}.log")),
        )
        .unwrap_or_default()
    }

    /// The route URLs of the three nodes.
    fn routes(&self) -> Vec<String> {
        (0..NODES)
            .map(|i| format!("nats://127.0.0.1:{}", self.ports.route + i as u16))
            .collect()
    }

    fn accounts_dir(&self, i: usize) -> PathBuf {
        self.configs[i].parent().unwrap().join("accounts")
    }

    fn logs(&self) -> String {
        let mut text = String::new();
        for (i, config) in self.configs.iter().enumerate() {
            let log =
                std::fs::read_to_string(config.parent().unwrap().join(format!("hub-{i}.log")))
                    .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            text.push_str(&format!("--- hub node {i}\n"));
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    /// Other nodes node `i` holds routes to (by server id).
    fn route_peers(&self, i: usize) -> usize {
        let Some(text) = http_get(self.ports.monitor(i), "/routez") else {
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

    /// The nodes (index, account) holding a leaf connection.
    fn leaf_links(&self) -> Vec<(usize, String)> {
        (0..NODES)
            .filter(|i| self.nodes[*i].is_some())
            .flat_map(|i| {
                leafz(self.ports.monitor(i))
                    .into_iter()
                    .map(move |(_, account)| (i, account))
            })
            .collect()
    }
}

async fn wait_for<F, Fut>(condition: F, what: &str, limit: Duration, context: &dyn Fn() -> String)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn stored(store: &Store, tenant: &Tenant) -> i64 {
    let scoped = store.scoped(TenantScope::for_system_task(tenant.id));
    let mut total = 0;
    for kind in TelemetryKind::ALL {
        total += scoped.count_telemetry(kind).await.unwrap();
    }
    total
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
            let payload = format!(r#"{{"message":"hub cluster {n}"}}"#);
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("hub-cluster-{n}").as_str());
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

/// The tenant account's public key (what `/leafz` shows a leaf admitted into).
async fn tenant_account(
    store: &Store,
    pki: &serviceradar_identity::Pki,
    tenant: &Tenant,
) -> String {
    pki.tenant_account(store, tenant)
        .await
        .expect("tenant account")
        .0
        .public_key()
}

/// The replicas of the `INGEST` stream a hub node reports (`/jsz`), if it
/// holds it.
fn ingest_replicas(monitor: u16) -> Option<u64> {
    let text = http_get(monitor, "/jsz?accounts=true&streams=true&config=true")?;
    let jsz: serde_json::Value = serde_json::from_str(&text).ok()?;
    jsz["account_details"]
        .as_array()?
        .iter()
        .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
        .find(|s| s["name"] == "INGEST")
        .and_then(|s| s["config"]["num_replicas"].as_u64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_relinks_to_another_hub_node_when_its_node_is_killed_under_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ports = ClusterPorts::free();
    let settings = settings(dir, ports);
    support::init();
    let app = Application::build(settings.clone()).await.unwrap();
    let (store, pki) = (app.store().clone(), app.pki().clone());
    let acme = store.tenant_by_slug("acme").await.unwrap();
    let account = tenant_account(&store, &pki, &acme).await;
    let leaf_port = free_port();
    let site = support::install_site(dir, &store, &pki, &settings, &acme, "plant", leaf_port).await;
    let leaf_conf = std::fs::read_to_string(&site.config).unwrap();
    for i in 0..NODES {
        assert!(
            leaf_conf.contains(&format!("tls://127.0.0.1:{}", ports.leaf(i))),
            "the leaf's remote lists hub node {i}:\n{leaf_conf}"
        );
    }

    let mut hub = Hub::running(dir, ports).await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let leaf = NatsServer::start_file(
        site.config.parent().unwrap(),
        "leaf",
        &site.config,
        leaf_port,
    )
    .unwrap();
    let all_logs = || format!("{}--- leaf\n{}", hub.logs(), leaf.log());
    wait_for(
        || async { hub.leaf_links().iter().any(|(_, a)| *a == account) },
        "the leaf admitted into its tenant's account on a hub node",
        Duration::from_secs(90),
        &all_logs,
    )
    .await;

    // The tenant's ingest stream is replicated on the three nodes.
    wait_for(
        || async { (0..NODES).all(|i| ingest_replicas(ports.monitor(i)) == Some(3)) },
        "the INGEST stream with 3 replicas on every node",
        Duration::from_secs(90),
        &all_logs,
    )
    .await;
    let linked_at = hub.leaf_links()[0].0;

    let collector = support::collector(dir, &store, &pki, &acme, &site.root, leaf_port)
        .await
        .expect("collector connects to the leaf");
    let js = async_nats::jetstream::new(collector.clone());

    // Load at 500 msg/s, then SIGKILL the hub node the leaf is linked to.
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
    hub.kill(linked_at);
    let killed = Instant::now();
    let all_logs = || format!("{}--- leaf\n{}", hub.logs(), leaf.log());
    wait_for(
        || async {
            hub.leaf_links()
                .iter()
                .any(|(node, a)| *node != linked_at && *a == account)
        },
        "the leaf relinked to another hub node",
        Duration::from_secs(90),
        &all_logs,
    )
    .await;
    let relinked = killed.elapsed();
    let before = acked.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::SeqCst);
    let sent = load.await.unwrap();
    assert!(sent > before, "the load went on after the relink");

    // Every acknowledged message is stored once.
    let deadline = Instant::now() + Duration::from_secs(180);
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
            all_logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let caught_up = killed.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = stored(&store, &acme).await;
    serviceradar_testkit::report(&format!(
        "hub cluster: node {linked_at} SIGKILLed under 500 msg/s: leaf relinked after {:.1} s, \
         sent {sent}, stored {got}, all stored {:.1} s after the kill",
        relinked.as_secs_f64(),
        caught_up.as_secs_f64()
    ));
    assert_eq!(got, sent as i64, "sent = stored, no duplicates");

    drop(leaf);
    let _ = tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_revoked_while_a_hub_node_is_down_stays_revoked_on_all_three() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ports = ClusterPorts::free();
    let settings = settings(dir, ports);
    support::init();
    let app = Application::build(settings.clone()).await.unwrap();
    let (store, pki) = (app.store().clone(), app.pki().clone());
    let acme = store.tenant_by_slug("acme").await.unwrap();
    let account = tenant_account(&store, &pki, &acme).await;
    let leaf_port = free_port();
    let site = support::install_site(dir, &store, &pki, &settings, &acme, "plant", leaf_port).await;

    let mut hub = Hub::running(dir, ports).await;
    let api_base = format!("http://127.0.0.1:{}", app.port());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let leaf_dir = site.config.parent().unwrap().to_path_buf();
    let mut leaf = NatsServer::start_file(&leaf_dir, "leaf", &site.config, leaf_port).unwrap();
    wait_for(
        || async { hub.leaf_links().iter().any(|(_, a)| *a == account) },
        "the leaf admitted into its tenant's account",
        Duration::from_secs(90),
        &|| format!("{}--- leaf\n{}", hub.logs(), leaf.log()),
    )
    .await;
    let session_keys = store
        .scoped(TenantScope::for_system_task(acme.id))
        .leaf_session_keys(site.site.id)
        .await
        .unwrap();
    assert!(
        !session_keys.is_empty(),
        "the callout recorded the leaf's session"
    );

    // A node other than the leaf's goes down; the site is deleted meanwhile.
    let linked_at = hub.leaf_links()[0].0;
    let down = (linked_at + 1) % NODES;
    hub.kill(down);
    let token = serviceradar_control::tokens::create_token_for(
        &store,
        "acme",
        "admin@example.com",
        "revoker",
        &[
            serviceradar_domain::policy::Scope::Read,
            serviceradar_domain::policy::Scope::Write,
            serviceradar_domain::policy::Scope::Admin,
        ],
        1,
    )
    .await
    .unwrap();
    let deleted = reqwest::Client::new()
        .delete(format!("{api_base}/api/v1/edge-sites/{}", site.site.id))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), reqwest::StatusCode::NO_CONTENT);
    let revoked_at = Instant::now();
    wait_for(
        || async { !hub.leaf_links().iter().any(|(_, a)| *a == account) },
        "the deleted site's leaf dropped by the live nodes",
        Duration::from_secs(60),
        &|| format!("{}--- leaf\n{}", hub.logs(), leaf.log()),
    )
    .await;
    leaf.kill();

    // The node returns: its account directory catches up with the revocation.
    hub.start(down);
    hub.wait_all_routed("the returned node routing to the two others")
        .await;
    let jwt_file = hub.accounts_dir(down).join(format!("{account}.jwt"));
    let revoked_on_disk = || {
        let jwt = std::fs::read_to_string(&jwt_file).unwrap_or_default();
        let claims = serviceradar_natsconf::jwt::decode_claims(jwt.trim()).unwrap_or_default();
        session_keys
            .iter()
            .all(|key| claims["nats"]["revocations"].get(key).is_some())
    };
    wait_for(
        || async { revoked_on_disk() },
        "the returned node's copy of the tenant account holding the revocation",
        Duration::from_secs(90),
        &|| hub.logs(),
    )
    .await;
    let synced = revoked_at.elapsed();

    // The revoked leaf links to no node: tried against each node alone.
    let conf = std::fs::read_to_string(&site.config).unwrap();
    for node in 0..NODES {
        let mut only = conf.clone();
        for other in (0..NODES).filter(|o| *o != node) {
            only = only.replace(
                &format!("tls://127.0.0.1:{}", ports.leaf(other)),
                &format!("tls://127.0.0.1:{}", ports.leaf(node)),
            );
        }
        let path = leaf_dir.join(format!("only-node-{node}.conf"));
        std::fs::write(&path, &only).unwrap();
        let attempt =
            NatsServer::start_file(&leaf_dir, &format!("leaf-to-{node}"), &path, leaf_port)
                .unwrap();
        let tried = Instant::now();
        while tried.elapsed() < Duration::from_secs(8) {
            assert!(
                !hub.leaf_links().iter().any(|(_, a)| *a == account),
                "the revoked site's leaf linked to hub node {node}\n{}--- leaf\n{}",
                hub.logs(),
                attempt.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(
            hub.leaf_links().is_empty(),
            "no leaf at all on the hub\n{}",
            hub.logs()
        );
        drop(attempt);
    }
    serviceradar_testkit::report(&format!(
        "hub cluster: a site deleted while node {down} was down; the returned node held the \
         revocation {:.1} s after the delete; its leaf was refused by all {NODES} nodes",
        synced.as_secs_f64()
    ));

    let _ = tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), running).await;
}

/// The hole this keeps closed: the hub nodes' route certificates chain to
/// the platform root, which also issues every site leaf's client
/// certificate and any other hub's server certificate. Verified against the
/// root alone, any of them would pass the route handshake and join the hub
/// cluster (every tenant's traffic and the account directory). Each
/// intruder is a real `nats-server` dialing the three nodes' route ports
/// with such a certificate: every node refuses it for its pin, and the
/// nodes keep their routes to each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_certificate_of_the_platform_root_cannot_join_the_hub_cluster_routes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ports = ClusterPorts::free();
    let settings = settings(dir, ports);
    support::init();
    let app = Application::build(settings.clone()).await.unwrap();
    let (store, pki) = (app.store().clone(), app.pki().clone());
    let acme = store.tenant_by_slug("acme").await.unwrap();
    // A site's leaf client certificate (tenant CA under the platform root).
    let site =
        support::install_site(dir, &store, &pki, &settings, &acme, "plant", free_port()).await;
    let leaf_cert = (
        site.root.join("certs/leaf-client.pem"),
        site.root.join("certs/leaf-client-key.pem"),
    );
    // Another hub's server certificate, from the same root.
    let single = dir.join("single-hub");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_serviceradar-core"))
        .args(["admin", "hub-config", "--data-dir"])
        .arg(dir)
        .arg("--database-url")
        .arg(database_url(dir))
        .arg("--out")
        .arg(&single)
        .env_remove("SERVICERADAR_DATABASE_URL")
        .env_remove("SERVICERADAR_MASTER_KEY")
        .env_remove("SERVICERADAR_MASTER_KEY_FILE")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let hub_cert = (
        single.join("hub-server.pem"),
        single.join("hub-server-key.pem"),
    );

    let hub = Hub::running(dir, ports).await;
    assert!(
        (0..NODES).all(|i| !hub.log(i).contains("not pinned")),
        "the nodes' own certificates are pinned\n{}",
        hub.logs()
    );
    for (n, (who, (cert, key))) in [("a site leaf's", leaf_cert), ("another hub's", hub_cert)]
        .into_iter()
        .enumerate()
    {
        refused_by_every_node(&hub, &dir.join(format!("intruder-{n}")), who, &cert, &key).await;
    }
    drop(app);
}

/// A real `nats-server` dialing the hub's route ports with `cert` and
/// `key` (chained to the platform root) is refused by every node for its
/// pin (the handshake reached the route listener and failed on the pin, not
/// on the chain), and the nodes keep their routes to each other.
async fn refused_by_every_node(hub: &Hub, dir: &Path, who: &str, cert: &Path, key: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let root_ca = hub.configs[0].parent().unwrap().join("root-ca.pem");
    let routes = hub
        .routes()
        .iter()
        .map(|r| format!("    \"{r}\"\n"))
        .collect::<String>();
    let (client, monitor, route) = (free_port(), free_port(), free_port());
    let config = format!(
        "server_name: \"intruder\"\nhost: \"127.0.0.1\"\nport: {client}\n\
         http: \"127.0.0.1:{monitor}\"\n\
         cluster {{\n  name: \"sr-hub\"\n  listen: \"127.0.0.1:{route}\"\n  no_advertise: true\n\
         \x20 tls {{\n    cert_file: \"{}\"\n    key_file: \"{}\"\n    ca_file: \"{}\"\n\
         \x20   verify: true\n    timeout: 2\n  }}\n  routes = [\n{routes}  ]\n}}\n",
        cert.display(),
        key.display(),
        root_ca.display()
    );
    let before: Vec<usize> = (0..NODES)
        .map(|i| hub.log(i).matches("certificate not pinned").count())
        .collect();
    let intruder =
        NatsServer::start(dir, "intruder", &config, monitor).expect("the intruder starts");
    wait_for(
        || async {
            (0..NODES).all(|i| hub.log(i).matches("certificate not pinned").count() > before[i])
        },
        &format!("{who} certificate refused by every node for its pin"),
        Duration::from_secs(60),
        &|| format!("{}--- intruder\n{}", hub.logs(), intruder.log()),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let intruder_routes = http_get(monitor, "/routez")
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|r| r["num_routes"].as_u64());
    assert_eq!(intruder_routes, Some(0), "{who}\n{}", intruder.log());
    for i in 0..NODES {
        assert_eq!(
            hub.route_peers(i),
            NODES - 1,
            "{who}: node {i} routes to its two peers only\n{}",
            hub.logs()
        );
    }
}

/// A hub node's key that may have leaked is rotated with `admin hub-config
/// --rotate-node-key N`: node N's pin changes in every node's config (the
/// others' stay), the nodes are updated one at a time and two of them keep
/// routing together at every step (the quorum), and once all three run the
/// new configs the three route again while the old key, presented by a
/// real `nats-server` on the route port, is refused by every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_hub_node_key_is_refused_once_every_node_runs_the_new_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ports = ClusterPorts::free();
    let settings = settings(dir, ports);
    support::init();
    let app = Application::build(settings.clone()).await.unwrap();
    let mut hub = Hub::running(dir, ports).await;
    // What the rotated node had: its certificate and key.
    const ROTATED: usize = 2;
    let old_dir = dir.join("old-node");
    std::fs::create_dir_all(&old_dir).unwrap();
    let node_dir = hub.configs[ROTATED].parent().unwrap().to_owned();
    for file in ["hub-server.pem", "hub-server-key.pem"] {
        std::fs::copy(node_dir.join(file), old_dir.join(file)).unwrap();
    }
    let old_pins = support::pins_of(&hub.configs[0]);

    let (rotated, stdout) =
        Hub::write_with(dir, ports, &["--rotate-node-key", &ROTATED.to_string()]).await;
    assert!(
        stdout.contains(&format!("node {ROTATED}: new key")),
        "{stdout}"
    );
    let new_pins = support::pins_of(&rotated.configs[0]);
    for i in 0..NODES {
        assert_eq!(
            support::pins_of(&rotated.configs[i]),
            new_pins,
            "node {i} pins the same keys"
        );
        if i == ROTATED {
            assert_ne!(new_pins[i], old_pins[i], "node {i}'s pin changed");
        } else {
            assert_eq!(new_pins[i], old_pins[i], "node {i}'s pin is kept");
        }
    }
    // Rendering again (as each Kubernetes pod does) keeps the new key.
    let (_, _) = Hub::write_with(dir, ports, &[]).await;
    assert_eq!(
        support::pins_of(&rotated.configs[1]),
        new_pins,
        "later renders pin the new key"
    );

    // One node at a time: 0 (new pins, same key), 2 (the new key), 1.
    for (step, (node, pair)) in [(0, (0, 1)), (ROTATED, (0, ROTATED)), (1, (0, 1))]
        .into_iter()
        .enumerate()
    {
        hub.kill(node);
        hub.start(node);
        wait_for(
            || async { hub.route_peers(pair.0) >= 1 && hub.route_peers(pair.1) >= 1 },
            &format!(
                "step {step}: nodes {} and {} routing after node {node} restarted",
                pair.0, pair.1
            ),
            Duration::from_secs(60),
            &|| hub.logs(),
        )
        .await;
    }
    hub.wait_all_routed("the three routing again on the new configs")
        .await;
    refused_by_every_node(
        &hub,
        &dir.join("intruder-old-key"),
        "the rotated node's old",
        &old_dir.join("hub-server.pem"),
        &old_dir.join("hub-server-key.pem"),
    )
    .await;
    drop(app);
}

/// Other servers the server monitored on `monitor` holds routes to.
fn route_peers_at(monitor: u16) -> usize {
    http_get(monitor, "/routez")
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .map(|routez| {
            routez["routes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["remote_id"].as_str().map(str::to_owned))
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        })
        .unwrap_or(0)
}

/// `serviceradar-core serve --embedded-hub-nodes 3`, the binary on free
/// ports: it runs a 3-node hub cluster itself (routes formed, the tenant's
/// `INGEST` stream on 3 replicas, so the platform was given every node),
/// a site created through the API gets a bundle whose leaf lists the three
/// nodes and links into its tenant's account; when the node it is linked to
/// is SIGKILLed, the leaf relinks to another node and `serve` restarts the
/// killed node, which routes to the two others again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_a_three_node_embedded_hub_that_a_site_links_to_and_survives_a_node() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ports = ClusterPorts::free();
    let api = free_port();
    let data = dir.join("data");
    let log_path = dir.join("serve.log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_serviceradar-core"))
        .args(["serve", "--listen", &format!("127.0.0.1:{api}")])
        .args(["--metrics-listen", "", "--gateway-listen", ""])
        .args(["--embedded-hub-nodes", "3"])
        .args([
            "--hub-client-listen",
            &format!("127.0.0.1:{}", ports.client),
        ])
        .args([
            "--hub-leafnode-listen",
            &format!("127.0.0.1:{}", ports.leaf),
        ])
        .args([
            "--hub-monitoring-listen",
            &format!("127.0.0.1:{}", ports.monitor),
        ])
        .args([
            "--hub-cluster-listen",
            &format!("127.0.0.1:{}", ports.route),
        ])
        .args([
            "--leaf-monitoring-listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .env("SERVICERADAR_DATA_DIR", &data)
        .env("SERVICERADAR_ADMIN_PASSWORD", "embedded cluster password")
        .env_remove("SERVICERADAR_DATABASE_URL")
        .env_remove("SERVICERADAR_INGEST_NATS_URL")
        .env_remove("SERVICERADAR_HUB_LEAFNODE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    struct Serve(std::process::Child);
    impl Drop for Serve {
        fn drop(&mut self) {
            // SIGTERM: serve stops its hub nodes, then exits.
            let _ = std::process::Command::new("kill")
                .arg(self.0.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _serve = Serve(child);
    let node_log = |i: usize| {
        std::fs::read_to_string(data.join(format!("hub/node-{i}/nats-server.log")))
            .unwrap_or_default()
    };
    let logs = || {
        let mut text = format!(
            "--- serve\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        for i in 0..NODES {
            let log = node_log(i);
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            text.push_str(&format!("--- hub node {i}\n"));
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    };
    let ready = || async {
        reqwest::get(format!("http://127.0.0.1:{api}/readyz"))
            .await
            .is_ok_and(|r| r.status().is_success())
    };
    wait_for(ready, "serve ready", Duration::from_secs(120), &logs).await;
    wait_for(
        || async { (0..NODES).all(|i| route_peers_at(ports.monitor(i)) == NODES - 1) },
        "every embedded hub node routing to the two others",
        Duration::from_secs(60),
        &logs,
    )
    .await;
    for i in 0..NODES {
        let conf =
            std::fs::read_to_string(data.join(format!("hub/node-{i}/nats-hub.conf"))).unwrap();
        assert!(conf.contains("pinned_certs = ["), "node {i}:\n{conf}");
    }
    wait_for(
        || async { (0..NODES).all(|i| ingest_replicas(ports.monitor(i)) == Some(3)) },
        "the tenant's INGEST stream with 3 replicas on every node",
        Duration::from_secs(90),
        &logs,
    )
    .await;

    // A site, through the API, and its bundle.
    let store = Store::connect(
        &format!("sqlite://{}", data.join("serviceradar.db").display()),
        2,
    )
    .await
    .unwrap();
    let token = serviceradar_control::tokens::create_token_for(
        &store,
        "default",
        "admin@example.com",
        "embedded cluster",
        &[
            serviceradar_domain::policy::Scope::Read,
            serviceradar_domain::policy::Scope::Write,
        ],
        1,
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{api}/api/v1");
    let leaf_port = free_port();
    let created: serde_json::Value = http
        .post(format!("{base}/edge-sites"))
        .bearer_auth(&token)
        .json(&serde_json::json!({
            "name": "Plant",
            "slug": "plant",
            "nats_leaf_url": format!("tls://127.0.0.1:{leaf_port}"),
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let site_id = created["id"].as_str().expect("a site id").to_owned();
    let provisioned = || async {
        let leaf: serde_json::Value = match http
            .get(format!("{base}/edge-sites/{site_id}/leaf-server"))
            .bearer_auth(&token)
            .send()
            .await
        {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => return false,
        };
        leaf["status"] == "provisioned"
    };
    wait_for(
        provisioned,
        "the site provisioned",
        Duration::from_secs(60),
        &logs,
    )
    .await;
    let bundle = http
        .get(format!("{base}/edge-sites/{site_id}/bundle"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let tarball = dir.join("site.tar.gz");
    std::fs::write(&tarball, &bundle).unwrap();
    let unpacked = dir.join("bundle");
    std::fs::create_dir_all(&unpacked).unwrap();
    let tar = std::process::Command::new("tar")
        .arg("xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(tar.success());
    let root = std::fs::read_dir(&unpacked)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let prefix = dir.join("edge");
    let setup = std::process::Command::new("bash")
        .arg("setup.sh")
        .arg("--prefix")
        .arg(&prefix)
        .arg("--no-start")
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(setup.status.success(), "setup.sh: {setup:?}");
    let config = prefix.join("etc/serviceradar/nats/nats-leaf.conf");
    let leaf_conf = std::fs::read_to_string(&config).unwrap();
    for i in 0..NODES {
        assert!(
            leaf_conf.contains(&format!("tls://127.0.0.1:{}", ports.leaf(i))),
            "the leaf's remote lists embedded hub node {i}:\n{leaf_conf}"
        );
    }
    let leaf =
        NatsServer::start_file(config.parent().unwrap(), "leaf", &config, leaf_port).unwrap();
    let linked = || {
        (0..NODES)
            .filter(|i| !leafz(ports.monitor(*i)).is_empty())
            .collect::<Vec<_>>()
    };
    let all_logs = || format!("{}--- leaf\n{}", logs(), leaf.log());
    wait_for(
        || async { !linked().is_empty() },
        "the site's leaf linked to an embedded hub node",
        Duration::from_secs(90),
        &all_logs,
    )
    .await;

    // SIGKILL the node the leaf is linked to: the leaf relinks, serve
    // restarts the node, and it routes to the two others again.
    let node = linked()[0];
    let pid =
        std::fs::read_to_string(data.join(format!("hub/node-{node}/nats-server.pid"))).unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success());
    let at = Instant::now();
    wait_for(
        || async { linked().iter().any(|i| *i != node) },
        "the leaf relinked to another embedded hub node",
        Duration::from_secs(90),
        &all_logs,
    )
    .await;
    let relinked = at.elapsed();
    wait_for(
        || async {
            std::fs::read_to_string(data.join(format!("hub/node-{node}/nats-server.pid")))
                .is_ok_and(|p| p.trim() != pid.trim())
                && (0..NODES).all(|i| route_peers_at(ports.monitor(i)) == NODES - 1)
        },
        "serve restarted the killed node and it routes to the two others",
        Duration::from_secs(90),
        &all_logs,
    )
    .await;
    serviceradar_testkit::report(&format!(
        "embedded hub cluster: node {node} SIGKILLed; leaf relinked after {:.1} s, node back \
         in the cluster after {:.1} s",
        relinked.as_secs_f64(),
        at.elapsed().as_secs_f64()
    ));
    drop(leaf);
}

/// `--rotate-node-key` with a node the cluster does not have, or without a
/// cluster, is refused with what is wrong, before any key is made or
/// replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_node_key_refuses_a_node_the_cluster_does_not_have() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let settings = settings(dir, ClusterPorts::free());
    support::init();
    let app = Application::build(settings).await.unwrap();
    let run = |extra: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_serviceradar-core"))
            .args(["admin", "hub-config", "--data-dir"])
            .arg(dir)
            .arg("--database-url")
            .arg(database_url(dir))
            .arg("--out")
            .arg(dir.join("hub"))
            .args(extra)
            .env_remove("SERVICERADAR_DATABASE_URL")
            .env_remove("SERVICERADAR_MASTER_KEY")
            .env_remove("SERVICERADAR_MASTER_KEY_FILE")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{extra:?} was accepted");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let nodes = ["--cluster-node", "127.0.0.1,127.0.0.1,127.0.0.1"];
    let err = run(&[&nodes[..], &["--rotate-node-key", "3"]].concat());
    assert!(err.contains("node 3 asked for, the cluster has 3"), "{err}");
    let err = run(&["--rotate-node-key", "0"]);
    assert!(
        err.contains("--rotate-node-key is for a hub cluster"),
        "{err}"
    );
    for node in 0..NODES {
        let name = format!("hub_cluster_node_key:sr-hub:{node}");
        assert!(
            app.store().platform_secret(&name).await.unwrap().is_none(),
            "no key was made for node {node}"
        );
    }
}
