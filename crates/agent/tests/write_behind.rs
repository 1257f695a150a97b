//! The gateway's status write-behind (`serviceradar_gateway::status`)
//! against a real core on SQLite and on PostgreSQL, over the agent's own
//! gRPC transport:
//!
//! * every state change among coalesced steady pushes (leaf up/down, a check
//!   turning `fail` and back, a site the sweeper moved offline) is stored
//!   before the push answers (or, for the sweeper's move, within a flush)
//!   and alerted in the order the agent sent it; steady pushes are
//!   coalesced and their contact and results still land;
//! * stopping the gateway writes what it buffered;
//! * config acknowledgements are written behind too (and the configs a
//!   change pushes read in batches): each one is what the API shows within
//!   a flush, the pushed config is the polled one, and stopping the
//!   gateway writes the acknowledgements it buffered.

mod support;

use std::time::{Duration, Instant};

use serviceradar_agent::transport::{GrpcTransport, Transport};
use serviceradar_domain::TenantScope;
use serviceradar_domain::state::{LeafStatus, SiteStatus};
use serviceradar_health::HealthEvent;
use serviceradar_proto::v1::agent_message::Body as AgentBody;
use serviceradar_proto::v1::control_message::Body as ControlBody;
use serviceradar_proto::v1::{
    AgentConfig, AgentMessage, CheckResult, ConfigAck, ControlMessage, GetConfigRequest,
    HelloRequest, LeafHealth, PushStatusRequest,
};
use serviceradar_server::app::Settings;
use serviceradar_store::health::ALERT_LEAF_DISCONNECTED;
use serviceradar_store::{PageRequest, now_ms};

fn leaf(up: bool, at: i64) -> CheckResult {
    CheckResult {
        name: "nats-leaf".into(),
        kind: "nats_leaf".into(),
        target: "http://127.0.0.1:8222".into(),
        status: if up { "ok" } else { "fail" }.into(),
        observed_at_ms: at,
        leaf: Some(LeafHealth {
            up,
            remote_connected: up,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn web(status: &str, at: i64, message: &str) -> CheckResult {
    CheckResult {
        name: "web".into(),
        kind: "tcp".into(),
        target: "127.0.0.1:80".into(),
        status: status.into(),
        message: message.into(),
        observed_at_ms: at,
        ..Default::default()
    }
}

async fn push(t: &mut GrpcTransport, results: Vec<CheckResult>) {
    t.push_status(PushStatusRequest {
        claim: None,
        results,
        dropped: 0,
    })
    .await
    .expect("push");
}

/// A clock that moves forward at every call (observations are ordered).
fn tick() -> i64 {
    static LAST: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let now = now_ms();
    let prev = LAST.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
    if now > prev {
        now
    } else {
        LAST.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
    }
}

fn write_behind(mut settings: Settings) -> Settings {
    settings.gateway.status_flush_every = Some(Duration::from_millis(200));
    settings.health.alert_after = Duration::ZERO;
    settings.health.agent_offline_after = Duration::from_secs(2);
    settings.health.sweep_interval = Duration::from_secs(3600);
    settings
}

async fn state_changes_are_stored_and_alerted_in_order(settings: Settings) {
    let dir = tempfile::tempdir().expect("tempdir");
    let core = support::spawn(dir, write_behind(settings)).await;
    let tenant = core.tenant("default").await;
    let agent = core.site(&tenant, "nyc").await;
    let site = agent.site.id;
    let scoped = core.store.scoped(TenantScope::for_system_task(tenant.id));
    let mut events = core.health.subscribe();
    let mut t = GrpcTransport::connect(&core.target(&agent))
        .await
        .expect("connect");
    t.hello(HelloRequest {
        agent_version: "test".into(),
        ..Default::default()
    })
    .await
    .expect("hello");
    let leaf_status = || async { scoped.leaf_for_site(site).await.expect("leaf").status };
    let web_status = || async {
        scoped
            .agent_checks(agent.agent_id)
            .await
            .expect("checks")
            .into_iter()
            .find(|c| c.name == "web")
            .map(|c| (c.status, c.message))
    };

    // Up: stored when the push answers.
    push(&mut t, vec![leaf(true, tick()), web("ok", tick(), "1")]).await;
    assert_eq!(leaf_status().await, LeafStatus::Connected);
    // Steady pushes are coalesced ...
    for i in 2..5 {
        push(
            &mut t,
            vec![leaf(true, tick()), web("ok", tick(), &i.to_string())],
        )
        .await;
    }
    // ... and still land within a flush.
    let deadline = Instant::now() + Duration::from_secs(3);
    while web_status().await != Some(("ok".into(), "4".into())) {
        assert!(Instant::now() < deadline, "{:?}", web_status().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Down, among steady pushes: stored at once, and the alert rule sees it.
    push(&mut t, vec![leaf(false, tick())]).await;
    assert_eq!(leaf_status().await, LeafStatus::Disconnected);
    tokio::time::sleep(Duration::from_millis(5)).await;
    core.health.sweep().await.expect("sweep");
    let open = |alerts: serviceradar_store::Page<serviceradar_store::health::Alert>| {
        alerts
            .items
            .into_iter()
            .filter(|a| {
                a.kind == ALERT_LEAF_DISCONNECTED
                    && a.status != serviceradar_domain::state::AlertStatus::Resolved
            })
            .count()
    };
    let page = PageRequest {
        limit: 100,
        after: None,
    };
    assert_eq!(
        open(scoped.list_alerts(None, &page).await.expect("alerts")),
        1
    );
    for _ in 0..3 {
        push(&mut t, vec![leaf(false, tick())]).await;
    }
    // Up again: stored and the alert resolved before the push answers.
    push(&mut t, vec![leaf(true, tick())]).await;
    assert_eq!(leaf_status().await, LeafStatus::Connected);
    assert_eq!(
        open(scoped.list_alerts(None, &page).await.expect("alerts")),
        0
    );

    // A check that fails, and recovers, is stored as each push answers.
    push(&mut t, vec![web("ok", tick(), "5")]).await;
    push(&mut t, vec![web("fail", tick(), "refused")]).await;
    assert_eq!(web_status().await, Some(("fail".into(), "refused".into())));
    push(&mut t, vec![web("fail", tick(), "refused again")]).await;
    push(&mut t, vec![web("ok", tick(), "back")]).await;
    assert_eq!(web_status().await, Some(("ok".into(), "back".into())));

    // The sweeper moves the quiet site offline; the next (steady) push
    // brings it back promptly.
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    core.health.sweep().await.expect("sweep");
    assert_eq!(
        scoped.site(site).await.expect("site").status,
        SiteStatus::Offline
    );
    push(&mut t, vec![leaf(true, tick())]).await;
    let deadline = Instant::now() + Duration::from_secs(1);
    while scoped.site(site).await.expect("site").status != SiteStatus::Active {
        assert!(
            Instant::now() < deadline,
            "site not active again within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Every change was published, in the order the agent sent it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        match event {
            HealthEvent::Leaf { status, .. } => seen.push(format!("leaf {status}")),
            HealthEvent::Site { status, .. } => seen.push(format!("site {status}")),
            HealthEvent::AlertRaised(a) => seen.push(format!("raised {}", a.kind)),
            HealthEvent::AlertResolved(a) => seen.push(format!("resolved {}", a.kind)),
        }
    }
    let expected = [
        "leaf connected",
        "leaf disconnected",
        "raised leaf_disconnected",
        "leaf connected",
        "resolved leaf_disconnected",
        "site offline",
        "raised site_offline",
        "site active",
        "resolved site_offline",
    ];
    // (The first contact may have moved the new site to active first.)
    let first = seen
        .iter()
        .position(|s| s == "leaf connected")
        .expect("leaf connected");
    assert_eq!(&seen[first..], expected, "{seen:?}");

    // Steady pushes really were coalesced.
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", core.metrics_port))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let coalesced: f64 = metrics
        .lines()
        .find(|l| l.starts_with("serviceradar_gateway_status_coalesced_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(coalesced >= 5.0, "coalesced {coalesced}\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_behind_never_loses_or_reorders_a_state_change_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    state_changes_are_stored_and_alerted_in_order(support::settings(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_behind_never_loses_or_reorders_a_state_change_postgres() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = support::settings(&dir);
    settings.database_url = serviceradar_testkit::postgres().create_database();
    state_changes_are_stored_and_alerted_in_order(settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_gateway_flushes_buffered_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = support::settings(&dir);
    let core = support::spawn(dir, settings.clone()).await;
    let tenant = core.tenant("default").await;
    let agent = core.site(&tenant, "nyc").await;
    let scoped = core.store.scoped(TenantScope::for_system_task(tenant.id));

    // A second gateway on the same store that flushes only when it stops.
    let port = serviceradar_testkit::free_port();
    let gateway = serviceradar_gateway::Gateway::bind(
        format!("127.0.0.1:{port}").parse().expect("addr"),
        core.store.clone(),
        core.pki.clone(),
        std::sync::Arc::new(serviceradar_gateway::GatewaySettings {
            status_flush_every: Some(Duration::from_secs(3600)),
            ..settings.gateway.clone()
        }),
        core.health.clone(),
    )
    .await
    .expect("gateway");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(gateway.serve(async move {
        let _ = stopped.await;
    }));
    let mut target = core.target(&agent);
    target.url = format!("https://localhost:{port}");
    let mut t = GrpcTransport::connect(&target).await.expect("connect");
    t.hello(HelloRequest::default()).await.expect("hello");

    let first = tick();
    push(&mut t, vec![web("ok", first, "first")]).await;
    let stored = || async {
        let c = scoped
            .agent_checks(agent.agent_id)
            .await
            .expect("checks")
            .into_iter()
            .find(|c| c.name == "web")
            .expect("web stored");
        (c.observed_at, c.message)
    };
    assert_eq!(stored().await, (first, "first".to_owned()));
    let seen_before = scoped
        .agent_for_site(agent.site.id)
        .await
        .expect("agent")
        .expect("agent")
        .last_seen_at
        .expect("seen");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let last = tick();
    push(&mut t, vec![web("ok", last, "last")]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        stored().await,
        (first, "first".to_owned()),
        "the steady push waits in the buffer"
    );
    drop(t);

    stop.send(()).expect("stop");
    tokio::time::timeout(Duration::from_secs(20), served)
        .await
        .expect("gateway stopped")
        .expect("task")
        .expect("served");
    assert_eq!(stored().await, (last, "last".to_owned()));
    let seen_after = scoped
        .agent_for_site(agent.site.id)
        .await
        .expect("agent")
        .expect("agent")
        .last_seen_at
        .expect("seen");
    assert!(seen_after > seen_before, "{seen_after} > {seen_before}");
}

/// A control stream as the agent opens it; returns what it sends and what
/// the gateway sends.
async fn open_stream(
    t: &mut GrpcTransport,
) -> (
    tokio::sync::mpsc::Sender<AgentMessage>,
    tonic::Streaming<ControlMessage>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(AgentMessage {
        claim: Some(Default::default()),
        body: None,
    })
    .await
    .expect("first message");
    let inbound = t.control_stream(rx).await.expect("control stream");
    (tx, inbound)
}

/// The next config the gateway pushes on a stream.
async fn next_config(inbound: &mut tonic::Streaming<ControlMessage>) -> AgentConfig {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .expect("a config within 10 s")
            .expect("stream")
            .expect("open");
        if let Some(ControlBody::Config(config)) = message.body {
            return config;
        }
    }
}

async fn ack(tx: &tokio::sync::mpsc::Sender<AgentMessage>, version: &str) {
    tx.send(AgentMessage {
        claim: None,
        body: Some(AgentBody::ConfigAck(ConfigAck {
            version: version.into(),
        })),
    })
    .await
    .expect("ack");
}

/// `GET /edge-sites/{site}/agent/checks`' acknowledged version.
async fn api_version(api: &support::Api, site: &str) -> Option<String> {
    let (status, body) = api.get(&format!("/edge-sites/{site}/agent/checks")).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    body["config_version"].as_str().map(str::to_owned)
}

/// Issue 18: config acknowledgements are written behind in batches and
/// their configs read in batches; every acknowledgement still lands and is
/// what the API shows, and a config pushed to many agents at once is the
/// config each would poll.
async fn config_acks_written_behind_are_visible_through_the_api(settings: Settings) {
    let dir = tempfile::tempdir().expect("tempdir");
    let core = support::spawn(dir, write_behind(settings)).await;
    let tenant = core.tenant("default").await;
    let api = support::Api::new(&core, "default", "admin@example.com").await;
    let mut agents = Vec::new();
    for i in 0..5 {
        let agent = core.site(&tenant, &format!("fleet-{i}")).await;
        let mut t = GrpcTransport::connect(&core.target(&agent))
            .await
            .expect("connect");
        let (tx, mut inbound) = open_stream(&mut t).await;
        let first = next_config(&mut inbound).await;
        ack(&tx, &first.version).await;
        agents.push((agent, t, tx, inbound, first.version));
    }
    let visible = |site: String, version: String| {
        let api = &api;
        async move {
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                let shown = api_version(api, &site).await;
                if shown.as_deref() == Some(version.as_str()) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{site}: the API shows {shown:?}, not the acknowledged {version}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    for (agent, _, _, _, version) in &agents {
        visible(agent.site.id.to_string(), version.clone()).await;
    }

    // One change to every agent: each stream is pushed its new config (read
    // in a batch), which is the config the agent would poll; each
    // acknowledgement is visible through the API within a flush or two.
    let (status, body) = api
        .post(
            "/agent-checks/apply",
            serde_json::json!({ "set": [{ "name": "resolver", "kind": "dns",
                "target": "localhost", "interval_secs": 5 }] }),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body["agents"], 5, "{body}");
    for (agent, t, tx, inbound, before) in &mut agents {
        let pushed = next_config(inbound).await;
        assert_ne!(&pushed.version, before);
        assert!(pushed.checks.iter().any(|c| c.name == "resolver"));
        let polled = t
            .get_config(GetConfigRequest::default())
            .await
            .expect("get config");
        assert_eq!(
            polled.config.as_ref(),
            Some(&pushed),
            "the pushed config is the polled one"
        );
        ack(tx, &pushed.version).await;
        visible(agent.site.id.to_string(), pushed.version.clone()).await;
    }
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", core.metrics_port))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let flushed: f64 = metrics
        .lines()
        .find(|l| l.starts_with("serviceradar_gateway_config_acks_flushed_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(flushed >= 10.0, "flushed {flushed}\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_acks_written_behind_are_visible_through_the_api_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    config_acks_written_behind_are_visible_through_the_api(support::settings(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_acks_written_behind_are_visible_through_the_api_postgres() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = support::settings(&dir);
    settings.database_url = serviceradar_testkit::postgres().create_database();
    config_acks_written_behind_are_visible_through_the_api(settings).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_gateway_writes_pending_config_acks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = support::settings(&dir);
    let core = support::spawn(dir, settings.clone()).await;
    let tenant = core.tenant("default").await;
    let agent = core.site(&tenant, "nyc").await;
    let api = support::Api::new(&core, "default", "admin@example.com").await;
    let site = agent.site.id.to_string();

    // A second gateway on the same store that flushes only when it stops.
    let port = serviceradar_testkit::free_port();
    let gateway = serviceradar_gateway::Gateway::bind(
        format!("127.0.0.1:{port}").parse().expect("addr"),
        core.store.clone(),
        core.pki.clone(),
        std::sync::Arc::new(serviceradar_gateway::GatewaySettings {
            status_flush_every: Some(Duration::from_secs(3600)),
            ..settings.gateway.clone()
        }),
        core.health.clone(),
    )
    .await
    .expect("gateway");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(gateway.serve(async move {
        let _ = stopped.await;
    }));
    let mut target = core.target(&agent);
    target.url = format!("https://localhost:{port}");
    let mut t = GrpcTransport::connect(&target).await.expect("connect");
    let (tx, mut inbound) = open_stream(&mut t).await;
    let config = next_config(&mut inbound).await;
    ack(&tx, &config.version).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        api_version(&api, &site).await,
        None,
        "the acknowledgement waits in the buffer"
    );

    stop.send(()).expect("stop");
    tokio::time::timeout(Duration::from_secs(20), served)
        .await
        .expect("gateway stopped")
        .expect("task")
        .expect("served");
    assert_eq!(
        api_version(&api, &site).await,
        Some(config.version),
        "written when the gateway stopped"
    );
    drop((tx, inbound, t));
}
