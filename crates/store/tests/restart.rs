//! The hot-read connections (`store::hot`), which are not pinged when taken,
//! survive a PostgreSQL restart: a read given a connection that died while
//! idle runs again on a new one, so no read fails once the database is back
//! (a private cluster, restarted with a fast shutdown that cuts every
//! connection).

use std::time::Duration;

use serviceradar_domain::TenantScope;
use serviceradar_domain::validate::{DisplayName, Slug};
use serviceradar_store::{PageRequest, SiteFilter, Store};
use serviceradar_testkit::PgCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_does_not_fail_the_reads_after_it() {
    let cluster = PgCluster::start(false).expect("a private cluster");
    let url = cluster.create_database();
    let store = Store::connect(&url, 4).await.expect("connect");
    store.migrate().await.expect("migrate");
    let tenant = store
        .create_tenant(
            &Slug::parse("acme").expect("slug"),
            &DisplayName::parse("Acme").expect("name"),
        )
        .await
        .expect("tenant");
    let scoped = store.scoped(TenantScope::for_system_task(tenant.id));
    // Open a few hot-read connections and leave them idle.
    let (filter, page) = (SiteFilter::default(), PageRequest::first());
    let reads = tokio::join!(
        scoped.list_sites(&filter, &page),
        scoped.list_sites(&filter, &page),
        scoped.list_sites(&filter, &page),
        scoped.list_sites(&filter, &page),
    );
    for read in [reads.0, reads.1, reads.2, reads.3] {
        read.expect("a read before the restart");
    }

    cluster
        .restart(Duration::from_millis(300))
        .expect("PostgreSQL restarts");

    // Every idle connection is dead now; each read that takes one runs
    // again on a new connection, so no read fails.
    for i in 0..6 {
        let page = scoped
            .list_sites(&filter, &page)
            .await
            .unwrap_or_else(|e| panic!("read {i} after the restart failed: {e}"));
        assert!(page.items.is_empty());
    }
    // The `Any` pool pings on checkout and recovers the same way.
    store
        .tenant_by_slug("acme")
        .await
        .expect("a lookup after the restart");
    store.close().await;
}
