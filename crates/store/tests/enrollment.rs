//! Enrollment token redemption on both backends: concurrent redemptions by
//! different hosts each count once and never exceed the token's uses (and
//! on SQLite never fail with "database is locked": the transaction's first
//! statement writes); the same host again resumes without counting.

use serviceradar_domain::TenantScope;
use serviceradar_domain::validate::{DisplayName, ListenAddr, NatsUrl, Slug};
use serviceradar_store::{NewEnrollmentToken, Redemption, Store, now_ms};

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
    let pg = Store::connect(&url, 12).await.expect("postgres");
    let out = vec![(sqlite, Some(dir)), (pg, None)];
    for (s, _) in &out {
        s.migrate().await.expect("migrate");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redemptions_count_once_each_and_never_fail_with_database_locked() {
    for (store, _dir) in stores().await {
        let tenant = store
            .create_tenant(
                &Slug::parse("t").unwrap(),
                &DisplayName::parse("T").unwrap(),
            )
            .await
            .unwrap();
        let scoped = store.scoped(TenantScope::for_system_task(tenant.id));
        let (site, _) = scoped
            .create_site(
                &serviceradar_store::NewSite {
                    name: DisplayName::parse("S").unwrap(),
                    slug: Slug::parse("s").unwrap(),
                    nats_leaf_url: NatsUrl::parse("nats://10.0.0.1:4222").unwrap(),
                    upstream_url: "tls://hub:7422".into(),
                    local_listen: ListenAddr::parse("0.0.0.0:4222").unwrap(),
                },
                None,
            )
            .await
            .unwrap();
        let id = uuid::Uuid::now_v7();
        scoped
            .create_enrollment_token(&NewEnrollmentToken {
                id,
                edge_site_id: site.id,
                scope: "site".into(),
                token_hash: "h".into(),
                max_uses: 5,
                created_by: "u".into(),
                expires_at: now_ms() + 60_000,
            })
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for host in 0..12 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .scoped(TenantScope::for_system_task(tenant.id))
                    .redeem_enrollment_token(id, &format!("host-{host}"), "h", None)
                    .await
            }));
        }
        let mut redeemed = 0;
        for task in tasks {
            match task.await.unwrap().expect("no redemption fails") {
                Redemption::Redeemed => redeemed += 1,
                Redemption::Spent => {}
                Redemption::Resumed => panic!("a new host cannot resume"),
            }
        }
        assert_eq!(redeemed, 5, "{:?}", store.backend());
        assert_eq!(scoped.enrollment_token(id).await.unwrap().uses, 5);
        // A host that redeemed resumes: nothing counted, no error.
        let again = scoped
            .redeem_enrollment_token(id, "host-0", "h", None)
            .await
            .unwrap();
        let first_five: Vec<_> = scoped.enrollment_events(id).await.unwrap();
        assert!(matches!(again, Redemption::Resumed | Redemption::Spent));
        assert_eq!(scoped.enrollment_token(id).await.unwrap().uses, 5);
        assert_eq!(
            first_five.iter().filter(|e| e.kind == "redeemed").count(),
            5
        );
    }
}
