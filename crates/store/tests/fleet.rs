//! The counts behind the fleet gauges (`Store::fleet_counts`) on both
//! backends: sites and leaves per tenant and status, queued jobs per kind,
//! and each tenant's soonest leaf certificate expiry, with every tenant
//! counted apart.

use serviceradar_domain::TenantScope;
use serviceradar_domain::validate::{DisplayName, Slug};
use serviceradar_store::fleet::{CertKind, TenantStatusCount};
use serviceradar_store::jobs::NewJob;
use serviceradar_store::{LeafProvisioning, Store, now_ms};

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
        scoped
            .store_leaf_provisioning(
                leaf.id,
                &LeafProvisioning {
                    leaf_cert_pem: "c".into(),
                    leaf_key_sealed: vec![1],
                    server_cert_pem: "s".into(),
                    server_key_sealed: vec![2],
                    ca_chain_pem: "ca".into(),
                    creds_sealed: vec![3],
                    cert_expires_at,
                    config_checksum: "sha256:x".into(),
                    node_certs: Vec::new(),
                },
                &serviceradar_store::ProvisionedFrom::default(),
            )
            .await
            .expect("provisioned");
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
        let tenant = |slug: &'static str| {
            let store = store.clone();
            async move {
                store
                    .create_tenant(
                        &Slug::parse(slug).expect("slug"),
                        &DisplayName::parse(slug).expect("name"),
                    )
                    .await
                    .expect("tenant")
            }
        };
        let (acme, beta) = (tenant("acme").await, tenant("beta").await);
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
