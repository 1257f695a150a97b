//! The health sweeper's chores beyond sites and alerts: it folds the fleet
//! gauges' status changes (migration 0035), so they do not pile up on a
//! replica whose metrics listener is off.

use std::sync::Arc;
use std::time::Duration;

use serviceradar_domain::TenantScope;
use serviceradar_domain::validate::{DisplayName, ListenAddr, NatsUrl, Slug};
use serviceradar_health::{Health, HealthSettings};
use serviceradar_store::{NewSite, Store};

#[tokio::test]
async fn a_sweep_folds_the_status_changes_so_they_do_not_pile_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::connect(
        &format!("sqlite://{}", dir.path().join("s.db").display()),
        4,
    )
    .await
    .expect("sqlite");
    store.migrate().await.expect("migrate");
    let acme = store
        .create_tenant(
            &Slug::parse("acme").expect("slug"),
            &DisplayName::parse("acme").expect("name"),
        )
        .await
        .expect("tenant");
    store
        .scoped(TenantScope::for_system_task(acme.id))
        .create_site(
            &NewSite {
                name: DisplayName::parse("nyc").expect("name"),
                slug: Slug::parse("nyc").expect("slug"),
                nats_leaf_url: NatsUrl::parse("nats://10.0.0.1:4222").expect("url"),
                upstream_url: "tls://hub:7422".into(),
                local_listen: ListenAddr::parse("0.0.0.0:4222").expect("listen"),
            },
            None,
        )
        .await
        .expect("site");

    let health = Health::new(
        store.clone(),
        Arc::new(HealthSettings {
            agent_offline_after: Duration::from_secs(60),
            alert_after: Duration::from_secs(300),
            sweep_interval: Duration::from_secs(15),
        }),
    );
    health.sweep().await.expect("sweep");
    assert_eq!(
        store.fold_status_deltas().await.expect("fold"),
        0,
        "the sweep left changes unfolded"
    );
    let counts = store.fleet_counts().await.expect("counts");
    assert_eq!(counts.sites.len(), 1, "{counts:?}");
    assert_eq!(
        (counts.sites[0].status.as_str(), counts.sites[0].count),
        ("pending", 1)
    );
}
