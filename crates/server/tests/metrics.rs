//! `/metrics` after real traffic: a `serviceradar-core` with its embedded hub
//! (a real `nats-server` on free ports), ingestion, the leaf authorization
//! callout, the agent gateway and a job worker serves API requests, creates
//! and provisions a site, ingests telemetry (one message poison) and holds
//! an agent connection; the metrics listener then shows every family the
//! monitoring guide (`docs/monitoring.md`) and the shipped alert rules
//! (`deploy/prometheus/`) name, with the values the traffic implies. A real
//! site leaf (from its bundle) then joins the hub and is killed: the leaf
//! gauges follow.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use serviceradar_hub::embedded::EmbeddedHubSettings;
use serviceradar_hub::leaf_auth::LeafAuthSettings;
use serviceradar_identity::MasterKeySource;
use serviceradar_ingest::IngestSettings;
use serviceradar_server::app::{Application, Settings};
use serviceradar_testkit::free_port;

mod support;

const WAIT: Duration = Duration::from_secs(60);

fn settings(dir: &Path) -> (Settings, u16) {
    let mut settings = Settings::new(format!("sqlite://{}", dir.join("core.db").display()));
    settings.bootstrap.admin_password = Some("metrics test password".into());
    settings.bootstrap.tenant = "acme".into();
    settings.master_key = MasterKeySource::DevFile(dir.join("master.key"));
    settings.job_workers = 1;
    settings.provision_leaves = true;
    settings.fleet_metrics_interval = Some(Duration::from_millis(300));
    let hub_client = free_port();
    let mut hub = EmbeddedHubSettings::new(dir.join("hub"));
    hub.nats_server = serviceradar_testkit::nats_server_binary().expect("nats-server");
    hub.options.client_listen = format!("127.0.0.1:{hub_client}");
    let hub_leafnodes = free_port();
    hub.options.leafnode_listen = format!("127.0.0.1:{hub_leafnodes}");
    settings.provisioning.hub_leafnode_url = format!("tls://127.0.0.1:{hub_leafnodes}");
    // Leaf configs serve monitoring on loopback (a free port here).
    settings.provisioning.leaf_monitoring_listen = Some(format!("127.0.0.1:{}", free_port()));
    hub.options.monitoring_listen = Some(format!("127.0.0.1:{}", free_port()));
    let client_url = hub.client_url();
    settings.embedded_hub = Some(hub);
    let mut ingest = IngestSettings::new(client_url.clone());
    ingest.batch_timeout = Duration::from_millis(200);
    ingest.tenant_refresh = Duration::from_millis(300);
    settings.ingest = Some(ingest);
    settings.leaf_auth = Some(LeafAuthSettings::new(client_url));
    settings.gateway_listen = Some(format!("127.0.0.1:{}", free_port()).parse().expect("addr"));
    (settings, hub_client)
}

/// The exposition text of the metrics listener.
async fn scrape(port: u16) -> String {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("scrape /metrics");
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.expect("metrics text")
}

/// The value of the first sample of `family` whose labels contain every
/// `label="value"` in `labels`.
fn sample(text: &str, family: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Scrapes until `ready` holds for the text (the gauges are refreshed in
/// the background), or fails with the last text.
async fn scrape_until(port: u16, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = scrape(port).await;
        if ready(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "never saw {what} in:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_real_traffic_name_every_monitored_family() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    support::init();
    let (settings, hub_client) = settings(dir);
    let app = Application::build(settings.clone())
        .await
        .expect("build app");
    let store = app.store().clone();
    let pki = app.pki().clone();
    let base = format!("http://127.0.0.1:{}", app.port());
    let metrics_port = app.metrics_port().expect("metrics listener");
    let gateway_port = app.gateway_port().expect("gateway");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    // API traffic: create a site (which enqueues its provisioning job) and
    // read it back.
    let token = serviceradar_control::tokens::create_token_for(
        &store,
        "acme",
        "admin@example.com",
        "metrics",
        &[
            serviceradar_domain::policy::Scope::Read,
            serviceradar_domain::policy::Scope::Write,
        ],
        1,
    )
    .await
    .expect("token");
    let http = reqwest::Client::new();
    let leaf_port = free_port();
    let created = http
        .post(format!("{base}/api/v1/edge-sites"))
        .bearer_auth(&token)
        .json(&json!({
            "name": "Metrics site",
            "slug": "metrics",
            "nats_leaf_url": format!("nats://127.0.0.1:{leaf_port}"),
            "local_listen": format!("127.0.0.1:{leaf_port}"),
        }))
        .send()
        .await
        .expect("create site");
    assert_eq!(created.status(), StatusCode::CREATED);
    let listed = http
        .get(format!("{base}/api/v1/edge-sites"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("list sites");
    assert_eq!(listed.status(), StatusCode::OK);
    // A body over the limit: answered 413 inside the shared layers, so it
    // keeps its request id and is counted like any other answer (the limit
    // once sat outside the metrics layer and such answers were not counted).
    let oversized = http
        .post(format!("{base}/api/v1/edge-sites"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .header("x-request-id", "oversized-1")
        .body(vec![b' '; serviceradar_http::stack::BODY_LIMIT + 1])
        .send()
        .await
        .expect("oversized create");
    assert_eq!(oversized.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        oversized
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("oversized-1")
    );

    // Telemetry through the hub: good messages and one poison message.
    let tenant = store
        .list_tenants()
        .await
        .expect("tenants")
        .into_iter()
        .find(|t| t.slug.as_str() == "acme")
        .expect("acme");
    let creds = pki
        .user_creds(
            &store,
            &tenant,
            "collector-metrics",
            serviceradar_identity::ServiceUserLifetime::default().expires_at(),
        )
        .await
        .expect("creds");
    let creds_path = dir.join("collector.creds");
    std::fs::write(&creds_path, creds.as_str()).expect("write creds");
    let nc = async_nats::ConnectOptions::with_credentials_file(&creds_path)
        .await
        .expect("creds file")
        .connect(format!("nats://127.0.0.1:{hub_client}"))
        .await
        .expect("tenant user connects to the hub");
    let js = async_nats::jetstream::new(nc.clone());
    let deadline = Instant::now() + WAIT;
    while js.get_stream(serviceradar_ingest::STREAM).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the ingest stream never appeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..20 {
        js.publish(
            "events.acme.nyc.trapd",
            format!(
                r#"{{"message":"event {i}","severity":"info","ts":{}}}"#,
                1_000 + i
            )
            .into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
    }
    js.publish("events.acme.nyc", "not json".into())
        .await
        .expect("publish poison")
        .await
        .expect("stored");

    // An agent connection to the gateway (TCP, before TLS): counted while open.
    let agent = tokio::net::TcpStream::connect(("127.0.0.1", gateway_port))
        .await
        .expect("connect to the gateway");

    let text = scrape_until(metrics_port, "the traffic", |text| {
        sample(
            text,
            "serviceradar_ingest_rows_total",
            &[r#"tenant="acme""#],
        ) == Some(20.0)
            && sample(
                text,
                "serviceradar_ingest_dead_letters_total",
                &[r#"tenant="acme""#],
            ) == Some(1.0)
            && sample(
                text,
                "serviceradar_jobs_finished_total",
                &[r#"kind="provision_leaf""#],
            )
            .is_some()
            && sample(
                text,
                "serviceradar_certificate_expiry_timestamp_seconds",
                &[r#"kind="leaf""#, r#"tenant="acme""#],
            )
            .is_some()
            && sample(text, "serviceradar_gateway_connections", &[]).is_some_and(|n| n >= 1.0)
            && sample(text, "serviceradar_hub_leaves_connected", &[]).is_some()
    })
    .await;

    // API latency: a histogram (buckets, not a summary) by route.
    assert!(
        text.contains("# TYPE http_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "http_request_duration_seconds_bucket",
            &[
                r#"route="/api/v1/edge-sites""#,
                r#"method="POST""#,
                r#"le="+Inf""#
            ],
        ) == Some(2.0),
        "the create and the oversized create: {text}"
    );
    assert!(
        sample(
            &text,
            "http_requests_total",
            &[r#"route="/api/v1/edge-sites""#, r#"status="201""#],
        ) == Some(1.0)
    );
    assert!(
        sample(
            &text,
            "http_requests_total",
            &[
                r#"route="/api/v1/edge-sites""#,
                r#"method="POST""#,
                r#"status="413""#
            ],
        ) == Some(1.0),
        "the 413 is not counted: {text}"
    );
    // The job queue: depth per kind and status, and finished attempts.
    assert!(text.contains("# TYPE serviceradar_jobs gauge"), "{text}");
    for status in ["queued", "running", "failed"] {
        let want = format!(r#"status="{status}""#);
        assert!(
            sample(
                &text,
                "serviceradar_jobs",
                &[r#"kind="provision_leaf""#, &want]
            )
            .is_some(),
            "no job status {status}: {text}"
        );
    }
    assert!(text.contains("# TYPE serviceradar_jobs_finished_total counter"));
    // Ingest rate, lag and dead letters per tenant.
    assert!(
        sample(
            &text,
            "serviceradar_ingest_messages_total",
            &[r#"tenant="acme""#]
        ) >= Some(21.0)
    );
    assert!(
        sample(
            &text,
            "serviceradar_ingest_lag_messages",
            &[r#"tenant="acme""#]
        )
        .is_some()
    );
    assert_eq!(
        sample(&text, "serviceradar_ingest_failing", &[r#"tenant="acme""#]),
        Some(0.0)
    );
    // Sites and leaves per tenant and status, every status present.
    for status in ["pending", "active", "offline"] {
        let want = format!(r#"status="{status}""#);
        assert!(
            sample(&text, "serviceradar_sites", &[r#"tenant="acme""#, &want]).is_some(),
            "no site status {status}: {text}"
        );
    }
    assert_eq!(
        sample(
            &text,
            "serviceradar_sites",
            &[r#"tenant="acme""#, r#"status="pending""#]
        ),
        Some(1.0)
    );
    for status in ["pending", "provisioned", "connected", "disconnected"] {
        let want = format!(r#"status="{status}""#);
        assert!(
            sample(&text, "serviceradar_leaves", &[r#"tenant="acme""#, &want]).is_some(),
            "no leaf status {status}: {text}"
        );
    }
    // Certificate expiries: in the future, the root CA after the tenant CA
    // after the leaf.
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    let expiry = |kind: &str| {
        let want = format!(r#"kind="{kind}""#);
        sample(
            &text,
            "serviceradar_certificate_expiry_timestamp_seconds",
            &[&want],
        )
        .unwrap_or_else(|| panic!("no {kind} expiry: {text}"))
    };
    let (leaf, tenant_ca, root) = (expiry("leaf"), expiry("tenant_ca"), expiry("root_ca"));
    assert!(
        now < leaf && leaf <= tenant_ca && tenant_ca <= root,
        "{leaf} {tenant_ca} {root}"
    );
    // The leaf authorization callout's counter family is declared once a
    // leaf knocks; the hub's view of connected leaves is there from the start.
    assert_eq!(
        sample(&text, "serviceradar_hub_leaves_connected", &[]),
        Some(0.0)
    );

    // Every metric the shipped alert rules use is exported (a histogram
    // through its `_bucket` series).
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus/alerts.yml"),
    )
    .expect("read deploy/prometheus/alerts.yml");
    let used: std::collections::BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|t| t.starts_with("serviceradar_") || t.starts_with("http_request"))
        .collect();
    assert!(used.len() >= 8, "{used:?}");
    for name in used {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
            "the alert rules use {name}, which /metrics does not export:\n{text}"
        );
    }

    // A real leaf from a site bundle joins the hub through the callout: the
    // hub's view and the leaf status gauges follow it, and its loss.
    let leaf_port = free_port();
    let installed =
        support::install_site(dir, &store, &pki, &settings, &tenant, "plant", leaf_port).await;
    let leaf_conf = std::fs::read_to_string(&installed.config).expect("leaf config");
    assert!(
        leaf_conf.contains("http: \"127.0.0.1:"),
        "the leaf config serves monitoring on loopback:\n{leaf_conf}"
    );
    let leaf = serviceradar_testkit::NatsServer::start_file(
        installed.config.parent().expect("config dir"),
        "leaf",
        &installed.config,
        leaf_port,
    )
    .expect("start the site leaf");
    scrape_until(metrics_port, "the leaf connected", |text| {
        sample(text, "serviceradar_hub_leaves_connected", &[]) == Some(1.0)
            && sample(
                text,
                "serviceradar_leaves",
                &[r#"tenant="acme""#, r#"status="connected""#],
            ) == Some(1.0)
            && sample(
                text,
                "serviceradar_leaf_auth_total",
                &[r#"outcome="admitted""#],
            )
            .is_some_and(|n| n >= 1.0)
    })
    .await;
    drop(leaf);
    scrape_until(metrics_port, "the leaf disconnected", |text| {
        sample(text, "serviceradar_hub_leaves_connected", &[]) == Some(0.0)
            && sample(
                text,
                "serviceradar_leaves",
                &[r#"tenant="acme""#, r#"status="disconnected""#],
            ) == Some(1.0)
    })
    .await;

    // The agent's connection closes: the gauge goes back down.
    drop(agent);
    scrape_until(metrics_port, "the gateway connection closed", |text| {
        sample(text, "serviceradar_gateway_connections", &[]) == Some(0.0)
    })
    .await;

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), running).await;
}
