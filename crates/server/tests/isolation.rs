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
use serviceradar_server::app::Settings;
use serviceradar_server::hub::{HubOptions, write_hub_config};
use serviceradar_server::pki::{MasterKeySource, Pki};
use serviceradar_store::Store;
use serviceradar_testkit::{NatsServer, free_port, wait_for_port};

mod support;

use support::{collector, install_site};

const WAIT: Duration = Duration::from_secs(30);
const SILENCE: Duration = Duration::from_millis(700);

async fn hub_user(
    dir: &Path,
    store: &Store,
    pki: &Pki,
    tenant: &Tenant,
    port: u16,
) -> async_nats::Client {
    let creds = pki.user_creds(store, tenant, "subscriber").await.unwrap();
    let path = dir.join(format!("{}-hub.creds", tenant.slug));
    std::fs::write(&path, creds.as_str()).unwrap();
    async_nats::ConnectOptions::with_credentials_file(path)
        .await
        .unwrap()
        .connect(format!("nats://127.0.0.1:{port}"))
        .await
        .unwrap()
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
    let (hub_client, hub_leaf, hub_monitor) = (free_port(), free_port(), free_port());
    let store = Store::connect(&format!("sqlite://{}", dir.join("core.db").display()), 4)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let pki = Arc::new(Pki::new(
        MasterKeySource::Ephemeral.load().unwrap(),
        serviceradar_pki::DEFAULT_TRUST_DOMAIN,
    ));
    let mut settings = Settings::new("sqlite://unused");
    settings.hub_leafnode_url = format!("tls://127.0.0.1:{hub_leaf}");
    settings.leaf_monitoring_listen = None;
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
    let (acme, beta) = (&tenants[0], &tenants[1]);
    let (acme_port, beta_port) = (free_port(), free_port());
    let acme_site = install_site(dir, &store, &pki, &settings, acme, "plant", acme_port).await;
    let beta_site = install_site(dir, &store, &pki, &settings, beta, "lab", beta_port).await;
    let (acme_root, acme_conf) = (acme_site.root, acme_site.config);
    let (beta_root, beta_conf) = (beta_site.root, beta_site.config);

    let hub_dir = dir.join("hub");
    let files = write_hub_config(
        &store,
        &pki,
        &HubOptions {
            client_listen: format!("127.0.0.1:{hub_client}"),
            leafnode_listen: format!("127.0.0.1:{hub_leaf}"),
            monitoring_listen: Some(format!("127.0.0.1:{hub_monitor}")),
            ..HubOptions::default()
        },
        &hub_dir,
    )
    .await
    .unwrap();
    let _hub = NatsServer::start_file(&hub_dir, "hub", &files.config_path, hub_client).unwrap();
    wait_for_port(hub_monitor, "hub monitoring", WAIT).unwrap();
    let _acme_leaf =
        NatsServer::start_file(acme_conf.parent().unwrap(), "leaf", &acme_conf, acme_port).unwrap();
    let _beta_leaf =
        NatsServer::start_file(beta_conf.parent().unwrap(), "leaf", &beta_conf, beta_port).unwrap();

    let acme_site = collector(dir, &store, &pki, acme, &acme_root, acme_port)
        .await
        .expect("acme collector connects to acme's leaf");
    let beta_site = collector(dir, &store, &pki, beta, &beta_root, beta_port)
        .await
        .expect("beta collector connects to beta's leaf");
    let acme_hub = hub_user(dir, &store, &pki, acme, hub_client).await;
    let beta_hub = hub_user(dir, &store, &pki, beta, hub_client).await;

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
        collector(dir, &store, &pki, beta, &acme_root, acme_port)
            .await
            .is_err(),
        "beta's collector certificate was accepted by acme's leaf"
    );
}
