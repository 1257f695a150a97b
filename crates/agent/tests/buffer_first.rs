//! Issue 11, finding 13: messages published at a site before its buffer
//! stream existed were lost without an error (the stream was created only
//! through the hub, 26-28 s after the leaf joined it). Now the agent creates
//! the buffer on the leaf's own JetStream as soon as the leaf runs.
//!
//! With the hub not running at all, a site's leaf (installed from its bundle
//! by `setup.sh`) and its agent start; a collector publishes with JetStream
//! acknowledgements from the first second, retrying what is not
//! acknowledged. The first acknowledgement comes within seconds, before any
//! hub exists. Then the hub starts: everything acknowledged is stored, once.

mod support;

use std::time::{Duration, Instant};

use serviceradar_domain::TenantScope;
use serviceradar_domain::telemetry::TelemetryKind;
use serviceradar_hub::config::{HubOptions, write_hub_config};
use serviceradar_hub::leaf_auth::LeafAuthSettings;
use serviceradar_identity::MasterKeySource;
use serviceradar_ingest::IngestSettings;
use serviceradar_testkit::{NatsServer, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_publishing_from_the_first_second_loses_nothing_while_no_hub_is_reachable() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let ports = (free_port(), free_port(), free_port());
    let (hub_client, hub_leaf, hub_monitor) = ports;
    let (leaf_port, leaf_monitor) = (free_port(), free_port());

    let mut settings = support::settings(&tmp);
    settings.master_key = MasterKeySource::DevFile(dir.join("master.key"));
    settings.provisioning.hub_leafnode_url = format!("tls://127.0.0.1:{hub_leaf}");
    settings.provisioning.leaf_monitoring_listen = Some(format!("127.0.0.1:{leaf_monitor}"));
    let mut ingest = IngestSettings::new(format!("nats://127.0.0.1:{hub_client}"));
    ingest.batch_timeout = Duration::from_millis(200);
    ingest.tenant_refresh = Duration::from_millis(300);
    ingest.site_sync_interval = Duration::from_secs(1);
    settings.ingest = Some(ingest);
    settings.leaf_auth = Some(LeafAuthSettings::new(format!(
        "nats://127.0.0.1:{hub_client}"
    )));
    settings.job_workers = 0;
    let core = support::spawn(tmp, settings.clone()).await;
    let tenant = core.tenant("default").await;
    let scoped = core.store.scoped(TenantScope::for_system_task(tenant.id));
    let site = core
        .provisioned_site(&tenant, "Plant", "plant", leaf_port)
        .await;
    let conf_dir = support::install_bundle(&core, &tenant, &site, &dir).await;
    let prefix = dir.join("edge");
    let certs = conf_dir.join("certs");

    // No hub anywhere: the leaf's link and ingestion both fail for now.
    let leaf_server =
        NatsServer::start_file(&prefix, "leaf", &conf_dir.join("nats-leaf.conf"), leaf_port)
            .expect("leaf starts");
    let leaf_started = Instant::now();
    let _agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_serviceradar-agent"))
        .arg("--config")
        .arg(conf_dir.join("agent.toml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("agent.log")).expect("log"))
        .kill_on_drop(true)
        .spawn()
        .expect("agent starts");

    // A collector at the site (any certificate of the tenant CA is a client
    // the leaf accepts; the agent's will do), publishing from the first
    // second with acknowledgements, retrying what is not acknowledged.
    let collector = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(certs.join("ca-chain.pem"))
        .add_client_certificate(certs.join("agent.pem"), certs.join("agent-key.pem"))
        .retry_on_initial_connect()
        .connect(format!("tls://127.0.0.1:{leaf_port}"))
        .await
        .expect("collector connects to the leaf");
    let js = async_nats::jetstream::new(collector);
    let publish_until = |until: Instant, mut acked: u64, mut first: Option<Duration>| {
        let js = js.clone();
        async move {
            while Instant::now() < until {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", format!("m-{acked}").as_str());
                let sent = async {
                    js.publish_with_headers(
                        "edge.default.plant.events.line1",
                        headers,
                        format!(r#"{{"message":"reading {acked}"}}"#).into(),
                    )
                    .await?
                    .await
                    .map_err(async_nats::Error::from)
                }
                .await;
                match sent {
                    Ok(_) => {
                        first.get_or_insert_with(|| leaf_started.elapsed());
                        acked += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            (acked, first)
        }
    };
    let (acked, first) = publish_until(Instant::now() + Duration::from_secs(6), 0, None).await;
    let first = first.unwrap_or_else(|| {
        panic!(
            "nothing acknowledged in 6 s without a hub\nagent log:\n{}\nleaf log:\n{}",
            std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default(),
            leaf_server.log()
        )
    });
    assert!(
        first < Duration::from_secs(4),
        "the buffer existed only {first:?} after the leaf started"
    );
    assert!(acked > 50, "{acked}");

    // The hub comes up; the leaf joins; its buffer is sourced and ingested.
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
    let _hub =
        NatsServer::start_file(&hub_dir, "hub", &files.config_path, hub_client).expect("hub");
    let (sent, _) =
        publish_until(Instant::now() + Duration::from_secs(2), acked, Some(first)).await;

    let stored = || async {
        scoped
            .count_telemetry(TelemetryKind::Event)
            .await
            .expect("count")
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = stored().await;
        assert!(
            got <= sent as i64,
            "{got} stored of {sent} sent: duplicates"
        );
        if got == sent as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {got} of {sent} stored\nleaf log:\n{}",
            leaf_server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    serviceradar_testkit::report(&format!(
        "buffer first: first acknowledged publish {:.1} s after the leaf started, with no hub; \
         sent {sent}, stored {sent} once the hub came up",
        first.as_secs_f64()
    ));
}
