//! The fault suite (issue 11): faults injected while a site publishes under
//! load, on loopback, bounded, stopping by itself. Each test asserts that
//! every message the site's leaf acknowledged is stored exactly once (sent
//! = stored, no duplicates), that the site's leaf goes `disconnected` while
//! its link is down and is `connected` again afterwards, and prints the
//! counts and the recovery time.
//!
//! * the WAN between leaf and hub is cut (a TCP proxy the test controls
//!   drops every connection and refuses new ones), then restored;
//! * the hub restarts (killed, then started on the same ports and store);
//! * the site's leaf restarts (the collector's publishes fail meanwhile and
//!   are retried; the buffer on disk survives);
//! * PostgreSQL restarts (a private cluster, fast shutdown: connections cut)
//!   while collectors publish at the hub and ingestion writes, and while
//!   sites are provisioned;
//! * one of two replicas dies in the middle of its jobs.
//!
//! The short variants run in CI (a 5-s cut / outage); `SR_FAULTS_LONG=1`
//! runs the long ones (60 s). Figures are recorded in `RELIABILITY.md`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serviceradar_domain::TenantScope;
use serviceradar_domain::resources::Tenant;
use serviceradar_domain::state::LeafStatus;
use serviceradar_domain::telemetry::TelemetryKind;
use serviceradar_identity::MasterKeySource;
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
    let database_url = format!("sqlite://{}", dir.join("core.db").display());
    let mut settings =
        support::hub_platform_settings(dir, &database_url, hub_client, "fault suite password");
    if let Some(ingest) = settings.ingest.as_mut() {
        ingest.batch_size = 500;
    }
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

/// Waits up to 60 s for `condition`.
async fn wait_for<F, Fut>(condition: F, what: &str)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    let site = installed.site.id;
    let leaf_state = || async {
        store
            .scoped(TenantScope::for_system_task(acme.id))
            .leaf_for_site(site)
            .await
            .map(|leaf| leaf.status)
            .ok()
    };
    let connected = Some(LeafStatus::Connected);
    wait_for(
        || async { leaf_state().await == connected },
        "the leaf connected",
    )
    .await;
    let fault_started = Instant::now();
    let name = match fault {
        Fault::Wan => {
            wan.cut();
            // The hub sees the leaf go: the site's leaf is disconnected.
            wait_for(
                || async { leaf_state().await == Some(LeafStatus::Disconnected) },
                "the leaf disconnected during the WAN cut",
            )
            .await;
            tokio::time::sleep(outage().saturating_sub(fault_started.elapsed())).await;
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
            wait_for(
                || async { leaf_state().await == Some(LeafStatus::Disconnected) },
                "the leaf disconnected while it was down",
            )
            .await;
            tokio::time::sleep(outage().saturating_sub(fault_started.elapsed())).await;
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
    serviceradar_testkit::report(&format!(
        "fault: {name} for {:.0} s under load: sent {sent}, stored {got}, duplicates {}, \
         caught up {:.1} s after the fault ended",
        (restored - fault_started).as_secs_f64(),
        got - sent as i64,
        caught_up.as_secs_f64()
    ));
    assert_eq!(got, sent as i64, "{name}: sent = stored, no duplicates");
    // And the site's leaf is connected again (after a hub restart, once the
    // hub's leaf list is reconciled: at most 30 s).
    wait_for(
        || async { leaf_state().await == connected },
        "the leaf connected again",
    )
    .await;
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
    serviceradar_testkit::report(&format!(
        "fault: PostgreSQL restart for {:.0} s under load: sent {sent}, stored {got}, duplicates {}, \
         caught up {:.1} s after the fault ended; pipeline {} (last error: {:?})",
        (restored - fault_started).as_secs_f64(),
        got - sent as i64,
        caught_up.as_secs_f64(),
        pipeline.state.as_str(),
        pipeline.last_error.map(|(_, e)| e).unwrap_or_default()
    ));
    assert_eq!(got, sent as i64, "sent = stored, no duplicates");
    assert_eq!(pipeline.state, serviceradar_ingest::PipelineState::Running);
    let _ = tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), running).await;
}

/// PostgreSQL restarts while 40 sites are being provisioned: every job ends
/// `done` (none left running or failed for good), every site's leaf is
/// `provisioned`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_during_provisioning_leaves_no_job_stuck() {
    use serviceradar_store::jobs::JobStatus;
    const SITES: usize = 40;
    let cluster = tokio::task::spawn_blocking(|| serviceradar_testkit::PgCluster::start(false))
        .await
        .unwrap()
        .expect("a private PostgreSQL cluster");
    let mut settings = Settings::new(cluster.create_database());
    settings.bootstrap.admin_password = Some("fault suite password".into());
    settings.bootstrap.tenant = "acme".into();
    settings.provision_leaves = true;
    settings.job_workers = 2;
    support::init();
    let app = Application::build(settings).await.unwrap();
    let store = app.store().clone();
    let base = format!("http://127.0.0.1:{}/api/v1", app.port());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let token = serviceradar_control::tokens::create_token_for(
        &store,
        "acme",
        "admin@example.com",
        "faults",
        &serviceradar_domain::policy::Scope::ALL,
        1,
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    for i in 0..SITES {
        let reply = http
            .post(format!("{base}/edge-sites"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"name": format!("Site {i}"), "nats_leaf_url": "nats://10.0.1.50:4222"}))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), reqwest::StatusCode::CREATED);
    }
    // The restart begins while the jobs run.
    let fault_started = Instant::now();
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.restart(outage()).expect("postgres restarts");
        cluster
    })
    .await
    .unwrap();
    let restored = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    let counts = loop {
        let count = |status| {
            let store = store.clone();
            async move { store.count_jobs(status).await.unwrap_or(-1) }
        };
        let counts = (
            count(JobStatus::Done).await,
            count(JobStatus::Queued).await,
            count(JobStatus::Running).await,
            count(JobStatus::Failed).await,
        );
        if counts.0 == SITES as i64 && counts.1 == 0 && counts.2 == 0 {
            break counts;
        }
        assert!(
            Instant::now() < deadline,
            "jobs stuck: {counts:?} (done, queued, running, failed)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let leaves: serde_json::Value = http
        .get(format!("{base}/leaf-servers?limit=200"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let provisioned = leaves["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["status"] == "provisioned")
        .count();
    serviceradar_testkit::report(&format!(
        "fault: PostgreSQL restart for {:.0} s during provisioning of {SITES} sites: jobs done {}, \
         queued {}, running {}, failed {}; leaves provisioned {provisioned}; all done {:.1} s after the fault ended",
        (restored - fault_started).as_secs_f64(),
        counts.0,
        counts.1,
        counts.2,
        counts.3,
        restored.elapsed().as_secs_f64()
    ));
    assert_eq!(counts.3, 0, "no job failed for good");
    assert_eq!(provisioned, SITES, "every site's leaf is provisioned");
    drop(cluster);
    let _ = tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), running).await;
}

/// A job that takes a while (so a replica can die in the middle of it) and
/// counts its runs.
struct Slow(Arc<AtomicU64>);

impl serviceradar_jobs::JobHandler for Slow {
    fn run<'a>(
        &'a self,
        _job: &'a serviceradar_store::jobs::Job,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = serviceradar_jobs::JobResult> + Send + 'a>,
    > {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }
}

/// Two replicas share PostgreSQL; one dies abruptly (its runtime is shut
/// down: every task gone at once, no outcome recorded, no lease renewed —
/// what a SIGKILL leaves in the database) while it runs jobs. The survivor reclaims the dead
/// replica's jobs once their lease (30 s) runs out: every job ends `done`,
/// none stuck or failed. (With the old 5-minute lease they sat `running`
/// for five minutes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_dying_mid_job_leaves_no_job_stuck() {
    use serviceradar_store::jobs::{JobStatus, NewJob};
    let database_url = serviceradar_testkit::postgres().create_database();
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("master.key");
    let runs = Arc::new(AtomicU64::new(0));
    let replica = |runs: Arc<AtomicU64>| {
        let mut settings = Settings::new(database_url.clone());
        settings.bootstrap.admin_password = Some("fault suite password".into());
        settings.bootstrap.tenant = "acme".into();
        settings.master_key = MasterKeySource::DevFile(key.clone());
        settings.provision_leaves = true;
        settings.job_workers = 2;
        let mut jobs = serviceradar_jobs::Jobs::default();
        jobs.register("slow", Arc::new(Slow(runs)));
        async move { Application::build_with_jobs(settings, jobs).await.unwrap() }
    };
    support::init();
    // Replica A on a runtime of its own, so that it can die as a process
    // does: every task of it gone at once, mid-job.
    let a_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let a = a_runtime.spawn(replica(runs.clone())).await.unwrap();
    let b = replica(runs.clone()).await;
    let store = b.store().clone();
    const SLOW: usize = 4;
    for _ in 0..SLOW {
        store
            .enqueue_job(&NewJob::new("slow", serde_json::json!({})), None)
            .await
            .unwrap();
    }
    a_runtime.spawn(a.run_until_stopped(std::future::pending()));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let b_task = tokio::spawn(b.run_until_stopped(async move {
        let _ = rx.await;
    }));
    // Both replicas hold jobs; replica A dies in the middle of its.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let running_at_kill = store.count_jobs(JobStatus::Running).await.unwrap();
    a_runtime.shutdown_background();
    let killed = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let done = store.count_jobs(JobStatus::Done).await.unwrap();
        let open = store.count_jobs(JobStatus::Running).await.unwrap()
            + store.count_jobs(JobStatus::Queued).await.unwrap();
        if done == SLOW as i64 && open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "jobs stuck after a replica died: done {done}, open {open}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let failed = store.count_jobs(JobStatus::Failed).await.unwrap();
    serviceradar_testkit::report(&format!(
        "fault: a replica died with {running_at_kill} of {SLOW} jobs running: all done {:.1} s later \
         (lease 30 s), failed {failed}, handler runs {} (a reclaimed job runs again: handlers are idempotent)",
        killed.elapsed().as_secs_f64(),
        runs.load(Ordering::SeqCst)
    ));
    assert!(
        running_at_kill > SLOW as i64 / 2,
        "both replicas were running jobs"
    );
    assert_eq!(failed, 0);
    let _ = tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), b_task).await;
}

/// How many agents the gateway restart test connects.
fn agents() -> usize {
    std::env::var("SR_FAULT_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// Says hello to the gateway as one agent, retrying (with jitter) until it
/// answers or `deadline`; returns the attempts it took.
async fn hello_until(
    client: &mut serviceradar_proto::v1::agent_gateway_client::AgentGatewayClient<
        tonic::transport::Channel,
    >,
    deadline: Instant,
) -> Result<u32, tonic::Status> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let hello = client
            .hello(serviceradar_proto::v1::HelloRequest {
                agent_version: "fault-suite".into(),
                ..Default::default()
            })
            .await;
        match hello {
            Ok(_) => return Ok(attempts),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => {
                let jitter = u64::from(attempts * 37 % 300);
                tokio::time::sleep(Duration::from_millis(200 + jitter)).await;
            }
        }
    }
}

/// The gateway restarts (the control plane stops and a new one starts on the
/// same port and database) with 1,000 agents connected, each with its own
/// mTLS identity: every agent is back (its hello answered) and every site
/// saw its agent after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_restart_with_a_thousand_agents_connected_brings_every_agent_back() {
    use serviceradar_domain::validate::{DisplayName, ListenAddr, NatsUrl, Slug};
    use serviceradar_pki::{SiteRef, TenantRef, issue_agent};
    use serviceradar_store::NewSite;
    use serviceradar_store::health::AgentCert;
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let n = agents();
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut settings = Settings::new(serviceradar_testkit::postgres().create_database());
    settings.master_key = MasterKeySource::DevFile(tmp.path().join("master.key"));
    settings.gateway_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    settings.job_workers = 0;
    settings.database_max_connections = 32;
    settings.shutdown_grace = Duration::from_secs(5);
    support::init();
    let start = |settings: Settings| async move {
        let app = Application::build(settings).await.unwrap();
        let store = app.store().clone();
        let pki = app.pki().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        (store, pki, tx, task)
    };
    let (store, pki, stop, task) = start(settings.clone()).await;

    // N sites, each with an agent certificate of its own.
    let seeded = Instant::now();
    let tenant = store.tenant_by_slug("default").await.unwrap();
    let ca = pki.tenant_ca(&store, &tenant).await.unwrap();
    let root = Certificate::from_pem(pki.root_ca(&store).await.unwrap().cert_pem());
    let scoped = store.scoped(serviceradar_domain::TenantScope::for_system_task(tenant.id));
    let mut clients = Vec::with_capacity(n);
    let mut sites = Vec::with_capacity(n);
    for i in 0..n {
        let slug = format!("site-{i}");
        let (site, _) = scoped
            .create_site(
                &NewSite {
                    name: DisplayName::parse(&slug).unwrap(),
                    slug: Slug::parse(&slug).unwrap(),
                    nats_leaf_url: NatsUrl::parse("nats://127.0.0.1:4222").unwrap(),
                    upstream_url: settings.provisioning.hub_leafnode_url.clone(),
                    local_listen: ListenAddr::parse("127.0.0.1:4222").unwrap(),
                },
                None,
            )
            .await
            .unwrap();
        let agent_id = uuid::Uuid::now_v7();
        let cert = issue_agent(
            &ca,
            TenantRef {
                id: tenant.id.as_uuid(),
                slug: tenant.slug.as_str(),
            },
            SiteRef {
                id: site.id.as_uuid(),
                slug: site.slug.as_str(),
            },
            agent_id,
            &pki.issue_options(),
        )
        .unwrap();
        scoped
            .store_agent_cert(
                site.id,
                &AgentCert {
                    agent_id,
                    cert_pem: cert.cert_pem.clone(),
                    key_sealed: Vec::from(&b"fault suite: key not stored"[..]),
                    cert_serial: cert.serial_hex.clone(),
                    cert_expires_at: i64::MAX,
                },
            )
            .await
            .unwrap();
        let tls = ClientTlsConfig::new()
            .ca_certificate(root.clone())
            .identity(Identity::from_pem(
                format!("{}{}", cert.cert_pem, ca.cert_pem()),
                &cert.key_pem,
            ))
            .domain_name("localhost");
        let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect_timeout(Duration::from_secs(30))
            .timeout(Duration::from_secs(30));
        clients.push(
            serviceradar_proto::v1::agent_gateway_client::AgentGatewayClient::new(
                endpoint.connect_lazy(),
            ),
        );
        sites.push(site.id);
    }
    let seeded = seeded.elapsed();

    // Every agent says hello, 64 at a time.
    let round = |clients: Vec<_>| async move {
        let sem = Arc::new(tokio::sync::Semaphore::new(64));
        let deadline = Instant::now() + Duration::from_secs(180);
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|mut client| {
                let sem = sem.clone();
                tokio::spawn(async move {
                    let _permit = sem.acquire().await.unwrap();
                    let attempts = hello_until(&mut client, deadline).await;
                    (client, attempts)
                })
            })
            .collect();
        let mut back = Vec::new();
        let (mut ok, mut retries) = (0usize, 0u32);
        for task in tasks {
            let (client, attempts) = task.await.unwrap();
            if let Ok(a) = attempts {
                ok += 1;
                retries += a - 1;
            }
            back.push(client);
        }
        (back, ok, retries)
    };
    let connected = Instant::now();
    let (clients, ok, _) = round(clients).await;
    assert_eq!(ok, n, "every agent connects");
    let connected = connected.elapsed();

    // The control plane restarts on the same port and database.
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("stops within its grace period")
        .unwrap()
        .unwrap();
    // The agents keep calling while the gateway is down for 2 s.
    let since = serviceradar_store::now_ms();
    let reconnecting = tokio::spawn(round(clients));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = Instant::now();
    let (store, _pki, stop, task) = start(settings.clone()).await;
    let (_clients, ok, retries) = reconnecting.await.unwrap();
    let back = restarted.elapsed();
    let scoped = store.scoped(serviceradar_domain::TenantScope::for_system_task(tenant.id));
    let mut seen_after = 0;
    for site in &sites {
        let agent = scoped.agent_for_site(*site).await.unwrap();
        if agent
            .and_then(|a| a.last_seen_at)
            .is_some_and(|at| at >= since)
        {
            seen_after += 1;
        }
    }
    serviceradar_testkit::report(&format!(
        "fault: gateway restart with {n} agents connected: {ok} of {n} back {:.1} s after the \
         restart ({retries} retries), {seen_after} sites saw their agent after it; seeding took \
         {:.1} s, the first connect {:.1} s",
        back.as_secs_f64(),
        seeded.as_secs_f64(),
        connected.as_secs_f64()
    ));
    assert_eq!(ok, n, "every agent reconnects");
    assert_eq!(seen_after, n, "every site saw its agent after the restart");
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
}

/// Issue 11's fault list, literally: `serviceradar-core` SIGKILLed mid-job
/// with two replicas running. Two real `serve` processes share one
/// PostgreSQL; sites are created through replica A's API while both
/// replicas provision them; replica B is killed with SIGKILL while it holds
/// jobs. Every site ends provisioned (B's jobs are reclaimed once their
/// 30-s lease expires), no job is stuck or failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_process_sigkilled_mid_provisioning_leaves_no_site_unprovisioned() {
    use futures::StreamExt;
    const SITES: usize = 300;
    let database_url = serviceradar_testkit::postgres().create_database();
    let database = database_url.rsplit('/').next().unwrap().to_owned();
    // The one number a `SELECT count(*)` prints (psql's table output).
    let psql = |sql: &str| -> String {
        let out = serviceradar_testkit::postgres()
            .psql(&database, sql)
            .unwrap();
        out.lines()
            .map(str::trim)
            .find(|l| l.parse::<i64>().is_ok())
            .unwrap_or_default()
            .to_owned()
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let key = dir.join("master.keys");
    std::fs::write(&key, format!("k1:{}\n", "ab".repeat(32))).unwrap();
    // No hub: provisioning does not need one (ingestion just retries).
    let no_hub = free_port();
    let replica = |name: &str| {
        let api = free_port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_serviceradar-core"))
            .args(["serve", "--listen", &format!("127.0.0.1:{api}")])
            .args(["--metrics-listen", "", "--gateway-listen", ""])
            .args(["--ingest-nats-url", &format!("nats://127.0.0.1:{no_hub}")])
            .args(["--job-workers", "4"])
            .env("SERVICERADAR_DATABASE_URL", &database_url)
            .env("SERVICERADAR_MASTER_KEY_FILE", &key)
            .env("SERVICERADAR_DATA_DIR", dir.join(name))
            .env("SERVICERADAR_ADMIN_PASSWORD", "fault suite password")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
            .spawn()
            .unwrap();
        serviceradar_testkit::wait_for_port(api, name, Duration::from_secs(60)).unwrap();
        (child, api)
    };
    // However the test ends, no replica outlives it.
    struct Replicas(Vec<std::process::Child>);
    impl Drop for Replicas {
        fn drop(&mut self) {
            for child in &mut self.0 {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
    let (a, a_api) = replica("a");
    let (b, _) = replica("b");
    let (a_pid, b_pid) = (a.id(), b.id());
    let mut replicas = Replicas(vec![a, b]);

    let store = Store::connect(&database_url, 2).await.unwrap();
    let token = serviceradar_control::tokens::create_token_for(
        &store,
        "default",
        "admin@example.com",
        "faults",
        &[
            serviceradar_domain::policy::Scope::Read,
            serviceradar_domain::policy::Scope::Write,
        ],
        1,
    )
    .await
    .unwrap();
    support::init();
    let http = reqwest::Client::new();
    let creating = futures::stream::iter(0..SITES)
        .map(move |i| {
            let (http, token) = (http.clone(), token.clone());
            async move {
                http.post(format!("http://127.0.0.1:{a_api}/api/v1/edge-sites"))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({
                        "name": format!("Site {i}"),
                        "nats_leaf_url": format!("nats://10.0.{}.{}:4222", i / 250, i % 250 + 1),
                    }))
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            }
        })
        .buffer_unordered(16)
        .filter(|ok| std::future::ready(*ok))
        .count();
    let creating = tokio::spawn(creating);

    // Kill B (SIGKILL) while sites are being created and it holds jobs.
    let held_by_b = format!(
        "SELECT count(*) FROM jobs WHERE status = 'running' AND locked_by LIKE '%-{b_pid}-%'"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let held = loop {
        let held: i64 = psql(&held_by_b).parse().unwrap_or(0);
        if held > 0 {
            break held;
        }
        assert!(
            Instant::now() < deadline,
            "replica B never held a job: {}",
            std::fs::read_to_string(dir.join("b.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let b = &mut replicas.0[1];
    b.kill().unwrap(); // SIGKILL
    b.wait().unwrap();
    let killed = Instant::now();
    assert_eq!(creating.await.unwrap(), SITES, "every site created");

    // A finishes everything, B's orphaned jobs after their lease expires.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pending: i64 = psql("SELECT count(*) FROM nats_leaf_servers WHERE status = 'pending'")
            .parse()
            .unwrap();
        let open: i64 = psql("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')")
            .parse()
            .unwrap();
        if pending == 0 && open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after SIGKILL: {pending} leaves pending, {open} jobs open\n{}",
            std::fs::read_to_string(dir.join("a.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let failed: i64 = psql("SELECT count(*) FROM jobs WHERE status = 'failed'")
        .parse()
        .unwrap();
    serviceradar_testkit::report(&format!(
        "fault: a serve process SIGKILLed holding {held} provisioning job(s), {SITES} sites: \
         all provisioned {:.1} s later by the other replica (lease 30 s), failed jobs {failed}",
        killed.elapsed().as_secs_f64()
    ));
    assert_eq!(failed, 0);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &a_pid.to_string()])
        .status();
    let _ = replicas.0[0].wait();
    store.close().await;
}
