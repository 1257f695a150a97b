//! Device authorization as shipped (issue 16): a site bundle rendered with
//! `--leaf-device-auth`, installed by its own `setup.sh` (which makes the
//! callout's keys with the `serviceradar-agent` binary beside it), then the
//! leaf and the agent started with the commands the bundle's units run
//! (`nats-server -c nats-leaf.conf`, `serviceradar-agent --config
//! agent.toml`). Nothing in the test starts the authorization service by
//! hand: the agent starts it because the installed leaf config includes
//! `device-auth.conf`. A registered device is admitted, an unregistered one
//! is refused with the reason logged, and the agent itself still gets in
//! (it creates the site's buffer stream).

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serviceradar_domain::TenantScope;
use serviceradar_domain::device::{DeviceLimits, DeviceName};
use serviceradar_hub::config::{HubOptions, write_hub_config};
use serviceradar_identity::MasterKeySource;
use serviceradar_ingest::IngestSettings;
use serviceradar_testkit::{NatsServer, free_port, wait_for_port};

const WAIT: Duration = Duration::from_secs(40);

fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?}:\n{text}");
    text
}

async fn connect(
    leaf_port: u16,
    ca: &Path,
    cert: &Path,
    key: &Path,
    name: &str,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(ca.to_path_buf())
        .add_client_certificate(cert.to_path_buf(), key.to_path_buf())
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .connect(format!("tls://127.0.0.1:{leaf_port}"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_installed_from_its_bundle_admits_registered_devices_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_path_buf();
    let (hub_client, hub_leaf, hub_monitor) = (free_port(), free_port(), free_port());
    let (leaf_port, leaf_monitor) = (free_port(), free_port());
    let hub_url = format!("nats://127.0.0.1:{hub_client}");

    let mut settings = support::settings(&tmp);
    settings.provisioning.hub_leafnode_url = format!("tls://127.0.0.1:{hub_leaf}");
    settings.provisioning.leaf_monitoring_listen = Some(format!("127.0.0.1:{leaf_monitor}"));
    settings.provisioning.leaf_device_auth = true;
    settings.master_key = MasterKeySource::DevFile(dir.join("master.key"));
    settings.job_workers = 0;
    let mut ingest = IngestSettings::new(hub_url.clone());
    ingest.site_sync_interval = Duration::from_millis(500);
    ingest.tenant_refresh = Duration::from_millis(300);
    settings.ingest = Some(ingest);
    settings.leaf_auth = Some(serviceradar_hub::leaf_auth::LeafAuthSettings::new(
        hub_url.clone(),
    ));
    let mut core = support::spawn(tmp, settings).await;
    // The bundle's agent dials this platform's gateway.
    core.settings.provisioning.gateway_url = format!("https://localhost:{}", core.gateway_port);

    let acme = core.tenant("acme").await;
    let plant = core
        .provisioned_site(&acme, "Plant", "plant", leaf_port)
        .await;

    // The bundle, unpacked, with the agent binary beside setup.sh (as the
    // README says), installed by its own setup.sh.
    let bundle = serviceradar_provisioning::build_site_bundle(
        &core.store,
        &core.pki,
        &core.settings.provisioning,
        TenantScope::for_system_task(acme.id),
        plant.id,
    )
    .await
    .expect("bundle");
    let unpack = dir.join("bundle");
    std::fs::create_dir_all(&unpack).expect("mkdir");
    std::fs::write(unpack.join("b.tar.gz"), &bundle.bytes).expect("write");
    run(std::process::Command::new("tar")
        .arg("xzf")
        .arg("b.tar.gz")
        .current_dir(&unpack));
    let root = unpack.join(bundle.file_name.trim_end_matches(".tar.gz"));
    std::fs::copy(
        env!("CARGO_BIN_EXE_serviceradar-agent"),
        root.join("serviceradar-agent"),
    )
    .expect("agent beside setup.sh");
    let prefix = dir.join("edge");
    let setup = run(std::process::Command::new("bash")
        .arg("setup.sh")
        .arg("--prefix")
        .arg(&prefix)
        .current_dir(&root));
    let conf_dir = prefix.join("etc/serviceradar/nats");
    assert!(
        setup.contains("device-auth.conf (device authorization keys made here)")
            && setup.contains("nats-server -t: valid"),
        "setup.sh makes the callout keys and checks the config:\n{setup}"
    );
    assert!(conf_dir.join("device-auth.seeds").is_file());
    let ca = conf_dir.join("certs/tenant-ca.pem");

    // A second run keeps the keys (the leaf's include must not change).
    let include = std::fs::read_to_string(conf_dir.join("device-auth.conf")).expect("include");
    run(std::process::Command::new("bash")
        .arg("setup.sh")
        .arg("--prefix")
        .arg(&prefix)
        .current_dir(&root));
    assert_eq!(
        std::fs::read_to_string(conf_dir.join("device-auth.conf")).expect("include"),
        include,
        "setup.sh run again keeps the callout keys"
    );

    // The hub, then the leaf and the agent as their units start them.
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
    let leaf = NatsServer::start_file(&prefix, "leaf", &conf_dir.join("nats-leaf.conf"), leaf_port)
        .expect("leaf starts");
    wait_for_port(leaf_monitor, "leaf monitoring", WAIT).expect("leaf monitoring");
    let agent_log = dir.join("agent.log");
    let log_file = std::fs::File::create(&agent_log).expect("log");
    let mut agent = tokio::process::Command::new(prefix.join("usr/local/bin/serviceradar-agent"))
        .arg("--config")
        .arg(conf_dir.join("agent.toml"))
        .env("SERVICERADAR_AGENT_LOG", "info,async_nats=warn")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log"))
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .expect("agent starts");
    let log = || std::fs::read_to_string(&agent_log).unwrap_or_default();

    // Devices: one registered (certificate for its own CSR), one whose
    // certificate names the site but was never registered.
    let certs = dir.join("devices");
    std::fs::create_dir_all(&certs).expect("mkdir");
    let scoped = core.store.scoped(TenantScope::for_system_task(acme.id));
    let device = scoped
        .create_device(
            plant.id,
            &DeviceName::parse("sensor-1").expect("name"),
            DeviceLimits::DEFAULT,
        )
        .await
        .expect("device registered");
    let (key, csr) = serviceradar_pki::new_key_and_request("device").expect("csr");
    let cert = core
        .pki
        .issue_device_certificate(
            &core.store,
            &device,
            &serviceradar_pki::CertificateRequest::from_pem(&csr).expect("csr"),
            Duration::from_secs(7 * 24 * 3600),
        )
        .await
        .expect("device certificate");
    let (a_cert, a_key) = (certs.join("a.pem"), certs.join("a-key.pem"));
    std::fs::write(&a_cert, &cert.certificate_pem).expect("write");
    std::fs::write(&a_key, key.as_bytes()).expect("write");
    let unknown = uuid::Uuid::now_v7();
    let (u_cert, u_key): (PathBuf, PathBuf) = {
        let tenant_ca = core.pki.tenant_ca(&core.store, &acme).await.expect("ca");
        let (key, csr) = serviceradar_pki::new_key_and_request("device").expect("csr");
        let cert = serviceradar_pki::issue_for_request(
            &tenant_ca,
            serviceradar_pki::TenantRef {
                id: acme.id.as_uuid(),
                slug: "acme",
            },
            serviceradar_pki::SiteRef {
                id: plant.id.as_uuid(),
                slug: "plant",
            },
            serviceradar_pki::RequestProfile::Device { device_id: unknown },
            &serviceradar_pki::CertificateRequest::from_pem(&csr).expect("csr"),
            &core.pki.issue_options(),
        )
        .expect("certificate");
        let files = (certs.join("u.pem"), certs.join("u-key.pem"));
        std::fs::write(&files.0, format!("{}{}", cert.cert_pem, cert.chain_pem)).expect("write");
        std::fs::write(&files.1, key.as_bytes()).expect("write");
        files
    };

    // The registered device gets in once the site copied the registry.
    let deadline = Instant::now() + WAIT;
    let device_client = loop {
        match connect(leaf_port, &ca, &a_cert, &a_key, "sensor-1").await {
            Ok(client) => break client,
            Err(e) => {
                if let Ok(Some(status)) = agent.try_wait() {
                    panic!("the agent exited ({status}):\n{}", log());
                }
                assert!(
                    Instant::now() < deadline,
                    "the registered device was never admitted ({e}); agent log:\n{}\nleaf log:\n{}",
                    log(),
                    leaf.log()
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    device_client
        .publish(format!("device.{}.status", device.id), "ok".into())
        .await
        .expect("publish");
    device_client.flush().await.expect("flush");

    // The unregistered one is refused, the reason in the agent's log.
    // Every attempt is refused. (Under heavy load an attempt was seen
    // refused by the leaf without its request reaching the service or the
    // leaf logging it, so the reason is awaited over several attempts.)
    let reason = format!("device {unknown} is not registered");
    let mut attempts = 0;
    while !log().contains(&reason) {
        attempts += 1;
        assert!(
            attempts <= 10,
            "the agent did not log {reason:?}:\n{}\nleaf log:\n{}",
            log(),
            leaf.log()
        );
        match connect(leaf_port, &ca, &u_cert, &u_key, "intruder").await {
            Ok(_) => panic!("an unregistered device connected"),
            Err(e) => assert!(
                e.to_string().contains("authorization violation"),
                "refused for another reason: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The agent's own connection (the buffer stream) went through the
    // callout too.
    let deadline = Instant::now() + WAIT;
    while !log().contains("buffer stream") {
        assert!(
            Instant::now() < deadline,
            "the agent did not create the buffer stream through the callout:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !log().contains("cannot create the site's buffer stream"),
        "{}",
        log()
    );
    drop(device_client);
    let _ = agent.kill().await;
    drop(leaf);
}
