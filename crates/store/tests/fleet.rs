//! The counts behind the fleet gauges (`Store::fleet_counts`) on both
//! backends: sites and leaves per tenant and status, queued jobs per kind,
//! and each tenant's soonest leaf certificate expiry, with every tenant
//! counted apart. Sites and leaves per status are kept by triggers and
//! folded into totals (migration 0035): the tests below follow every write
//! path through them, the migration's backfill, and two replicas folding
//! at once.

use serviceradar_domain::TenantScope;
use serviceradar_store::fleet::{CertKind, TenantStatusCount};
use serviceradar_store::jobs::NewJob;
use serviceradar_store::{Store, now_ms};

mod support;

async fn stores() -> Vec<(Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = Store::connect(
        &format!("sqlite://{}", dir.path().join("s.db").display()),
        8,
    )
    .await
    .expect("sqlite");
    let url = tokio::task::spawn_blocking(|| serviceradar_testkit::postgres().create_database())
        .await
        .expect("pg database");
    let pg = Store::connect(&url, 8).await.expect("postgres");
    let out = vec![(sqlite, Some(dir)), (pg, None)];
    for (s, _) in &out {
        s.migrate().await.expect("migrate");
    }
    out
}

/// A site of `scope`; its leaf provisioned with certificates expiring at
/// `expires_at` when given.
async fn site(store: &Store, scope: TenantScope, slug: &str, expires_at: Option<i64>) {
    let scoped = store.scoped(scope);
    let (_, leaf) = support::new_site(&scoped, slug).await;
    if let Some(cert_expires_at) = expires_at {
        support::provision_leaf(&scoped, leaf.id, cert_expires_at).await;
    }
}

fn count(rows: &[TenantStatusCount], tenant: &str, status: &str) -> i64 {
    rows.iter()
        .find(|r| r.tenant == tenant && r.status == status)
        .map_or(0, |r| r.count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_counts_group_by_tenant_on_both_backends() {
    for (store, _dir) in stores().await {
        let (acme, beta) = (
            support::tenant(&store, "acme").await,
            support::tenant(&store, "beta").await,
        );
        let soon = now_ms() + 86_400_000;
        let later = now_ms() + 30 * 86_400_000;
        let (sa, sb) = (
            TenantScope::for_system_task(acme.id),
            TenantScope::for_system_task(beta.id),
        );
        site(&store, sa, "nyc", Some(later)).await;
        site(&store, sa, "sfo", Some(soon)).await;
        site(&store, sb, "lon", None).await;
        for _ in 0..3 {
            store
                .enqueue_job(&NewJob::new("provision_leaf", serde_json::json!({})), None)
                .await
                .expect("job");
        }

        let counts = store.fleet_counts().await.expect("fleet counts");
        assert_eq!(count(&counts.sites, "acme", "pending"), 2);
        assert_eq!(count(&counts.sites, "beta", "pending"), 1);
        assert_eq!(count(&counts.leaves, "acme", "provisioned"), 2);
        assert_eq!(count(&counts.leaves, "beta", "pending"), 1);
        assert_eq!(count(&counts.leaves, "beta", "provisioned"), 0);
        let queued = counts
            .jobs
            .iter()
            .find(|j| j.kind == "provision_leaf" && j.status == "queued")
            .expect("queued jobs");
        assert_eq!(queued.count, 3);
        let leaf_expiries: Vec<_> = counts
            .cert_expiries
            .iter()
            .filter(|e| e.kind == CertKind::Leaf)
            .collect();
        assert_eq!(leaf_expiries.len(), 1, "beta has no leaf certificate");
        assert_eq!(leaf_expiries[0].tenant, "acme");
        assert_eq!(leaf_expiries[0].not_after_ms, soon, "the soonest one");
    }
}

/// The sites and leaves per status of `tenant`, as the gauges read them:
/// read before and after folding the changes into the totals, which must
/// not change what is read.
async fn statuses(store: &Store, tenant: &str) -> (Vec<(String, i64)>, Vec<(String, i64)>) {
    let of = |rows: Vec<TenantStatusCount>| {
        rows.into_iter()
            .filter(|r| r.tenant == tenant)
            .map(|r| (r.status, r.count))
            .collect::<Vec<_>>()
    };
    let unfolded = store.fleet_counts().await.expect("fleet counts");
    store.fold_status_deltas().await.expect("fold");
    let folded = store.fleet_counts().await.expect("fleet counts");
    assert_eq!(unfolded, folded, "the fold changed what is read");
    assert_eq!(
        store.fold_status_deltas().await.expect("fold"),
        0,
        "all folded"
    );
    (of(folded.sites), of(folded.leaves))
}

fn pairs(list: &[(&str, i64)]) -> Vec<(String, i64)> {
    list.iter().map(|(s, n)| (s.to_string(), *n)).collect()
}

/// The counts are kept by triggers (migration 0035), not counted on read:
/// every write path that moves a status moves the counts, on both backends,
/// including the cascade that removes a deleted site's leaf, a bulk sweep,
/// and an update that leaves the status alone (which must count nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counts_follow_every_status_change_on_both_backends() {
    for (store, _dir) in stores().await {
        let acme = support::tenant(&store, "acme").await;
        let scope = TenantScope::for_system_task(acme.id);
        let scoped = store.scoped(scope);
        let (nyc, _) = support::site_with_agent(&store, scope, "nyc").await;
        let (sfo, sfo_agent) = support::site_with_agent(&store, scope, "sfo").await;
        let (_lon, _) = support::new_site(&scoped, "lon").await;
        assert_eq!(
            statuses(&store, "acme").await,
            (pairs(&[("pending", 3)]), pairs(&[("pending", 3)]))
        );

        // An agent's first contact: pending -> active. A second contact
        // only stamps last_seen_at.
        for _ in 0..2 {
            scoped.agent_seen(sfo_agent, sfo).await.expect("seen");
        }
        assert_eq!(
            statuses(&store, "acme").await.0,
            pairs(&[("active", 1), ("pending", 2)])
        );

        // The offline sweep, one statement over every tenant.
        let moved = store
            .sweep_offline_sites(now_ms() + 60_000)
            .await
            .expect("sweep");
        assert_eq!(moved.len(), 1);
        assert_eq!(
            statuses(&store, "acme").await.0,
            pairs(&[("offline", 1), ("pending", 2)])
        );

        // Leaves: provisioned, then connected by the leaf checker.
        site(&store, scope, "ams", Some(now_ms() + 86_400_000)).await;
        let sfo_leaf = scoped.leaf_for_site(sfo).await.expect("leaf");
        support::provision_leaf(&scoped, sfo_leaf.id, now_ms() + 86_400_000).await;
        scoped.set_leaf_link(sfo, true).await.expect("link up");
        assert_eq!(
            statuses(&store, "acme").await,
            (
                pairs(&[("offline", 1), ("pending", 3)]),
                pairs(&[("connected", 1), ("pending", 2), ("provisioned", 1)])
            )
        );

        // Deleting a site removes its leaf by the foreign key's cascade.
        scoped.delete_site(sfo).await.expect("delete");
        scoped.delete_site(nyc).await.expect("delete");
        assert_eq!(
            statuses(&store, "acme").await,
            (
                pairs(&[("pending", 2)]),
                pairs(&[("pending", 1), ("provisioned", 1)])
            )
        );
    }
}

/// Sites that existed before migration 0035 are counted by its backfill,
/// and later changes add to that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_made_before_the_counts_existed_are_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite_url = format!("sqlite://{}", dir.path().join("s.db").display());
    let pg_url = tokio::task::spawn_blocking(|| serviceradar_testkit::postgres().create_database())
        .await
        .expect("pg database");
    for url in [sqlite_url, pg_url] {
        let store = Store::connect(&url, 4).await.expect("connect");
        let mut before = match store.backend() {
            serviceradar_store::Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            serviceradar_store::Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        before.migrations = before
            .migrations
            .iter()
            .filter(|m| m.version < 35)
            .cloned()
            .collect::<Vec<_>>()
            .into();
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.expect("pool");
        before.run(&pool).await.expect("migrations before 0035");
        pool.close().await;

        let acme = support::tenant(&store, "acme").await;
        let scope = TenantScope::for_system_task(acme.id);
        site(&store, scope, "nyc", Some(now_ms() + 86_400_000)).await;
        site(&store, scope, "sfo", None).await;

        store.migrate().await.expect("migration 0035");
        assert_eq!(
            statuses(&store, "acme").await,
            (
                pairs(&[("pending", 2)]),
                pairs(&[("pending", 1), ("provisioned", 1)])
            ),
            "{:?}",
            store.backend()
        );
        site(&store, scope, "lon", None).await;
        assert_eq!(
            statuses(&store, "acme").await,
            (
                pairs(&[("pending", 3)]),
                pairs(&[("pending", 2), ("provisioned", 1)])
            )
        );
        store.close().await;
    }
}

/// Two replicas folding the deltas while sites are being created and moved
/// count each change once: no change is lost between a fold's read and its
/// delete, none is added twice, and two folds at once do not deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_folding_at_once_count_each_change_once() {
    let url = tokio::task::spawn_blocking(|| serviceradar_testkit::postgres().create_database())
        .await
        .expect("pg database");
    let a = Store::connect(&url, 8).await.expect("replica a");
    a.migrate().await.expect("migrate");
    let b = Store::connect(&url, 8).await.expect("replica b");
    let acme = support::tenant(&a, "acme").await;
    let scope = TenantScope::for_system_task(acme.id);

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let folders: Vec<_> = [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .map(|store| {
            let done = done.clone();
            tokio::spawn(async move {
                let mut folds = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    store
                        .fold_status_deltas()
                        .await
                        .expect("fold while writing");
                    store.fleet_counts().await.expect("read while writing");
                    folds += 1;
                }
                folds
            })
        })
        .collect();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = if w % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let scoped = store.scoped(scope);
                for i in 0..15 {
                    let (site, agent) =
                        support::site_with_agent(&store, scope, &format!("s{w}-{i}")).await;
                    if i % 3 == 0 {
                        scoped.agent_seen(agent, site).await.expect("seen");
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut folds = 0;
    for f in folders {
        folds += f.await.expect("folder");
    }
    assert!(folds >= 4, "the folds ran while the sites were written");
    assert_eq!(
        statuses(&b, "acme").await,
        (
            pairs(&[("active", 20), ("pending", 40)]),
            pairs(&[("pending", 60)])
        )
    );
}
