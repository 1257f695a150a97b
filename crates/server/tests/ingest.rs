//! The ingestion pipeline against a real hub `nats-server` (operator mode,
//! JetStream, the config `admin hub-config` writes) and both databases:
//! collectors publish events, metrics and logs into their tenant's account;
//! `serviceradar-core` pulls them in batches into the database, idempotently,
//! dead-letters poison with a reason, keeps tenants apart, survives a crash
//! between commit and acknowledgement and a restart without losing or
//! duplicating a row; the API lists the rows per tenant.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use serviceradar_domain::TenantScope;
use serviceradar_domain::resources::Tenant;
use serviceradar_domain::telemetry::{IncomingMessage, TelemetryKind, decode};
use serviceradar_identity::{MasterKeySource, Pki};
use serviceradar_ingest as ingest;
use serviceradar_server::app::{Application, Settings};
use serviceradar_store::Store;
use serviceradar_testkit::{NatsServer, free_port};

mod support;

const PASSWORD: &str = "ingest test password";
const WAIT: Duration = Duration::from_secs(60);

struct Running {
    base: String,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self) {
        let _ = self.shutdown.send(());
        let _ = tokio::time::timeout(Duration::from_secs(30), self.task).await;
    }
}

fn settings(dir: &Path, database_url: &str, hub_client: u16) -> Settings {
    let mut settings = support::hub_platform_settings(dir, database_url, hub_client, PASSWORD);
    if let Some(ingest) = settings.ingest.as_mut() {
        ingest.batch_size = 200;
        ingest.ack_wait = Duration::from_secs(2);
    }
    settings
}

async fn start(settings: Settings) -> (Store, Arc<Pki>, Running) {
    support::init();
    let app = Application::build(settings).await.expect("build app");
    let (store, pki) = (app.store().clone(), app.pki().clone());
    let base = format!("http://127.0.0.1:{}", app.port());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    (
        store,
        pki,
        Running {
            base,
            shutdown: tx,
            task,
        },
    )
}

/// A client of `tenant`'s account on the hub.
async fn tenant_client(
    dir: &Path,
    store: &Store,
    pki: &Pki,
    tenant: &Tenant,
    hub_client: u16,
) -> async_nats::Client {
    let creds = pki
        .user_creds(
            store,
            tenant,
            &format!("collector-{}", tenant.slug),
            serviceradar_identity::ServiceUserLifetime::default().expires_at(),
        )
        .await
        .unwrap();
    let path = dir.join(format!("{}-{}.creds", tenant.slug, uuid::Uuid::new_v4()));
    std::fs::write(&path, creds.as_str()).unwrap();
    async_nats::ConnectOptions::with_credentials_file(&path)
        .await
        .unwrap()
        .connect(format!("nats://127.0.0.1:{hub_client}"))
        .await
        .expect("tenant user connects to the hub")
}

/// Publishes `n` good messages (kinds in turn) through JetStream (acked by the
/// hub, so they are stored), numbered from `first`.
async fn publish_good(client: &async_nats::Client, tenant: &str, first: usize, n: usize) {
    let js = async_nats::jetstream::new(client.clone());
    // The pipeline creates the stream: wait for it.
    let deadline = Instant::now() + WAIT;
    while js.get_stream(ingest::STREAM).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the ingest stream never appeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut acks = Vec::with_capacity(n);
    for i in first..first + n {
        let (subject, payload) = match i % 3 {
            0 => (
                format!("events.{tenant}.nyc.trapd"),
                format!(
                    r#"{{"message":"event {i}","severity":"warning","ts":{}}}"#,
                    1_000 + i
                ),
            ),
            1 => (
                format!("metrics.{tenant}.nyc"),
                format!(r#"{{"name":"ifInOctets","value":{i},"ts":{}}}"#, 1_000 + i),
            ),
            _ => (
                format!("logs.{tenant}.syslog"),
                format!(
                    r#"{{"message":"log {i}","level":"info","ts":{}}}"#,
                    1_000 + i
                ),
            ),
        };
        acks.push(js.publish(subject, payload.into()).await.expect("publish"));
    }
    for ack in acks {
        ack.await.expect("the hub stored the message");
    }
}

async fn total_rows(store: &Store, tenant: &Tenant) -> i64 {
    let scoped = store.scoped(TenantScope::for_system_task(tenant.id));
    let mut total = 0;
    for kind in TelemetryKind::ALL {
        total += scoped.count_telemetry(kind).await.unwrap();
    }
    total
}

async fn wait_rows(store: &Store, tenant: &Tenant, expected: i64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = total_rows(store, tenant).await;
        assert!(
            got <= expected,
            "{got} rows, more than the {expected} published"
        );
        if got == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {got} of {expected} rows arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nothing more trickles in (no duplicates from redeliveries).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(total_rows(store, tenant).await, expected);
}

async fn api_get(base: &str, token: &str, path: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn ingest_end_to_end(postgres: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let database_url = if postgres {
        serviceradar_testkit::postgres().create_database()
    } else {
        format!("sqlite://{}", dir.join("core.db").display())
    };
    // The control plane (acme is bootstrapped), a second tenant, then the hub
    // with both accounts, then the pipelines.
    let (store, pki, running, hub, ports, acme, beta) =
        two_tenants(dir, &database_url, |_| {}).await;
    let hub_client = ports.client;

    // Dead letters are visible to the tenant, with the reason.
    let acme_nc = tenant_client(dir, &store, &pki, &acme, hub_client).await;
    let mut dead = acme_nc
        .subscribe(ingest::deadletter_subject("acme"))
        .await
        .unwrap();
    acme_nc.flush().await.unwrap();

    const GOOD: usize = 3000;
    publish_good(&acme_nc, "acme", 0, GOOD).await;
    let js = async_nats::jetstream::new(acme_nc.clone());
    for (subject, payload) in [
        ("events.acme.nyc", b"not json".to_vec()),
        ("logs.acme.syslog", vec![b' '; 70 * 1024]),
        ("metrics.acme.nyc", br#"{"name":"no value"}"#.to_vec()),
    ] {
        js.publish(subject, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let beta_nc = tenant_client(dir, &store, &pki, &beta, hub_client).await;
    publish_good(&beta_nc, "beta", 0, 30).await;
    // acme publishing beta's subjects lands in acme's account, which has no
    // stream for them: nothing reaches beta.
    acme_nc
        .publish("events.beta.nyc", r#"{"message":"spoof"}"#.into())
        .await
        .unwrap();
    acme_nc.flush().await.unwrap();

    wait_rows(&store, &acme, GOOD as i64).await;
    wait_rows(&store, &beta, 30).await;

    // A collector package's credentials publish telemetry (acknowledged by
    // JetStream) but cannot touch the streams, read data or publish elsewhere.
    let collector_creds = dir.join("collector.creds");
    std::fs::write(
        &collector_creds,
        pki.collector_creds(&store, &acme, "collector-test")
            .await
            .unwrap()
            .as_str(),
    )
    .unwrap();
    let collector_nc = async_nats::ConnectOptions::with_credentials_file(&collector_creds)
        .await
        .unwrap()
        .connect(format!("nats://127.0.0.1:{hub_client}"))
        .await
        .expect("collector connects to the hub");
    let collector_js = async_nats::jetstream::new(collector_nc.clone());
    collector_js
        .publish(
            "events.acme.collector",
            r#"{"message":"from a collector"}"#.into(),
        )
        .await
        .unwrap()
        .await
        .expect("JetStream acknowledges the collector's event");
    wait_rows(&store, &acme, GOOD as i64 + 1).await;
    assert!(
        tokio::time::timeout(
            Duration::from_secs(3),
            collector_js.delete_stream(ingest::STREAM)
        )
        .await
        .map(|r| r.is_err())
        .unwrap_or(true),
        "a collector deleted the ingest stream"
    );
    let mut snoop = collector_nc.subscribe("events.acme.>").await.unwrap();
    collector_nc.flush().await.unwrap_or(());
    acme_nc
        .publish("events.acme.nyc", r#"{"message":"private"}"#.into())
        .await
        .unwrap();
    acme_nc.flush().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), snoop.next())
            .await
            .map(|m| m.is_none())
            .unwrap_or(true),
        "a collector read the tenant's data"
    );
    let acme_js = async_nats::jetstream::new(acme_nc.clone());
    assert!(
        acme_js.get_stream(ingest::STREAM).await.is_ok(),
        "INGEST still exists"
    );
    wait_rows(&store, &acme, GOOD as i64 + 2).await;
    let base_rows = GOOD as i64 + 2;

    // A tenant created while the hub runs: its account is pushed to the hub
    // (no restart, no config change), its users connect, its data is ingested.
    serviceradar_provisioning::tenants::create_tenant(
        &store,
        &pki,
        serviceradar_provisioning::tenants::NewTenant {
            slug: "gamma",
            name: None,
            owner_email: "owner@gamma.example.com",
            owner_password: Some(PASSWORD),
        },
    )
    .await
    .unwrap();
    let gamma = store.tenant_by_slug("gamma").await.unwrap();
    let gamma_creds = dir.join("gamma.creds");
    std::fs::write(
        &gamma_creds,
        pki.user_creds(
            &store,
            &gamma,
            "collector-gamma",
            serviceradar_identity::ServiceUserLifetime::default().expires_at(),
        )
        .await
        .unwrap()
        .as_str(),
    )
    .unwrap();
    let deadline = Instant::now() + WAIT;
    let gamma_nc = loop {
        let attempt = async_nats::ConnectOptions::with_credentials_file(&gamma_creds)
            .await
            .unwrap()
            .connection_timeout(Duration::from_secs(2))
            .connect(format!("nats://127.0.0.1:{hub_client}"));
        if let Ok(Ok(nc)) = tokio::time::timeout(Duration::from_secs(3), attempt).await
            && nc.flush().await.is_ok()
        {
            break nc;
        }
        assert!(
            Instant::now() < deadline,
            "gamma's account never reached the hub"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    publish_good(&gamma_nc, "gamma", 0, 9).await;
    wait_rows(&store, &gamma, 9).await;
    assert_eq!(
        total_rows(&store, &acme).await,
        base_rows,
        "gamma's data stays gamma's"
    );

    // Revocation without a restart: once the re-signed account reaches the
    // hub, a revoked user's creds no longer connect; others are unaffected.
    let victim = pki
        .user_creds(
            &store,
            &acme,
            "victim",
            serviceradar_identity::ServiceUserLifetime::default().expires_at(),
        )
        .await
        .unwrap();
    let victim_path = dir.join("victim.creds");
    std::fs::write(&victim_path, victim.as_str()).unwrap();
    let connect_victim = || async {
        async_nats::ConnectOptions::with_credentials_file(&victim_path)
            .await
            .unwrap()
            .connection_timeout(Duration::from_secs(2))
            .connect(format!("nats://127.0.0.1:{hub_client}"))
            .await
    };
    connect_victim().await.expect("a fresh user connects");
    let key = serviceradar_identity::creds_user_key(victim.as_str()).unwrap();
    pki.revoke_users(&store, &acme, &[key]).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while connect_victim().await.is_ok() {
        assert!(Instant::now() < deadline, "the revoked user still connects");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    acme_nc
        .flush()
        .await
        .expect("other acme users are unaffected");

    let mut reasons = Vec::new();
    for _ in 0..3 {
        let msg = tokio::time::timeout(Duration::from_secs(10), dead.next())
            .await
            .expect("a dead letter arrives")
            .unwrap();
        let headers = msg.headers.expect("dead letters carry headers");
        reasons.push(headers.get("SR-Reason").unwrap().as_str().to_string());
        assert!(headers.get("SR-Stream-Seq").is_some());
    }
    reasons.sort();
    assert!(
        reasons.iter().any(|r| r.contains("not a JSON object")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("exceeds")), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("\"value\"")),
        "{reasons:?}"
    );

    // The API lists each tenant's own rows, in event-time order, with a range.
    let acme_token = serviceradar_control::tokens::create_token_for(
        &store,
        "acme",
        "admin@example.com",
        "t",
        &[serviceradar_domain::policy::Scope::Read],
        1,
    )
    .await
    .unwrap();
    let beta_token = serviceradar_control::tokens::create_token_for(
        &store,
        "beta",
        "owner@beta.example.com",
        "t",
        &[serviceradar_domain::policy::Scope::Read],
        1,
    )
    .await
    .unwrap();
    let (status, events) = api_get(
        &running.base,
        &acme_token,
        "/api/v1/events?from=1000&to=1030&limit=200",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{events}");
    let items = events["items"].as_array().unwrap();
    assert_eq!(items.len(), 10, "events with ts 1000..1030 step 3");
    assert_eq!(items[0]["message"], "event 0");
    assert_eq!(items[0]["severity"], "warning");
    assert_eq!(items[0]["source"], "nyc.trapd");
    let (_, metrics) = api_get(&running.base, &acme_token, "/api/v1/metrics?limit=1").await;
    assert_eq!(metrics["items"][0]["name"], "ifInOctets");
    assert_eq!(metrics["items"][0]["value"], 1.0);
    assert!(metrics["next_cursor"].is_string());
    let (_, beta_events) = api_get(&running.base, &beta_token, "/api/v1/events?limit=200").await;
    let beta_items = beta_events["items"].as_array().unwrap();
    assert_eq!(beta_items.len(), 10);
    assert!(
        beta_items
            .iter()
            .all(|e| e["subject"].as_str().unwrap().starts_with("events.beta.")),
        "beta sees only its own events: {beta_events}"
    );
    // Revoking a collector package revokes its bundle's NATS user on the hub.
    let writer = serviceradar_control::tokens::create_token_for(
        &store,
        "acme",
        "admin@example.com",
        "w",
        &[
            serviceradar_domain::policy::Scope::Read,
            serviceradar_domain::policy::Scope::Write,
        ],
        1,
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let package: Value = http
        .post(format!("{}/api/v1/collector-packages", running.base))
        .bearer_auth(&writer)
        .json(&serde_json::json!({"collector_type": "trapd"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let package_id = package["id"].as_str().unwrap().to_string();
    let bundle = http
        .get(format!(
            "{}/api/v1/collector-packages/{package_id}/bundle",
            running.base
        ))
        .bearer_auth(&writer)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let package_dir = dir.join("package");
    std::fs::create_dir_all(&package_dir).unwrap();
    std::fs::write(package_dir.join("b.tar.gz"), &bundle).unwrap();
    assert!(
        std::process::Command::new("tar")
            .args(["xzf", "b.tar.gz", "--strip-components=1"])
            .current_dir(&package_dir)
            .status()
            .unwrap()
            .success()
    );
    let package_creds = package_dir.join("creds/collector.creds");
    let connect_package = || async {
        async_nats::ConnectOptions::with_credentials_file(&package_creds)
            .await
            .unwrap()
            .connection_timeout(Duration::from_secs(2))
            .connect(format!("nats://127.0.0.1:{hub_client}"))
            .await
    };
    connect_package()
        .await
        .expect("the package's creds connect to the hub");
    let revoked = http
        .post(format!(
            "{}/api/v1/collector-packages/{package_id}/revoke",
            running.base
        ))
        .bearer_auth(&writer)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    let deadline = Instant::now() + WAIT;
    while connect_package().await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "a revoked package's creds still connect"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (status, _) = api_get(&running.base, &acme_token, "/api/v1/logs?from=5&to=4").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api_get(&running.base, "srt_forged_token", "/api/v1/logs").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Stop the control plane; data keeps arriving at the hub meanwhile.
    running.stop().await;
    publish_good(&acme_nc, "acme", GOOD, 600).await;
    // The stopped app closed its pool; the test opens its own.
    let store = Store::connect(&database_url, 4).await.unwrap();

    // A pipeline that dies between its commit and its acknowledgement: the
    // batch is written, the restarted pipeline has it redelivered.
    let ingest_settings = settings(dir, &database_url, hub_client).ingest.unwrap();
    let crash_nc = tenant_client(dir, &store, &pki, &acme, hub_client).await;
    let consumer = ingest::open_consumer(&crash_nc, "acme", &ingest_settings)
        .await
        .unwrap();
    let batch = ingest::next_batch(&consumer, &ingest_settings)
        .await
        .unwrap();
    assert!(!batch.is_empty());
    let records: Vec<_> = batch
        .iter()
        .map(|m| {
            let info = m.info().unwrap();
            decode(
                "acme",
                IncomingMessage {
                    subject: m.subject.as_str(),
                    payload: &m.payload,
                    stream_seq: info.stream_sequence as i64,
                    stored_at_ms: 0,
                },
            )
            .unwrap()
        })
        .collect();
    store
        .scoped(TenantScope::for_system_task(acme.id))
        .insert_telemetry(&records)
        .await
        .unwrap();
    drop(batch);
    // ... and the next batch it received was never written (it died before
    // that commit). AckAll: the restarted pipeline's first acknowledgement
    // must not cover it unseen.
    let unwritten = ingest::next_batch(&consumer, &ingest_settings)
        .await
        .unwrap();
    assert!(!unwritten.is_empty());
    drop(unwritten);
    drop(crash_nc);

    // Restart: everything arrives exactly once.
    let (store2, _pki2, running) = start(settings(dir, &database_url, hub_client)).await;
    wait_rows(&store2, &acme, base_rows + 600).await;
    assert_eq!(total_rows(&store2, &beta).await, 30);
    running.stop().await;
    drop(hub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_from_the_hub_into_sqlite() {
    ingest_end_to_end(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_from_the_hub_into_postgres() {
    ingest_end_to_end(true).await;
}

/// Store and forward: 100,000 messages published at a site while the hub is
/// down are kept by the site's leaf and arrive in the database exactly once
/// when the hub is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn site_data_survives_a_hub_outage() {
    const N: usize = 100_000;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ports = support::HubPorts::free();
    let (hub_client, hub_leaf, hub_monitor) = (ports.client, ports.leaf, ports.monitor);
    let leaf_port = free_port();
    let mut settings = settings(
        dir,
        &format!("sqlite://{}", dir.join("core.db").display()),
        hub_client,
    );
    settings.provisioning.hub_leafnode_url = format!("tls://127.0.0.1:{hub_leaf}");
    settings.provisioning.leaf_monitoring_listen = Some(format!("127.0.0.1:{}", free_port()));
    if let Some(ingest) = settings.ingest.as_mut() {
        ingest.batch_size = 1000;
        ingest.site_sync_interval = Duration::from_millis(500);
    }
    support::init();
    let app = Application::build(settings.clone()).await.unwrap();
    let (store, pki) = (app.store().clone(), app.pki().clone());
    let api_base = format!("http://127.0.0.1:{}", app.port());
    let acme = store.tenant_by_slug("acme").await.unwrap();

    // A provisioned site, installed from its bundle.
    let installed =
        support::install_site(dir, &store, &pki, &settings, &acme, "plant", leaf_port).await;
    let (site, root) = (installed.site, installed.root);

    // Hub, leaf, and the control plane with its pipeline.
    let (hub, files) = support::start_hub(dir, &store, &pki, ports).await;
    let hub_dir = dir.join("hub");
    let leaf_server = NatsServer::start_file(
        installed.config.parent().expect("config in a directory"),
        "leaf",
        &installed.config,
        leaf_port,
    )
    .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let running = Running {
        base: String::new(),
        shutdown: tx,
        task: tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        })),
    };

    // A collector at the site (certificate from the tenant CA, as its bundle has).
    let collector = support::collector(dir, &store, &pki, &acme, &root, leaf_port)
        .await
        .expect("collector connects to the leaf");
    let local_js = async_nats::jetstream::new(collector.clone());

    // The pipeline creates the site's buffer on the leaf through the hub.
    let deadline = Instant::now() + WAIT;
    while local_js.get_stream("EDGE_BUFFER").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the site buffer was never created\nhub:\n{}\nleaf:\n{}",
            hub.log(),
            leaf_server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // One message while the link is up flows through.
    local_js
        .publish("edge.acme.plant.events.probe", r#"{"message":"up"}"#.into())
        .await
        .unwrap()
        .await
        .unwrap();
    wait_rows(&store, &acme, 1).await;

    // The WAN goes down: the hub is gone. The leaf still acknowledges.
    drop(hub);
    let mut acks = Vec::with_capacity(1000);
    for i in 0..N {
        let subject = match i % 3 {
            0 => "edge.acme.plant.events.trapd",
            1 => "edge.acme.plant.metrics.snmp",
            _ => "edge.acme.plant.logs.syslog",
        };
        let payload = match i % 3 {
            1 => format!(r#"{{"name":"ifInOctets","value":{i}}}"#),
            _ => format!(r#"{{"message":"outage message {i}","severity":"info"}}"#),
        };
        acks.push(local_js.publish(subject, payload.into()).await.unwrap());
        if acks.len() == 1000 {
            for ack in acks.drain(..) {
                ack.await.expect("the leaf keeps the message");
            }
        }
    }
    for ack in acks.drain(..) {
        ack.await.expect("the leaf keeps the message");
    }
    assert_eq!(
        total_rows(&store, &acme).await,
        1,
        "nothing arrived while the hub was down"
    );

    // The hub returns (same config and JetStream directory): everything arrives once.
    let restored = Instant::now();
    let hub = NatsServer::start_file(&hub_dir, "hub", &files.config_path, hub_client).unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let got = total_rows(&store, &acme).await;
        if got as usize == N + 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {got} of {} rows after the hub returned\nhub:\n{}",
            N + 1,
            hub.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "caught up {N} messages {:.1}s after the hub returned",
        restored.elapsed().as_secs_f64()
    );
    wait_rows(&store, &acme, (N + 1) as i64).await;

    // An independent client: nats-py, with only a collector bundle's files
    // (downloaded through the API for a package assigned to this site),
    // publishes through the leaf; its messages land in the database.
    let token = serviceradar_control::tokens::create_token_for(
        &store,
        "acme",
        "admin@example.com",
        "collectors",
        &[
            serviceradar_domain::policy::Scope::Read,
            serviceradar_domain::policy::Scope::Write,
            serviceradar_domain::policy::Scope::Admin,
        ],
        1,
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let package: Value = http
        .post(format!("{api_base}/api/v1/collector-packages"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"collector_type": "syslog", "edge_site_id": site.id.to_string()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let package_id = package["id"].as_str().expect("package created").to_string();
    let bundle = http
        .get(format!(
            "{api_base}/api/v1/collector-packages/{package_id}/bundle"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(bundle.status(), StatusCode::OK);
    let collector_dir = dir.join("collector-bundle");
    std::fs::create_dir_all(&collector_dir).unwrap();
    std::fs::write(
        collector_dir.join("bundle.tar.gz"),
        bundle.bytes().await.unwrap(),
    )
    .unwrap();
    let status = std::process::Command::new("tar")
        .args(["xzf", "bundle.tar.gz", "--strip-components=1"])
        .current_dir(&collector_dir)
        .status()
        .unwrap();
    assert!(status.success());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/publish_collector.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&collector_dir)
        .arg("50")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "nats-py collector failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    wait_rows(&store, &acme, (N + 1 + 50) as i64).await;
    let logs = store
        .scoped(TenantScope::for_system_task(acme.id))
        .count_telemetry(TelemetryKind::Log)
        .await
        .unwrap();
    assert!(logs >= 50, "the python collector's logs are logs");

    // Deleting the site revokes its leaf's NATS user: the hub drops the leaf
    // and refuses it from then on (no hub restart).
    let deleted = http
        .delete(format!("{api_base}/api/v1/edge-sites/{}", site.id))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let deadline = Instant::now() + WAIT;
    while !serviceradar_testkit::leafz(hub_monitor).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the deleted site's leaf is still connected\nhub:\n{}",
            hub.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        serviceradar_testkit::leafz(hub_monitor).len(),
        0,
        "the revoked leaf came back"
    );

    running.stop().await;
    drop(leaf_server);
    drop(hub);
}

/// A read token for `email` of `tenant`.
async fn read_token(store: &Store, tenant: &str, email: &str) -> String {
    serviceradar_control::tokens::create_token_for(
        store,
        tenant,
        email,
        "t",
        &[serviceradar_domain::policy::Scope::Read],
        1,
    )
    .await
    .unwrap()
}

/// The control plane with acme (bootstrapped) and beta, and the hub.
async fn two_tenants(
    dir: &Path,
    database_url: &str,
    configure: impl FnOnce(&mut Settings),
) -> (
    Store,
    Arc<Pki>,
    Running,
    NatsServer,
    support::HubPorts,
    Tenant,
    Tenant,
) {
    let ports = support::HubPorts::free();
    let mut settings = settings(dir, database_url, ports.client);
    configure(&mut settings);
    support::init();
    let app = Application::build(settings).await.expect("build app");
    let (store, pki) = (app.store().clone(), app.pki().clone());
    serviceradar_provisioning::tenants::create_tenant(
        &store,
        &pki,
        serviceradar_provisioning::tenants::NewTenant {
            slug: "beta",
            name: None,
            owner_email: "owner@beta.example.com",
            owner_password: Some(PASSWORD),
        },
    )
    .await
    .unwrap();
    let acme = store.tenant_by_slug("acme").await.unwrap();
    let beta = store.tenant_by_slug("beta").await.unwrap();
    let (hub, _) = support::start_hub(dir, &store, &pki, ports).await;
    let base = format!("http://127.0.0.1:{}", app.port());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let running = Running {
        base,
        shutdown: tx,
        task: tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        })),
    };
    (store, pki, running, hub, ports, acme, beta)
}

/// Issue 11, finding 9: one event with `\u0000` in its message stopped its
/// tenant's ingestion for good, and the broken connections it left in the
/// shared pool stalled another tenant. Now: acme publishes poison (NUL in
/// every text field) mixed into good events while beta publishes; every good
/// event of both arrives exactly once, each poison message is dead-lettered
/// with a reason naming the NUL (kept in acme's dead-letter stream and listed
/// by `GET /api/v1/dead-letters`, which beta cannot see), neither pipeline
/// fails even once after the first publish (an attempt while the hub is
/// still starting is allowed), and readiness stays green.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_poison_never_stops_or_slows_another() {
    const GOOD: usize = 3000;
    const POISON: usize = 30;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let database_url = serviceradar_testkit::postgres().create_database();
    let (store, pki, running, _hub, ports, acme, beta) =
        two_tenants(dir, &database_url, |_| {}).await;
    let acme_nc = tenant_client(dir, &store, &pki, &acme, ports.client).await;
    let beta_nc = tenant_client(dir, &store, &pki, &beta, ports.client).await;
    let mut dead = acme_nc
        .subscribe(ingest::deadletter_subject("acme"))
        .await
        .unwrap();
    acme_nc.flush().await.unwrap();
    // A pipeline may fail an attempt while the hub it dials is still
    // starting (the app is built before the hub): not what this test is
    // about. From the first publish on, neither may fail.
    let publishing_from_ms = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();

    // beta publishes while acme's poison is in flight.
    let beta_publisher = {
        let beta_nc = beta_nc.clone();
        tokio::spawn(async move { publish_good(&beta_nc, "beta", 0, GOOD).await })
    };
    publish_good(&acme_nc, "acme", 0, GOOD / 2).await;
    let acme_js = async_nats::jetstream::new(acme_nc.clone());
    let poison = [
        ("events.acme.nyc", r#"{"message":"a\u0000b"}"#),
        (
            "logs.acme.syslog",
            r#"{"message":"x","level":"in\u0000fo"}"#,
        ),
        ("metrics.acme.nyc", r#"{"name":"cpu\u0000","value":1}"#),
    ];
    for i in 0..POISON {
        let (subject, payload) = poison[i % poison.len()];
        acme_js
            .publish(subject, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    publish_good(&acme_nc, "acme", GOOD / 2, GOOD / 2).await;
    beta_publisher.await.unwrap();

    wait_rows(&store, &beta, GOOD as i64).await;
    wait_rows(&store, &acme, GOOD as i64).await;
    for _ in 0..POISON {
        let letter = tokio::time::timeout(WAIT, dead.next())
            .await
            .expect("a dead letter for each poison message")
            .unwrap();
        let reason = letter
            .headers
            .as_ref()
            .and_then(|h| h.get("SR-Reason"))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        assert!(reason.contains("NUL"), "{reason}");
    }

    // The dead letters are kept in acme's DEAD_LETTERS stream on the hub and
    // listed through the API with their reasons, newest first, a page at a
    // time; beta sees none of them.
    let kept = acme_js
        .get_stream(ingest::DEAD_LETTER_STREAM)
        .await
        .expect("the dead-letter stream exists")
        .cached_info()
        .state
        .messages;
    assert_eq!(kept, POISON as u64);
    let token = read_token(&store, "acme", "admin@example.com").await;
    let (status, first) = api_get(&running.base, &token, "/api/v1/dead-letters?limit=20").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let items = first["items"].as_array().unwrap();
    assert_eq!(items.len(), 20, "{first}");
    assert!(
        items
            .iter()
            .all(|d| d["reason"].as_str().unwrap().contains("NUL"))
    );
    assert!(
        items
            .iter()
            .all(|d| d["subject"].as_str().unwrap().contains(".acme."))
    );
    let seqs: Vec<u64> = items.iter().map(|d| d["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let (_, second) = api_get(
        &running.base,
        &token,
        &format!("/api/v1/dead-letters?limit=20&cursor={cursor}"),
    )
    .await;
    assert_eq!(
        second["items"].as_array().unwrap().len(),
        POISON - 20,
        "{second}"
    );
    assert!(
        second.get("next_cursor").is_none_or(|c| c.is_null()),
        "{second}"
    );
    let (status, bad) = api_get(&running.base, &token, "/api/v1/dead-letters?cursor=x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    let beta_token = read_token(&store, "beta", "owner@beta.example.com").await;
    let (status, none) = api_get(&running.base, &beta_token, "/api/v1/dead-letters").await;
    assert_eq!(status, StatusCode::OK, "{none}");
    assert_eq!(none["items"].as_array().unwrap().len(), 0, "{none}");

    // Both pipelines ran without a single failure, as the API reports it.
    for (tenant, email, written) in [
        ("acme", "admin@example.com", GOOD),
        ("beta", "owner@beta.example.com", GOOD),
    ] {
        let token = read_token(&store, tenant, email).await;
        let (status, body) = api_get(&running.base, &token, "/api/v1/ingest").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["state"], "running", "{tenant}: {body}");
        assert_eq!(body["consecutive_failures"], 0, "{tenant}: {body}");
        if let Some(error) = body.get("last_error") {
            assert!(
                error["at"].as_i64().unwrap() < publishing_from_ms,
                "{tenant} failed after publishing started: {body}"
            );
        }
        assert_eq!(body["written"], written as u64, "{tenant}: {body}");
        let dead_lettered = if tenant == "acme" { POISON } else { 0 };
        assert_eq!(
            body["dead_lettered"], dead_lettered as u64,
            "{tenant}: {body}"
        );
    }
    let ready = reqwest::get(format!("{}/readyz", running.base))
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    running.stop().await;
}

/// Issue 11, finding 9: a stalled pipeline was invisible (`/readyz` said
/// `ready` throughout). With the hub gone, each tenant's pipeline shows as
/// `failing` in the API (what failed, since when, failures in a row),
/// readiness turns 503 once it has failed for the configured time, and both
/// recover — the failure count back at 0 — when the hub returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_pipeline_shows_in_the_api_and_in_readiness() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let database_url = format!("sqlite://{}", dir.join("core.db").display());
    let (store, pki, running, mut hub, ports, acme, _beta) =
        two_tenants(dir, &database_url, |settings| {
            settings.ingest_stall_unready = Duration::from_secs(2);
        })
        .await;
    let token = read_token(&store, "acme", "admin@example.com").await;
    let acme_nc = tenant_client(dir, &store, &pki, &acme, ports.client).await;
    publish_good(&acme_nc, "acme", 0, 30).await;
    wait_rows(&store, &acme, 30).await;
    let ingest_state = || async {
        let (status, body) = api_get(&running.base, &token, "/api/v1/ingest").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    };
    let readyz = || async {
        reqwest::get(format!("{}/readyz", running.base))
            .await
            .unwrap()
            .status()
    };
    let body = ingest_state().await;
    assert_eq!(body["state"], "running", "{body}");
    assert_eq!(body["lag"], 0, "{body}");
    assert_eq!(readyz().await, StatusCode::OK);

    hub.kill();
    let deadline = Instant::now() + WAIT;
    let failing = loop {
        let body = ingest_state().await;
        if body["state"] == "failing" {
            break body;
        }
        assert!(Instant::now() < deadline, "never failing: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        failing["consecutive_failures"].as_u64().unwrap() >= 1,
        "{failing}"
    );
    assert!(failing["since"].as_i64().unwrap() > 0, "{failing}");
    let message = failing["last_error"]["message"].as_str().unwrap();
    assert!(!message.is_empty(), "{failing}");
    assert!(
        !message.contains("127.0.0.1"),
        "no internal addresses: {failing}"
    );
    let deadline = Instant::now() + WAIT;
    while readyz().await != StatusCode::SERVICE_UNAVAILABLE {
        assert!(Instant::now() < deadline, "readiness stayed green");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let text = reqwest::get(format!("{}/readyz", running.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("ingestion failing"), "{text}");
    assert!(!text.contains("acme"), "readiness names no tenant: {text}");

    // The hub comes back on the same ports: running again, count reset.
    let (_hub, _) = support::start_hub(dir, &store, &pki, ports).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let body = ingest_state().await;
        if body["state"] == "running" {
            assert_eq!(body["consecutive_failures"], 0, "{body}");
            assert!(body["last_error"]["message"].is_string(), "kept: {body}");
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Readiness covers every tenant's pipeline: beta's may reconnect a
    // moment after acme's (it failed under the full suite's load when
    // checked once, right after acme's recovery).
    let deadline = Instant::now() + WAIT;
    while readyz().await != StatusCode::OK {
        assert!(Instant::now() < deadline, "readiness never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    publish_good(&acme_nc, "acme", 30, 30).await;
    wait_rows(&store, &acme, 60).await;
    running.stop().await;
}

/// Issue 11, finding 10: the services' own NATS users (ingestion, account
/// pushes, leaf authorization) never expired and were written to disk on
/// every reconnect. With a 3-second lifetime, the hub itself would drop them
/// within the test: ingestion keeps running across several renewals without
/// a single failure, each service says it renewed, and no credentials file
/// is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_users_expire_and_are_renewed_before_they_do() {
    use serviceradar_identity::ServiceUserLifetime;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("core");
    std::fs::create_dir_all(&data).unwrap();
    let database_url = format!("sqlite://{}", data.join("core.db").display());
    let lifetime = ServiceUserLifetime(Duration::from_secs(3));
    let (store, pki, running, _hub, ports, acme, _beta) =
        two_tenants(dir, &database_url, |settings| {
            settings.master_key = MasterKeySource::DevFile(data.join("master.key"));
            if let Some(ingest) = settings.ingest.as_mut() {
                ingest.hub.service_users = lifetime;
            }
            if let Some(leaf_auth) = settings.leaf_auth.as_mut() {
                leaf_auth.hub.service_users = lifetime;
            }
        })
        .await;
    let token = read_token(&store, "acme", "admin@example.com").await;
    let acme_nc = tenant_client(dir, &store, &pki, &acme, ports.client).await;
    // Ten seconds of publishing: past three expiries of each user.
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(10) {
        publish_good(&acme_nc, "acme", sent, 20).await;
        sent += 20;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    wait_rows(&store, &acme, sent as i64).await;
    let (_, body) = api_get(&running.base, &token, "/api/v1/ingest").await;
    assert_eq!(body["state"], "running", "{body}");
    assert!(
        body.get("last_error").is_none(),
        "ingestion failed across the renewals: {body}"
    );
    let logs = support::captured_logs();
    assert!(logs.contains("renewing the tenant's ingest user"), "{logs}");
    assert!(
        logs.contains("leaf authorization service renewed its NATS user"),
        "{logs}"
    );
    // Nothing but the database and the master key in the data directory.
    let mut files: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with("core.db"))
        .collect();
    files.sort();
    assert_eq!(files, ["master.key"]);
    running.stop().await;
}

/// Issue 11, finding 13: messages published at a site before its buffer
/// existed were lost without an error (the buffer was set up 26-28 s after
/// the leaf joined, at the next periodic sync). Now the callout's admission
/// of the leaf triggers the setup: with the periodic sync left at its 30-s
/// default, the buffer exists within seconds of the leaf joining. A collector
/// that publishes with JetStream acknowledgements from the first second —
/// with the hub unreachable at first — gets an error, never a silent loss,
/// until the buffer exists; every message the leaf acknowledged is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sites_buffer_exists_seconds_after_its_leaf_joins_and_nothing_is_lost_before() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ports = support::HubPorts::free();
    let leaf_port = free_port();
    let mut settings = settings(
        dir,
        &format!("sqlite://{}", dir.join("core.db").display()),
        ports.client,
    );
    settings.provisioning.hub_leafnode_url = format!("tls://127.0.0.1:{}", ports.leaf);
    settings.provisioning.leaf_monitoring_listen = Some(format!("127.0.0.1:{}", free_port()));
    if let Some(ingest) = settings.ingest.as_mut() {
        // The default: only an admission makes it faster.
        ingest.site_sync_interval = ingest::TENANT_REFRESH;
        ingest.tenant_refresh = Duration::from_millis(300);
    }
    support::init();
    let app = Application::build(settings.clone()).await.unwrap();
    let (store, pki) = (app.store().clone(), app.pki().clone());
    let acme = store.tenant_by_slug("acme").await.unwrap();
    let installed =
        support::install_site(dir, &store, &pki, &settings, &acme, "plant", leaf_port).await;
    let root = installed.root;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let running = Running {
        base: String::new(),
        shutdown: tx,
        task: tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        })),
    };

    // The leaf starts while the hub is unreachable; a collector publishes
    // from its first second, retrying each message until the leaf
    // acknowledges it.
    let leaf_server = NatsServer::start_file(
        installed.config.parent().expect("config in a directory"),
        "leaf",
        &installed.config,
        leaf_port,
    )
    .unwrap();
    let collector = support::collector(dir, &store, &pki, &acme, &root, leaf_port)
        .await
        .expect("collector connects to the leaf");
    let local_js = async_nats::jetstream::new(collector.clone());
    const N: usize = 200;
    let publisher = tokio::spawn(async move {
        let (mut refused, mut acked) = (0usize, 0usize);
        while acked < N {
            let payload = format!(r#"{{"message":"early {acked}"}}"#);
            let result = async {
                local_js
                    .publish("edge.acme.plant.events.early", payload.into())
                    .await?
                    .await
                    .map_err(async_nats::Error::from)
            }
            .await;
            match result {
                Ok(_) => acked += 1,
                Err(_) => {
                    refused += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        (acked, refused)
    });

    // The hub comes up a few seconds later; the leaf joins.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (hub, _) = support::start_hub(dir, &store, &pki, ports).await;
    let hub_up = Instant::now();
    let deadline = Instant::now() + WAIT;
    while serviceradar_testkit::leafz(ports.monitor).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the leaf never joined\n{}",
            hub.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let joined = Instant::now();
    let probe_js = async_nats::jetstream::new(collector.clone());
    while probe_js.get_stream("EDGE_BUFFER").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the site buffer was never created\nleaf:\n{}",
            leaf_server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let buffer_after_join = joined.elapsed();
    println!(
        "leaf joined {:.2}s after the hub came up; buffer ready {:.2}s after the join",
        (joined - hub_up).as_secs_f64(),
        buffer_after_join.as_secs_f64()
    );
    assert!(
        buffer_after_join < Duration::from_secs(5),
        "the buffer took {buffer_after_join:?} after the leaf joined"
    );
    let (acked, refused) = tokio::time::timeout(WAIT, publisher)
        .await
        .expect("the collector got every message acknowledged")
        .unwrap();
    println!("sent {acked} acknowledged, {refused} refused while there was no buffer");
    assert!(
        refused > 0,
        "the first publishes had no buffer and were refused"
    );
    wait_rows(&store, &acme, acked as i64).await;
    running.stop().await;
}

/// A collector of `tenant` (publish only its own telemetry, replies on
/// `_INBOX.>`), and the errors the hub sends it (permission violations).
async fn collector_client(
    dir: &Path,
    store: &Store,
    pki: &Pki,
    tenant: &Tenant,
    hub_client: u16,
) -> (
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let creds = pki
        .collector_creds(store, tenant, &format!("collector-{}", tenant.slug))
        .await
        .unwrap();
    let path = dir.join(format!(
        "{}-collector-{}.creds",
        tenant.slug,
        uuid::Uuid::new_v4()
    ));
    std::fs::write(&path, creds.as_str()).unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_credentials_file(&path)
        .await
        .unwrap()
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .connect(format!("nats://127.0.0.1:{hub_client}"))
        .await
        .expect("the collector connects to the hub");
    (client, rx)
}

/// Waits for the hub to refuse `what` with a permission violation.
async fn permission_error(errors: &mut tokio::sync::mpsc::UnboundedReceiver<String>, what: &str) {
    let error = tokio::time::timeout(Duration::from_secs(5), errors.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: the hub sent no error"))
        .unwrap();
    assert!(
        error.to_lowercase().contains("permissions violation"),
        "{what}: {error}"
    );
}

/// The hub's client connections whose name starts with `prefix`.
async fn hub_connections(monitor: u16, prefix: &str) -> usize {
    let connz: Value = reqwest::get(format!("http://127.0.0.1:{monitor}/connz?limit=1024"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    connz["connections"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|c| c["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
                .count()
        })
        .unwrap_or(0)
}

/// [`wait_rows`], and on a timeout the hub's JetStream state and the
/// captured ingest log (what a stuck source or pipeline says).
async fn wait_rows_explained(store: &Store, tenant: &Tenant, expected: i64, monitor: u16) {
    let waited = tokio::spawn({
        let (store, tenant) = (store.clone(), tenant.clone());
        async move { wait_rows(&store, &tenant, expected).await }
    })
    .await;
    if let Err(e) = waited {
        let jsz = reqwest::get(format!(
            "http://127.0.0.1:{monitor}/jsz?accounts=true&streams=true&consumers=true&config=true"
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
        let mut accounts = String::new();
        let accountz: Value = reqwest::get(format!("http://127.0.0.1:{monitor}/accountz"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for account in accountz["accounts"].as_array().into_iter().flatten() {
            let one = reqwest::get(format!(
                "http://127.0.0.1:{monitor}/accountz?acc={}",
                account.as_str().unwrap_or_default()
            ))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
            accounts.push_str(&one);
            accounts.push('\n');
        }
        let logs: String = support::captured_logs()
            .lines()
            .filter(|l| l.contains("ingest") || l.contains("platform"))
            .collect::<Vec<_>>()
            .join("\n");
        panic!("{e}\n--- jsz ---\n{jsz}\n--- accountz ---\n{accounts}\n--- ingest log ---\n{logs}");
    }
}

fn platform_mode(settings: &mut Settings) {
    if let Some(ingest) = settings.ingest.as_mut() {
        ingest.mode = ingest::IngestMode::Platform;
    }
}

/// Issue 15, platform mode (`serve --ingest-mode platform`): one platform
/// account's stream sources every tenant's `INGEST` stream and one pipeline
/// over one hub connection writes every tenant's rows. acme and beta
/// publish at once, acme with poison among its events, and `serve` is
/// stopped and started again while acme publishes: every good row lands in
/// its own tenant exactly once (nothing lost, nothing twice), acme's poison
/// is dead-lettered into acme's stream with its reason and listed by the API
/// for acme only, beta never fails, and the hub holds one platform pipeline
/// connection, not one per tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_mode_writes_every_tenant_exactly_once_through_one_connection() {
    const GOOD: usize = 2000;
    const POISON: usize = 9;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let database_url = serviceradar_testkit::postgres().create_database();
    let (store, pki, running, _hub, ports, acme, beta) =
        two_tenants(dir, &database_url, platform_mode).await;
    let acme_nc = tenant_client(dir, &store, &pki, &acme, ports.client).await;
    let beta_nc = tenant_client(dir, &store, &pki, &beta, ports.client).await;

    let beta_publisher = {
        let beta_nc = beta_nc.clone();
        tokio::spawn(async move { publish_good(&beta_nc, "beta", 0, GOOD).await })
    };
    publish_good(&acme_nc, "acme", 0, GOOD / 2).await;
    let acme_js = async_nats::jetstream::new(acme_nc.clone());
    let poison = [
        ("events.acme.nyc", r#"{"message":"a\u0000b"}"#),
        (
            "logs.acme.syslog",
            r#"{"message":"x","level":"in\u0000fo"}"#,
        ),
        ("metrics.acme.nyc", r#"{"name":"cpu\u0000","value":1}"#),
    ];
    for i in 0..POISON {
        let (subject, payload) = poison[i % poison.len()];
        acme_js
            .publish(subject, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    beta_publisher.await.unwrap();
    wait_rows_explained(&store, &beta, GOOD as i64, ports.monitor).await;

    // One platform pipeline connection for both tenants.
    assert_eq!(
        hub_connections(ports.monitor, "serviceradar-ingest-platform").await,
        1
    );

    // Restart mid-stream: `serve` stops while acme's second half is being
    // published, and a new one takes over. The hub's resolver already holds
    // both tenants' accounts (with their exports): the new `serve` finds
    // them there and does not push them again.
    let mut accounts = Vec::new();
    for tenant in [&acme, &beta] {
        let key = pki
            .tenant_account(&store, tenant)
            .await
            .unwrap()
            .0
            .public_key();
        accounts.push(dir.join("hub").join("accounts").join(format!("{key}.jwt")));
    }
    let on_hub = |files: &[std::path::PathBuf]| -> Vec<String> {
        files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
            .collect()
    };
    let before_restart = on_hub(&accounts);
    // Nor does it declare again the tenants' streams and source consumers an
    // earlier serve set up with the same settings (the hub audits every
    // JetStream API request of an account on this subject). Regression: at
    // 1,000 tenants that was 1,000 connections and 2,000 requests competing
    // with the backlog's drain.
    let mut audit = acme_nc.subscribe("$JS.EVENT.ADVISORY.API").await.unwrap();
    acme_nc.flush().await.unwrap();
    let acme_publisher = {
        let acme_nc = acme_nc.clone();
        tokio::spawn(async move { publish_good(&acme_nc, "acme", GOOD / 2, GOOD / 2).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.stop().await;
    acme_publisher.await.unwrap();
    let mut again = settings(dir, &database_url, ports.client);
    platform_mode(&mut again);
    let (store, _, running) = start(again).await;
    wait_rows_explained(&store, &acme, GOOD as i64, ports.monitor).await;
    wait_rows_explained(&store, &beta, GOOD as i64, ports.monitor).await;
    assert_eq!(
        on_hub(&accounts),
        before_restart,
        "the restarted serve pushed an account the hub already held"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut redeclared = Vec::new();
    while let Ok(Some(advisory)) =
        tokio::time::timeout(Duration::from_millis(200), audit.next()).await
    {
        let advisory: Value = serde_json::from_slice(&advisory.payload).unwrap();
        let subject = advisory["subject"].as_str().unwrap_or_default().to_owned();
        // Setting a tenant up declares its source consumer (reading the
        // stream's info is also what the chores' buffer sync does).
        if subject.contains("CONSUMER.CREATE.INGEST") || subject.contains("STREAM.CREATE.INGEST") {
            redeclared.push(format!("{subject} from {}", advisory["client"]["name"]));
        }
    }
    assert!(
        redeclared.is_empty(),
        "the restarted serve set acme up again: {redeclared:?}"
    );

    // Every row is its own tenant's.
    for (tenant, slug) in [(&acme, "acme"), (&beta, "beta")] {
        let scoped = store.scoped(TenantScope::for_system_task(tenant.id));
        for kind in TelemetryKind::ALL {
            let page = scoped
                .list_telemetry(
                    kind,
                    serviceradar_store::TimeRange::default(),
                    &serviceradar_store::PageRequest {
                        limit: serviceradar_store::PageRequest::MAX_LIMIT,
                        after: None,
                    },
                )
                .await
                .unwrap();
            assert!(
                page.items
                    .iter()
                    .all(|r| r.subject.split('.').nth(1) == Some(slug)),
                "{slug} holds another tenant's rows"
            );
        }
    }

    // acme's poison, in acme's dead-letter stream and its API only.
    let kept = acme_js
        .get_stream(ingest::DEAD_LETTER_STREAM)
        .await
        .expect("the dead-letter stream exists")
        .cached_info()
        .state
        .messages;
    assert_eq!(kept, POISON as u64);
    let token = read_token(&store, "acme", "admin@example.com").await;
    let (status, listed) = api_get(&running.base, &token, "/api/v1/dead-letters?limit=50").await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), POISON, "{listed}");
    assert!(
        items
            .iter()
            .all(|d| d["reason"].as_str().unwrap().contains("NUL")
                && d["subject"].as_str().unwrap().contains(".acme.")),
        "{listed}"
    );
    let beta_token = read_token(&store, "beta", "owner@beta.example.com").await;
    let (status, none) = api_get(&running.base, &beta_token, "/api/v1/dead-letters").await;
    assert_eq!(status, StatusCode::OK, "{none}");
    assert_eq!(none["items"].as_array().unwrap().len(), 0, "{none}");
    let (status, body) = api_get(&running.base, &beta_token, "/api/v1/ingest").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "running", "{body}");
    assert_eq!(body["dead_lettered"], 0, "{body}");
    running.stop().await;
}

/// Issue 15, platform mode's security boundaries, enforced by nats-server:
/// acme's credentials cannot read beta's `INGEST` stream, the platform
/// stream or what the platform sources from beta, and cannot publish into
/// beta's subjects or the platform stream (the hub's permission error);
/// what acme does publish lands in acme's rows only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_mode_keeps_tenants_out_of_each_other_and_the_platform_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let database_url = serviceradar_testkit::postgres().create_database();
    let (store, pki, running, _hub, ports, acme, beta) =
        two_tenants(dir, &database_url, platform_mode).await;
    let acme_nc = tenant_client(dir, &store, &pki, &acme, ports.client).await;
    let beta_nc = tenant_client(dir, &store, &pki, &beta, ports.client).await;
    publish_good(&beta_nc, "beta", 0, 30).await;
    publish_good(&acme_nc, "acme", 0, 30).await;
    wait_rows_explained(&store, &beta, 30, ports.monitor).await;
    wait_rows_explained(&store, &acme, 30, ports.monitor).await;

    // A user of acme's account sees only acme's streams: its INGEST holds
    // acme's 30 messages, and neither the platform stream nor anything
    // imported from beta exists for it.
    let acme_js = async_nats::jetstream::new(acme_nc.clone());
    let mut own = acme_js.get_stream(ingest::STREAM).await.unwrap();
    let info = own.info().await.unwrap();
    assert_eq!(info.state.messages, 30);
    assert!(
        info.config.subjects.iter().all(|s| s.contains(".acme.")),
        "{:?}",
        info.config.subjects
    );
    assert!(
        acme_js
            .get_stream(serviceradar_natsconf::platform::PLATFORM_STREAM)
            .await
            .is_err(),
        "acme reached the platform stream"
    );
    let beta_api = format!(
        "{}.CONSUMER.RESET.INGEST.sr-platform-beta",
        serviceradar_natsconf::platform::api_prefix("beta").unwrap()
    );
    assert!(
        tokio::time::timeout(
            Duration::from_secs(2),
            acme_nc.request(beta_api, "{}".into())
        )
        .await
        .map_or(true, |r| r.is_err()),
        "acme reached beta's source consumer"
    );
    // Nothing of beta's (its deliveries to the platform, its subjects)
    // reaches acme, while beta publishes.
    let mut deliveries = acme_nc.subscribe("sr-platform.beta.>").await.unwrap();
    let mut platform = acme_nc.subscribe("t.>").await.unwrap();
    let mut beta_subjects = acme_nc.subscribe("events.beta.>").await.unwrap();
    acme_nc.flush().await.unwrap();
    publish_good(&beta_nc, "beta", 30, 30).await;
    for (sub, what) in [
        (&mut deliveries, "beta's deliveries"),
        (&mut platform, "the platform subjects"),
        (&mut beta_subjects, "beta's subjects"),
    ] {
        if let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(700), sub.next()).await {
            panic!("acme received {what}: {}", msg.subject);
        }
    }
    wait_rows_explained(&store, &beta, 60, ports.monitor).await;

    // acme's collector may not publish beta's telemetry, the platform's
    // subjects or JetStream API requests, nor subscribe to its own
    // deliveries to the platform: the hub refuses each.
    let (collector, mut errors) = collector_client(dir, &store, &pki, &acme, ports.client).await;
    for subject in [
        "events.beta.nyc".to_owned(),
        format!("t.{}.events.beta.nyc", beta.id),
        format!(
            "$JS.API.STREAM.INFO.{}",
            serviceradar_natsconf::platform::PLATFORM_STREAM
        ),
        "sr-platform.acme.deliver".to_owned(),
    ] {
        collector
            .publish(subject.clone(), r#"{"message":"x"}"#.into())
            .await
            .unwrap();
        collector.flush().await.unwrap();
        permission_error(&mut errors, &format!("publishing to {subject}")).await;
    }
    let _sub = collector.subscribe("sr-platform.acme.>").await.unwrap();
    collector.flush().await.unwrap();
    permission_error(&mut errors, "subscribing to acme's deliveries").await;
    // Nothing of that reached any tenant's rows.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(total_rows(&store, &acme).await, 30);
    assert_eq!(total_rows(&store, &beta).await, 60);
    running.stop().await;
}

/// Each tenant's `DEAD_LETTERS` stream reserves 256 MiB of the hub's
/// JetStream storage; created for every tenant when its pipeline started,
/// the hub refused new streams at about a hundred tenants. It is created
/// with the tenant's first dead letter: a tenant whose data is all good has
/// none, its ingestion runs, and its dead-letter list is empty, not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_without_dead_letters_reserves_no_hub_storage_for_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let database_url = format!("sqlite://{}", dir.join("core.db").display());
    let (store, pki, running, _hub, ports, _acme, beta) =
        two_tenants(dir, &database_url, |_| {}).await;
    let beta_nc = tenant_client(dir, &store, &pki, &beta, ports.client).await;
    publish_good(&beta_nc, "beta", 0, 50).await;
    wait_rows(&store, &beta, 50).await;

    let info = beta_nc
        .request("$JS.API.STREAM.INFO.DEAD_LETTERS", "".into())
        .await
        .unwrap();
    let info: Value = serde_json::from_slice(&info.payload).unwrap();
    assert_eq!(info["error"]["err_code"], 10059, "{info}");
    let token = read_token(&store, "beta", "owner@beta.example.com").await;
    let (status, body) = api_get(&running.base, &token, "/api/v1/dead-letters").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 0, "{body}");
}

/// The device registry on the hub holds exactly the database's devices: a
/// key the database does not have (left by an older process, or put by hand)
/// goes at the next sync even when no device changed, and so do the keys of
/// devices deleted with their site. Regression for the sync, which skips
/// listing the keys when nothing changed and the bucket's count agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_registry_drops_keys_the_database_does_not_have_even_when_nothing_changed() {
    use serviceradar_domain::device::{DeviceLimits, DeviceName};
    use serviceradar_domain::validate::{DisplayName, ListenAddr, NatsUrl, Slug};
    use serviceradar_natsconf::leaf::DEVICE_REGISTRY_BUCKET;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let database_url = format!("sqlite://{}", dir.join("core.db").display());
    // The counts below are this test's syncs alone: the running app syncs
    // the registry too, in its sweep of every tenant (the first, at start,
    // finds no tenant set up yet; the next comes after the interval). At the
    // default 30 s a slow run reached the next sweep, which removed the
    // stray key before this test's sync could count it. Store-level device
    // changes announce nothing, so no other sync runs.
    let (store, pki, _running, _hub, ports, _acme, beta) = two_tenants(dir, &database_url, |s| {
        if let Some(ingest) = s.ingest.as_mut() {
            ingest.site_sync_interval = Duration::from_secs(3600);
        }
    })
    .await;
    let scoped = store.scoped(TenantScope::for_system_task(beta.id));
    let (site, _) = scoped
        .create_site(
            &serviceradar_store::NewSite {
                name: DisplayName::parse("Plant").unwrap(),
                slug: Slug::parse("plant").unwrap(),
                nats_leaf_url: NatsUrl::parse("tls://127.0.0.1:4222").unwrap(),
                upstream_url: "tls://127.0.0.1:7422".into(),
                local_listen: ListenAddr::parse("127.0.0.1:4222").unwrap(),
            },
            None,
        )
        .await
        .unwrap();
    for name in ["sensor-a", "sensor-b"] {
        scoped
            .create_device(
                site.id,
                &DeviceName::parse(name).unwrap(),
                DeviceLimits::DEFAULT,
            )
            .await
            .unwrap();
    }
    let beta_nc = tenant_client(dir, &store, &pki, &beta, ports.client).await;
    let sync = || ingest::sync_device_registry(&store, &beta_nc, &beta, 1);
    sync().await.unwrap();
    let kv = async_nats::jetstream::new(beta_nc.clone())
        .get_key_value(DEVICE_REGISTRY_BUCKET)
        .await
        .unwrap();
    let keys = || async {
        let mut keys: Vec<String> = kv.keys().await.unwrap().map(|k| k.unwrap()).collect().await;
        keys.sort();
        keys
    };
    let registered = keys().await;
    assert_eq!(registered.len(), 2, "{registered:?}");
    assert_eq!(sync().await.unwrap(), 0, "nothing changed");

    kv.put("stray", "{}".into()).await.unwrap();
    assert_eq!(sync().await.unwrap(), 1, "the stray key is removed");
    assert_eq!(keys().await, registered);
    assert_eq!(sync().await.unwrap(), 0);

    scoped.delete_site(site.id).await.unwrap();
    assert_eq!(sync().await.unwrap(), 2, "the deleted devices' keys go");
    assert!(keys().await.is_empty());
    assert_eq!(sync().await.unwrap(), 0);
}
