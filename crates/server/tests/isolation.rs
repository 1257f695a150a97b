//! Tenant isolation enforced by nats-server: a real hub and two leaves of two
//! tenants, each installed from its own site bundle. Every cross-tenant
//! publish or subscribe delivers nothing (asserted with a timeout), on the hub
//! and across the leafnode links; same-tenant traffic flows.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serviceradar_domain::resources::Tenant;
use serviceradar_domain::validate::{DisplayName, Slug};
use serviceradar_identity::{MasterKeySource, Pki};
use serviceradar_server::app::Settings;
use serviceradar_store::Store;
use serviceradar_testkit::{NatsServer, free_port, leafz};

mod support;

use support::{HubPorts, collector, install_site, start_hub, start_leaf_auth};

const WAIT: Duration = Duration::from_secs(30);
const SILENCE: Duration = Duration::from_millis(700);

async fn hub_user(
    dir: &Path,
    store: &Store,
    pki: &Pki,
    tenant: &Tenant,
    port: u16,
) -> async_nats::Client {
    let creds = pki
        .user_creds(
            store,
            tenant,
            "subscriber",
            serviceradar_identity::ServiceUserLifetime::default().expires_at(),
        )
        .await
        .unwrap();
    let path = dir.join(format!("{}-hub.creds", tenant.slug));
    std::fs::write(&path, creds.as_str()).unwrap();
    async_nats::ConnectOptions::with_credentials_file(path)
        .await
        .unwrap()
        .connect(format!("nats://127.0.0.1:{port}"))
        .await
        .unwrap()
}

/// A control plane's store and PKI (SQLite, ephemeral master key) with
/// tenants `acme` and `beta` (CA and NATS account each), and site settings
/// whose leaves dial the hub's leafnode port in `ports`.
struct Platform {
    store: Store,
    pki: Arc<Pki>,
    settings: Settings,
    tenants: Vec<Tenant>,
}

async fn platform(dir: &Path, ports: HubPorts) -> Platform {
    let store = Store::connect(&format!("sqlite://{}", dir.join("core.db").display()), 4)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let pki = Arc::new(Pki::new(
        MasterKeySource::Ephemeral.load().unwrap(),
        serviceradar_pki::DEFAULT_TRUST_DOMAIN,
    ));
    let mut settings = Settings::new("sqlite://unused");
    settings.provisioning.hub_leafnode_url = format!("tls://127.0.0.1:{}", ports.leaf);
    settings.provisioning.leaf_monitoring_listen = None;
    let mut tenants = Vec::new();
    for slug in ["acme", "beta"] {
        let tenant = store
            .create_tenant(
                &Slug::parse(slug).unwrap(),
                &DisplayName::parse(slug).unwrap(),
            )
            .await
            .unwrap();
        pki.ensure_tenant_identity(&store, &tenant).await.unwrap();
        tenants.push(tenant);
    }
    Platform {
        store,
        pki,
        settings,
        tenants,
    }
}

/// A running hub with the leaf authorization service, and a leaf per
/// `(tenant, site slug)`, each installed from its own bundle in a directory
/// of its own (one box each) and started.
struct Linked {
    _hub: NatsServer,
    _leaf_auth: serviceradar_hub::leaf_auth::LeafAuthService,
    /// Per site, in the order asked: its bundle root and leaf port.
    sites: Vec<(std::path::PathBuf, u16)>,
    _leaves: Vec<NatsServer>,
}

async fn link_sites(
    dir: &Path,
    platform: &Platform,
    ports: HubPorts,
    sites: &[(&Tenant, &str)],
) -> Linked {
    let Platform {
        store,
        pki,
        settings,
        ..
    } = platform;
    let mut installed = Vec::new();
    for (tenant, slug) in sites {
        let port = free_port();
        let site_dir = dir.join(format!("{}-{slug}", tenant.slug));
        std::fs::create_dir_all(&site_dir).unwrap();
        let site = install_site(&site_dir, store, pki, settings, tenant, slug, port).await;
        installed.push((site, port));
    }
    let (hub, _) = start_hub(dir, store, pki, ports).await;
    let leaf_auth = start_leaf_auth(store, pki, ports.client).await;
    let mut leaves = Vec::new();
    for (site, port) in &installed {
        let conf = &site.config;
        leaves.push(NatsServer::start_file(conf.parent().unwrap(), "leaf", conf, *port).unwrap());
    }
    Linked {
        _hub: hub,
        _leaf_auth: leaf_auth,
        sites: installed
            .into_iter()
            .map(|(site, port)| (site.root, port))
            .collect(),
        _leaves: leaves,
    }
}

/// Publishes on `subject` from `from` until `sub` receives it (interest
/// crosses leafnode links asynchronously); panics after [`WAIT`].
async fn flows(from: &async_nats::Client, subject: &str, sub: &mut async_nats::Subscriber) {
    let deadline = Instant::now() + WAIT;
    loop {
        from.publish(subject.to_owned(), "same tenant".into())
            .await
            .unwrap();
        from.flush().await.unwrap();
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
            break;
        }
        assert!(Instant::now() < deadline, "{subject} never arrived");
    }
    // Drain extra copies.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {}
}

async fn silent(sub: &mut async_nats::Subscriber, what: &str) {
    if let Ok(Some(msg)) = tokio::time::timeout(SILENCE, sub.next()).await {
        panic!("{what}: received {:?} on {}", msg.payload, msg.subject);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_on_the_hub_and_across_leaves() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ports = HubPorts::free();
    let platform = platform(dir, ports).await;
    let (acme, beta) = (&platform.tenants[0], &platform.tenants[1]);
    let linked = link_sites(dir, &platform, ports, &[(acme, "plant"), (beta, "lab")]).await;
    let [(acme_root, acme_port), (beta_root, beta_port)] = [0, 1].map(|i| linked.sites[i].clone());
    let (store, pki) = (&platform.store, &platform.pki);

    let acme_site = collector(dir, store, pki, acme, &acme_root, acme_port)
        .await
        .expect("acme collector connects to acme's leaf");
    let beta_site = collector(dir, store, pki, beta, &beta_root, beta_port)
        .await
        .expect("beta collector connects to beta's leaf");
    let acme_hub = hub_user(dir, store, pki, acme, ports.client).await;
    let beta_hub = hub_user(dir, store, pki, beta, ports.client).await;

    // Everything beta can see, on the hub and at its site.
    let mut beta_hub_all = beta_hub.subscribe(">").await.unwrap();
    let mut beta_site_all = beta_site.subscribe(">").await.unwrap();
    beta_hub.flush().await.unwrap();
    beta_site.flush().await.unwrap();
    // Same-tenant traffic flows: acme's site -> hub, and beta's site -> hub.
    let mut acme_hub_events = acme_hub.subscribe("events.>").await.unwrap();
    acme_hub.flush().await.unwrap();
    flows(&acme_site, "events.acme.plant", &mut acme_hub_events).await;
    let mut beta_hub_events = beta_hub.subscribe("events.beta.>").await.unwrap();
    beta_hub.flush().await.unwrap();
    flows(&beta_site, "events.beta.lab", &mut beta_hub_events).await;
    while let Ok(Some(_)) =
        tokio::time::timeout(Duration::from_millis(300), beta_hub_all.next()).await
    {}
    while let Ok(Some(_)) =
        tokio::time::timeout(Duration::from_millis(300), beta_site_all.next()).await
    {}

    // acme, at its site and on the hub, publishing beta's subjects (and any
    // subject): nothing reaches beta anywhere.
    for subject in [
        "events.beta.lab",
        "edge.beta.lab.events.x",
        "metrics.beta.x",
        "anything",
    ] {
        acme_site
            .publish(subject, "from acme's site".into())
            .await
            .unwrap();
        acme_hub
            .publish(subject, "from acme on the hub".into())
            .await
            .unwrap();
    }
    acme_site.flush().await.unwrap();
    acme_hub.flush().await.unwrap();
    silent(
        &mut beta_hub_all,
        "beta's hub subscriber saw acme's traffic",
    )
    .await;
    silent(&mut beta_site_all, "beta's site saw acme's traffic").await;

    // acme subscribing to everything sees none of beta's traffic.
    let mut acme_hub_all = acme_hub.subscribe(">").await.unwrap();
    let mut acme_site_all = acme_site.subscribe(">").await.unwrap();
    acme_hub.flush().await.unwrap();
    acme_site.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for subject in ["events.beta.lab", "events.acme.plant", "logs.beta.x"] {
        beta_site
            .publish(subject, "from beta's site".into())
            .await
            .unwrap();
        beta_hub
            .publish(subject, "from beta on the hub".into())
            .await
            .unwrap();
    }
    beta_site.flush().await.unwrap();
    beta_hub.flush().await.unwrap();
    silent(
        &mut acme_hub_all,
        "acme's hub subscriber saw beta's traffic",
    )
    .await;
    silent(&mut acme_site_all, "acme's site saw beta's traffic").await;

    // A collector of beta cannot even connect to acme's leaf (tenant CA).
    assert!(
        collector(dir, store, pki, beta, &acme_root, acme_port)
            .await
            .is_err(),
        "beta's collector certificate was accepted by acme's leaf"
    );
}

/// The files a leaf presents to the hub: client certificate (with its
/// tenant CA), key and creds, as an installed site bundle has them.
struct LeafIdentity {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    creds: std::path::PathBuf,
}

fn installed_identity(config: &Path) -> LeafIdentity {
    let nats = config.parent().unwrap();
    LeafIdentity {
        cert: nats.join("certs/leaf-client.pem"),
        key: nats.join("certs/leaf-client-key.pem"),
        creds: nats.join("leaf.creds"),
    }
}

/// A leaf `nats-server` called `name` dialling the hub with `cert`/`key`
/// from one identity and `creds` from another.
fn leaf_with(
    dir: &Path,
    name: &str,
    hub_leaf: u16,
    root_ca: &Path,
    cert_of: &LeafIdentity,
    creds_of: &Path,
) -> NatsServer {
    let work = dir.join(name);
    std::fs::create_dir_all(&work).unwrap();
    let port = free_port();
    let config = format!(
        "server_name: \"{name}\"\nlisten: \"127.0.0.1:{port}\"\n\
         leafnodes {{\n  reconnect: 1\n  remotes = [{{\n    url: \"tls://127.0.0.1:{hub_leaf}\"\n\
         credentials: \"{creds}\"\n    tls {{ cert_file: \"{cert}\", key_file: \"{key}\", \
         ca_file: \"{ca}\" }}\n  }}]\n}}\n",
        creds = creds_of.display(),
        cert = cert_of.cert.display(),
        key = cert_of.key.display(),
        ca = root_ca.display(),
    );
    let path = work.join("leaf.conf");
    std::fs::write(&path, config).unwrap();
    NatsServer::start_file(&work, name, &path, port).unwrap()
}

/// Starts a leaf with [`leaf_with`] and waits until the leaf reports the
/// hub's authorization violation and the hub's log holds one more `reason`
/// than before; then checks the leaf never joined.
#[allow(clippy::too_many_arguments)]
async fn refused(
    dir: &Path,
    hub: &NatsServer,
    hub_leaf: u16,
    monitor: u16,
    root_ca: &Path,
    name: &str,
    cert_of: &LeafIdentity,
    creds_of: &Path,
    reason: &str,
) {
    let before = hub.log().matches(reason).count();
    let leaf = leaf_with(dir, name, hub_leaf, root_ca, cert_of, creds_of);
    let deadline = Instant::now() + WAIT;
    while !(leaf.log().contains("Authorization Violation")
        && hub.log().matches(reason).count() > before)
    {
        assert!(
            Instant::now() < deadline,
            "{name}: never refused with {reason:?}\nhub log:\n{}\nleaf log:\n{}",
            hub.log(),
            leaf.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !leafz(monitor).iter().any(|(n, _)| n == name),
        "{name} joined the hub: {:?}",
        leafz(monitor)
    );
}

/// The hub admits a leaf into a tenant's account only when its certificate
/// (tenant CA, SPIFFE tenant and site) matches its creds: the leaf
/// authorization callout. Another tenant's certificate with valid creds,
/// another site's creds, and a tenant-account user's creds are all refused,
/// while the genuine leaves join their own accounts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaves_are_admitted_only_with_their_own_certificate() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ports = HubPorts::free();
    let Platform {
        store,
        pki,
        settings,
        tenants,
    } = platform(dir, ports).await;
    let (acme, beta) = (&tenants[0], &tenants[1]);
    let acme_dir = dir.join("acme-plant");
    let yard_dir = dir.join("acme-yard");
    let beta_dir = dir.join("beta-lab");
    for d in [&acme_dir, &yard_dir, &beta_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let plant = install_site(
        &acme_dir,
        &store,
        &pki,
        &settings,
        acme,
        "plant",
        free_port(),
    )
    .await;
    let yard = install_site(
        &yard_dir,
        &store,
        &pki,
        &settings,
        acme,
        "yard",
        free_port(),
    )
    .await;
    let lab = install_site(&beta_dir, &store, &pki, &settings, beta, "lab", free_port()).await;
    let (plant_id, yard_id, lab_id) = (
        installed_identity(&plant.config),
        installed_identity(&yard.config),
        installed_identity(&lab.config),
    );

    let (hub, _) = start_hub(dir, &store, &pki, ports).await;
    let _leaf_auth = start_leaf_auth(&store, &pki, ports.client).await;

    let root_ca = dir
        .join("hub")
        .join(serviceradar_hub::config::names::ROOT_CA);
    let account_of = |tenant: &Tenant| {
        let (store, tenant) = (store.clone(), tenant.clone());
        async move {
            store
                .scoped(serviceradar_domain::TenantScope::for_system_task(tenant.id))
                .nats_account()
                .await
                .unwrap()
                .unwrap()
                .account_public_key
        }
    };
    let (acme_account, beta_account) = (account_of(acme).await, account_of(beta).await);

    // Beta's genuine leaf (its own certificate and creds) joins beta's account.
    let genuine = leaf_with(
        dir,
        "genuine-lab",
        ports.leaf,
        &root_ca,
        &lab_id,
        &lab_id.creds,
    );
    let deadline = Instant::now() + WAIT;
    while !leafz(ports.monitor)
        .iter()
        .any(|(n, a)| n == "genuine-lab" && *a == beta_account)
    {
        assert!(
            Instant::now() < deadline,
            "the genuine leaf never joined beta's account: {:?}\nhub log:\n{}\nleaf log:\n{}",
            leafz(ports.monitor),
            hub.log(),
            genuine.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Beta's certificate (issued by beta's CA) with acme's valid leaf creds.
    let mismatch = "does not match the credentials";
    let root = root_ca.as_path();
    let (monitor, leaf_port) = (ports.monitor, ports.leaf);
    refused(
        dir,
        &hub,
        leaf_port,
        monitor,
        root,
        "cross-tenant",
        &lab_id,
        &plant_id.creds,
        mismatch,
    )
    .await;
    // Acme's plant certificate with the creds of acme's yard site.
    refused(
        dir,
        &hub,
        leaf_port,
        monitor,
        root,
        "cross-site",
        &plant_id,
        &yard_id.creds,
        mismatch,
    )
    .await;
    // Acme's certificate with creds of a plain user of acme's account: such
    // users may connect as clients only, so nats-server refuses the leafnode
    // before any callout.
    let user_creds = pki
        .user_creds(
            &store,
            acme,
            "collector-ish",
            serviceradar_identity::ServiceUserLifetime::default().expires_at(),
        )
        .await
        .unwrap();
    let user_path = dir.join("acme-user.creds");
    std::fs::write(&user_path, user_creds.as_str()).unwrap();
    let error = "authentication error";
    refused(
        dir,
        &hub,
        leaf_port,
        monitor,
        root,
        "tenant-user",
        &plant_id,
        &user_path,
        error,
    )
    .await;

    // And the genuine acme leaf still joins acme's account, never beta's.
    let _plant = leaf_with(
        dir,
        "genuine-plant",
        ports.leaf,
        &root_ca,
        &plant_id,
        &plant_id.creds,
    );
    let deadline = Instant::now() + WAIT;
    while !leafz(ports.monitor)
        .iter()
        .any(|(n, a)| n == "genuine-plant" && *a == acme_account)
    {
        assert!(Instant::now() < deadline, "{:?}", leafz(ports.monitor));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        leafz(ports.monitor)
            .iter()
            .all(|(n, a)| n != "genuine-plant" || *a != beta_account)
    );
}

/// Within one tenant, a site's leaf reaches only its own site: the hub
/// admits it with permissions (`natsconf::leaf::site_link_permissions`), so
/// a compromised edge box (here: a client of the leaf, which may do anything
/// the leaf's own account allows) cannot call the hub's JetStream API (delete
/// the tenant's streams or read them), publish into another site's subjects,
/// or receive the hub's replies and other sites' traffic. Its own traffic
/// still flows both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_leaf_cannot_reach_other_sites_or_the_hubs_jetstream_api() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ports = HubPorts::free();
    let platform = platform(dir, ports).await;
    let acme = &platform.tenants[0];
    let linked = link_sites(dir, &platform, ports, &[(acme, "plant"), (acme, "lab")]).await;
    let [(plant_root, plant_port), (lab_root, lab_port)] = [0, 1].map(|i| linked.sites[i].clone());
    let (store, pki) = (&platform.store, &platform.pki);
    let at_plant = collector(dir, store, pki, acme, &plant_root, plant_port)
        .await
        .expect("a collector connects to the plant's leaf");
    let at_lab = collector(dir, store, pki, acme, &lab_root, lab_port)
        .await
        .expect("a collector connects to the lab's leaf");
    let hub = hub_user(dir, store, pki, acme, ports.client).await;

    // Both links are up, and a site's own traffic flows both ways.
    let mut hub_events = hub.subscribe("events.acme.>").await.unwrap();
    hub.flush().await.unwrap();
    flows(&at_plant, "events.acme.plant", &mut hub_events).await;
    flows(&at_lab, "events.acme.lab", &mut hub_events).await;
    let mut hub_plant_edge = hub.subscribe("edge.acme.plant.>").await.unwrap();
    hub.flush().await.unwrap();
    flows(&at_plant, "edge.acme.plant.events.x", &mut hub_plant_edge).await;
    let mut plant_commands = at_plant
        .subscribe("edge.acme.plant.device.>")
        .await
        .unwrap();
    at_plant.flush().await.unwrap();
    flows(&hub, "edge.acme.plant.device.d1.cmd", &mut plant_commands).await;

    // The hub's JetStream API is out of the leaf's reach: a stream of the
    // tenant's account survives the site's delete request, which gets no
    // answer.
    let created = hub
        .request(
            "$JS.API.STREAM.CREATE.PROBE",
            serde_json::to_vec(&serde_json::json!({
                "name": "PROBE", "subjects": ["events.acme.probe.>"], "storage": "memory"
            }))
            .unwrap()
            .into(),
        )
        .await
        .unwrap();
    let created: serde_json::Value = serde_json::from_slice(&created.payload).unwrap();
    assert!(created.get("error").is_none(), "{created}");
    for subject in [
        "$JS.hub.API.STREAM.DELETE.PROBE",
        "$JS.hub.API.STREAM.PURGE.PROBE",
        "$JS.hub.API.STREAM.INFO.PROBE",
        "$JS.hub.API.CONSUMER.CREATE.PROBE",
        "$JS.hub.API.INFO",
    ] {
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            at_plant.request(subject, "{}".into()),
        )
        .await;
        assert!(
            !matches!(answer, Ok(Ok(_))),
            "the site's leaf reached the hub's JetStream API: {subject}"
        );
    }
    let info = hub
        .request("$JS.API.STREAM.INFO.PROBE", "{}".into())
        .await
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.payload).unwrap();
    assert!(info.get("error").is_none(), "PROBE is gone: {info}");

    // Another site's subjects, and the hub's replies and telemetry, never
    // reach or leave the plant's leaf.
    let mut lab_edge = at_lab.subscribe("edge.acme.lab.>").await.unwrap();
    at_lab.flush().await.unwrap();
    let mut plant_inbox = at_plant.subscribe("_INBOX.>").await.unwrap();
    let mut plant_telemetry = at_plant.subscribe("events.acme.>").await.unwrap();
    at_plant.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    at_plant
        .publish("edge.acme.lab.events.spoofed", "from the plant".into())
        .await
        .unwrap();
    at_plant.flush().await.unwrap();
    silent(&mut lab_edge, "the plant published into the lab's subjects").await;
    // (Subscribed after the spoofing attempt, which the plant's leaf itself
    // delivers to its local subscribers.)
    let mut plant_other_site = at_plant.subscribe("edge.acme.lab.>").await.unwrap();
    at_plant.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    hub.publish("_INBOX.someone.else", "a reply".into())
        .await
        .unwrap();
    hub.publish("events.acme.lab", "the lab's telemetry".into())
        .await
        .unwrap();
    hub.flush().await.unwrap();
    at_lab
        .publish("edge.acme.lab.events.x", "the lab's own".into())
        .await
        .unwrap();
    at_lab.flush().await.unwrap();
    silent(&mut plant_inbox, "the plant received the hub's replies").await;
    silent(
        &mut plant_telemetry,
        "the plant received the tenant's telemetry",
    )
    .await;
    silent(
        &mut plant_other_site,
        "the plant received the lab's traffic",
    )
    .await;
}
