//! The fault suite (issue 11): faults injected while a site publishes under
//! load, on loopback, bounded, stopping by itself. Each test asserts that
//! every message the site's leaf acknowledged is stored exactly once (sent
//! = stored, no duplicates) and prints the counts and the recovery time.
//!
//! * the WAN between leaf and hub is cut (a TCP proxy the test controls
//!   drops every connection and refuses new ones), then restored;
//! * the hub restarts (killed, then started on the same ports and store);
//! * the site's leaf restarts (the collector's publishes fail meanwhile and
//!   are retried; the buffer on disk survives);
//! * PostgreSQL restarts (a private cluster, fast shutdown: connections cut)
//!   while collectors publish at the hub and ingestion writes.
//!
//! The short variants run in CI (a 5-s cut / outage); `SR_FAULTS_LONG=1`
//! runs the long ones (60 s). Figures are recorded in `RELIABILITY.md`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serviceradar_domain::TenantScope;
use serviceradar_domain::resources::Tenant;
use serviceradar_domain::telemetry::TelemetryKind;
use serviceradar_hub::leaf_auth::LeafAuthSettings;
use serviceradar_identity::MasterKeySource;
use serviceradar_ingest::IngestSettings;
use serviceradar_server::app::{Application, Settings};
use serviceradar_store::Store;
use serviceradar_testkit::{NatsServer, free_port};
use tokio::net::{TcpListener, TcpStream};

mod support;

/// How long a fault lasts.
fn outage() -> Duration {
    if std::env::var_os("SR_FAULTS_LONG").is_some() {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(5)
    }
}

/// A TCP proxy to `upstream` whose link the test can cut: while cut, every
/// open connection is dropped and new ones are refused.
struct Wan {
    port: u16,
    up: Arc<AtomicBool>,
    generation: Arc<AtomicU64>,
}

impl Wan {
    async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(AtomicU64::new(0));
        let (up2, gen2) = (up.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let born = gen2.load(Ordering::SeqCst);
                let gen3 = gen2.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                    tokio::pin!(copy);
                    loop {
                        tokio::select! {
                            _ = &mut copy => return,
                            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                                if gen3.load(Ordering::SeqCst) != born {
                                    return; // cut: both sides dropped
                                }
                            }
                        }
                    }
                });
            }
        });
        Self {
            port,
            up,
            generation,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn settings(dir: &std::path::Path, hub_client: u16) -> Settings {
    let mut settings = Settings::new(format!("sqlite://{}", dir.join("core.db").display()));
    settings.bootstrap.admin_password = Some("fault suite password".into());
    settings.bootstrap.tenant = "acme".into();
    settings.master_key = MasterKeySource::DevFile(dir.join("master.key"));
    settings.job_workers = 0;
    let mut ingest = IngestSettings::new(format!("nats://127.0.0.1:{hub_client}"));
    ingest.batch_size = 500;
    ingest.batch_timeout = Duration::from_millis(200);
    ingest.tenant_refresh = Duration::from_millis(300);
    settings.ingest = Some(ingest);
    settings.leaf_auth = Some(LeafAuthSettings::new(format!(
        "nats://127.0.0.1:{hub_client}"
    )));
    settings.provisioning.leaf_monitoring_listen = Some(format!("127.0.0.1:{}", free_port()));
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

/// Waits until all `sent` messages are stored (never more: that would be
/// duplicates), then a little longer for strays; returns the final count and
/// how long after `restored` the last one arrived.
async fn wait_stored(
    store: &Store,
    tenant: &Tenant,
    sent: u64,
    restored: Instant,
    fault: &str,
    context: &str,
) -> (i64, Duration) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let caught_up = loop {
        // A count during a database outage may hang until it is back.
        if let Ok(got) = tokio::time::timeout(Duration::from_secs(5), stored(store, tenant)).await {
            assert!(
                got <= sent as i64,
                "{got} stored, more than the {sent} sent: duplicates"
            );
            if got == sent as i64 {
                break restored.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "{fault}: only {got} of {sent} stored\n{context}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    (stored(store, tenant).await, caught_up)
}

/// Publishes at the site with JetStream acknowledgements until `stop`,
/// retrying what is not acknowledged; returns how many were acknowledged.
fn publisher(
    js: async_nats::jetstream::Context,
    subject: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut acked = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let payload = format!(r#"{{"message":"load {acked}"}}"#);
            // A retry carries the same message id: the buffer stores it once
            // even if only the acknowledgement was lost.
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("load-{acked}").as_str());
            let result = async {
                js.publish_with_headers(subject, headers, payload.into())
                    .await?
                    .await
                    .map_err(async_nats::Error::from)
            }
            .await;
            match result {
                Ok(_) => acked += 1,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        acked
    })
}

/// What a fault does to the running platform.
enum Fault {
    /// Cut the leaf's WAN link.
    Wan,
    /// Kill the hub and start it again.
    HubRestart,
    /// Kill the site's leaf and start it again (same config and store).
    LeafRestart,
}

async fn under_load(fault: Fault) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ports = support::HubPorts::free();
    let wan = Wan::start(ports.leaf).await;
    let leaf_port = free_port();
    let mut settings = settings(dir, ports.client);
    settings.provisioning.hub_leafnode_url = format!("tls://127.0.0.1:{}", wan.port);
    support::init();
    let app = Application::build(settings.clone()).await.unwrap();
    let (store, pki) = (app.store().clone(), app.pki().clone());
    let acme = store.tenant_by_slug("acme").await.unwrap();
    let installed =
        support::install_site(dir, &store, &pki, &settings, &acme, "plant", leaf_port).await;
    let (hub, files) = support::start_hub(dir, &store, &pki, ports).await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let start_leaf = || {
        NatsServer::start_file(
            installed.config.parent().unwrap(),
            "leaf",
            &installed.config,
            leaf_port,
        )
        .unwrap()
    };
    let mut leaf = start_leaf();
    let collector = support::collector(dir, &store, &pki, &acme, &installed.root, leaf_port)
        .await
        .expect("collector connects to the leaf");
    let js = async_nats::jetstream::new(collector.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    while js.get_stream("EDGE_BUFFER").await.is_err() {
        assert!(Instant::now() < deadline, "no buffer\n{}", leaf.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let load = publisher(js.clone(), "edge.acme.plant.events.load", stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut hub = Some(hub);
    let fault_started = Instant::now();
    let name = match fault {
        Fault::Wan => {
            wan.cut();
            tokio::time::sleep(outage()).await;
            wan.restore();
            "WAN cut"
        }
        Fault::HubRestart => {
            if let Some(mut h) = hub.take() {
                h.kill();
            }
            tokio::time::sleep(outage()).await;
            hub = Some(
                NatsServer::start_file(&dir.join("hub"), "hub", &files.config_path, ports.client)
                    .unwrap(),
            );
            "hub restart"
        }
        Fault::LeafRestart => {
            leaf.kill();
            tokio::time::sleep(outage()).await;
            leaf = start_leaf();
            "leaf restart"
        }
    };
    let restored = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let sent = load.await.unwrap();
    // Everything the leaf acknowledged arrives, exactly once.
    let (got, caught_up) = wait_stored(&store, &acme, sent, restored, name, &leaf.log()).await;
    println!(
        "fault: {name} for {:.0} s under load: sent {sent}, stored {got}, duplicates {}, \
         caught up {:.1} s after the fault ended",
        (restored - fault_started).as_secs_f64(),
        got - sent as i64,
        caught_up.as_secs_f64()
    );
    assert_eq!(got, sent as i64, "{name}: sent = stored, no duplicates");
    drop(hub);
    let _ = tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wan_cut_under_load_loses_and_duplicates_nothing() {
    under_load(Fault::Wan).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_restart_under_load_loses_and_duplicates_nothing() {
    under_load(Fault::HubRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaf_restart_under_load_loses_and_duplicates_nothing() {
    under_load(Fault::LeafRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_during_ingestion_loses_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cluster = tokio::task::spawn_blocking(|| serviceradar_testkit::PgCluster::start(false))
        .await
        .unwrap()
        .expect("a private PostgreSQL cluster");
    let database_url = cluster.create_database();
    let ports = support::HubPorts::free();
    let mut settings = settings(dir, ports.client);
    settings.database_url = database_url;
    support::init();
    let app = Application::build(settings).await.unwrap();
    let (store, pki) = (app.store().clone(), app.pki().clone());
    let status = app.ingest_status().clone();
    let acme = store.tenant_by_slug("acme").await.unwrap();
    let (_hub, _) = support::start_hub(dir, &store, &pki, ports).await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let creds = pki
        .user_creds(
            &store,
            &acme,
            "collector-faults",
            serviceradar_identity::ServiceUserLifetime::default().expires_at(),
        )
        .await
        .unwrap();
    let collector = async_nats::ConnectOptions::with_credentials(creds.as_str())
        .unwrap()
        .connect(format!("nats://127.0.0.1:{}", ports.client))
        .await
        .unwrap();
    let js = async_nats::jetstream::new(collector);
    let deadline = Instant::now() + Duration::from_secs(60);
    while js.get_stream(serviceradar_ingest::STREAM).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the ingest stream never appeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let load = publisher(js, "events.acme.plant", stop.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fault_started = Instant::now();
    tokio::task::spawn_blocking(move || {
        cluster.restart(outage()).expect("postgres restarts");
        cluster
    })
    .await
    .unwrap();
    let restored = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let sent = load.await.unwrap();
    let (got, caught_up) =
        wait_stored(&store, &acme, sent, restored, "PostgreSQL restart", "").await;
    let pipeline = status.tenant(acme.id).expect("acme's pipeline");
    println!(
        "fault: PostgreSQL restart for {:.0} s under load: sent {sent}, stored {got}, duplicates {}, \
         caught up {:.1} s after the fault ended; pipeline {} (last error: {:?})",
        (restored - fault_started).as_secs_f64(),
        got - sent as i64,
        caught_up.as_secs_f64(),
        pipeline.state.as_str(),
        pipeline.last_error.map(|(_, e)| e).unwrap_or_default()
    );
    assert_eq!(got, sent as i64, "sent = stored, no duplicates");
    assert_eq!(pipeline.state, serviceradar_ingest::PipelineState::Running);
    let _ = tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), running).await;
}
