//! Enrollment token redemption on both backends: concurrent redemptions by
//! different hosts each count once and never exceed the token's uses (and
//! on SQLite never fail with "database is locked": the transaction's first
//! statement writes); the same host again resumes without counting.
//! Onboarding packages follow their token (created, downloaded, expired,
//! revoked) and the agent's Hello (installed); conflicts are listed per
//! tenant and resolved once.

use serviceradar_domain::state::PackageStatus;
use serviceradar_domain::validate::{DisplayName, ListenAddr, NatsUrl, Slug};
use serviceradar_domain::{EdgeSiteId, TenantScope};
use serviceradar_store::{
    ConflictFilter, NewEnrollmentToken, OnboardingFilter, PageRequest, Redemption, Store,
    StoreError, now_ms,
};

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
                onboarding_package: true,
                agent_poll: None,
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
        // The token's onboarding package moved once, whoever won.
        let packages = scoped
            .list_onboarding_packages(&OnboardingFilter::default(), &PageRequest::first())
            .await
            .unwrap()
            .items;
        assert_eq!(packages.len(), 1);
        assert_eq!(packages[0].status, PackageStatus::Downloaded);
    }
}

async fn tenant_with_site(store: &Store, slug: &str) -> (TenantScope, EdgeSiteId) {
    let tenant = store
        .create_tenant(
            &Slug::parse(slug).unwrap(),
            &DisplayName::parse("T").unwrap(),
        )
        .await
        .unwrap();
    let scope = TenantScope::for_system_task(tenant.id);
    let (site, _) = store
        .scoped(scope)
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
    (scope, site.id)
}

fn token(site: EdgeSiteId, scope: &str, expires_at: i64) -> NewEnrollmentToken {
    NewEnrollmentToken {
        id: uuid::Uuid::now_v7(),
        edge_site_id: site,
        scope: scope.into(),
        token_hash: "h".into(),
        max_uses: 1,
        created_by: "u".into(),
        expires_at,
        onboarding_package: !scope.starts_with("collector:"),
        agent_poll: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboarding_packages_follow_their_token_and_the_agents_hello() {
    for (store, _dir) in stores().await {
        let (scope, site) = tenant_with_site(&store, "t").await;
        let scoped = store.scoped(scope);
        let status_of = |token: uuid::Uuid| {
            let scoped = store.scoped(scope);
            async move {
                let page = scoped
                    .list_onboarding_packages(
                        &OnboardingFilter {
                            edge_site_id: Some(site),
                            status: None,
                        },
                        &PageRequest::first(),
                    )
                    .await
                    .unwrap();
                page.items
                    .into_iter()
                    .find(|p| p.token_id == Some(token))
                    .map(|p| p.status)
            }
        };
        // created -> downloaded (redeemed) -> installed (the agent's Hello).
        let a = token(site, "site", now_ms() + 60_000);
        scoped.create_enrollment_token(&a).await.unwrap();
        assert_eq!(status_of(a.id).await, Some(PackageStatus::Created));
        assert_eq!(scoped.install_onboarding_packages(site).await.unwrap(), 0);
        assert_eq!(status_of(a.id).await, Some(PackageStatus::Created));
        scoped
            .redeem_enrollment_token(a.id, "aaaa", "edge-1", Some("192.0.2.1"))
            .await
            .unwrap();
        assert_eq!(status_of(a.id).await, Some(PackageStatus::Downloaded));
        // The same host again: resumed, still downloaded.
        assert_eq!(
            scoped
                .redeem_enrollment_token(a.id, "aaaa", "edge-1", None)
                .await
                .unwrap(),
            Redemption::Resumed
        );
        assert_eq!(status_of(a.id).await, Some(PackageStatus::Downloaded));
        assert_eq!(scoped.install_onboarding_packages(site).await.unwrap(), 1);
        assert_eq!(status_of(a.id).await, Some(PackageStatus::Installed));
        // Later Hellos change nothing; a resume after install keeps it installed.
        assert_eq!(scoped.install_onboarding_packages(site).await.unwrap(), 0);
        scoped
            .redeem_enrollment_token(a.id, "aaaa", "edge-1", None)
            .await
            .unwrap();
        assert_eq!(status_of(a.id).await, Some(PackageStatus::Installed));
        let installed = scoped
            .list_onboarding_packages(&OnboardingFilter::default(), &PageRequest::first())
            .await
            .unwrap()
            .items
            .remove(0);
        assert!(installed.downloaded_at.is_some() && installed.installed_at.is_some());

        // created -> expired when the token expires unredeemed; revoking
        // it afterwards keeps it expired.
        let b = token(site, "agent", now_ms() + 60_000);
        scoped.create_enrollment_token(&b).await.unwrap();
        assert_eq!(
            scoped
                .expire_onboarding_packages(site, now_ms())
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            scoped
                .expire_onboarding_packages(site, now_ms() + 120_000)
                .await
                .unwrap(),
            1
        );
        assert_eq!(status_of(b.id).await, Some(PackageStatus::Expired));
        scoped.revoke_enrollment_token(b.id, "u").await.unwrap();
        assert_eq!(status_of(b.id).await, Some(PackageStatus::Expired));
        // A downloaded or installed package does not expire.
        assert_eq!(status_of(a.id).await, Some(PackageStatus::Installed));

        // created -> revoked with its token.
        let c = token(site, "site", now_ms() + 60_000);
        scoped.create_enrollment_token(&c).await.unwrap();
        scoped.revoke_enrollment_token(c.id, "u").await.unwrap();
        assert_eq!(status_of(c.id).await, Some(PackageStatus::Revoked));
        // Revoking a token whose material was fetched does not cut off the
        // box that joined: its package keeps its state.
        scoped.revoke_enrollment_token(a.id, "u").await.unwrap();
        assert_eq!(status_of(a.id).await, Some(PackageStatus::Installed));
        let e = token(site, "agent", now_ms() + 60_000);
        scoped.create_enrollment_token(&e).await.unwrap();
        scoped
            .redeem_enrollment_token(e.id, "eeee", "edge-5", None)
            .await
            .unwrap();
        scoped.revoke_enrollment_token(e.id, "u").await.unwrap();
        assert_eq!(status_of(e.id).await, Some(PackageStatus::Downloaded));

        // Collector tokens have collector packages, not onboarding ones.
        let d = token(site, "collector:syslog", now_ms() + 60_000);
        scoped.create_enrollment_token(&d).await.unwrap();
        assert_eq!(status_of(d.id).await, None);

        // A classic bundle download is an onboarding package, downloaded at
        // once and installed by the next Hello.
        let bundle = scoped.record_bundle_onboarding_package(site).await.unwrap();
        assert_eq!(
            (bundle.source.as_str(), bundle.status, bundle.token_id),
            ("bundle", PackageStatus::Downloaded, None)
        );
        // (with e's, downloaded above)
        assert_eq!(scoped.install_onboarding_packages(site).await.unwrap(), 2);
        assert_eq!(
            scoped.onboarding_package(bundle.id).await.unwrap().status,
            PackageStatus::Installed
        );
        // Revoking the site's agent revokes what its boxes fetched (e's
        // and the bundle's packages are installed now, a's too); the
        // expired and revoked ones stay as they are.
        assert_eq!(
            scoped
                .revoke_fetched_onboarding_packages(site)
                .await
                .unwrap(),
            3
        );
        assert_eq!(status_of(a.id).await, Some(PackageStatus::Revoked));
        assert_eq!(status_of(b.id).await, Some(PackageStatus::Expired));
        assert_eq!(
            scoped.onboarding_package(bundle.id).await.unwrap().status,
            PackageStatus::Revoked
        );
        let only_revoked = scoped
            .list_onboarding_packages(
                &OnboardingFilter {
                    edge_site_id: None,
                    status: Some(PackageStatus::Revoked),
                },
                &PageRequest::first(),
            )
            .await
            .unwrap()
            .items;
        assert_eq!(only_revoked.len(), 4, "{:?}", store.backend());

        // Another tenant sees none of it.
        let (other, _) = tenant_with_site(&store, "other").await;
        let other = store.scoped(other);
        assert!(
            other
                .list_onboarding_packages(&OnboardingFilter::default(), &PageRequest::first())
                .await
                .unwrap()
                .items
                .is_empty()
        );
        assert!(matches!(
            other.onboarding_package(bundle.id).await,
            Err(StoreError::NotFound)
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_are_listed_per_tenant_and_resolved_once() {
    for (store, _dir) in stores().await {
        let (scope, site) = tenant_with_site(&store, "t").await;
        let scoped = store.scoped(scope);
        let a = token(site, "site", now_ms() + 60_000);
        scoped.create_enrollment_token(&a).await.unwrap();
        scoped
            .redeem_enrollment_token(a.id, "aaaa", "edge-1", Some("192.0.2.1"))
            .await
            .unwrap();
        assert!(
            scoped
                .list_enrollment_conflicts(&ConflictFilter::default(), &PageRequest::first())
                .await
                .unwrap()
                .items
                .is_empty()
        );
        assert_eq!(
            scoped
                .redeem_enrollment_token(a.id, "bbbb", "clone-2", Some("192.0.2.2"))
                .await
                .unwrap(),
            Redemption::Spent
        );
        let open = ConflictFilter {
            edge_site_id: Some(site),
            open: Some(true),
        };
        let conflicts = scoped
            .list_enrollment_conflicts(&open, &PageRequest::first())
            .await
            .unwrap()
            .items;
        assert_eq!(conflicts.len(), 1, "{:?}", store.backend());
        let c = &conflicts[0];
        assert_eq!(c.token_id, a.id);
        assert_eq!(c.edge_site_id, site);
        assert_eq!(c.hostname.as_deref(), Some("clone-2"));
        assert_eq!(c.remote_addr.as_deref(), Some("192.0.2.2"));
        assert!(
            c.detail
                .as_deref()
                .unwrap_or("")
                .contains("already redeemed")
        );
        assert_eq!(c.resolved_at, None);
        // The conflict did not move the package.
        let pkg = scoped
            .list_onboarding_packages(&OnboardingFilter::default(), &PageRequest::first())
            .await
            .unwrap()
            .items;
        assert_eq!(pkg[0].status, PackageStatus::Downloaded);

        // Another tenant can neither see nor resolve it.
        let (other, _) = tenant_with_site(&store, "other").await;
        let other = store.scoped(other);
        assert!(
            other
                .list_enrollment_conflicts(&ConflictFilter::default(), &PageRequest::first())
                .await
                .unwrap()
                .items
                .is_empty()
        );
        assert!(matches!(
            other.resolve_enrollment_conflict(c.id, "x").await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            other.enrollment_conflict(c.id).await,
            Err(StoreError::NotFound)
        ));

        let resolved = scoped
            .resolve_enrollment_conflict(c.id, "op")
            .await
            .unwrap();
        assert_eq!(resolved.resolved_by.as_deref(), Some("op"));
        assert!(resolved.resolved_at.is_some());
        assert!(matches!(
            scoped.resolve_enrollment_conflict(c.id, "op").await,
            Err(StoreError::InvalidState(_))
        ));
        assert!(
            scoped
                .list_enrollment_conflicts(&open, &PageRequest::first())
                .await
                .unwrap()
                .items
                .is_empty()
        );
        let done = ConflictFilter {
            edge_site_id: None,
            open: Some(false),
        };
        assert_eq!(
            scoped
                .list_enrollment_conflicts(&done, &PageRequest::first())
                .await
                .unwrap()
                .items
                .len(),
            1
        );
        let history = scoped.enrollment_events(a.id).await.unwrap();
        assert!(
            history
                .iter()
                .any(|e| e.kind == "resolved" && e.actor.as_deref() == Some("op"))
        );
        // Only conflict events are conflicts: a redeemed event's id is not one.
        assert!(matches!(
            scoped.resolve_enrollment_conflict(a.id, "op").await,
            Err(StoreError::NotFound)
        ));
    }
}
