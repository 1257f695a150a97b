//! End to end with real processes: `serviceradar-core` (gateway on), a real
//! hub `nats-server`, a real leaf `nats-server` installed from the site bundle
//! with its own `setup.sh --prefix`, and the real `serviceradar-agent` binary
//! started with the bundle's `agent.toml`.
//!
//! The site goes `active` and the leaf `connected`; killing the leaf makes it
//! `disconnected` (restarting it, `connected` again); stopping the agent makes
//! the site `offline` after the timeout and raises an alert that reaches a
//! local webhook receiver; restarting the agent resolves it (webhook again);
//! deleting the site makes the agent stop with status 3.
//! Live status events are observed on the in-process broadcast.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serviceradar_domain::TenantScope;
use serviceradar_domain::state::{LeafStatus, SiteStatus};
use serviceradar_health::HealthEvent;
use serviceradar_hub::config::{HubOptions, write_hub_config};
use serviceradar_identity::MasterKeySource;
use serviceradar_store::health::{ALERT_LEAF_DISCONNECTED, ALERT_SITE_OFFLINE};
use serviceradar_testkit::{NatsServer, check_nats_config, free_port, wait_for_port};

const WAIT: Duration = Duration::from_secs(40);

fn start_agent(config: &Path) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_serviceradar-agent"))
        .arg("--config")
        .arg(config)
        .env("SERVICERADAR_AGENT_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("agent starts")
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn next_webhook(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
    event: &str,
    kind: &str,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no webhook {event} {kind}"))
            .expect("receiver alive");
        if got.0 == event && got.1 == kind {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_drives_site_and_leaf_health_and_disconnect_alerts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let (hub_client, hub_leaf, hub_monitor) = (free_port(), free_port(), free_port());
    let (leaf_port, leaf_monitor, gw_port) = (free_port(), free_port(), free_port());

    let mut settings = support::settings(&tmp);
    // The webhook receiver is on loopback.
    settings.webhooks.allow_internal = vec!["127.0.0.0/8".parse().expect("range")];
    settings.gateway_listen = Some(format!("127.0.0.1:{gw_port}").parse().expect("addr"));
    settings.provisioning.gateway_url = format!("https://localhost:{gw_port}");
    settings.provisioning.hub_leafnode_url = format!("tls://127.0.0.1:{hub_leaf}");
    settings.provisioning.leaf_monitoring_listen = Some(format!("127.0.0.1:{leaf_monitor}"));
    settings.master_key = MasterKeySource::DevFile(dir.join("master.key"));
    settings.health.agent_offline_after = Duration::from_secs(4);
    settings.health.alert_after = Duration::from_secs(2);
    settings.health.sweep_interval = Duration::from_millis(500);
    settings.gateway.agent_push_interval_secs = 1;
    settings.gateway.agent_config_poll_secs = 2;
    settings.job_workers = 1;
    let core = support::spawn(tmp, settings.clone()).await;
    let mut events = core.health.subscribe();

    // A site, provisioned (leaf + agent certificates), and a webhook.
    let tenant = core.tenant("default").await;
    let scoped = core.store.scoped(TenantScope::for_system_task(tenant.id));
    let site = core
        .provisioned_site(&tenant, "NYC", "nyc", leaf_port)
        .await;
    let (hook_port, mut hooks) = support::webhook_receiver().await;
    let hook_id = uuid::Uuid::now_v7();
    scoped
        .create_webhook(
            hook_id,
            &format!("http://127.0.0.1:{hook_port}/alerts"),
            &core.pki.seal(
                "whsec_test",
                &serviceradar_health::webhooks::secret_aad(tenant.id, hook_id),
            ),
        )
        .await
        .expect("webhook");

    // The bundle, installed with its own setup.sh below a prefix.
    let conf_dir = support::install_bundle(&core, &tenant, &site, &dir).await;
    let prefix = dir.join("edge");
    let installed = conf_dir.join("nats-leaf.conf");
    let agent_conf = conf_dir.join("agent.toml");
    assert!(agent_conf.is_file(), "setup.sh installed agent.toml");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(conf_dir.join("certs/agent-key.pem"))
        .expect("agent key installed")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "agent key is 0600");
    check_nats_config(&installed).expect("leaf config valid");

    // Hub and leaf.
    let hub_dir = dir.join("hub");
    let files = write_hub_config(
        &core.store,
        &core.pki,
        &HubOptions {
            client_listen: format!("127.0.0.1:{hub_client}"),
            leafnode_listen: format!("127.0.0.1:{hub_leaf}"),
            monitoring_listen: Some(format!("127.0.0.1:{hub_monitor}")),
            ..HubOptions::default()
        },
        &hub_dir,
    )
    .await
    .expect("hub config");
    let _hub = NatsServer::start_file(&hub_dir, "hub", &files.config_path, hub_client)
        .expect("hub starts");
    let _leaf_auth = serviceradar_hub::leaf_auth::start(
        core.store.clone(),
        core.pki.clone(),
        serviceradar_hub::leaf_auth::LeafAuthSettings::new(format!(
            "nats://127.0.0.1:{hub_client}"
        )),
    )
    .await
    .expect("leaf authorization starts");
    let mut leaf_server =
        NatsServer::start_file(&prefix, "leaf", &installed, leaf_port).expect("leaf starts");
    wait_for_port(leaf_monitor, "leaf monitoring", WAIT).expect("leaf monitoring");

    // The agent, as shipped.
    let mut agent = start_agent(&agent_conf);
    let site_status = || async { scoped.site(site.id).await.expect("site").status };
    let leaf_status = || async { scoped.leaf_for_site(site.id).await.expect("leaf").status };
    wait_until("site active", || async {
        site_status().await == SiteStatus::Active
    })
    .await;
    wait_until("leaf connected", || async {
        leaf_status().await == LeafStatus::Connected
    })
    .await;

    // Kill the leaf: the agent's leaf checker reports it, the leaf goes
    // disconnected, and after `alert_after` an alert is raised.
    leaf_server.kill();
    wait_until("leaf disconnected", || async {
        leaf_status().await == LeafStatus::Disconnected
    })
    .await;
    next_webhook(&mut hooks, "alert.raised", ALERT_LEAF_DISCONNECTED).await;
    // Restore the leaf: connected again, the alert resolves.
    let _leaf_server =
        NatsServer::start_file(&prefix, "leaf2", &installed, leaf_port).expect("leaf restarts");
    wait_until("leaf reconnected", || async {
        leaf_status().await == LeafStatus::Connected
    })
    .await;
    next_webhook(&mut hooks, "alert.resolved", ALERT_LEAF_DISCONNECTED).await;

    // Stop the agent: offline after the timeout, then an alert.
    agent.kill().await.expect("kill agent");
    let stopped = Instant::now();
    wait_until("site offline", || async {
        site_status().await == SiteStatus::Offline
    })
    .await;
    assert!(
        stopped.elapsed() >= Duration::from_secs(2),
        "offline only after the timeout"
    );
    next_webhook(&mut hooks, "alert.raised", ALERT_SITE_OFFLINE).await;
    let alerts = scoped
        .list_alerts(None, &serviceradar_store::PageRequest::first())
        .await
        .expect("alerts");
    assert!(
        alerts
            .items
            .iter()
            .any(|a| a.kind == ALERT_SITE_OFFLINE && a.status.as_str() == "open"),
        "{alerts:?}"
    );

    // Restore the agent: active again, the alert resolves itself.
    let mut agent = start_agent(&agent_conf);
    wait_until("site active again", || async {
        site_status().await == SiteStatus::Active
    })
    .await;
    next_webhook(&mut hooks, "alert.resolved", ALERT_SITE_OFFLINE).await;
    let alerts = scoped
        .list_alerts(None, &serviceradar_store::PageRequest::first())
        .await
        .expect("alerts");
    assert!(
        alerts.items.iter().all(|a| a.status.as_str() == "resolved"),
        "{alerts:?}"
    );

    // The live events saw every change.
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(match event {
            HealthEvent::Site { status, .. } => format!("site:{status}"),
            HealthEvent::Leaf { status, .. } => format!("leaf:{status}"),
            HealthEvent::AlertRaised(a) => format!("raised:{}", a.kind),
            HealthEvent::AlertResolved(a) => format!("resolved:{}", a.kind),
        });
    }
    for expected in [
        "site:active",
        "leaf:connected",
        "leaf:disconnected",
        "raised:leaf_disconnected",
        "resolved:leaf_disconnected",
        "site:offline",
        "raised:site_offline",
        "resolved:site_offline",
    ] {
        assert!(
            seen.iter().any(|s| s == expected),
            "{expected} not in {seen:?}"
        );
    }

    // Deleting the site retires its agent: a final NOT_FOUND, and the agent
    // stops with status 3 instead of retrying "try again later" forever.
    scoped.delete_site(site.id).await.expect("delete site");
    let status = tokio::time::timeout(WAIT, agent.wait())
        .await
        .expect("the agent of a deleted site stops by itself")
        .expect("wait");
    assert_eq!(status.code(), Some(3), "{status:?}");
}
