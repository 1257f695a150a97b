//! Devices at the site leaf (issue 16): a real hub, the control plane (with
//! ingestion, which keeps the device registry's bucket on the hub), a real
//! leaf `nats-server` installed from the site bundle with device
//! authorization on, and the edge authorization service. Devices connect
//! with certificates issued for their own CSRs.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serviceradar_agent::device_auth::{self, DeviceAuthSettings};
use serviceradar_domain::TenantScope;
use serviceradar_domain::device::{DeviceLimits, DeviceName};
use serviceradar_domain::resources::{EdgeSite, Tenant};
use serviceradar_hub::config::{HubOptions, write_hub_config};
use serviceradar_identity::MasterKeySource;
use serviceradar_ingest::IngestSettings;
use serviceradar_store::Device;
use serviceradar_testkit::{NatsServer, check_nats_config, free_port, wait_for_port};

const WAIT: Duration = Duration::from_secs(30);

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn log_buffer() -> &'static std::sync::Mutex<Vec<u8>> {
    static BUF: std::sync::OnceLock<std::sync::Mutex<Vec<u8>>> = std::sync::OnceLock::new();
    BUF.get_or_init(Default::default)
}

/// Everything logged so far.
fn captured() -> String {
    String::from_utf8_lossy(&log_buffer().lock().expect("log lock")).into_owned()
}

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        log_buffer()
            .lock()
            .expect("log lock")
            .extend_from_slice(buf);
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A device's certificate chain and key on disk.
struct DeviceFiles {
    cert: PathBuf,
    key: PathBuf,
}

async fn register(core: &support::Core, tenant: &Tenant, site: &EdgeSite, name: &str) -> Device {
    register_with(core, tenant, site, name, DeviceLimits::DEFAULT).await
}

async fn register_with(
    core: &support::Core,
    tenant: &Tenant,
    site: &EdgeSite,
    name: &str,
    limits: DeviceLimits,
) -> Device {
    core.store
        .scoped(TenantScope::for_system_task(tenant.id))
        .create_device(site.id, &DeviceName::parse(name).expect("name"), limits)
        .await
        .expect("device registered")
}

/// A certificate for `device` from a CSR made here (as the device would).
async fn certify(
    core: &support::Core,
    device: &Device,
    dir: &Path,
    validity: Duration,
) -> DeviceFiles {
    let (key, csr) = serviceradar_pki::new_key_and_request("device").expect("csr");
    let request = serviceradar_pki::CertificateRequest::from_pem(&csr).expect("csr parses");
    let cert = core
        .pki
        .issue_device_certificate(&core.store, device, &request, validity)
        .await
        .expect("device certificate");
    let files = DeviceFiles {
        cert: dir.join(format!("{}.pem", device.id)),
        key: dir.join(format!("{}-key.pem", device.id)),
    };
    std::fs::write(&files.cert, &cert.certificate_pem).expect("write");
    std::fs::write(&files.key, key.as_bytes()).expect("write");
    files
}

async fn connect(
    leaf_port: u16,
    ca: &Path,
    files: &DeviceFiles,
    name: &str,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(ca.to_path_buf())
        .add_client_certificate(files.cert.clone(), files.key.clone())
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .connect(format!("tls://127.0.0.1:{leaf_port}"))
        .await
}

/// Names of the leaf's client connections (its monitoring `/connz`).
fn connection_names(monitor: u16) -> Vec<String> {
    let body = serviceradar_testkit::http_get(monitor, "/connz?limit=1000").unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    json["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

/// Whether `subscriber` gets a message on `subject` within `wait`.
async fn receives(subscriber: &mut async_nats::Subscriber, wait: Duration) -> Option<String> {
    tokio::time::timeout(wait, subscriber.next())
        .await
        .ok()
        .flatten()
        .map(|m| m.subject.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_confined_at_the_leaf_and_revocation_outlives_a_wan_outage() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info,async_nats=warn")
        .with_ansi(false)
        .with_writer(|| Capture)
        .try_init();
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
    let core = support::spawn(tmp, settings).await;

    // Two tenants; acme (with an owner, for the API) has the site under
    // test and another one.
    serviceradar_provisioning::tenants::create_tenant(
        &core.store,
        &core.pki,
        serviceradar_provisioning::tenants::NewTenant {
            slug: "acme",
            name: None,
            owner_email: "owner@acme.example.com",
            owner_password: Some("a long enough password for acme"),
        },
    )
    .await
    .expect("tenant acme");
    let acme = core.tenant("acme").await;
    let beta = core.tenant("beta").await;
    let plant = core
        .provisioned_site(&acme, "Plant", "plant", leaf_port)
        .await;
    let lab = core
        .provisioned_site(&acme, "Lab", "lab", free_port())
        .await;
    let beta_site = core
        .provisioned_site(&beta, "Depot", "depot", free_port())
        .await;

    // The bundle, installed; the edge makes its callout keys, then the leaf
    // config (which includes them) is valid.
    // (The edge makes them where setup.sh installs the config, which it
    // checks with `nats-server -t`.)
    let edge_conf = dir.join("edge/etc/serviceradar/nats");
    std::fs::create_dir_all(&edge_conf).expect("mkdir");
    device_auth::keys::init(&edge_conf).expect("callout keys");
    let conf_dir = support::install_bundle(&core, &acme, &plant, &dir).await;
    assert_eq!(conf_dir, edge_conf);
    let config = conf_dir.join("nats-leaf.conf");
    assert!(
        std::fs::read_to_string(&config)
            .expect("config")
            .contains("include \"device-auth.conf\""),
        "device authorization is rendered"
    );
    check_nats_config(&config).expect("leaf config with the callout is valid");
    let ca = conf_dir.join("certs/tenant-ca.pem");

    // Hub (every tenant preloaded), then the leaf.
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
    let hub = NatsServer::start_file(&hub_dir, "hub", &files.config_path, hub_client)
        .expect("hub starts");
    let prefix = dir.join("edge");
    let leaf = NatsServer::start_file(&prefix, "leaf", &config, leaf_port).expect("leaf starts");
    wait_for_port(leaf_monitor, "leaf monitoring", WAIT).expect("leaf monitoring");

    // Devices: a, b and c at the plant (b with a small payload limit),
    // one at the lab, one of beta's, one revoked, one never registered
    // (its row deleted with a site), one whose certificate expires.
    let certs = dir.join("devices");
    std::fs::create_dir_all(&certs).expect("mkdir");
    let week = Duration::from_secs(7 * 24 * 3600);
    let a = register(&core, &acme, &plant, "sensor-a").await;
    let a_files = certify(&core, &a, &certs, week).await;
    let small = DeviceLimits {
        max_payload: 1024,
        ..DeviceLimits::DEFAULT
    };
    let b = register_with(&core, &acme, &plant, "sensor-b", small).await;
    let b_files = certify(&core, &b, &certs, week).await;
    let c = register(&core, &acme, &plant, "sensor-c").await;
    let c_files = certify(&core, &c, &certs, week).await;
    let at_lab = register(&core, &acme, &lab, "sensor-lab").await;
    let at_lab_files = certify(&core, &at_lab, &certs, week).await;
    let betas = register(&core, &beta, &beta_site, "sensor-beta").await;
    let betas_files = certify(&core, &betas, &certs, week).await;
    let revoked = register(&core, &acme, &plant, "sensor-revoked").await;
    let revoked_files = certify(&core, &revoked, &certs, week).await;
    let scoped = core.store.scoped(TenantScope::for_system_task(acme.id));
    scoped.revoke_device(revoked.id).await.expect("revoke");
    let expiring = register(&core, &acme, &plant, "sensor-expiring").await;
    let expiring_files = certify(&core, &expiring, &certs, Duration::from_secs(1)).await;
    // A certificate of the tenant CA naming a plant device that was never
    // registered.
    let unknown = uuid::Uuid::now_v7();
    let unknown_files = {
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
        let files = DeviceFiles {
            cert: certs.join("unknown.pem"),
            key: certs.join("unknown-key.pem"),
        };
        std::fs::write(&files.cert, format!("{}{}", cert.cert_pem, cert.chain_pem)).expect("write");
        std::fs::write(&files.key, key.as_bytes()).expect("write");
        files
    };

    // Before the registry was ever copied, no device gets in.
    let auth_settings = {
        let mut s = DeviceAuthSettings::new(
            format!("tls://127.0.0.1:{leaf_port}"),
            &conf_dir,
            acme.id.as_uuid(),
            plant.id.as_uuid(),
            "plant",
        );
        s.resync_interval = Duration::from_secs(2);
        s
    };
    let service = device_auth::start(auth_settings.clone())
        .await
        .expect("the edge authorization service starts");
    wait_until("the leaf joins the hub", WAIT, || async {
        !serviceradar_testkit::leafz(hub_monitor).is_empty()
    })
    .await;
    wait_until("the registry is copied to the site", WAIT, || async {
        service.registry().is_synced() && service.registry().lookup(a.id.as_uuid()).is_ok()
    })
    .await;

    // A collector (certificate from the tenant CA) keeps its rights, except
    // publishing device data.
    let collector = support_collector(&core, &acme, &certs, leaf_port, &ca).await;
    let mut watch_all = collector.subscribe("edge.>").await.expect("subscribe");
    collector.flush().await.expect("flush");

    // The site's buffer exists once ingestion made it through the hub: the
    // first message a device publishes with an acknowledgement is its
    // status, retried until the leaf's buffer takes it (the same message
    // id, so a retry never stores it twice).
    let device_a = connect(leaf_port, &ca, &a_files, "device-a")
        .await
        .expect("a registered device connects");
    let mapped =
        |device: &Device, rest: &str| format!("edge.acme.plant.device.{}.{rest}", device.id);
    let status = format!("device.{}.status", a.id);
    wait_until("the site's buffer takes a device's message", WAIT, || {
        let js = async_nats::jetstream::new(device_a.clone());
        let status = status.clone();
        async move { acked(&js, &status, "status-a", b"online".to_vec()).await }
    })
    .await;
    assert_eq!(
        receives(&mut watch_all, Duration::from_secs(5)).await,
        Some(mapped(&a, "status")),
        "the leaf maps a device's status into its site's buffer"
    );
    // (Attempts made before the buffer existed reached the collector too.)
    while let Some(subject) = receives(&mut watch_all, Duration::from_millis(300)).await {
        assert_eq!(subject, mapped(&a, "status"));
    }

    // A registered device publishes within its subjects only.
    let own = format!("device.{}.metrics.cpu", a.id);
    device_a
        .publish(own.clone(), metric("cpu", 100.0, None).into())
        .await
        .expect("publish");
    device_a.flush().await.expect("flush");
    assert_eq!(
        receives(&mut watch_all, Duration::from_secs(5)).await,
        Some(mapped(&a, "metrics.cpu"))
    );
    // Another device's subject (as devices name it and as the leaf maps
    // it), another site's, and subjects outside the device space.
    for foreign in [
        format!("device.{}.metrics.cpu", b.id),
        format!("device.{}.status", b.id),
        mapped(&b, "metrics.cpu"),
        format!("edge.acme.lab.device.{}.metrics.cpu", a.id),
        format!("device.{}.cmd", a.id),
        "edge.acme.plant.events.x".to_owned(),
    ] {
        let _ = device_a
            .publish(foreign, metric("cpu", -1.0, None).into())
            .await;
    }
    let _ = device_a.flush().await;
    // Nor can a collector publish device data.
    for forged in [
        format!("device.{}.metrics.cpu", a.id),
        mapped(&a, "metrics.cpu"),
    ] {
        collector
            .publish(forged, metric("cpu", -2.0, None).into())
            .await
            .expect("publish");
    }
    collector.flush().await.expect("flush");
    assert_eq!(
        receives(&mut watch_all, Duration::from_millis(800)).await,
        None,
        "a publish outside the device's subjects arrived"
    );
    // Its command subject reaches it; another device's does not.
    let mut cmd = device_a
        .subscribe(format!("device.{}.cmd", a.id))
        .await
        .expect("subscribe");
    let mut stolen = device_a
        .subscribe(format!("device.{}.cmd", b.id))
        .await
        .expect("subscribe (refused by the leaf)");
    device_a.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(300)).await;
    collector
        .publish(format!("device.{}.cmd", a.id), "reboot".into())
        .await
        .expect("publish");
    collector
        .publish(format!("device.{}.cmd", b.id), "reboot".into())
        .await
        .expect("publish");
    collector.flush().await.expect("flush");
    assert!(receives(&mut cmd, Duration::from_secs(5)).await.is_some());
    assert_eq!(
        receives(&mut stolen, Duration::from_millis(500)).await,
        None
    );

    // Acknowledged metrics of a (whose payload names b: ignored) and b.
    let js_a = async_nats::jetstream::new(device_a.clone());
    for i in 0..5 {
        assert!(
            acked(
                &js_a,
                &own,
                &format!("a-{i}"),
                metric("cpu", f64::from(i), Some(b.id)).into_bytes()
            )
            .await,
            "metric {i} of a"
        );
    }
    {
        let device_b = connect(leaf_port, &ca, &b_files, "device-b")
            .await
            .expect("b connects");
        let js_b = async_nats::jetstream::new(device_b.clone());
        for i in 0..3 {
            assert!(
                acked(
                    &js_b,
                    &format!("device.{}.metrics.temp", b.id),
                    &format!("b-{i}"),
                    metric("temp", f64::from(20 + i), None).into_bytes()
                )
                .await,
                "metric {i} of b"
            );
        }
    }
    wait_until("a's and b's data is stored", WAIT, || async {
        stored(&core, &acme, &a, Kind::Metric).await.len() == 6
            && stored(&core, &acme, &b, Kind::Metric).await.len() == 3
    })
    .await;

    // Reconnects leave no session behind: the service forgets a device's
    // connection when the leaf reports it closed.
    for i in 0..20 {
        let again = connect(leaf_port, &ca, &b_files, &format!("device-b-{i}"))
            .await
            .expect("b reconnects");
        again.flush().await.expect("flush");
        drop(again);
    }
    wait_until(
        "the closed connections are forgotten",
        Duration::from_secs(10),
        || async { service.sessions().len() == 1 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        service.sessions().len(),
        1,
        "only device a's open connection is kept"
    );
    // The collector's own view got the commands and the data.
    while receives(&mut watch_all, Duration::from_millis(300))
        .await
        .is_some()
    {}

    // Over-limit payloads: NOT enforced per device. nats-server 2.15 drops
    // the payload and subscription limits of a user an auth callout issues
    // in server config mode (it clears the JWT before applying limits), so
    // device b's 1 KiB limit does not hold at the leaf; only the leaf's own
    // `max_payload` does. Kept visible here until that is solved.
    let _ = &b_files;

    // Refused: revoked, other site, unknown (its site deleted), other
    // tenant (TLS: not this tenant's CA), expired.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (what, files) in [
        ("revoked", &revoked_files),
        ("other site", &at_lab_files),
        ("unregistered", &unknown_files),
        ("other tenant", &betas_files),
        ("expired", &expiring_files),
    ] {
        assert!(
            connect(leaf_port, &ca, files, what).await.is_err(),
            "a {what} device connected"
        );
    }
    let log = leaf.log();
    for reason in [
        format!("device {} is revoked", revoked.id),
        format!("device {} is registered at another site", at_lab.id),
        format!("device {unknown} is not registered"),
    ] {
        assert!(
            captured().contains(&reason),
            "the service did not log {reason:?}:\n{}",
            captured()
        );
    }
    assert!(
        log.contains("TLS handshake error"),
        "other tenant's and expired certificates fail TLS:\n{log}"
    );

    // The WAN goes down. Registered devices still connect and publish;
    // a device revoked meanwhile keeps working until the link returns.
    drop(hub);
    wait_until("the leaf notices the hub is gone", WAIT, || async {
        serviceradar_testkit::http_get(leaf_monitor, "/leafz")
            .is_some_and(|b| b.contains("\"leafnodes\": 0") || b.contains("\"leafnodes\":0"))
    })
    .await;
    let device_c = connect(leaf_port, &ca, &c_files, "device-c")
        .await
        .expect("a registered device connects while the hub is down");
    let c_subject = format!("device.{}.metrics.cpu", c.id);
    device_c
        .publish(c_subject.clone(), metric("cpu", 100.0, None).into())
        .await
        .expect("publish");
    device_c.flush().await.expect("flush");
    assert_eq!(
        receives(&mut watch_all, Duration::from_secs(5)).await,
        Some(mapped(&c, "metrics.cpu"))
    );
    // The leaf's buffer acknowledges while the hub is away.
    let js_c = async_nats::jetstream::new(device_c.clone());
    for i in 0..5 {
        assert!(
            acked(
                &js_c,
                &c_subject,
                &format!("c-{i}"),
                metric("cpu", f64::from(i), None).into_bytes()
            )
            .await,
            "metric {i} of c, hub down"
        );
    }
    scoped.revoke_device(a.id).await.expect("revoke a");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        connection_names(leaf_monitor).contains(&"device-a".to_owned()),
        "the device stays connected while the revocation cannot reach the site"
    );

    // The hub returns: within 10 s of the link, a's connection is closed
    // and it is refused.
    let _hub = NatsServer::start_file(&hub_dir, "hub2", &files.config_path, hub_client)
        .expect("hub restarts");
    wait_until("the leaf rejoins the hub", WAIT, || async {
        !serviceradar_testkit::leafz(hub_monitor).is_empty()
    })
    .await;
    let linked = Instant::now();
    wait_until(
        "the revoked device's connection is closed",
        Duration::from_secs(10),
        || async { !connection_names(leaf_monitor).contains(&"device-a".to_owned()) },
    )
    .await;
    assert!(
        connect(leaf_port, &ca, &a_files, "device-a-again")
            .await
            .is_err(),
        "the revoked device reconnected"
    );
    assert!(linked.elapsed() < Duration::from_secs(10));
    assert!(
        connection_names(leaf_monitor).contains(&"device-c".to_owned()),
        "other devices stay connected"
    );

    // Everything buffered at the site reaches the platform once, each
    // record with its own device, of its tenant and site.
    wait_until("c's buffered data is stored", WAIT, || async {
        stored(&core, &acme, &c, Kind::Metric).await.len() == 6
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let values = |records: &[StoredRecord]| {
        let mut v: Vec<i64> = records.iter().map(|r| r.value as i64).collect();
        v.sort_unstable();
        v
    };
    for (device, kind, expected) in [
        (&a, Kind::Metric, vec![0, 1, 2, 3, 4, 100]),
        (&b, Kind::Metric, vec![20, 21, 22]),
        (&c, Kind::Metric, vec![0, 1, 2, 3, 4, 100]),
    ] {
        let records = stored(&core, &acme, device, kind).await;
        assert_eq!(values(&records), expected, "{}", device.id);
        for r in &records {
            assert_eq!(r.device_id.as_deref(), Some(device.id.to_string().as_str()));
            assert!(
                r.source.starts_with(&format!("plant.device.{}", device.id)),
                "{}",
                r.source
            );
        }
    }
    let statuses = stored(&core, &acme, &a, Kind::Event).await;
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].message, "online");
    // Nothing of a device is stored under another tenant.
    let beta_metrics = core
        .store
        .scoped(TenantScope::for_system_task(beta.id))
        .list_telemetry(Kind::Metric, TimeRange::default(), &PageRequest::first())
        .await
        .expect("list");
    assert!(beta_metrics.items.is_empty());
    // Through the API: per device and per site, with a time range.
    let api = support::Api::new(&core, "acme", "owner@acme.example.com").await;
    let (code, page) = api
        .get(&format!("/metrics?device_id={}&limit=200", c.id))
        .await;
    assert!(code.is_success(), "{code} {page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(6), "{page}");
    assert_eq!(page["items"][0]["device_id"], c.id.to_string());
    let (_, page) = api
        .get(&format!("/metrics?site_id={}&limit=200", plant.id))
        .await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(15), "{page}");
    let (_, page) = api
        .get(&format!("/metrics?site_id={}&limit=200", lab.id))
        .await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(0), "{page}");
    let (_, page) = api
        .get(&format!("/events?device_id={}&from=0&to=1", a.id))
        .await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(0), "{page}");
    let (code, _) = api.get("/metrics?device_id=not-a-uuid").await;
    assert_eq!(code, reqwest::StatusCode::BAD_REQUEST);

    drop(device_a);
    service.stop().await;
    drop(leaf);
}

use serviceradar_domain::telemetry::TelemetryKind as Kind;
use serviceradar_store::{PageRequest, StoredRecord, TelemetryFilter, TimeRange};

/// A metric payload; `claims` puts a device id in it (which must not count).
fn metric(name: &str, value: f64, claims: Option<serviceradar_domain::DeviceId>) -> String {
    let mut body = serde_json::json!({ "name": name, "value": value });
    if let Some(other) = claims {
        body["device_id"] = other.to_string().into();
    }
    body.to_string()
}

/// Publishes with an acknowledgement (a JetStream publish, de-duplicated
/// by `id`); whether the site's buffer acknowledged it.
async fn acked(
    js: &async_nats::jetstream::Context,
    subject: &str,
    id: &str,
    payload: Vec<u8>,
) -> bool {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    match js
        .publish_with_headers(subject.to_owned(), headers, payload.into())
        .await
    {
        Ok(ack) => tokio::time::timeout(Duration::from_secs(3), ack)
            .await
            .is_ok_and(|a| a.is_ok()),
        Err(_) => false,
    }
}

/// `device`'s stored records of `kind`.
async fn stored(
    core: &support::Core,
    tenant: &Tenant,
    device: &Device,
    kind: Kind,
) -> Vec<StoredRecord> {
    let filter = TelemetryFilter {
        device_id: Some(device.id.to_string()),
        ..TelemetryFilter::default()
    };
    core.store
        .scoped(TenantScope::for_system_task(tenant.id))
        .list_telemetry_filtered(
            kind,
            &filter,
            &PageRequest {
                limit: 200,
                after: None,
            },
        )
        .await
        .map(|p| p.items)
        .unwrap_or_default()
}

/// A collector connection at the site (certificate from the tenant CA).
async fn support_collector(
    core: &support::Core,
    tenant: &Tenant,
    dir: &Path,
    leaf_port: u16,
    ca: &Path,
) -> async_nats::Client {
    let tenant_ca = core.pki.tenant_ca(&core.store, tenant).await.expect("ca");
    let cert = serviceradar_pki::issue_collector(
        &tenant_ca,
        serviceradar_pki::TenantRef {
            id: tenant.id.as_uuid(),
            slug: tenant.slug.as_str(),
        },
        uuid::Uuid::now_v7(),
        &core.pki.issue_options(),
    )
    .expect("collector certificate");
    let files = DeviceFiles {
        cert: dir.join("collector.pem"),
        key: dir.join("collector-key.pem"),
    };
    std::fs::write(&files.cert, cert.full_chain_pem()).expect("write");
    std::fs::write(&files.key, cert.key_pem.as_bytes()).expect("write");
    connect(leaf_port, ca, &files, "collector")
        .await
        .expect("a collector connects through the callout")
}
