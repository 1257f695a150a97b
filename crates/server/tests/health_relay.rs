//! Live status changes reach subscribers on every replica: two control-plane
//! processes (here: two `Application`s) share one PostgreSQL database; a
//! change made by one is delivered to the other's subscribers through
//! PostgreSQL NOTIFY, and exactly once to its own.

use std::time::Duration;

use serviceradar_domain::AgentIdentity;
use serviceradar_domain::TenantScope;
use serviceradar_domain::state::SiteStatus;
use serviceradar_domain::validate::{DisplayName, ListenAddr, NatsUrl, Slug};
use serviceradar_health::HealthEvent;
use serviceradar_server::app::{Application, Settings};
use serviceradar_store::NewSite;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_changes_reach_every_replica() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = serviceradar_testkit::postgres().create_database();
    let settings = || {
        let mut s = Settings::new(&url);
        s.bootstrap.admin_password = Some("replica test password".into());
        s.job_workers = 0;
        s
    };
    let a = Application::build(settings()).await.unwrap();
    let b = Application::build(settings()).await.unwrap();
    let (health_a, health_b) = (a.health().clone(), b.health().clone());
    let store = a.store().clone();
    let mut stops = Vec::new();
    for app in [a, b] {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        stops.push(tx);
    }
    let tenant = store.tenant_by_slug("default").await.unwrap();
    let (site, _) = store
        .scoped(TenantScope::for_system_task(tenant.id))
        .create_site(
            &NewSite {
                name: DisplayName::parse("Replica site").unwrap(),
                slug: Slug::parse("replica").unwrap(),
                nats_leaf_url: NatsUrl::parse("nats://10.0.0.1:4222").unwrap(),
                upstream_url: "tls://hub:7422".into(),
                local_listen: ListenAddr::parse("0.0.0.0:4222").unwrap(),
            },
            None,
        )
        .await
        .unwrap();
    let mut on_a = health_a.subscribe();
    let mut on_b = health_b.subscribe();
    // B's relay LISTENs before A changes anything.
    tokio::time::timeout(Duration::from_secs(10), health_b.relay_listening())
        .await
        .expect("replica B's relay listens");

    // An agent reaches replica A: the site becomes active.
    health_a
        .agent_seen(&AgentIdentity {
            tenant_id: tenant.id,
            site_id: site.id,
            agent_id: uuid::Uuid::now_v7(),
            common_name: "agent.replica.default.serviceradar".into(),
        })
        .await
        .unwrap();

    let expect_active = |event: HealthEvent| match event {
        HealthEvent::Site {
            site_id, status, ..
        } => {
            assert_eq!(site_id, site.id);
            assert_eq!(status, SiteStatus::Active);
        }
        other => panic!("unexpected {other:?}"),
    };
    let got_b = tokio::time::timeout(Duration::from_secs(10), on_b.recv())
        .await
        .expect("replica B hears about A's change")
        .unwrap();
    expect_active(got_b);
    let got_a = tokio::time::timeout(Duration::from_secs(5), on_a.recv())
        .await
        .expect("replica A's own subscribers hear it")
        .unwrap();
    expect_active(got_a);
    // A does not hear its own change twice through the relay.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), on_a.recv())
            .await
            .is_err(),
        "a replica relayed its own event back"
    );
    drop(stops);
}
