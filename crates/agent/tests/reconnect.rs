//! The real agent binary started while its gateway is down: it keeps running
//! its checks, keeps only the newest `buffer` results, retries with backoff,
//! and once a gateway listens it registers and pushes the buffered results
//! with the count it dropped (seen on the gateway's Prometheus counters).

mod support;

use std::time::{Duration, Instant};

use serviceradar_domain::TenantScope;
use serviceradar_domain::state::SiteStatus;

fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_buffers_while_the_gateway_is_down_then_reconnects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = support::settings(&dir);
    settings.gateway.agent_push_interval_secs = 1;
    settings.provisioning.leaf_monitoring_listen = None;
    let core = support::spawn(dir, settings.clone()).await;
    let tenant = core.tenant("default").await;
    let agent = core.site(&tenant, "nyc").await;

    // The gateway the agent will use is not listening yet.
    let port = serviceradar_testkit::free_port();
    let config = agent.files.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "gateway_url = \"https://localhost:{port}\"\ncert = \"agent.pem\"\nkey = \"agent-key.pem\"\n\
             ca = \"root-ca.pem\"\nbuffer = 3\n[[checks]]\nkind = \"dns\"\ntarget = \"localhost\"\ninterval_secs = 1\n"
        ),
    )
    .expect("config");
    let mut agent_process = tokio::process::Command::new(env!("CARGO_BIN_EXE_serviceradar-agent"))
        .arg("--config")
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("agent");
    // Wait until the agent runs and has failed to reach the gateway (a fixed
    // sleep raced a slow start on a loaded machine: the agent then met the
    // gateway already up and had nothing buffered), then long enough for its
    // 1-s checks to overflow the buffer of 3.
    let stderr = agent_process.stderr.take().expect("agent stderr");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let started = Instant::now();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the agent logs within a minute")
            .expect("agent stderr")
            .expect("the agent is running");
        if line.contains("gateway unreachable") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "agent: {line}");
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    tokio::time::sleep(Duration::from_secs(6)).await;
    let scoped = core.store.scoped(TenantScope::for_system_task(tenant.id));
    assert_eq!(
        scoped.site(agent.site.id).await.expect("site").status,
        SiteStatus::Pending
    );

    // Now a gateway (a second replica over the same store) comes up.
    let gateway = serviceradar_gateway::Gateway::bind(
        format!("127.0.0.1:{port}").parse().expect("addr"),
        core.store.clone(),
        core.pki.clone(),
        std::sync::Arc::new(serviceradar_gateway::GatewaySettings {
            leaf_monitoring_listen: settings.provisioning.leaf_monitoring_listen.clone(),
            ..settings.gateway.clone()
        }),
        core.health.clone(),
    )
    .await
    .expect("gateway");
    tokio::spawn(gateway.serve(std::future::pending()));

    let metrics_url = format!("http://127.0.0.1:{}/metrics", core.metrics_port);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = reqwest::get(&metrics_url)
            .await
            .expect("metrics")
            .text()
            .await
            .expect("body");
        let results = counter(&text, "serviceradar_gateway_results_total");
        let dropped = counter(&text, "serviceradar_gateway_dropped_results_total");
        if results >= 3.0 && dropped >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no buffered push: results {results}, dropped {dropped}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        scoped.site(agent.site.id).await.expect("site").status,
        SiteStatus::Active
    );
}
