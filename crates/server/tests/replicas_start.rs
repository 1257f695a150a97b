//! Several replicas started at once on an empty PostgreSQL database (a
//! Kubernetes Deployment's first rollout: `deploy/helm/serviceradar`) all
//! start: one creates the first tenant and owner, the others find it, and
//! every replica then serves the same installation.

mod support;

use serviceradar_identity::MasterKeySource;
use serviceradar_server::app::{Application, Settings};

const REPLICAS: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_on_an_empty_database_all_start() {
    support::init();
    let url = tokio::task::spawn_blocking(|| serviceradar_testkit::postgres().create_database())
        .await
        .expect("database");
    // The same master key on every replica, as the chart's Secret gives.
    let key = format!("k1:{}", "ab".repeat(32));
    let builds = (0..REPLICAS).map(|_| {
        let mut settings = Settings::new(&url);
        settings.master_key = MasterKeySource::Text(key.clone().into());
        settings.bootstrap.admin_password = Some(support::OWNER_PASSWORD.into());
        settings.job_workers = 0;
        tokio::spawn(Application::build(settings))
    });
    let mut apps = Vec::new();
    for build in builds {
        apps.push(
            build
                .await
                .expect("build task")
                .unwrap_or_else(|e| panic!("a replica failed to start: {e:#}")),
        );
    }
    let created = apps
        .iter()
        .filter(|app| app.bootstrap.created.is_some())
        .count();
    assert_eq!(created, 1, "exactly one replica bootstraps");
    let tenants = apps[0].store().list_tenants().await.expect("tenants");
    assert_eq!(tenants.len(), 1, "{tenants:?}");
    for app in &apps {
        let again = serviceradar_provisioning::bootstrap::bootstrap(
            app.store(),
            app.pki(),
            &serviceradar_provisioning::bootstrap::BootstrapSettings::default(),
        )
        .await
        .expect("bootstrap on a bootstrapped database");
        assert!(again.created.is_none());
        let root = app.pki().root_ca(app.store()).await.expect("root CA");
        let first = apps[0]
            .pki()
            .root_ca(apps[0].store())
            .await
            .expect("root CA");
        assert_eq!(root.cert_pem(), first.cert_pem(), "one root CA for all");
    }
}

/// The bootstrap step itself, raced: many callers on one empty database,
/// every one succeeds and one tenant exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bootstraps_create_one_tenant() {
    use std::sync::Arc;
    support::init();
    let url = tokio::task::spawn_blocking(|| serviceradar_testkit::postgres().create_database())
        .await
        .expect("database");
    let store = serviceradar_store::Store::connect(&url, 16)
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let keyring = MasterKeySource::Text(format!("k1:{}", "cd".repeat(32)).into())
        .load()
        .expect("key");
    let pki = Arc::new(serviceradar_identity::Pki::new(
        keyring,
        serviceradar_pki::DEFAULT_TRUST_DOMAIN,
    ));
    // The root CA first, as every replica's start creates it before.
    pki.root_ca(&store).await.expect("root CA");
    let settings = serviceradar_provisioning::bootstrap::BootstrapSettings {
        admin_password: Some(support::OWNER_PASSWORD.into()),
        ..Default::default()
    };
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, pki, settings, barrier) = (
                store.clone(),
                pki.clone(),
                settings.clone(),
                barrier.clone(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                serviceradar_provisioning::bootstrap::bootstrap(&store, &pki, &settings).await
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        let outcome = task
            .await
            .expect("task")
            .unwrap_or_else(|e| panic!("a concurrent bootstrap failed: {e:#}"));
        created += usize::from(outcome.created.is_some());
    }
    assert_eq!(created, 1);
    assert_eq!(store.count_tenants().await.expect("count"), 1);
}
